"""Load balancing, bound: the coordinator that holds the placer lock moves cameras by two-phase commit.

* :mod:`~coordinator.placement.config`: the strict ``[placement]`` table.
* :mod:`~coordinator.placement.fleet`: births, wills, metrics, ``state/cameras`` -> the planner's agents.
* :mod:`~coordinator.placement.table`: the retained placement table (owners, revocations, moves).
* :mod:`~coordinator.placement.service`: the placer loop (lock, plan, fence check, move, publish).
* :mod:`~coordinator.placement.control`: ``edge-coordinator placement show|pin|cordon|drain|...``.

Never two owners (what "owner" means: an agent that runs the camera's pipeline)
-------------------------------------------------------------------------------
1. *Moves between live agents* are one 2PC transaction (release on the
   source, take on the target). The source votes yes only if it runs the
   camera, the target only if it does not, and a camera held by one prepared
   transaction is refused to every other. So two placers (a stale one that has
   not yet noticed it lost the lock, and the new one) cannot both move the
   same camera: at most one transaction prepares it, and the other aborts.
   The placer lock and its fencing token (checked before each move) keep
   moves from being *planned* twice; the 2PC keeps them from being *done*
   twice even if the check races with a takeover.
2. *Evacuating a dead owner* (its will said offline for ``evacuate_after_ms``)
   cannot ask it to release. The target takes the camera alone, and the table
   records the old owner as revoked. The old owner is safe to ignore because
   of the agent's self-fence (:mod:`agents.camera.placement_fence`): an agent
   that has been cut off from the broker for ``lease_s`` stops its cameras
   (and starts none) until it has read the retained placement table and
   dropped every camera the table gives to another agent or revokes from it.

What 2 assumes, honestly: the broker publishes the will no sooner than the
keepalive timeout after the agent last reached it (MQTT: 1.5 x keepalive),
the agent's clock runs at most a factor ``rho`` faster or slower than the
coordinator's, and ``lease_s * (1 + rho)`` plus a stop's duration is below
``evacuate_after_ms`` counted from the will, after the agent's own detection
of the disconnect (which can trail the broker's by up to its keepalive). With
lease 5 s and evacuate after 10 s, a rate error under ~50% leaves room for
the stop and a few seconds of detection lag. An agent
that is alive and connected but whose will was published anyway (a broker
failover that loses sessions) is not covered by the lease; the table's
revocation still stops it when it next reads the table (on its next
reconnect), and until then two agents may run the camera.

The retained table is written only by the lock holder, after a fence check;
a paused placer that resumes after its lease lapsed may still publish one
stale table before it notices, and the new placer overwrites it within
``interval_s``. An agent that comes back inside that window could read a table
without a fresh revocation and keep a camera that was evacuated from it: that
window (one stale publish, while a dead agent restarts) is the residual risk.
Agents only ever *drop* cameras because of the table, never start one.
"""

from coordinator.placement.config import CameraSpec, PlacementConfig
from coordinator.placement.service import PlacementService

__all__ = ["CameraSpec", "PlacementConfig", "PlacementService"]
