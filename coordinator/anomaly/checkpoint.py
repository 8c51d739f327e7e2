"""The on-disk form of detector state: a versioned header in front of a pickle.

Pickle carries river models and plain detectors alike without a schema per
detector type. The header lets a newer build refuse an older (or newer)
layout with a clear error instead of unpickling it into the wrong shape.
Checkpoints are written and read by the coordinator itself; never restore one
from an untrusted source (unpickling runs code).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from schemas.errors import CodecError, UnsupportedVersion

__all__ = ["MAGIC", "VERSION", "decode_checkpoint", "encode_checkpoint"]

MAGIC = b"EBANOM"
#: Bump when any detector's pickled layout changes incompatibly (2: series shapes, bursts, episode spans;
#: 3: the thresholds' tail shapes).
VERSION = 3

#: Modules whose classes moved after checkpoints naming them were written: old name -> new name.
#: Pickle stores a class by module path, so a checkpoint from before a move still restores.
_MOVED_MODULES = {
    "coordinator.anomaly.robust_zscore": "coordinator.anomaly.plugins.robust_zscore",
    "coordinator.anomaly.river_holt": "coordinator.anomaly.plugins.river_holt",
}


class _CheckpointUnpickler(pickle.Unpickler):
    """An unpickler that finds classes under their current module when they have moved."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(_MOVED_MODULES.get(module, module), name)


def encode_checkpoint(state: Any) -> bytes:
    """``state`` as ``MAGIC + version byte + pickle``."""
    return MAGIC + bytes([VERSION]) + pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def decode_checkpoint(blob: bytes) -> Any:
    """The state :func:`encode_checkpoint` wrote; CodecError or UnsupportedVersion otherwise."""
    if len(blob) < len(MAGIC) + 1 or not blob.startswith(MAGIC):
        raise CodecError("not an edgebus anomaly checkpoint (bad magic)")
    version = blob[len(MAGIC)]
    if version != VERSION:
        raise UnsupportedVersion(f"anomaly checkpoint version {version} is not supported by this build "
                                 f"(it reads version {VERSION}); delete it to start the detectors afresh")
    try:
        return _CheckpointUnpickler(io.BytesIO(blob[len(MAGIC) + 1:])).load()
    except Exception as exc:  # pickle raises many unrelated types on corrupt input
        raise CodecError(f"anomaly checkpoint is corrupt: {exc}") from exc
