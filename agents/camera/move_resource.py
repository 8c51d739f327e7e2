"""The agent as a two-phase commit resource: release or take a camera, atomically with another agent.

Prepare checks the work (releasing a camera this agent runs; taking one it
does not, with a table it can parse) and writes the intent to
``{data_dir}/tx-prepared/`` (one file per transaction) (fsync'd): nothing is stopped or started
before the decision, so the camera keeps exactly its one owner while the
transaction is in doubt. A camera held by one prepared transaction is refused
to any other (no vote, the holder named) until that one is decided.

Commit records the new ownership durably (:class:`CameraAssignments`) and
then stops or starts the pipeline; abort only drops the intent. Both are
idempotent by the intent file: a repeat after a crash finds it gone, or
finds the ownership already recorded and only (re)starts what should run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from agents.camera.assignments import CameraAssignments
from broker.atomic_file import fsync_dir, write_atomic
from broker.twopc.resource import PrepareAnswer
from protocols.twopc import Outcome
from protocols.twopc.camera_work import ReleaseCamera, TakeCamera, decode_camera_work, encode_camera_work
from schemas.errors import ConfigError, EdgebusError, StorageError, TxError

__all__ = ["CameraMoveResource"]

logger = logging.getLogger(__name__)


class CameraRunner(Protocol):
    """What the resource needs of the camera host."""

    @property
    def cameras(self) -> list[str]: ...

    def check_table(self, table: dict[str, object]) -> None: ...

    def start_camera(self, table: dict[str, object]) -> None: ...

    def stop_camera(self, camera: str) -> None: ...


class CameraMoveResource:
    """See the module docstring; ``runner`` is the agent's camera host."""

    def __init__(self, runner: CameraRunner, assignments: CameraAssignments, prepared_dir: Path) -> None:
        self.runner = runner
        self.assignments = assignments
        self.dir = prepared_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}  # camera -> the prepared transaction that holds it
        for tx_id in self.prepared_ids():
            work = self._intent(tx_id)
            if work is not None:
                self._held[work.camera] = tx_id

    def prepare(self, tx_id: str, payload: bytes, deadline_s: float) -> PrepareAnswer:
        try:
            work = decode_camera_work(payload)
        except TxError as exc:
            return PrepareAnswer(False, str(exc))
        with self._lock:
            holder = self._held.get(work.camera)
            if holder is not None and holder != tx_id:
                return PrepareAnswer(False, f"camera {work.camera} is in transaction {holder}")
            running = work.camera in self.runner.cameras
            if isinstance(work, ReleaseCamera) and not running:
                return PrepareAnswer(False, f"camera {work.camera} is not running on this agent")
            if isinstance(work, TakeCamera):
                if running:
                    return PrepareAnswer(False, f"camera {work.camera} already runs on this agent")
                try:
                    self.runner.check_table(dict(work.table))
                except ConfigError as exc:
                    return PrepareAnswer(False, f"camera {work.camera}: {exc}")
            try:
                write_atomic(self._path(tx_id), encode_camera_work(work))
            except OSError as exc:
                return PrepareAnswer(False, f"cannot record the intent: {exc}")
            self._held[work.camera] = tx_id
        return PrepareAnswer(True)

    def finish(self, tx_id: str, outcome: Outcome) -> None:
        work = self._intent(tx_id)
        if work is None:
            return  # done before (a repeat after a crash), or never prepared here
        if outcome is Outcome.COMMIT:
            if isinstance(work, ReleaseCamera):
                self.assignments.release(work.camera)  # durable first: a crash now restarts without it
                self.runner.stop_camera(work.camera)
            else:
                self.assignments.take(work.camera, work.table)
                try:
                    self.runner.start_camera(dict(work.table))
                except EdgebusError as exc:  # the agent owns it now; its pipeline retries the source
                    logger.error("camera %s is this agent's by transaction %s but did not start: %s",
                                 work.camera, tx_id, exc)
            logger.info("transaction %s committed: camera %s %s", tx_id, work.camera,
                        "released" if isinstance(work, ReleaseCamera) else "taken")
        with self._lock:
            if self._held.get(work.camera) == tx_id:
                del self._held[work.camera]
            try:
                with contextlib.suppress(FileNotFoundError):
                    self._path(tx_id).unlink()
                fsync_dir(self.dir)
            except OSError as exc:
                raise StorageError(f"cannot remove the intent of {tx_id}: {exc}") from exc

    def prepared_ids(self) -> Iterable[str]:
        ids = []
        for p in self.dir.glob("*.intent"):
            try:
                ids.append(bytes.fromhex(p.stem).decode())
            except (ValueError, UnicodeDecodeError):
                logger.warning("ignoring %s: not an intent file this agent wrote", p)
        return sorted(ids)

    def _path(self, tx_id: str) -> Path:
        """Transaction ids are any printable text: the file is named by their hex, which maps back."""
        return self.dir / f"{tx_id.encode().hex()}.intent"

    def _intent(self, tx_id: str) -> ReleaseCamera | TakeCamera | None:
        try:
            return decode_camera_work(self._path(tx_id).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, TxError) as exc:
            raise StorageError(f"the intent of transaction {tx_id} is unreadable: {exc}") from exc

