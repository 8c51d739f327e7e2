"""One PBFT replica as a pure state machine (Castro and Liskov, OSDI 1999 / TOCS 2002).

Inputs are ``receive(frame_bytes)`` and ``tick()``; ``drain()`` returns the
frames to send and the events (executions, quarantines, views) for the driver.
There is no clock, socket or randomness in here. The quorum sizes are methods
(``_prepare_quorum``, ``_commit_quorum``) so tests can build broken variants and
show the checkers catch them.

Beyond the paper: every Prepare carries the primary's signed pre-prepare
header, so a backup that accepted one header and sees a prepare for another
holds two signed, conflicting headers: an :class:`Evidence` record. The liar is
quarantined (its messages ignored) and the evidence is broadcast so that every
honest replica quarantines it too.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import msgpack

from protocols.pbft.config import PbftConfig
from protocols.pbft.evidence import conflicts, offender, statement
from protocols.pbft.messages import (
    Body,
    Checkpoint,
    Commit,
    Evidence,
    Header,
    NewView,
    Prepare,
    PreparedProof,
    PrePrepare,
    Reply,
    Request,
    Signed,
    StateReply,
    StateRequest,
    ViewChange,
    batch_digest,
    decode_frame,
    encode_body,
    encode_frame,
)
from protocols.pbft.output import (
    Dropped,
    Durable,
    Executed,
    Output,
    Quarantined,
    ReplicaStatus,
    Send,
    StateInstalled,
    ViewEntered,
)
from protocols.pbft.signing import Signer, Verifier
from protocols.pbft.state_machine import ReplicatedStateMachine
from schemas.errors import CodecError

NULL_DIGEST = batch_digest(())
_VERIFIED_CACHE = 16_384


@dataclass(slots=True)
class _Slot:
    """Everything known about one sequence number above the stable checkpoint."""

    pp: dict[int, PrePrepare] = field(default_factory=dict)  # view -> accepted pre-prepare
    prepares: dict[tuple[int, bytes], dict[str, Signed]] = field(default_factory=dict)
    commits: dict[tuple[int, bytes], dict[str, Signed]] = field(default_factory=dict)
    my_prepare: dict[int, Signed] = field(default_factory=dict)
    my_commit: dict[int, Signed] = field(default_factory=dict)
    prepared: PreparedProof | None = None  # the highest-view prepared certificate
    committed: PrePrepare | None = None


class Replica:
    """A PBFT replica; see the module docstring for the inputs and outputs."""

    def __init__(
        self, config: PbftConfig, sm: ReplicatedStateMachine, signer: Signer, verifier: Verifier,
        durable: Durable | None = None,
    ) -> None:
        if signer.identity not in config.replicas:
            raise ValueError(f"{signer.identity!r} is not one of the replicas {config.replicas}")
        self.cfg = config
        self.id = signer.identity
        self.sm = sm
        self._signer = signer
        self._verifier = verifier
        self._out = Output()
        self.now = 0
        self.dropped: Counter[str] = Counter()
        d = durable or Durable()
        self.view = d.view
        self.in_view_change = d.in_view_change
        self.low = d.stable_seq
        self.last_exec = d.stable_seq
        self._stable_proof = d.stable_proof
        self._stable_snapshot = d.stable_snapshot
        self._replies: dict[str, tuple[int, bytes]] = {}
        if d.stable_snapshot:
            self._install(d.stable_snapshot)
        self._votes: dict[tuple[str, int, int], bytes] = dict(d.votes)
        self._slots: dict[int, _Slot] = {}
        for p in d.prepared:
            self._slot(p.pre_prepare.head.seq).prepared = p
        self.quarantined: dict[str, Evidence] = {}
        for ev in d.evidence:
            bad = offender(ev, verifier)
            if bad is not None:
                self.quarantined[bad] = ev
        self._pending: dict[str, tuple[Signed, int]] = {}  # client -> (newest request, waiting since)
        proposed = [s for (k, v, s) in self._votes if k == "pre-prepare" and v == self.view]
        self._seq_next = max([self.low, *proposed]) + 1
        self._verified: dict[tuple[str, bytes, bytes], bool] = {}
        self._checkpoints: dict[int, dict[str, Signed]] = {}
        self._my_checkpoints: dict[int, Signed] = {}
        self._snapshots: dict[int, bytes] = {self.low: d.stable_snapshot} if self.low else {}
        self._said: dict[tuple[str, tuple[str, int, int]], Signed] = {}
        self._vcs: dict[int, dict[str, Signed]] = {}
        self._own_vc: Signed | None = None
        self._own_vcs: dict[int, Signed] = {}
        self._later: dict[int, set[str]] = {}  # later views other replicas work in -> who
        self._helped: dict[tuple[str, int], int] = {}  # (replica, view) -> tick we last answered it
        self._new_view: Signed | None = None
        self._vc_timeout = config.view_change_ticks
        self._vc_deadline = self.now + self._vc_timeout
        self._last_state_request = -config.resend_ticks
        self._progress = 0  # tick of the last execution
        if self.in_view_change:
            self._send_view_change()

    # ------------------------------------------------------------------ driver interface

    def drain(self) -> Output:
        out, self._out = self._out, Output()
        return out

    @property
    def primary(self) -> str:
        return self.cfg.primary(self.view)

    def status(self) -> ReplicaStatus:
        return ReplicaStatus(
            self.id, self.view, self.primary, self.in_view_change, self.low, self.last_exec,
            tuple(sorted(self.quarantined)), tuple(sorted(self.dropped.items())),
        )

    def durable(self) -> Durable:
        prepared = tuple(s.prepared for q, s in sorted(self._slots.items()) if q > self.low and s.prepared)
        return Durable(
            self.view, self.in_view_change, self.low, self._stable_snapshot, self._stable_proof,
            tuple(self._votes.items()), prepared, tuple(self.quarantined.values()),
        )

    def stable_checkpoint(self) -> tuple[int, bytes, tuple[Signed, ...]]:
        """The last stable checkpoint: (seq, state snapshot, its 2f+1 signed checkpoints); seq 0 when none."""
        return self.low, self._stable_snapshot, self._stable_proof

    def votes(self) -> dict[tuple[str, int, int], bytes]:
        """What this replica signed per (kind, view, seq) above its stable checkpoint (a copy).

        A driver that keeps only this across a restart (plus the view and the evidence)
        never makes an honest replica contradict itself; the state comes back by transfer.
        """
        return dict(self._votes)

    def tick(self) -> None:
        self.now += 1
        if self.in_view_change:
            # Move on only with 2f+1 view-changes for this view (paper, 4.5.2): a replica that ran
            # ahead alone would otherwise keep leaving each view just before the others reach it.
            hopeless = self.primary in self.quarantined
            if self.now >= self._vc_deadline or hopeless:
                if len(self._live_vcs(self.view)) >= self.cfg.quorum:
                    self._start_view_change(self.view + 1)
                elif self.now >= self._vc_deadline:
                    # Stuck without a quorum for this view: the replicas that would complete it may
                    # have moved on (and lost their view-change for it in a restart). Joining the
                    # lowest later view another trusted replica asks for is always safe, and only
                    # done when stuck, so one liar cannot hurry a group that is making progress.
                    later = [w for w, vs in self._vcs.items()
                             if w > self.view and any(r != self.id and r not in self.quarantined for r in vs)]
                    if later:
                        self._start_view_change(min(later))
                    else:
                        self._vc_deadline = self.now + self._vc_timeout
        elif self._pending and self.now - min(t for _, t in self._pending.values()) >= self._vc_timeout:
            self._start_view_change(self.view + 1)
        elif self.cfg.primary(self.view) == self.id:
            self._propose()
        if self.now % self.cfg.resend_ticks == 0:
            self._resend()

    def receive(self, data: bytes) -> None:
        """Handle one frame off the wire; anything invalid is dropped with a counted reason."""
        try:
            frame = decode_frame(data)
        except CodecError:
            self._drop("malformed", None)
            return
        if isinstance(frame, Evidence):
            self._on_evidence(frame)
            return
        signed = frame.header if isinstance(frame, PrePrepare) else frame
        if not self._authentic(signed):
            return
        m = signed.msg
        if isinstance(m, Request):
            if signed.signer != m.client:
                self._drop("request-signer-mismatch", signed.signer)
            else:
                self._on_request(signed, m)
            return
        if signed.signer not in self.cfg.replicas:
            self._drop("not-a-replica", signed.signer)
            return
        self._dispatch(frame, signed, m)

    # ------------------------------------------------------------------ quorum rules (overridable)

    def _prepare_quorum(self) -> int:
        """Prepares from distinct backups that, with the pre-prepare, make a request prepared: 2f."""
        return 2 * self.cfg.f

    def _commit_quorum(self) -> int:
        return 2 * self.cfg.f + 1

    def _already_executed(self, req: Request) -> bool:
        last = self._replies.get(req.client)
        return last is not None and last[0] >= req.timestamp

    def _check_signature(self, s: Signed) -> bool:
        """Verified once per distinct record: view changes and retransmissions repeat the same ones,
        and Ed25519 verification is most of a replica's CPU (a view-change storm once starved the
        replicas' MQTT keepalives on a loaded host)."""
        key = (s.signer, s.signature, s.body)
        ok = self._verified.get(key)
        if ok is None:
            if len(self._verified) >= _VERIFIED_CACHE:
                self._verified.clear()
            ok = self._verified[key] = self._verifier.verify(s.signer, s.body, s.signature)
        return ok

    # ------------------------------------------------------------------ helpers

    def _drop(self, reason: str, sender: str | None) -> None:
        self.dropped[reason] += 1
        self._out.events.append(Dropped(reason, sender))

    def _authentic(self, s: Signed) -> bool:
        if not self._verifier.knows(s.signer):
            self._drop("unknown-key", s.signer)
            return False
        if s.signer in self.quarantined:
            self._drop("quarantined", s.signer)
            return False
        if not self._check_signature(s):
            self._drop("bad-signature", s.signer)
            return False
        return True

    def _sign(self, body: Body) -> Signed:
        raw = encode_body(body)
        return Signed(raw, self.id, self._signer.sign(raw), body)

    def _send(self, dst: str | None, frame: Signed | PrePrepare | Evidence) -> None:
        self._out.sends.append(Send(dst, encode_frame(frame)))

    def _may_vote(self, kind: str, view: int, seq: int, digest: bytes) -> bool:
        """Never sign two different values for one slot, even after a restart."""
        key = (kind, view, seq)
        have = self._votes.setdefault(key, digest)
        return have == digest

    def _slot(self, seq: int) -> _Slot:
        slot = self._slots.get(seq)
        if slot is None:
            slot = self._slots[seq] = _Slot()
        return slot

    def _in_window(self, seq: int) -> bool:
        return self.low < seq <= self.low + self.cfg.window

    def _witness(self, s: Signed) -> bool:
        """Remember what ``s.signer`` said; on a contradiction quarantine it. True while it is trusted."""
        st = statement(s)
        if st is None:
            return True
        key = (s.signer, st[0])
        before = self._said.setdefault(key, s)
        if before is not s and conflicts(before, s):
            self._quarantine(s.signer, Evidence(before, s))
            return False
        return True

    def _quarantine(self, liar: str, ev: Evidence) -> None:
        if liar in self.quarantined or liar == self.id:
            return
        self.quarantined[liar] = ev
        self._out.events.append(Quarantined(liar, ev))
        self._send(None, ev)
        if liar == self.primary and not self.in_view_change:
            self._start_view_change(self.view + 1)

    def _dispatch(self, frame: Signed | PrePrepare, s: Signed, m: Body) -> None:
        if isinstance(frame, PrePrepare):
            self._on_pre_prepare(frame)
        elif isinstance(m, Prepare):
            self._on_prepare(s, m)
        elif isinstance(m, Commit):
            self._on_commit(s, m)
        elif isinstance(m, Checkpoint):
            self._on_checkpoint(s, m)
        elif isinstance(m, ViewChange):
            self._on_view_change(s, m)
        elif isinstance(m, NewView):
            self._on_new_view(s, m)
        elif isinstance(m, StateRequest):
            self._on_state_request(s, m)
        elif isinstance(m, StateReply):
            self._on_state_reply(s, m)
        else:
            self._drop("unexpected", s.signer)

    # ------------------------------------------------------------------ requests and batching

    def _valid_request(self, r: Signed) -> bool:
        m = r.msg
        return (
            isinstance(m, Request) and r.signer == m.client and m.client not in self.cfg.replicas
            and len(m.operation) <= self.cfg.max_request_bytes and self._verifier.knows(r.signer)
            and self._check_signature(r)
        )

    def _on_request(self, s: Signed, m: Request) -> None:
        if m.client in self.cfg.replicas:
            self._drop("request-from-replica", s.signer)
            return
        if len(m.operation) > self.cfg.max_request_bytes:
            self._drop("oversized-request", s.signer)
            return
        last = self._replies.get(m.client)
        if self._already_executed(m):
            if last is not None and last[0] == m.timestamp:
                self._send_reply(m.client, last[0], last[1])
            else:
                self._drop("replayed-request", s.signer)
            return
        have = self._pending.get(m.client)
        if have is None or have[0].msg.timestamp < m.timestamp:  # type: ignore[union-attr]
            self._pending[m.client] = (s, self.now)
        if self.primary == self.id and not self.in_view_change:
            self._propose()

    def _propose(self) -> None:
        assigned = {
            (r.msg.client, r.msg.timestamp)  # type: ignore[union-attr]
            for q, slot in self._slots.items() if q > self.last_exec and self.view in slot.pp
            for r in slot.pp[self.view].batch
        }
        waiting = sorted(
            (since, r.msg.client, r) for r, since in self._pending.values()  # type: ignore[union-attr]
            if (r.msg.client, r.msg.timestamp) not in assigned  # type: ignore[union-attr]
        )
        queue = [r for _, _, r in waiting]
        while queue:
            if self._seq_next - 1 - self.last_exec >= self.cfg.max_inflight:
                return
            if self._seq_next > self.low + self.cfg.window:
                return
            batch, queue = tuple(queue[: self.cfg.batch_max]), queue[self.cfg.batch_max:]
            seq = self._seq_next
            self._seq_next += 1
            digest = batch_digest(batch)
            if not self._may_vote("pre-prepare", self.view, seq, digest):
                continue  # signed something else here before a restart: leave the slot to a view change
            self._emit_pre_prepare(seq, batch, digest)

    def _emit_pre_prepare(self, seq: int, batch: tuple[Signed, ...], digest: bytes) -> None:
        pp = PrePrepare(self._sign(Header(self.view, seq, digest)), batch)
        self._slot(seq).pp[self.view] = pp
        self._send(None, pp)

    # ------------------------------------------------------------------ normal case

    def _on_pre_prepare(self, pp: PrePrepare) -> None:
        h, signer = pp.head, pp.header.signer
        if not self._witness(pp.header):
            return
        if signer != self.cfg.primary(h.view):
            self._drop("pre-prepare-not-from-primary", signer)
        elif h.view != self.view or self.in_view_change:
            self._drop("stale-view" if h.view < self.view else "other-view", signer)
        elif not self._in_window(h.seq):
            self._drop("outside-window", signer)
        elif len(pp.batch) > self.cfg.batch_max:
            self._drop("oversized-batch", signer)
        elif batch_digest(pp.batch) != h.digest:
            self._drop("bad-digest", signer)
        elif not all(self._valid_request(r) for r in pp.batch):
            self._drop("bad-request-in-batch", signer)
        else:
            self._accept_pre_prepare(pp)

    def _accept_pre_prepare(self, pp: PrePrepare) -> None:
        h = pp.head
        slot = self._slot(h.seq)
        have = slot.pp.get(h.view)
        if have is not None:
            return  # a duplicate, or a conflict _witness already dealt with
        slot.pp[h.view] = pp
        if self.cfg.primary(h.view) != self.id and self._may_vote("prepare", h.view, h.seq, h.digest):
            mine = self._sign(Prepare(h.view, h.seq, h.digest, pp.header))
            slot.my_prepare[h.view] = mine
            slot.prepares.setdefault((h.view, h.digest), {})[self.id] = mine
            self._send(None, mine)
        self._check_prepared(h.seq, h.view)

    def _on_prepare(self, s: Signed, m: Prepare) -> None:
        hs = m.header
        h = hs.msg
        if not (
            isinstance(h, Header) and hs.signer == self.cfg.primary(m.view) and (h.view, h.seq, h.digest)
            == (m.view, m.seq, m.digest) and hs.signer not in self.quarantined and self._check_signature(hs)
        ):
            self._drop("bad-prepare", s.signer)
            return
        if not (self._witness(s) and self._witness(hs)):
            return
        if s.signer == self.cfg.primary(m.view):
            self._drop("prepare-from-primary", s.signer)
        elif m.view != self.view or self.in_view_change:
            self._drop("stale-view" if m.view < self.view else "other-view", s.signer)
            self._note_later_view(s.signer, m.view)
        elif not self._in_window(m.seq):
            self._drop("outside-window", s.signer)
        else:
            self._slot(m.seq).prepares.setdefault((m.view, m.digest), {})[s.signer] = s
            self._check_prepared(m.seq, m.view)

    def _check_prepared(self, seq: int, view: int) -> None:
        slot = self._slots.get(seq)
        pp = slot.pp.get(view) if slot else None
        if slot is None or pp is None:
            return
        d = pp.head.digest
        preps = {r: p for r, p in slot.prepares.get((view, d), {}).items() if r not in self.quarantined}
        if len(preps) < self._prepare_quorum():
            return
        if slot.prepared is None or slot.prepared.pre_prepare.head.view < view:
            slot.prepared = PreparedProof(pp, tuple(p for _, p in sorted(preps.items())))
        if view not in slot.my_commit and self._may_vote("commit", view, seq, d):
            mine = self._sign(Commit(view, seq, d))
            slot.my_commit[view] = mine
            slot.commits.setdefault((view, d), {})[self.id] = mine
            self._send(None, mine)
        self._check_committed(seq, view)

    def _on_commit(self, s: Signed, m: Commit) -> None:
        if not self._witness(s):
            return
        if m.view != self.view or self.in_view_change:
            self._drop("stale-view" if m.view < self.view else "other-view", s.signer)
            self._note_later_view(s.signer, m.view)
        elif not self._in_window(m.seq):
            self._drop("outside-window", s.signer)
        else:
            self._slot(m.seq).commits.setdefault((m.view, m.digest), {})[s.signer] = s
            self._check_committed(m.seq, m.view)

    def _check_committed(self, seq: int, view: int) -> None:
        slot = self._slots.get(seq)
        if slot is None or slot.committed is not None or slot.prepared is None:
            return
        pp = slot.prepared.pre_prepare
        if pp.head.view != view:
            return
        commits = [r for r in slot.commits.get((view, pp.head.digest), {}) if r not in self.quarantined]
        if len(commits) >= self._commit_quorum():
            slot.committed = pp
            self._execute()

    def _execute(self) -> None:
        progressed = False
        while True:
            slot = self._slots.get(self.last_exec + 1)
            if slot is None or slot.committed is None:
                break
            seq = self.last_exec + 1
            results: list[tuple[str, int, bytes]] = []
            for r in slot.committed.batch:
                req = r.msg
                assert isinstance(req, Request)
                if self._already_executed(req):
                    continue  # executed at an earlier sequence number
                result = self.sm.apply(req.operation, req.client)
                self._replies[req.client] = (req.timestamp, result)
                self._send_reply(req.client, req.timestamp, result)
                pending = self._pending.get(req.client)
                if pending is not None and pending[0].msg.timestamp <= req.timestamp:  # type: ignore[union-attr]
                    del self._pending[req.client]
                results.append((req.client, req.timestamp, result))
            self.last_exec = seq
            progressed = True
            self._out.events.append(Executed(seq, slot.committed.head.digest, tuple(results)))
            if seq % self.cfg.checkpoint_interval == 0:
                self._take_checkpoint(seq)
        if progressed:
            self._progress = self.now
            self._vc_timeout = self.cfg.view_change_ticks
            self._pending = {c: (r, self.now) for c, (r, _) in self._pending.items()}
            if self.primary == self.id and not self.in_view_change:
                self._propose()

    def _send_reply(self, client: str, timestamp: int, result: bytes) -> None:
        self._send(client, self._sign(Reply(self.view, client, timestamp, result)))

    # ------------------------------------------------------------------ checkpoints and state transfer

    def _state_bytes(self) -> bytes:
        replies = sorted([c, ts, res] for c, (ts, res) in self._replies.items())
        return msgpack.packb([self.sm.snapshot(), replies], use_bin_type=True)

    def _install(self, snapshot: bytes) -> None:
        sm_state, replies = msgpack.unpackb(snapshot, raw=False)
        self.sm.restore(sm_state)
        self._replies = {c: (ts, res) for c, ts, res in replies}

    def _take_checkpoint(self, seq: int) -> None:
        snap = self._state_bytes()
        self._snapshots[seq] = snap
        mine = self._sign(Checkpoint(seq, hashlib.sha256(snap).digest()))
        self._my_checkpoints[seq] = mine
        self._checkpoints.setdefault(seq, {})[self.id] = mine
        self._send(None, mine)
        self._check_stable(seq)

    def _on_checkpoint(self, s: Signed, m: Checkpoint) -> None:
        if not self._witness(s):
            return
        if m.seq <= self.low:
            return  # old news, harmless (retransmitted so laggards can catch up)
        if m.seq > self.low + 4 * self.cfg.window:
            self._drop("checkpoint-too-far", s.signer)
            return
        self._checkpoints.setdefault(m.seq, {})[s.signer] = s
        self._check_stable(m.seq)

    def _certificate(self, seq: int) -> tuple[bytes, tuple[Signed, ...]] | None:
        by_digest: dict[bytes, list[Signed]] = {}
        for r, c in sorted(self._checkpoints.get(seq, {}).items()):
            if r not in self.quarantined:
                by_digest.setdefault(c.msg.state_digest, []).append(c)  # type: ignore[union-attr]
        for d, cs in by_digest.items():
            if len(cs) >= self.cfg.quorum:
                return d, tuple(cs)
        return None

    def _check_stable(self, seq: int) -> None:
        cert = self._certificate(seq)
        if cert is None:
            return
        digest, proof = cert
        snap = self._snapshots.get(seq)
        if snap is not None and hashlib.sha256(snap).digest() == digest:
            self._make_stable(seq, proof, snap)
        elif seq > self.last_exec:
            self._request_state(seq, [c.signer for c in proof])

    def _make_stable(self, seq: int, proof: tuple[Signed, ...], snap: bytes) -> None:
        if seq <= self.low:
            return
        self.low, self._stable_proof, self._stable_snapshot = seq, proof, snap
        for q in [q for q in self._slots if q <= seq]:
            del self._slots[q]
        for table in (self._checkpoints, self._snapshots, self._my_checkpoints):
            for q in [q for q in table if q < seq]:
                del table[q]
        self._votes = {k: d for k, d in self._votes.items() if k[2] > seq}
        self._said = {k: s for k, s in self._said.items() if k[1][0] == "checkpoint" or k[1][2] > seq}
        self._seq_next = max(self._seq_next, seq + 1)
        if self.primary == self.id and not self.in_view_change:
            self._propose()

    def _request_state(self, seq: int, holders: list[str]) -> None:
        if self.now - self._last_state_request < self.cfg.resend_ticks:
            return
        self._last_state_request = self.now
        ask = self._sign(StateRequest(seq))
        for r in [h for h in holders if h != self.id][: self.cfg.f + 1]:
            self._send(r, ask)

    def _on_state_request(self, s: Signed, m: StateRequest) -> None:
        if self.low >= m.seq and self.low > 0:
            self._send(s.signer, self._sign(StateReply(self.low, self._stable_snapshot, self._stable_proof)))

    def _valid_checkpoint_proof(self, seq: int, proof: tuple[Signed, ...]) -> bytes | None:
        """The state digest 2f+1 distinct replicas signed for ``seq``, or None."""
        digests = set()
        signers = set()
        for c in proof:
            m = c.msg
            if not (
                isinstance(m, Checkpoint) and m.seq == seq and c.signer in self.cfg.replicas
                and c.signer not in signers and self._check_signature(c)
            ):
                return None
            signers.add(c.signer)
            digests.add(m.state_digest)
        if len(digests) != 1 or len(signers) < self.cfg.quorum:
            return None
        return digests.pop()

    def _on_state_reply(self, s: Signed, m: StateReply) -> None:
        if m.seq <= self.last_exec:
            return
        digest = self._valid_checkpoint_proof(m.seq, m.proof)
        if digest is None or hashlib.sha256(m.snapshot).digest() != digest:
            self._drop("bad-state-reply", s.signer)
            return
        try:
            self._install(m.snapshot)
        except (ValueError, TypeError, KeyError) as exc:  # a proven state this build cannot read
            self._drop(f"unreadable-state:{type(exc).__name__}", s.signer)
            return
        self.last_exec = m.seq
        self._snapshots[m.seq] = m.snapshot
        self._pending = {
            c: p for c, p in self._pending.items()
            if self._replies.get(c, (-1, b""))[0] < p[0].msg.timestamp  # type: ignore[union-attr]
        }
        self._out.events.append(StateInstalled(m.seq))
        self._make_stable(m.seq, m.proof, m.snapshot)
        self._execute()

    # ------------------------------------------------------------------ view change

    def _start_view_change(self, target: int) -> None:
        if target <= self.view and self.in_view_change:
            return
        self.view = max(target, self.view)
        self.in_view_change = True
        self._vc_deadline = self.now + self._vc_timeout
        # doubles until a request executes (paper, section 4.5.2), up to a cap
        cap = self.cfg.view_change_ticks << self.cfg.view_change_doublings
        self._vc_timeout = min(self._vc_timeout * 2, cap)
        self._send_view_change()

    def _live_vcs(self, view: int) -> dict[str, Signed]:
        return {r: s for r, s in self._vcs.get(view, {}).items() if r not in self.quarantined}

    def _send_view_change(self) -> None:
        prepared = tuple(s.prepared for q, s in sorted(self._slots.items()) if q > self.low and s.prepared)
        self._own_vc = self._sign(ViewChange(self.view, self.low, self._stable_proof, prepared))
        self._own_vcs[self.view] = self._own_vc
        for old in [w for w in self._own_vcs if w < self.view - 8]:
            del self._own_vcs[old]
        self._helped = {k: t for k, t in self._helped.items() if k[1] >= self.view - 8}
        self._vcs.setdefault(self.view, {})[self.id] = self._own_vc
        self._send(None, self._own_vc)
        self._maybe_new_view()

    def _valid_view_change(self, m: ViewChange) -> bool:
        if m.stable_seq > 0 and self._valid_checkpoint_proof(m.stable_seq, m.stable_proof) is None:
            return False
        seqs = set()
        for p in m.prepared:
            hs, h = p.pre_prepare.header, p.pre_prepare.head
            if h.seq in seqs or not (m.stable_seq < h.seq <= m.stable_seq + self.cfg.window):
                return False
            seqs.add(h.seq)
            if h.view >= m.new_view or hs.signer != self.cfg.primary(h.view) or not self._check_signature(hs):
                return False
            if batch_digest(p.pre_prepare.batch) != h.digest or not all(
                self._valid_request(r) for r in p.pre_prepare.batch
            ):
                return False
            backups = set()
            for ps in p.prepares:
                pm = ps.msg
                if not (
                    isinstance(pm, Prepare) and (pm.view, pm.seq, pm.digest) == (h.view, h.seq, h.digest)
                    and ps.signer in self.cfg.replicas and ps.signer != hs.signer
                    and self._check_signature(ps)
                ):
                    return False
                backups.add(ps.signer)
            if len(backups) < self._prepare_quorum():
                return False
        return True

    def _on_view_change(self, s: Signed, m: ViewChange) -> None:
        v = m.new_view
        if v < self.view or (v == self.view and not self.in_view_change):
            # help a replica that is behind, at most once per resend period each (two replicas that
            # both moved on would otherwise answer each other's old view-changes forever)
            if self.now - self._helped.get((s.signer, v), -self.cfg.resend_ticks) < self.cfg.resend_ticks:
                return
            if v == self.view and self._new_view is not None and self.primary == self.id:
                self._helped[(s.signer, v)] = self.now
                self._send(s.signer, self._new_view)  # it missed the new-view message
            elif v in self._own_vcs and v != self.view:
                self._helped[(s.signer, v)] = self.now
                self._send(s.signer, self._own_vcs[v])  # it may be one short of a quorum for v
            return
        if not self._valid_view_change(m):
            self._drop("bad-view-change", s.signer)
            return
        self._vcs.setdefault(v, {})[s.signer] = s
        # join: f+1 replicas want a later view, so at least one honest one does (liveness, 4.5.2)
        ahead = {r for w, vs in self._vcs.items() if w > self.view for r in vs if r != self.id}
        if len(ahead) >= self.cfg.f + 1:
            self._start_view_change(min(w for w, vs in self._vcs.items() if w > self.view and vs))
        self._maybe_new_view()

    def _note_later_view(self, signer: str, view: int) -> None:
        """f+1 replicas working in a later view (so at least one honest one is): ask to join it.

        This is how a replica that restarted, or slept through a view change, finds the group
        again; the primary of that view answers the view-change with its new-view message.
        """
        if view <= self.view or (self.in_view_change and view <= self.view):
            return
        seen = self._later.setdefault(view, set())
        seen.add(signer)
        if len(seen) >= self.cfg.f + 1:
            self._later = {w: rs for w, rs in self._later.items() if w > view}
            self._start_view_change(view)

    def _maybe_new_view(self) -> None:
        v = self.view
        if not self.in_view_change or self.cfg.primary(v) != self.id:
            return
        vcs = self._live_vcs(v)
        if len(vcs) < self.cfg.quorum or self.id not in vcs:
            return
        chosen = [vcs[self.id], *[s for r, s in sorted(vcs.items()) if r != self.id]][: self.cfg.quorum]
        min_s, plan = self._plan([c.msg for c in chosen])  # type: ignore[misc]
        pps = []
        for seq, batch in plan:
            digest = batch_digest(batch)
            if not self._may_vote("pre-prepare", v, seq, digest):
                return  # cannot happen for an honest replica; refuse rather than equivocate
            pps.append(PrePrepare(self._sign(Header(v, seq, digest)), batch))
        self._new_view = self._sign(NewView(v, tuple(chosen), tuple(pps)))
        self._send(None, self._new_view)
        self._enter_view(v, min_s, [c.msg for c in chosen], pps)  # type: ignore[misc]

    def _plan(self, vcs: list[ViewChange]) -> tuple[int, list[tuple[int, tuple[Signed, ...]]]]:
        """The new primary's choice (paper's O set): the highest-view prepared batch per slot, else null."""
        min_s = max(m.stable_seq for m in vcs)
        best: dict[int, PreparedProof] = {}
        for m in vcs:
            for p in m.prepared:
                h = p.pre_prepare.head
                cur = best.get(h.seq)
                ch = cur.pre_prepare.head if cur is not None else None
                if ch is None or (h.view, h.digest) > (ch.view, ch.digest):
                    best[h.seq] = p
        max_s = max([min_s, *best])
        return min_s, [
            (q, best[q].pre_prepare.batch if q in best else ()) for q in range(min_s + 1, max_s + 1)
        ]

    def _on_new_view(self, s: Signed, m: NewView) -> None:
        v = m.view
        if v < self.view or (v == self.view and not self.in_view_change):
            return
        if s.signer != self.cfg.primary(v):
            self._drop("new-view-not-from-primary", s.signer)
            return
        signers = set()
        vcs: list[ViewChange] = []
        for vs in m.view_changes:
            vm = vs.msg
            if not (
                isinstance(vm, ViewChange) and vm.new_view == v and vs.signer in self.cfg.replicas
                and vs.signer not in signers and self._check_signature(vs) and self._valid_view_change(vm)
            ):
                self._drop("bad-new-view", s.signer)
                return
            signers.add(vs.signer)
            vcs.append(vm)
        if len(signers) < self.cfg.quorum:
            self._drop("bad-new-view", s.signer)
            return
        min_s, plan = self._plan(vcs)
        got = [(p.head.view, p.head.seq, p.head.digest, p.header.signer) for p in m.pre_prepares]
        want = [(v, q, batch_digest(b), s.signer) for q, b in plan]
        if got != want or not all(
            self._check_signature(p.header) and batch_digest(p.batch) == p.head.digest for p in m.pre_prepares
        ):
            self._drop("bad-new-view", s.signer)
            return
        for p in m.pre_prepares:
            if not self._witness(p.header):
                return
        self._enter_view(v, min_s, vcs, list(m.pre_prepares))

    def _enter_view(self, v: int, min_s: int, vcs: list[ViewChange], pps: list[PrePrepare]) -> None:
        self.view, self.in_view_change = v, False
        self._vcs = {w: vs for w, vs in self._vcs.items() if w > v}
        if min_s > self.low:
            proof = next(m.stable_proof for m in vcs if m.stable_seq == min_s)
            snap = self._snapshots.get(min_s)
            if snap is not None:
                self._make_stable(min_s, proof, snap)
            else:
                self._checkpoints.setdefault(min_s, {}).update({c.signer: c for c in proof})
                self._request_state(min_s, [c.signer for c in proof])
        for pp in pps:
            if pp.head.seq > self.low:
                self._accept_pre_prepare(pp)
        self._seq_next = max([self._seq_next if self.primary != self.id else 0, self.low, self.last_exec,
                              *(p.head.seq for p in pps)]) + 1
        self._pending = {c: (r, self.now) for c, (r, _) in self._pending.items()}
        self._out.events.append(ViewEntered(v, self.primary))
        if self.primary == self.id:
            self._propose()

    # ------------------------------------------------------------------ evidence and retransmission

    def _on_evidence(self, ev: Evidence) -> None:
        liar = offender(ev, self._verifier)
        if liar is None or liar not in self.cfg.replicas:
            self._drop("bad-evidence", None)
            return
        self._quarantine(liar, ev)

    def _resend(self) -> None:
        """Send again what this replica said about open slots: the network may have lost it."""
        if self.in_view_change:
            if self._own_vc is not None:
                self._send(None, self._own_vc)
        else:
            # only when stalled: while requests execute, the others evidently have what they need
            stalled = self.now - self._progress >= self.cfg.resend_ticks
            busy = self._pending or self.last_exec > self.low or any(q > self.last_exec for q in self._slots)
            if busy and stalled:
                for q, slot in sorted(self._slots.items()):
                    if q <= self.low:
                        continue
                    pp = slot.pp.get(self.view)
                    if pp is not None and self.primary == self.id:
                        self._send(None, pp)
                    for mine in (slot.my_prepare.get(self.view), slot.my_commit.get(self.view)):
                        if mine is not None:
                            self._send(None, mine)
        for q, c in self._my_checkpoints.items():
            if q >= self.low:
                self._send(None, c)
        for ev in self.quarantined.values():
            self._send(None, ev)
