"""A deterministic simulation of two-phase commit over a real Raft group, with faults, from a seed.

``N`` group nodes each run a :class:`~protocols.raft.RaftNode` whose state
machine is a :class:`TxTable`, and a :class:`TxManager` over it; ``P``
participants each run a :class:`Participant` over a simulated resource (keys
locked while prepared, so transactions that touch the same key refuse each
other) and a durable record store; one client submits transactions and asks
again until it hears the outcome. All talk goes through one faulty network
(loss, duplication, delay spikes that reorder, partitions). Faults: crashes and
restarts of any node, of the leader, of every process at once, and targeted
crashes at the protocol's dangerous moments (a leader just before or just after
its decision is logged, or half way through telling participants; a
participant while preparing, after its prepared record is durable, after its
vote left, between applying a decision and recording it). Disks are slow: a
write takes ``disk_delay`` and a crash loses the writes in flight.

The group nodes' Readys go through the same asynchronous disk as
:mod:`protocols.sim.cluster`'s (:mod:`protocols.sim.raft_host`: early appends,
durable write, ``advance``, then messages, or messages at the write's start
when ``must_sync`` is False; a crash loses what was not fsynced); the
participant driver carries out effects in order and makes ``Persist`` durable
before the next one. After ``duration`` every fault heals
and every process restarts; within ``settle`` every transaction must end.

    report = run_twopc(seed)           # same seed, same run, every time
    assert report.ok, report.summary()
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protocols.raft.config import RaftConfig
from protocols.raft.messages import Message
from protocols.raft.node import RaftNode, Role
from protocols.raft.ready import ClientReply
from protocols.sim.clock import VirtualClock
from protocols.sim.network import CALM, Network, NetworkProfile
from protocols.sim.prng import SplitMix64
from protocols.sim.raft_host import RaftHost, ReadyDisk
from protocols.twopc.checkers import check_all
from protocols.twopc.commands import Decide, encode_entry
from protocols.twopc.effects import (
    ApplyOutcome,
    Delete,
    Effect,
    InputError,
    Persist,
    PrepareResource,
    Propose,
    Send,
)
from protocols.twopc.history import (
    DecisionSent,
    FinalState,
    ResourceApplied,
    TwoPcHistory,
    VoteSent,
)
from protocols.twopc.manager import ManagerConfig, TxManager
from protocols.twopc.messages import (
    BeginRequest,
    Decision,
    Outcome,
    Part,
    StatusReply,
    TxMessage,
    TxState,
    Vote,
    decode_message,
    encode_message,
)
from protocols.twopc.participant import Participant, ParticipantConfig
from protocols.twopc.records import ParticipantRecord, decode_participant_record, encode_participant_record
from protocols.twopc.table import TxResult, TxStateMachine, TxTable

__all__ = [
    "FAULT_KINDS",
    "ManagerFactory",
    "ParticipantFactory",
    "TableFactory",
    "TwoPcReport",
    "TwoPcSimConfig",
    "TwoPcSimulation",
    "run_twopc",
]

GROUP = "group"
CLIENT = "client"

ManagerFactory = Callable[[str, str, TxTable, ManagerConfig], TxManager]
ParticipantFactory = Callable[[str, str, Sequence[ParticipantRecord], ParticipantConfig], Participant]
TableFactory = Callable[[], TxTable]

LEADER_TRAPS = ("before_decide", "after_decide", "mid_tell")
PARTICIPANT_TRAPS = ("preparing", "after_prepare", "after_vote", "after_apply")
FAULT_KINDS = (
    "partition", "isolate_leader", "heal", "crash_node", "crash_leader", "crash_all",
    "crash_participant", *(f"trap_{t}" for t in LEADER_TRAPS), *(f"trap_{t}" for t in PARTICIPANT_TRAPS),
)


@dataclass(frozen=True, slots=True)
class TwoPcSimConfig:
    """One simulated run's shape; times are virtual milliseconds."""

    nodes: int = 3
    participants: int = 4
    transactions: int = 10
    parts_per_tx: tuple[int, int] = (2, 3)
    keys: int = 6  # resource keys: two transactions on one key refuse each other while prepared
    tx_timeout: int = 800
    duration: int = 2_500  # faulty phase; then everything heals and restarts
    settle: int = 4_000  # calm phase in which every transaction must end
    tick_ms: int = 20
    participant_tick_ms: int = 50
    raft: RaftConfig = field(
        default_factory=lambda: RaftConfig(election_ticks=10, heartbeat_ticks=2, snapshot_threshold=20)
    )
    manager: ManagerConfig = field(default_factory=lambda: ManagerConfig(resend_ms=150, propose_retry_ms=300))
    participant: ParticipantConfig = field(default_factory=lambda: ParticipantConfig(query_ms=300))
    network: NetworkProfile = field(default_factory=NetworkProfile)
    fault_gap: tuple[int, int] = (80, 400)
    fault_weights: tuple[tuple[str, int], ...] = (
        ("partition", 2), ("isolate_leader", 1), ("heal", 3), ("crash_node", 1), ("crash_leader", 1),
        ("crash_all", 1), ("crash_participant", 2), ("trap_before_decide", 2), ("trap_after_decide", 2),
        ("trap_mid_tell", 2), ("trap_preparing", 1), ("trap_after_prepare", 1), ("trap_after_vote", 1),
        ("trap_after_apply", 1),
    )
    restart_delay: tuple[int, int] = (20, 500)
    disk_delay: tuple[int, int] = (0, 6)  # per write, group nodes and participants alike
    resource_delay: tuple[int, int] = (0, 15)  # how long a resource takes to prepare
    refuse_chance: float = 0.05  # a resource refuses to prepare (the participant votes no)
    client_retry: int = 300
    submit_window: tuple[int, int] = (0, 2_000)

    def __post_init__(self) -> None:
        unknown = [k for k, _ in self.fault_weights if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {FAULT_KINDS}")
        if not 1 <= self.parts_per_tx[0] <= self.parts_per_tx[1] <= self.participants:
            raise ValueError("parts_per_tx must be within 1..participants")


@dataclass(slots=True)
class _GroupHost(RaftHost):
    machine: TxStateMachine | None = None
    manager: TxManager | None = None


@dataclass(slots=True)
class _Resource:
    """A resource that survives crashes (a database): keys locked by prepared work, outcomes applied."""

    locks: dict[str, str] = field(default_factory=dict)  # key -> tx
    prepared: dict[str, str] = field(default_factory=dict)  # tx -> key
    outcomes: dict[str, Outcome] = field(default_factory=dict)


@dataclass(slots=True)
class _ParticipantHost:
    id: str
    store: dict[str, bytes] = field(default_factory=dict)  # tx -> encoded record: survives crashes
    resource: _Resource = field(default_factory=_Resource)
    participant: Participant | None = None
    incarnation: int = 0
    effects: deque[Effect] = field(default_factory=deque)
    writing: bool = False


@dataclass(slots=True)
class _ClientTx:
    tx_id: str
    parts: tuple[Part, ...]
    told: Outcome | None = None


class TwoPcSimulation(VirtualClock):
    """Run with :meth:`run`; the returned history goes to the checkers."""

    def __init__(
        self, seed: int, config: TwoPcSimConfig | None = None, *,
        manager_factory: ManagerFactory | None = None,
        participant_factory: ParticipantFactory | None = None,
        table_factory: TableFactory | None = None,
    ) -> None:
        super().__init__()
        self.seed = seed
        self.cfg = config or TwoPcSimConfig()
        self._new_manager = manager_factory or TxManager
        self._new_participant = participant_factory or Participant
        self._new_table = table_factory or TxTable
        root = SplitMix64(seed)
        self._fault_rng = root.fork()
        self._node_rng = root.fork()
        self._client_rng = root.fork()
        self._disk_rng = root.fork()
        self._disk = ReadyDisk[_GroupHost](self, self._disk_rng, self.cfg.disk_delay,
                                           send=self._send_ready, drain=self._drain)
        self._resource_rng = root.fork()
        self.network = Network(root.fork(), self.cfg.network)
        self.groups = {f"n{i}": _GroupHost(f"n{i}") for i in range(self.cfg.nodes)}
        self.members = tuple(self.groups)
        self.parts = {f"p{i}": _ParticipantHost(f"p{i}") for i in range(self.cfg.participants)}
        self.txs: dict[str, _ClientTx] = {}
        self.history = TwoPcHistory()
        self._calm = False
        self._leader_traps: list[str] = []
        self._participant_traps: dict[str, str] = {}  # participant -> trap
        self._finished = False

    # ------------------------------------------------------------------ engine

    def run(self) -> TwoPcHistory:
        for g in self.groups.values():
            self._start_group(g)
            self.at(self._node_rng.below(self.cfg.tick_ms), lambda g=g: self._tick_group(g))  # type: ignore[misc]
        for p in self.parts.values():
            self._start_participant(p)
            self.at(self._node_rng.below(self.cfg.participant_tick_ms),
                    lambda p=p: self._tick_participant(p))  # type: ignore[misc]
        self._plan_transactions()
        self.at_random_gaps(self._fault_rng, self.cfg.fault_gap, self.cfg.duration, self._fault)
        self.at(self.cfg.duration, self._heal_all)
        end = self.cfg.duration + self.cfg.settle
        self.run_until(end, lambda: self._finished)
        self.history.final = self._final_state()
        return self.history

    # ------------------------------------------------------------- the network

    def _send(self, src: str, to: str, message: TxMessage) -> None:
        data = encode_message(message)  # every message crosses the wire codec
        targets = self.members if to == GROUP else (to,)
        for dst in targets:
            for d in self.network.delays(src, dst):
                self.at(self.now + d, lambda dst=dst: self._deliver(dst, data))  # type: ignore[misc]

    def _deliver(self, dst: str, data: bytes) -> None:
        message = decode_message(data)
        if dst in self.groups:
            g = self.groups[dst]
            if g.manager is not None:
                self._run_manager(g, g.manager.receive(message, self.now))
        elif dst in self.parts:
            p = self.parts[dst]
            if p.participant is not None:
                self._run_participant(p, p.participant.receive(message, self.now))
        elif dst == CLIENT:
            self._client_hears(message)

    # ------------------------------------------------------------- group nodes

    def _start_group(self, g: _GroupHost) -> None:
        g.boot()
        table = self._new_table()
        g.machine = TxStateMachine(table)
        g.node = RaftNode(g.id, self.members, g.machine, self._node_rng.fork(), self.cfg.raft, g.store.load())
        g.manager = self._new_manager(g.id, GROUP, table, self.cfg.manager)
        self._drain(g)

    def _crash_group(self, g: _GroupHost) -> None:
        if g.node is None:
            return
        g.power_cut()
        g.machine, g.manager = None, None
        if not self._calm:
            delay = self._fault_rng.between(*self.cfg.restart_delay)
            self.at(self.now + delay, lambda: self._restart_group(g))

    def _restart_group(self, g: _GroupHost) -> None:
        if g.node is None:
            self._start_group(g)

    def _tick_group(self, g: _GroupHost) -> None:
        self.at(self.now + self.cfg.tick_ms, lambda: self._tick_group(g))
        if g.node is None or g.manager is None:
            return
        g.node.tick()
        self._drain(g)
        if g.manager is not None and g.manager.is_leader:
            self._run_manager(g, g.manager.tick(self.now))

    def _drain(self, g: _GroupHost) -> None:
        if g.node is None or g.machine is None:
            return
        rd = g.node.ready()
        results = g.machine.drain_results()
        for r in results:
            self._record_applied(g, r)  # applied means committed: the checkers' time of decision
        incarnation = g.incarnation
        leads = g.node.role is Role.LEADER
        if results or (g.manager is not None and g.manager.is_leader != leads):
            # The manager hears of applied entries and leadership in order, after this drain.
            self.at(self.now, lambda: self._manager_catch_up(g, incarnation, results))
        if not rd.empty:
            self._disk.submit(g, rd)

    def _send_ready(self, g: _GroupHost, messages: Sequence[Message], replies: Sequence[ClientReply]) -> None:
        self._send_raft(messages)  # replies are not used: the manager proposes

    def _send_raft(self, messages: Sequence[Message]) -> None:
        for m in messages:
            for d in self.network.delays(m.src, m.dst):
                self.at(self.now + d, lambda m=m: self._deliver_raft(m))  # type: ignore[misc]

    def _deliver_raft(self, m: Message) -> None:
        g = self.groups[m.dst]
        if g.node is None or not self.network.connected(m.src, m.dst):
            return
        g.node.step(m)
        self._drain(g)

    def _manager_catch_up(self, g: _GroupHost, incarnation: int, results: list[TxResult]) -> None:
        if g.node is None or g.manager is None or g.incarnation != incarnation:
            return
        leads = g.node.role is Role.LEADER
        if leads and not g.manager.is_leader:
            self._run_manager(g, g.manager.became_leader(self.now))
        elif not leads and g.manager.is_leader:
            g.manager.lost_leadership()
        for r in results:
            if g.manager is None or g.incarnation != incarnation:
                return
            trap = r.kind == "decide" and r.outcome is not None and g.manager.is_leader
            if trap and self._spring_leader_trap("after_decide", g):
                return
            self._run_manager(g, g.manager.applied(r, self.now))

    def _record_applied(self, g: _GroupHost, r: TxResult) -> None:
        h = self.history
        if r.kind == "begin" and r.state is TxState.PENDING:
            h.begun.setdefault(r.tx_id, self.now)
        outcome = r.outcome
        if outcome is not None and r.kind in ("decide", "resolve", "end"):
            first = h.decided.setdefault(r.tx_id, (outcome, self.now))
            if first[0] is not outcome:
                h.log_conflicts.append(f"{g.id} applied {outcome} of {r.tx_id}; another replica {first[0]}")

    def _run_manager(self, g: _GroupHost, effects: list[Effect]) -> None:
        incarnation = g.incarnation
        told = 0
        for e in effects:
            if g.node is None or g.incarnation != incarnation:
                return  # crashed half way
            if isinstance(e, Propose):
                # Crash before the decision is proposed, or just after (its append may leave early).
                early = self._fault_rng.chance(0.5)
                if isinstance(e.command, Decide) and early and self._spring_leader_trap("before_decide", g):
                    return
                g.node.propose(encode_entry(self.now, e.command))
                self._drain(g)
                if isinstance(e.command, Decide) and self._spring_leader_trap("before_decide", g):
                    return
            elif isinstance(e, Send):
                if isinstance(e.message, Decision) and e.to != CLIENT:
                    self.history.decisions_sent.append(
                        DecisionSent(self.now, g.id, e.to, e.message.tx_id, e.message.outcome))
                    told += 1
                    if told == 2 and self._spring_leader_trap("mid_tell", g):
                        return
                self._send(g.id, e.to, e.message)
            elif isinstance(e, InputError):
                self.history.errors[e.code] += 1

    def _spring_leader_trap(self, kind: str, g: _GroupHost) -> bool:
        if not self._leader_traps or self._leader_traps[0] != kind or self._calm:
            return False
        self._leader_traps.pop(0)
        self.history.faults.append((self.now, f"sprung {kind}"))
        self._crash_group(g)
        return True

    # ----------------------------------------------------------- participants

    def _start_participant(self, p: _ParticipantHost) -> None:
        p.incarnation += 1
        p.effects = deque()
        p.writing = False
        records = [decode_participant_record(b) for _, b in sorted(p.store.items())]
        p.participant = self._new_participant(p.id, GROUP, records, self.cfg.participant)
        held = [tx for tx in p.resource.prepared if tx not in p.resource.outcomes]
        self._run_participant(p, p.participant.recover(self.now, held))

    def _crash_participant(self, p: _ParticipantHost) -> None:
        if p.participant is None:
            return
        # Every yes vote this participant sent on a transaction it has not finished must be on disk.
        done = {(a.tx_id) for a in self.history.applied if a.participant == p.id}
        for v in self.history.votes:
            if v.participant == p.id and v.yes and v.tx_id not in done:
                stored = p.store.get(v.tx_id)
                if stored is None or not decode_participant_record(stored).yes:
                    self.history.durability.append(
                        f"{p.id} voted yes on {v.tx_id} at t={v.time} but crashed at t={self.now} "
                        "without a durable prepared record")
        p.participant = None
        p.effects = deque()
        p.writing = False
        if not self._calm:
            self.at(self.now + self._fault_rng.between(*self.cfg.restart_delay),
                    lambda: self._restart_participant(p))

    def _restart_participant(self, p: _ParticipantHost) -> None:
        if p.participant is None:
            self._start_participant(p)

    def _tick_participant(self, p: _ParticipantHost) -> None:
        self.at(self.now + self.cfg.participant_tick_ms, lambda: self._tick_participant(p))
        if p.participant is not None:
            self._run_participant(p, p.participant.tick(self.now))

    def _run_participant(self, p: _ParticipantHost, effects: list[Effect]) -> None:
        p.effects.extend(effects)
        self._pump(p)

    def _pump(self, p: _ParticipantHost) -> None:
        """Carry out effects in order; a write blocks the ones behind it until it is durable."""
        incarnation = p.incarnation
        while p.effects and not p.writing and p.participant is not None and p.incarnation == incarnation:
            e = p.effects.popleft()
            if isinstance(e, Persist | Delete):
                p.writing = True
                delay = self._disk_rng.between(*self.cfg.disk_delay)
                self.at(self.now + delay, lambda e=e: self._participant_write_done(p, incarnation, e))  # type: ignore[misc]
            elif isinstance(e, Send):
                if isinstance(e.message, Vote):
                    self.history.votes.append(
                        VoteSent(self.now, p.id, p.incarnation, e.message.tx_id, e.message.yes))
                self._send(p.id, e.to, e.message)
                yes = isinstance(e.message, Vote) and e.message.yes
                if yes and self._spring_participant_trap("after_vote", p):
                    return
            elif isinstance(e, PrepareResource):
                self._prepare_resource(p, e)
                if self._spring_participant_trap("preparing", p):
                    return
            elif isinstance(e, ApplyOutcome):
                self._apply_resource(p, e)
                if self._spring_participant_trap("after_apply", p):
                    return
            elif isinstance(e, InputError):
                self.history.errors[e.code] += 1

    def _participant_write_done(self, p: _ParticipantHost, incarnation: int, e: Persist | Delete) -> None:
        if p.participant is None or p.incarnation != incarnation:
            return  # crashed while writing: lost
        if isinstance(e, Persist):
            p.store[e.record.tx_id] = encode_participant_record(e.record)
        else:
            p.store.pop(e.tx_id, None)
        p.writing = False
        if isinstance(e, Persist) and e.record.in_doubt and self._spring_participant_trap("after_prepare", p):
            return
        self._pump(p)

    def _spring_participant_trap(self, kind: str, p: _ParticipantHost) -> bool:
        if self._participant_traps.get(p.id) != kind or self._calm:
            return False
        del self._participant_traps[p.id]
        self.history.faults.append((self.now, f"sprung {kind} at {p.id}"))
        self._crash_participant(p)
        return True

    def _prepare_resource(self, p: _ParticipantHost, e: PrepareResource) -> None:
        """The resource prepares durably at once; its answer reaches the participant a little later."""
        r = p.resource
        key = e.payload.decode()
        ok, reason = True, ""
        holder = r.locks.get(key)
        if e.tx_id in r.outcomes:
            ok, reason = False, "already decided here"
        elif e.tx_id in r.prepared:
            pass
        elif self._resource_rng.chance(self.cfg.refuse_chance):
            ok, reason = False, "refused by the resource"
        elif holder is not None and holder != e.tx_id:
            ok, reason = False, f"{key} is locked by {holder}"
        else:
            r.locks[key] = e.tx_id
            r.prepared[e.tx_id] = key
        incarnation = p.incarnation
        delay = self._resource_rng.between(*self.cfg.resource_delay)

        def answer() -> None:
            if p.participant is not None and p.incarnation == incarnation:
                self._run_participant(p, p.participant.resource_prepared(e.tx_id, ok, reason, self.now))

        self.at(self.now + delay, answer)

    def _apply_resource(self, p: _ParticipantHost, e: ApplyOutcome) -> None:
        r = p.resource
        done = r.outcomes.get(e.tx_id)
        if done is e.outcome:
            return  # a repeat after a crash: already done
        was_prepared = e.tx_id in r.prepared
        if done is None:
            r.outcomes[e.tx_id] = e.outcome
        key = r.prepared.pop(e.tx_id, None)
        if key is not None and r.locks.get(key) == e.tx_id:
            del r.locks[key]
        if was_prepared or e.outcome is Outcome.COMMIT or done is not None:
            self.history.applied.append(ResourceApplied(self.now, p.id, e.tx_id, e.outcome, was_prepared))

    # ----------------------------------------------------------------- client

    def _plan_transactions(self) -> None:
        rng = self._client_rng
        names = sorted(self.parts)
        for i in range(self.cfg.transactions):
            k = rng.between(*self.cfg.parts_per_tx)
            chosen = sorted(rng.shuffled(names)[:k])
            parts = tuple(Part(n, f"k{rng.below(self.cfg.keys)}".encode()) for n in chosen)
            tx = _ClientTx(f"tx{i}", parts)
            self.txs[tx.tx_id] = tx
            self.history.parts[tx.tx_id] = tuple(p.participant for p in parts)
            self.at(rng.between(*self.cfg.submit_window), lambda tx=tx: self._client_send(tx))  # type: ignore[misc]

    def _client_send(self, tx: _ClientTx) -> None:
        if tx.told is not None:
            return
        self.history.submitted.setdefault(tx.tx_id, self.now)
        self._send(CLIENT, GROUP, BeginRequest(tx.tx_id, CLIENT, self.cfg.tx_timeout, tx.parts))
        self.at(self.now + self.cfg.client_retry, lambda: self._client_send(tx))

    def _client_hears(self, message: TxMessage) -> None:
        if isinstance(message, Decision):
            outcome: Outcome | None = message.outcome
        elif isinstance(message, StatusReply):
            outcome = message.outcome
        else:
            return
        tx = self.txs.get(message.tx_id)
        if tx is None or outcome is None:
            return
        first = self.history.client_told.setdefault(tx.tx_id, (outcome, self.now))
        if first[0] is not outcome:
            self.history.client_conflicts.append(f"client heard {first[0]} then {outcome} of {tx.tx_id}")
        tx.told = first[0]

    # ------------------------------------------------------------------ faults

    def _leader(self) -> _GroupHost | None:
        best: _GroupHost | None = None
        for g in self.groups.values():
            if g.node is None or g.node.role is not Role.LEADER:
                continue
            if best is None or (best.node is not None and g.node.term > best.node.term):
                best = g
        return best

    def _fault(self) -> None:
        kinds = [k for k, w in self.cfg.fault_weights for _ in range(w)]
        if not kinds:
            return
        kind = self._fault_rng.choice(kinds)
        self.history.faults.append((self.now, kind))
        rng = self._fault_rng
        if kind == "partition":
            ids = rng.shuffled([*self.groups, *self.parts, CLIENT])
            cut = rng.between(1, len(ids) - 1)
            self.network.partition([ids[:cut], ids[cut:]])
        elif kind == "isolate_leader":
            lead = self._leader()
            if lead is not None:
                self.network.partition([[i for i in [*self.groups, *self.parts, CLIENT] if i != lead.id],
                                        [lead.id]])
        elif kind == "heal":
            self.network.heal()
        elif kind == "crash_node":
            self._crash_group(self.groups[rng.choice(sorted(self.groups))])
        elif kind == "crash_leader":
            lead = self._leader()
            if lead is not None:
                self._crash_group(lead)
        elif kind == "crash_all":
            for g in self.groups.values():
                self._crash_group(g)
            for p in self.parts.values():
                self._crash_participant(p)
        elif kind == "crash_participant":
            self._crash_participant(self.parts[rng.choice(sorted(self.parts))])
        elif kind.removeprefix("trap_") in LEADER_TRAPS:
            self._leader_traps = [kind.removeprefix("trap_")]
        else:
            self._participant_traps[rng.choice(sorted(self.parts))] = kind.removeprefix("trap_")

    def _heal_all(self) -> None:
        """End of the faulty phase: heal, restart everything, calm the network."""
        self._calm = True
        self.history.calm_at = self.now
        self._leader_traps, self._participant_traps = [], {}
        self.network.heal()
        self.network.profile = CALM
        for g in self.groups.values():
            if g.node is None:
                self._start_group(g)
        for p in self.parts.values():
            if p.participant is None:
                self._start_participant(p)
        self.at(self.now + 100, self._check_finished)

    def _check_finished(self) -> None:
        """After healing: stop as soon as every transaction has ended everywhere."""
        f = self._final_state()
        if f.live_group_nodes == len(self.groups) and not (
                f.open_in_log or f.in_doubt or f.resource_prepared or f.untold_clients):
            self._finished = True
            self.history.finished_at = self.now
        else:
            self.at(self.now + 100, self._check_finished)

    def _final_state(self) -> FinalState:
        live = [g for g in self.groups.values() if g.node is not None and g.machine is not None]
        best = max(live, key=lambda g: (g.node.applied if g.node else 0, g.id), default=None)
        open_: tuple[str, ...] = ()
        undecided: tuple[str, ...] = ()
        if best is not None and best.machine is not None:
            txs = list(best.machine.table.open_transactions())
            open_ = tuple(t.tx_id for t in txs)
            undecided = tuple(t.tx_id for t in txs if t.outcome is None)
        in_doubt = tuple((p.id, tx) for p in self.parts.values() if p.participant is not None
                         for tx in p.participant.in_doubt())
        held = tuple((p.id, tx) for p in self.parts.values() for tx in p.resource.prepared)
        untold = tuple(t.tx_id for t in self.txs.values() if t.told is None)
        return FinalState(open_, undecided, in_doubt, held, untold, len(live),
                          sum(p.participant is not None for p in self.parts.values()))


@dataclass(frozen=True, slots=True)
class TwoPcReport:
    seed: int
    violations: dict[str, list[str]]
    history: TwoPcHistory

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def summary(self) -> str:
        h = self.history
        commits = sum(1 for o, _ in h.decided.values() if o is Outcome.COMMIT)
        bad = {k: v[:3] for k, v in self.violations.items() if v}
        return (f"seed={self.seed} submitted={len(h.submitted)} begun={len(h.begun)} commits={commits} "
                f"aborts={len(h.decided) - commits} faults={len(h.faults)} violations={bad or 'none'}")


def run_twopc(
    seed: int, config: TwoPcSimConfig | None = None, *, check_liveness: bool = True,
    manager_factory: ManagerFactory | None = None, participant_factory: ParticipantFactory | None = None,
    table_factory: TableFactory | None = None,
) -> TwoPcReport:
    """Simulate ``seed`` and run every checker over its history (re-run a failing seed the same way)."""
    sim = TwoPcSimulation(seed, config, manager_factory=manager_factory,
                          participant_factory=participant_factory, table_factory=table_factory)
    history = sim.run()
    return TwoPcReport(seed, check_all(history, check_liveness), history)

