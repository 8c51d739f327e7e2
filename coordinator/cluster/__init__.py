"""Several coordinators on one stream, each device on exactly one of them (``[cluster]``).

* :mod:`~coordinator.cluster.config`: the ``[cluster]`` table.
* :mod:`~coordinator.cluster.shards`: membership on the bus (retained presence and a will), the
  rendezvous assignment (protocols/sharding) and the hand-over of devices between members.
"""

from coordinator.cluster.config import ClusterConfig
from coordinator.cluster.shards import DeviceShards, read_cluster

__all__ = ["ClusterConfig", "DeviceShards", "read_cluster"]
