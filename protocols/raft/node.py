"""RaftNode: the pure Raft state machine (after etcd-io/raft).

Feed it ``tick()``, ``step(message)``, ``propose(...)``; then drain ``ready()``,
follow the order rule documented in :mod:`protocols.raft.ready` and report each
batch made durable with ``advance(ready)``. It never
touches a clock, a socket or a disk, so the simulator and the MQTT driver run
the very same object.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from protocols.raft.config import RaftConfig, RandomSource, StateMachine
from protocols.raft.log import RaftLog
from protocols.raft.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    Message,
    PersistentState,
    Snapshot,
    SnapshotRequest,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from protocols.raft.progress import Progress
from protocols.raft.ready import (
    Accepted,
    AppliedEntry,
    BecameLeader,
    ClientReply,
    Event,
    LeaderChanged,
    MembersChanged,
    NotLeader,
    ProposeResult,
    Ready,
    Rejected,
    must_sync,
)
from protocols.raft.sessions import Sessions
from protocols.raft.status import RaftStatus


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class RaftNode:
    """One member of a Raft group. ``members`` is the bootstrap configuration (the same on every node).

    A node that joins a running group starts with no members at all: it never
    campaigns, and learns the configuration (including the CONFIG entry that
    adds it) from the leader's appends or snapshot.

    The few rules that make Raft safe live in small methods (``_grants_vote``,
    ``_matches_prev``, ``_commit_allowed``, ``_must_sync``, ``sessions_class``) so tests can break
    one on purpose and show that the simulator's checkers catch it.
    """

    sessions_class: type[Sessions] = Sessions

    def __init__(
        self,
        node_id: str,
        members: Iterable[str],
        state_machine: StateMachine,
        rng: RandomSource,
        config: RaftConfig | None = None,
        persisted: PersistentState | None = None,
    ) -> None:
        self.id = node_id
        self.config = config or RaftConfig()
        self._sm = state_machine
        self._rng = rng
        self._bootstrap = tuple(sorted(set(members)))
        p = persisted or PersistentState()
        snap = p.snapshot
        self._snapshot: Snapshot | None = snap
        self.log = RaftLog(snap.index if snap else 0, snap.term if snap else 0, p.entries)
        self._sessions = self.sessions_class(snap.sessions if snap else ())
        if snap:
            self._sm.restore(snap.data)
        self.term = p.hard_state.term
        self.voted_for = p.hard_state.voted_for
        self.applied = self.log.snapshot_index
        self.commit = min(max(p.hard_state.commit, self.applied), self.log.last_index)
        self._config_index, self.members = self._config_at(self.log.last_index)
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = self._random_timeout()
        self._votes: dict[str, bool] = {}
        self._progress: dict[str, Progress] = {}
        self._transferee: str | None = None
        # pending output, drained by ready()
        self._msgs: list[Message] = []
        self._replies: list[ClientReply] = []
        self._applied_out: list[AppliedEntry] = []
        self._events: list[Event] = []
        self._persisted_hs = p.hard_state  # the last hard state handed to the driver
        # What the driver has confirmed durable (advance): the (term, vote) and the log up to
        # _stable. A leader counts itself toward a quorum only up to _stable (thesis 10.2.1: it
        # may replicate entries before its own disk write finishes), and sends appends ahead of
        # the write only in a term whose vote is already durable.
        self._durable_term_vote = (p.hard_state.term, p.hard_state.voted_for)
        self._stable = self.log.last_index
        self._snapshot_dirty = False
        self._unstable_from: int | None = None
        self._apply_committed()

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        """Advance logical time by one tick."""
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self._election_elapsed >= self._timeout and self.id in self.members:
            self._campaign(pre_vote=self.config.pre_vote)

    def step(self, m: Message) -> None:
        """Handle one message from a peer (any message, any order, duplicates included)."""
        if m.dst != self.id:
            return
        if m.term > self.term:
            if isinstance(m, VoteRequest):
                if not m.transfer and self._in_lease():
                    return  # a stable leader exists: a rejoining node must not disrupt it
                if m.pre_vote:
                    self._on_vote_request(m)
                    return
                self._become_follower(m.term, None)
            elif isinstance(m, VoteResponse) and m.pre_vote and m.granted:
                pass  # a pre-vote grant carries the proposed term, not the voter's
            else:
                lead = m.src if isinstance(m, AppendRequest | SnapshotRequest | TimeoutNow) else None
                self._become_follower(m.term, lead)
        elif m.term < self.term:
            if isinstance(m, AppendRequest | SnapshotRequest):
                # tell a stale leader about the newer term so it steps down
                self._send(AppendResponse(self.id, m.src, self.term, success=False))
            elif isinstance(m, VoteRequest) and m.pre_vote:
                self._send(VoteResponse(self.id, m.src, self.term, granted=False, pre_vote=True))
            return

        if isinstance(m, VoteRequest):
            self._on_vote_request(m)
        elif isinstance(m, VoteResponse):
            self._on_vote_response(m)
        elif isinstance(m, AppendRequest):
            self._on_append(m)
        elif isinstance(m, AppendResponse):
            self._on_append_response(m)
        elif isinstance(m, SnapshotRequest):
            self._on_snapshot(m)
        elif isinstance(m, TimeoutNow) and self.id in self.members and self.role is not Role.LEADER:
            self._campaign(pre_vote=False, transfer=True)

    def propose(self, command: bytes, client_id: str = "", request_seq: int = 0) -> ProposeResult:
        """Append a client command if this node leads; a retry with the same seq is applied once."""
        if self.role is not Role.LEADER:
            return NotLeader(self.leader)
        if self._transferee is not None:
            return Rejected("leadership transfer in progress")
        entry = Entry(self.term, self.log.last_index + 1, EntryKind.COMMAND, command, client_id, request_seq)
        self._append_as_leader(entry)
        return Accepted(entry.index, entry.term)

    def propose_membership(self, add: str | None = None, remove: str | None = None) -> ProposeResult:
        """Add or remove exactly one voter; the new set takes effect when the entry is appended."""
        if self.role is not Role.LEADER:
            return NotLeader(self.leader)
        if (add is None) == (remove is None):
            return Rejected("give exactly one of add/remove")
        if remove == self.id:
            return Rejected("a leader cannot remove itself; transfer leadership first")
        if self._transferee is not None:
            return Rejected("leadership transfer in progress")
        if self.log.term_at(self.commit) != self.term:
            return Rejected("leader has not committed an entry of its term yet")
        if any(e.kind is EntryKind.CONFIG for e in self.log.entries(self.commit + 1)):
            return Rejected("a membership change is still uncommitted")
        members = set(self.members)
        if add is not None:
            if add in members:
                return Rejected(f"{add} is already a member")
            members.add(add)
        else:
            if remove not in members:
                return Rejected(f"{remove} is not a member")
            members.discard(remove)
        entry = Entry(self.term, self.log.last_index + 1, EntryKind.CONFIG, members=tuple(sorted(members)))
        self._append_as_leader(entry)
        return Accepted(entry.index, entry.term)

    def transfer_leadership(self, target: str) -> bool:
        """Hand leadership to ``target`` once its log is caught up; False if not possible now."""
        if self.role is not Role.LEADER or target == self.id or target not in self.members:
            return False
        self._transferee = target
        self._election_elapsed = 0  # the transfer is abandoned after one election timeout
        pr = self._progress[target]
        if pr.match == self.log.last_index:
            self._send(TimeoutNow(self.id, target, self.term))
        else:
            self._send_append(target)
        return True

    @property
    def transferee(self) -> str | None:
        """The node a leadership transfer is handing over to (None: no transfer in progress)."""
        return self._transferee

    def transfer_candidate(self) -> str | None:
        """Leader only: the follower to hand over to when the operator named none.

        The most caught-up member heard from in the current lease window, so the
        transfer finishes quickly and does not pick a dead node.
        """
        if self.role is not Role.LEADER:
            return None
        ranked = sorted(
            ((pr.recent_active, pr.match, p) for p, pr in self._progress.items() if p in self.members),
            key=lambda t: (not t[0], -t[1], t[2]),
        )
        return ranked[0][2] if ranked else None

    def leader_gone(self, leader: str) -> None:
        """A hint that ``leader``'s session died (its MQTT will arrived): stop waiting for it.

        Only liveness depends on this: the lease is dropped and the election
        fires within a random ``[0, election_ticks)`` ticks instead of a full
        timeout, keeping the randomisation that avoids split votes.
        """
        if self.role is Role.LEADER or self.leader != leader:
            return
        self._set_leader(None)
        self._election_elapsed = max(self._election_elapsed, self.config.election_ticks)

    # ----------------------------------------------------------------- outputs

    def ready(self) -> Ready:
        """Drain everything produced since the last call (see :class:`Ready` for the order rule)."""
        hs = HardState(self.term, self.voted_for, self.commit)
        hard_state = hs if hs != self._persisted_hs else None
        previous, self._persisted_hs = self._persisted_hs, hs
        if (self.term, self.voted_for) == self._durable_term_vote:
            # a leader's appends may leave before its own write: only counting waits for it
            early: tuple[Message, ...] = tuple(m for m in self._msgs if isinstance(m, AppendRequest))
            late: tuple[Message, ...] = tuple(m for m in self._msgs if not isinstance(m, AppendRequest))
        else:
            early, late = (), tuple(self._msgs)
        snapshot = self._snapshot if self._snapshot_dirty else None
        if snapshot is not None:
            entries = self.log.entries(self.log.snapshot_index + 1)
        elif self._unstable_from is not None:
            entries = self.log.entries(self._unstable_from)
        else:
            entries = ()
        rd = Ready(
            hard_state, snapshot, entries, late, tuple(self._replies),
            tuple(self._applied_out), tuple(self._events), early,
            self._must_sync(hard_state, previous, entries, snapshot),
        )
        self._snapshot_dirty = False
        self._unstable_from = None
        self._msgs, self._replies, self._applied_out, self._events = [], [], [], []
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver made ``rd`` durable (call it for every Ready, in order, after its write).

        A leader counts its own log toward a commit quorum only up to what was
        reported here, so this may commit entries (drain ``ready()`` again).
        """
        if rd.hard_state is not None:
            self._durable_term_vote = (rd.hard_state.term, rd.hard_state.voted_for)
        if rd.entries:
            last = rd.entries[-1]
            self._persisted(last.index, last.term)
        elif rd.snapshot is not None:
            self._persisted(rd.snapshot.index, rd.snapshot.term)

    def _must_sync(
        self, hard_state: HardState | None, previous: HardState, entries: tuple[Entry, ...],
        snapshot: Snapshot | None,
    ) -> bool:
        """The durability rule of a batch (a method so a test can break it on purpose)."""
        return must_sync(hard_state, previous, len(entries), snapshot is not None)

    def _persisted(self, index: int, term: int) -> None:
        # The log may have changed since that Ready (a truncation lowers _stable); the same term at
        # the same index means the same prefix (log matching), so the durable copy still holds it.
        if index > self._stable and index <= self.log.last_index and self.log.term_at(index) == term:
            self._stable = index
            self._maybe_commit()

    def status(self) -> RaftStatus:
        return RaftStatus(
            self.id, self.role.value, self.term, self.leader, self.commit, self.applied,
            self.log.last_index, self.log.snapshot_index, self.members,
        )

    def members_at(self, index: int) -> tuple[str, ...]:
        """The member set in force at ``index`` (the latest config entry at or before it)."""
        return self._config_at(index)[1]

    def _config_at(self, index: int) -> tuple[int, tuple[str, ...]]:
        i = min(index, self.log.last_index)
        while i > self.log.snapshot_index:
            e = self.log.entry(i)
            if e.kind is EntryKind.CONFIG:
                return i, e.members
            i -= 1
        return 0, self._snapshot.members if self._snapshot else self._bootstrap

    # ---------------------------------------------------------------- elections

    def _random_timeout(self) -> int:
        return self.config.election_ticks + self._rng.below(self.config.election_ticks)

    def _in_lease(self) -> bool:
        return (
            self.config.check_quorum
            and self.leader is not None
            and self._election_elapsed < self.config.election_ticks
        )

    def _quorum(self) -> int:
        return len(self.members) // 2 + 1

    def _campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        self._election_elapsed = 0
        self._timeout = self._random_timeout()
        self._set_leader(None)
        if pre_vote:
            self.role = Role.PRE_CANDIDATE
            vote_term = self.term + 1
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.voted_for = self.id
            vote_term = self.term
        self._votes = {self.id: True}
        if self._tally():
            return
        for peer in self.members:
            if peer != self.id:
                self._send(VoteRequest(
                    self.id, peer, vote_term, self.log.last_index, self.log.last_term, pre_vote, transfer,
                ))

    def _grants_vote(self, m: VoteRequest) -> bool:
        """May this node vote for ``m.src``? (one vote per term; the candidate's log must be up to date)."""
        if not self.log.is_up_to_date(m.last_term, m.last_index):
            return False
        if m.pre_vote:
            return m.term > self.term
        return self.voted_for in (None, m.src)

    def _on_vote_request(self, m: VoteRequest) -> None:
        granted = self._grants_vote(m)
        if granted and not m.pre_vote:
            self.voted_for = m.src
            self._election_elapsed = 0
        term = m.term if (m.pre_vote and granted) else self.term
        self._send(VoteResponse(self.id, m.src, term, granted, m.pre_vote))

    def _on_vote_response(self, m: VoteResponse) -> None:
        expected = (self.role is Role.PRE_CANDIDATE and m.pre_vote and m.term == self.term + 1) or (
            self.role is Role.CANDIDATE and not m.pre_vote and m.term == self.term
        )
        if expected:
            self._votes[m.src] = m.granted
            self._tally()

    def _tally(self) -> bool:
        """Act on the votes so far; True when the (pre-)election is decided."""
        granted = sum(1 for p, g in self._votes.items() if g and p in self.members)
        rejected = sum(1 for p, g in self._votes.items() if not g and p in self.members)
        if granted >= self._quorum():
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
            return True
        if rejected >= self._quorum():
            self._become_follower(self.term, None)
            return True
        return False

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term > self.term:
            self.term = term
            self.voted_for = None
        self.role = Role.FOLLOWER
        self._set_leader(leader)
        self._election_elapsed = 0
        self._timeout = self._random_timeout()
        self._transferee = None
        self._progress = {}

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self._set_leader(self.id)
        self._events.append(BecameLeader(self.term, self.id))
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._transferee = None
        self._progress = {
            p: Progress(match=0, next=self.log.last_index + 1) for p in self.members if p != self.id
        }
        # a leader may only commit entries of its own term by counting, so it appends one at once
        self._append_as_leader(Entry(self.term, self.log.last_index + 1, EntryKind.NOOP))

    def _set_leader(self, leader: str | None) -> None:
        if leader != self.leader:
            self.leader = leader
            self._events.append(LeaderChanged(self.term, leader))

    # -------------------------------------------------------------- replication

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        for pr in self._progress.values():
            if pr.snapshot_cooldown > 0:
                pr.snapshot_cooldown -= 1
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            self._transferee = None
            if self.config.check_quorum:
                active = 1 + sum(
                    1 for p, pr in self._progress.items() if pr.recent_active and p in self.members
                )
                for pr in self._progress.values():
                    pr.recent_active = False
                if self.id in self.members and active < self._quorum():
                    self._become_follower(self.term, None)
                    return
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            for peer, pr in self._progress.items():
                pr.next = pr.match + 1  # resend anything unacknowledged (messages may be lost)
                self._send_append(peer, heartbeat=True)

    def _append_as_leader(self, entry: Entry) -> None:
        self.log.append(entry)
        self._mark_unstable(entry.index)
        if entry.kind is EntryKind.CONFIG:
            self._update_members()
        for peer in self._progress:
            self._send_append(peer)
        self._maybe_commit()

    def _send_append(self, peer: str, heartbeat: bool = False) -> None:
        pr = self._progress[peer]
        prev = pr.next - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None:
            if pr.snapshot_cooldown == 0 and self._snapshot is not None:
                self._send(SnapshotRequest(self.id, peer, self.term, self._snapshot))
                pr.snapshot_cooldown = self.config.election_ticks
            return
        entries = self.log.entries(pr.next, pr.next + self.config.max_entries_per_append - 1)
        if not entries and not heartbeat:
            return
        self._send(AppendRequest(self.id, peer, self.term, prev, prev_term, entries, self.commit))
        if entries:
            pr.next = entries[-1].index + 1

    def _on_append(self, m: AppendRequest) -> None:
        if self.role is not Role.FOLLOWER:
            self._become_follower(self.term, m.src)
        self._set_leader(m.src)
        self._election_elapsed = 0
        if m.prev_index < self.commit:
            # everything up to our commit index matches any leader's log
            self._send(AppendResponse(self.id, m.src, self.term, True, match_index=self.commit))
            return
        if self._matches_prev(m.prev_index, m.prev_term):
            changed = self.log.merge(m.entries)
            if changed is not None:
                if changed <= self.commit:
                    raise AssertionError(f"{self.id}: truncating committed entry {changed}")
                self._mark_unstable(changed)
                if changed <= self._config_index or any(
                    e.kind is EntryKind.CONFIG for e in self.log.entries(changed)
                ):
                    self._update_members()
            last_new = m.prev_index + len(m.entries)
            self._advance_commit(min(m.commit, last_new))
            self._send(AppendResponse(self.id, m.src, self.term, True, match_index=last_new))
            return
        if m.prev_index > self.log.last_index:
            hint_index, hint_term = self.log.last_index + 1, 0
        else:
            hint_term = self.log.term_at(m.prev_index) or 0
            hint_index = self.log.first_index_of_term(m.prev_index)
        self._send(AppendResponse(
            self.id, m.src, self.term, False,
            rejected_index=m.prev_index, hint_index=hint_index, hint_term=hint_term,
        ))

    def _on_append_response(self, m: AppendResponse) -> None:
        if self.role is not Role.LEADER or m.src not in self._progress:
            return
        pr = self._progress[m.src]
        pr.recent_active = True
        if m.success:
            if m.match_index > pr.match:
                pr.match = m.match_index
            pr.next = max(pr.next, pr.match + 1)
            self._maybe_commit()
            if m.src == self._transferee and pr.match == self.log.last_index:
                self._send(TimeoutNow(self.id, m.src, self.term))
            elif pr.match < self.log.last_index:
                self._send_append(m.src)
            return
        if m.rejected_index < pr.match:
            return  # stale rejection
        nxt = m.hint_index
        if m.hint_term:
            own = self.log.last_index_of_term(m.hint_term, m.rejected_index)
            if own is not None:
                nxt = own + 1
        pr.next = max(min(nxt, m.rejected_index), pr.match + 1)
        self._send_append(m.src, heartbeat=True)

    def _matches_prev(self, index: int, term: int) -> bool:
        """The consistency check: our log holds the leader's previous entry."""
        return self.log.term_at(index) == term

    def _maybe_commit(self) -> None:
        if self.role is not Role.LEADER:
            return
        matches = sorted(
            (self._own_match() if p == self.id else self._progress[p].match)
            for p in self.members if p == self.id or p in self._progress
        )
        if not matches:
            return
        # the highest index a quorum of members holds
        candidate = matches[len(matches) - self._quorum()] if len(matches) >= self._quorum() else 0
        if candidate > self.commit and self._commit_allowed(candidate):
            # Followers learn the new commit index from the next append or heartbeat; a
            # broadcast here would double the messages per client command for nothing the
            # client waits on (it is answered by the leader, which applies now).
            self._advance_commit(candidate)

    def _own_match(self) -> int:
        """How far the leader's own log counts toward a quorum: what its driver reported durable."""
        return min(self._stable, self.log.last_index)

    def _commit_allowed(self, index: int) -> bool:
        """Raft's rule (Figure 8): count replicas only for entries of the leader's own term."""
        return self.log.term_at(index) == self.term

    def _advance_commit(self, index: int) -> None:
        if index > self.commit:
            self.commit = min(index, self.log.last_index)
            self._apply_committed()

    # --------------------------------------------------------- apply/snapshots

    def _apply_committed(self) -> None:
        while self.applied < self.commit:
            self.applied += 1
            e = self.log.entry(self.applied)
            result: bytes | None = None
            duplicate = False
            if e.kind is EntryKind.COMMAND:
                seen, cached = self._sessions.seen(e.client_id, e.request_seq)
                if seen:
                    duplicate, result = True, cached
                else:
                    result = self._sm.apply(e.command)
                    self._sessions.record(e.client_id, e.request_seq, result)
                if self.role is Role.LEADER and result is not None and e.client_id:
                    self._replies.append(ClientReply(e.client_id, e.request_seq, e.index, result, self.id))
            self._applied_out.append(AppliedEntry(
                e.index, e.term, e.kind, e.command, e.client_id, e.request_seq, result, duplicate,
            ))
        threshold = self.config.snapshot_threshold
        if threshold and self.applied - self.log.snapshot_index >= threshold:
            self._take_snapshot()

    def _take_snapshot(self) -> None:
        index = self.applied
        term = self.log.term_at(index)
        assert term is not None
        self._snapshot = Snapshot(
            index, term, self.members_at(index), self._sm.snapshot(), self._sessions.items()
        )
        self.log.compact(index)
        self._snapshot_dirty = True

    def _on_snapshot(self, m: SnapshotRequest) -> None:
        if self.role is not Role.FOLLOWER:
            self._become_follower(self.term, m.src)
        self._set_leader(m.src)
        self._election_elapsed = 0
        snap = m.snapshot
        if snap.index <= self.commit:
            self._send(AppendResponse(self.id, m.src, self.term, True, match_index=self.commit))
            return
        self.log.restore(snap.index, snap.term)
        self._stable = min(self._stable, snap.index - 1)
        self._snapshot = snap
        self._snapshot_dirty = True
        self._sm.restore(snap.data)
        self._sessions = self.sessions_class(snap.sessions)
        self.commit = self.applied = snap.index
        self._update_members()
        self._send(AppendResponse(self.id, m.src, self.term, True, match_index=snap.index))

    # ------------------------------------------------------------------ helpers

    def _update_members(self) -> None:
        """Recompute the member set after the log's tail changed (appends may also revert a config)."""
        self._config_index, members = self._config_at(self.log.last_index)
        if members == self.members:
            return
        self.members = members
        self._events.append(MembersChanged(members))
        if self.role is Role.LEADER:
            for p in members:
                if p != self.id and p not in self._progress:
                    self._progress[p] = Progress(match=0, next=self.log.last_index + 1)
            for p in list(self._progress):
                if p not in members:
                    del self._progress[p]

    def _mark_unstable(self, index: int) -> None:
        if self._unstable_from is None or index < self._unstable_from:
            self._unstable_from = index
        self._stable = min(self._stable, index - 1)

    def _send(self, m: Message) -> None:
        self._msgs.append(m)
