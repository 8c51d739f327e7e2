"""PBFT over MQTT: replica processes, the client API and the ``edge-bus bft`` commands."""

from broker.bft.client import BftClient
from broker.bft.group import BftGroup, load_group, load_signer
from broker.bft.group_signature import sign_group, verify_group
from broker.bft.hooks import QuarantineHook, load_hook
from broker.bft.replica_driver import BftReplicaDriver
from broker.bft.topics import BftTopics

__all__ = [
    "BftClient", "BftGroup", "BftReplicaDriver", "BftTopics", "QuarantineHook", "load_group", "load_hook",
    "load_signer", "sign_group", "verify_group",
]
