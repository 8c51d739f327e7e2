"""Where the OTA state lives, and the one way it is written (atomically, fsynced).

Layout under ``{data_dir}/ota``::

    {update_id}/manifest.json    the signed manifest bytes, exactly as received
    {update_id}/manifest.sig     {"key_id": ..., "signature": base64}
    {update_id}/artifact.part    the download, chunks written at their offsets
    {update_id}/bitmap           which chunks artifact.part holds (1 bit each, LSB first)
    {update_id}/artifact         the verified artifact (renamed from artifact.part)
    {update_id}/bundle/          an agent bundle, extracted
    {update_id}/install.log      install.sh's output
    {update_id}/outcome.json     the terminal OtaProgress: a repeated offer gets it back
    trial.json                   a new agent is on probation (see agents.ota.trial)
    trial_attempts               starts of the new slot, counted by `edgebus-slot prestart`
    last_result.json             a rollback's outcome, for the previous agent to report
    trusted_keys.json            a key list delivered by a "keys" update (wins over /etc)

A state file is either the old or the new version after a crash, never half
of one: write to a temporary sibling, fsync, rename, fsync the directory.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Readers see the old file or the new one, never a mix (shared with the broker's credential files).
from broker.atomic_file import fsync_dir
from broker.atomic_file import write_atomic as atomic_write
from schemas.errors import CodecError

__all__ = ["OtaPaths", "atomic_write", "fsync_dir", "read_json", "remove_quietly"]

TRIAL = "trial.json"
TRIAL_ATTEMPTS = "trial_attempts"
LAST_RESULT = "last_result.json"
TRUSTED_KEYS = "trusted_keys.json"


@dataclass(frozen=True, slots=True)
class OtaPaths:
    """The OTA files of one agent (``data_dir`` is the agent's ``[device] data_dir``)."""

    data_dir: Path

    @property
    def root(self) -> Path:
        return self.data_dir / "ota"

    def update_dir(self, update_id: str) -> Path:
        return self.root / update_id

    @property
    def trial(self) -> Path:
        return self.root / TRIAL

    @property
    def trial_attempts(self) -> Path:
        return self.root / TRIAL_ATTEMPTS

    @property
    def last_result(self) -> Path:
        return self.root / LAST_RESULT

    @property
    def trusted_keys(self) -> Path:
        return self.root / TRUSTED_KEYS

    @property
    def models(self) -> Path:
        return self.data_dir / "models"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file does not exist."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CodecError(f"{path}: not readable JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CodecError(f"{path}: expected a JSON object")
    return doc


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
