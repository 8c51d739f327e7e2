"""PBFT over MQTT: replica processes, the client API and the ``edge-bus bft`` commands."""

from broker.bft.client import BftClient
from broker.bft.group import BftGroup, load_group, load_signer
from broker.bft.replica_driver import BftReplicaDriver
from broker.bft.topics import BftTopics

__all__ = ["BftClient", "BftGroup", "BftReplicaDriver", "BftTopics", "load_group", "load_signer"]
