"""VoteJournal: what a replica process signed, appended before the frames leave, read back on restart.

A replica that forgot its votes could sign a second, different pre-prepare or
prepare for a slot after a restart, and the others would rightly quarantine
it as a liar. The journal is the smallest thing that prevents that: one
msgpack record per vote, the highest view and the evidence it holds. It is
compacted when it grows. The last stable checkpoint (the replicated state,
with the 2f+1 signed checkpoints that prove it) is kept beside it in
``<journal>.stable``, replaced atomically at each new one, so a restarted
replica resumes from its own state and needs state transfer only for what
the group decided since.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import msgpack

from broker.atomic_file import write_atomic
from protocols.pbft import Durable, Evidence, decode_frame, encode_frame
from protocols.pbft.messages import Signed
from schemas.errors import CodecError, StorageError

logger = logging.getLogger(__name__)

Vote = tuple[str, int, int]
COMPACT_AT = 20_000


class VoteJournal:
    def __init__(self, path: Path, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self.votes: dict[Vote, bytes] = {}
        self.view = 0
        self.evidence: dict[str, Evidence] = {}
        self._records = 0
        self.stable_path = path.with_name(path.name + ".stable")
        self.stable: tuple[int, bytes, tuple[Signed, ...]] = (0, b"", ())
        if path.exists():
            self._load()
        if self.stable_path.exists():
            self._load_stable()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab")
        except OSError as exc:
            raise StorageError(f"cannot open the vote journal {path}: {exc}") from exc

    def _load(self) -> None:
        try:
            with self.path.open("rb") as f:
                for rec in msgpack.Unpacker(f, raw=False):
                    self._apply(rec)
        except (OSError, ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError) as exc:  # a torn last record after a crash: what came before stands
            logger.warning("vote journal %s ends in a damaged record (%s); keeping the rest", self.path, exc)

    def _load_stable(self) -> None:
        try:
            seq, snapshot, frames = msgpack.unpackb(self.stable_path.read_bytes(), raw=False)
            proof = [decode_frame(bytes(f)) for f in frames]
            signed = tuple(p for p in proof if isinstance(p, Signed))
            if len(signed) != len(proof):
                raise ValueError("a proof entry is not a signed checkpoint")
            self.stable = (int(seq), bytes(snapshot), signed)
        except (OSError, ValueError, TypeError, CodecError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError) as exc:  # written atomically: damage means someone else wrote it
            logger.warning("stable checkpoint %s is unreadable (%s); state will come by state transfer",
                           self.stable_path, exc)

    def record_stable(self, seq: int, snapshot: bytes, proof: tuple[Signed, ...]) -> None:
        """Keep a newer stable checkpoint (one atomic replace; older ones are dropped)."""
        if seq <= self.stable[0]:
            return
        data = msgpack.packb([seq, snapshot, [encode_frame(p) for p in proof]], use_bin_type=True)
        try:
            write_atomic(self.stable_path, data, mode=0o600)
        except OSError as exc:
            raise StorageError(f"cannot write the stable checkpoint {self.stable_path}: {exc}") from exc
        self.stable = (seq, snapshot, proof)

    def _apply(self, rec: Any) -> None:
        self._records += 1
        if rec[0] == "vote":
            _, kind, view, seq, digest = rec
            self.votes[(str(kind), int(view), int(seq))] = bytes(digest)
        elif rec[0] == "view":
            self.view = max(self.view, int(rec[1]))
        elif rec[0] == "ev":
            try:
                ev = decode_frame(bytes(rec[1]))
            except CodecError:
                return
            if isinstance(ev, Evidence):
                self.evidence[ev.first.signer] = ev

    def durable(self) -> Durable:
        votes, evidence = tuple(self.votes.items()), tuple(self.evidence.values())
        # back in a view it may have left mid-change: ask for it (the primary answers with its new-view)
        seq, snapshot, proof = self.stable
        return Durable(view=self.view, in_view_change=self.view > 0, stable_seq=seq, stable_snapshot=snapshot,
                       stable_proof=proof, votes=votes, evidence=evidence)

    def record(self, votes: dict[Vote, bytes], view: int, evidence: dict[str, Evidence]) -> None:
        """Append what is new; call it before the replica's frames are published."""
        out = []
        for key, digest in votes.items():
            if self.votes.get(key) != digest:
                self.votes[key] = digest
                out.append(["vote", *key, digest])
        if view > self.view:
            self.view = view
            out.append(["view", view])
        for who, ev in evidence.items():
            if who not in self.evidence:
                self.evidence[who] = ev
                out.append(["ev", encode_frame(ev)])
        if not out:
            return
        try:
            self._file.write(b"".join(msgpack.packb(r, use_bin_type=True) for r in out))
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            raise StorageError(f"cannot write the vote journal {self.path}: {exc}") from exc
        self._records += len(out)
        if self._records > COMPACT_AT:
            self.compact(votes)

    def compact(self, live: dict[Vote, bytes]) -> None:
        """Rewrite with only the votes the replica still holds (above its stable checkpoint)."""
        self.votes = dict(live)
        recs = [["view", self.view], *(["vote", *k, d] for k, d in live.items()),
                *(["ev", encode_frame(ev)] for ev in self.evidence.values())]
        self._file.close()
        write_atomic(self.path, b"".join(msgpack.packb(r, use_bin_type=True) for r in recs), mode=0o600)
        self._file = self.path.open("ab")
        self._records = len(recs)

    def close(self) -> None:
        self._file.close()
