"""Which coordinator takes which device, sans I/O: rendezvous hashing over the live members.

See :mod:`protocols.sharding.rendezvous`; coordinator/cluster binds it to the bus.
"""

from protocols.sharding.rendezvous import assign, owner

__all__ = ["assign", "owner"]
