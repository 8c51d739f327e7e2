"""Over-the-air updates, the pure parts: the windowed chunk download, the chunk server, the rollout.

* :class:`Download` (device): which chunks are held, which to ask for next;
  every chunk is checked against the signed manifest's digest.
* :class:`ChunkServer` (server): answers chunk requests with frames.
* :class:`Rollout` (server): canary cohort first, halt on failures, then the rest.

The messages themselves are in :mod:`schemas.ota`; signature checks in
:mod:`protocols.ota.trust` (reading the key list from a file: :mod:`broker.trust`).
"""

from protocols.ota.download import ChunkOutcome, Download
from protocols.ota.rollout import Outcome, Rollout, RolloutPolicy, RolloutStage, outcome_of
from protocols.ota.sender import ChunkServer

__all__ = ["ChunkOutcome", "ChunkServer", "Download", "Outcome", "Rollout", "RolloutPolicy",
           "RolloutStage", "outcome_of"]
