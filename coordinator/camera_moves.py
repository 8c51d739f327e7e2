"""Move a camera from one agent to another atomically: one two-phase commit transaction.

    client = TxClient(session, "coord")
    move_camera(client, "door", "gw-1", "gw-2", {"source": "rtsp://...", "fps": 8})

The releasing agent's part is ``{"release": camera}``, the taking agent's
``{"take": table}`` (protocols/twopc/camera_work.py). Both prepare without
touching the camera; the group's log decides; on commit the releasing agent
records that it no longer owns the camera and stops it and the taking agent
records that it does and starts it. So ownership (what each agent restarts
with, and its retained ``state/cameras``) never has two holders and is never
lost; the frames themselves pause for the stop-and-start in between. On an
abort neither agent changed anything, and :class:`~schemas.errors.TxAborted`
says why (``"gw-2 voted no: camera door already runs on this agent"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.twopc.client import TxClient, TxOutcome
from protocols.twopc import Part
from protocols.twopc.camera_work import ReleaseCamera, TakeCamera, encode_camera_work
from schemas.errors import TxAborted, TxError

__all__ = ["move_camera", "take_camera"]


def move_camera(client: TxClient, camera: str, from_agent: str, to_agent: str,
                table: Mapping[str, Any], *, timeout_s: float = 10.0, tx_id: str | None = None) -> TxOutcome:
    """Commit the move or raise :class:`TxAborted` (nothing changed) / CoordinationTimeout (ask later)."""
    if from_agent == to_agent:
        raise TxError(f"camera {camera} would move from {from_agent} to itself")
    parts = [Part(from_agent, encode_camera_work(ReleaseCamera(camera))),
             Part(to_agent, encode_camera_work(TakeCamera(camera, dict(table))))]
    outcome = client.run(parts, timeout_s, tx_id)
    if not outcome.committed:
        raise TxAborted(outcome.tx_id, outcome.reason)
    return outcome


def take_camera(client: TxClient, camera: str, to_agent: str, table: Mapping[str, Any], *,
                timeout_s: float = 10.0, tx_id: str | None = None) -> TxOutcome:
    """Give a camera that has no running owner to ``to_agent``: a one-part transaction (``take`` only).

    For new work and for evacuating a dead owner, which cannot vote: its
    revocation is the placement table's (coordinator/placement/), and the
    agent drops the camera before running anything when it comes back.
    """
    take = Part(to_agent, encode_camera_work(TakeCamera(camera, dict(table))))
    outcome = client.run([take], timeout_s, tx_id)
    if not outcome.committed:
        raise TxAborted(outcome.tx_id, outcome.reason)
    return outcome
