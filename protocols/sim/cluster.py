"""The deterministic simulator: N Raft nodes, clients and a faulty network on a virtual clock.

Everything random comes from one seed (forked into independent streams per
component), and events at equal times run in the order they were scheduled,
so a seed replays exactly. Crashes keep only what the node's DurableStore
holds. The nodes' Readys go through the shared asynchronous disk of
:mod:`protocols.sim.raft_host`, which follows the Ready contract
(protocols.raft.ready); a crash loses the writes in flight and what was
written without an fsync (DurableStore).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protocols.raft.config import RaftConfig, RandomSource, StateMachine
from protocols.raft.messages import Message, PersistentState
from protocols.raft.node import RaftNode, Role
from protocols.raft.ready import Accepted, BecameLeader, ClientReply, NotLeader, Ready
from protocols.sim.client import ClientRequest, ClientResponse, SimClient
from protocols.sim.clock import VirtualClock
from protocols.sim.history import Ack, Applied, Election, History, LogView
from protocols.sim.network import CALM, Network, NetworkProfile
from protocols.sim.prng import SplitMix64
from protocols.sim.raft_host import CrashPoint, RaftHost, ReadyDisk
from protocols.sim.register import AppendRegister

NodeFactory = Callable[
    [str, Sequence[str], StateMachine, RandomSource, RaftConfig, PersistentState | None], RaftNode
]

FAULT_KINDS = (
    "partition", "isolate_leader", "heal", "crash", "crash_leader", "crash_all", "pause",
    "membership", "transfer",
)
PROBE = "probe"


def _default_factory(
    node_id: str, members: Sequence[str], sm: StateMachine, rng: RandomSource, cfg: RaftConfig,
    persisted: PersistentState | None,
) -> RaftNode:
    return RaftNode(node_id, members, sm, rng, cfg, persisted)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulated run's shape; times are virtual milliseconds."""

    nodes: int = 5
    spare_nodes: int = 1  # started outside the group; membership faults may add them
    clients: int = 3
    duration: int = 4_000  # faulty phase; then everything heals
    settle: int = 3_000  # calm phase in which the liveness probe must commit
    tick_ms: int = 10
    raft: RaftConfig = field(
        default_factory=lambda: RaftConfig(election_ticks=10, heartbeat_ticks=2, snapshot_threshold=25)
    )
    network: NetworkProfile = field(default_factory=NetworkProfile)
    fault_gap: tuple[int, int] = (100, 600)
    fault_weights: tuple[tuple[str, int], ...] = (
        ("partition", 3), ("isolate_leader", 2), ("heal", 4), ("crash", 2), ("crash_leader", 2),
        ("crash_all", 1), ("pause", 2), ("membership", 1), ("transfer", 1),
    )
    restart_delay: tuple[int, int] = (20, 800)
    pause_time: tuple[int, int] = (50, 800)
    torn_crash: float = 0.001  # chance per Ready of crashing after persisting, before sending
    lost_write_crash: float = 0.001  # chance per Ready of crashing while writing it (after early sends)
    disk_delay: tuple[int, int] = (0, 6)  # virtual ms per write; 0 with an idle disk is synchronous
    client_timeout: int = 150
    client_think: tuple[int, int] = (0, 30)
    send_before_persist: bool = False  # a deliberately broken driver, to prove the checkers bite
    liveness_bound: int = 2_500

    def __post_init__(self) -> None:
        unknown = [k for k, _ in self.fault_weights if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {FAULT_KINDS}")


@dataclass(slots=True)
class Host(RaftHost):
    """A simulated machine whose state machine is an append register."""

    sm: AppendRegister | None = None


class Simulation(VirtualClock):
    """Run with ``run()``; the returned History goes to the checkers."""

    def __init__(self, seed: int, config: SimConfig | None = None, node_factory: NodeFactory | None = None):
        super().__init__()
        self.seed = seed
        self.cfg = config or SimConfig()
        self._factory = node_factory or _default_factory
        root = SplitMix64(seed)
        self._fault_rng = root.fork()
        self._node_rng = root.fork()
        self._client_rng = root.fork()
        self._torn_rng = root.fork()
        self.network = Network(root.fork(), self.cfg.network)
        self._disk = ReadyDisk[Host](
            self, root.fork(), self.cfg.disk_delay, send=self._send, drain=self._drain, crashes=self._crashes
        )
        ids = [f"n{i}" for i in range(self.cfg.nodes + self.cfg.spare_nodes)]
        self.bootstrap = ids[: self.cfg.nodes]
        self.hosts = {i: Host(i) for i in ids}
        self.clients = {
            f"c{i}": SimClient(f"c{i}", self._client_rng.choice(self.bootstrap))
            for i in range(self.cfg.clients)
        }
        self.history = History()
        self._calm = False

    # ------------------------------------------------------------------ engine

    def run(self) -> History:
        for h in self.hosts.values():
            self._start(h)
            self.at(self._node_rng.below(self.cfg.tick_ms), lambda h=h: self._tick(h))  # type: ignore[misc]
        for c in self.clients.values():
            self.at(self._client_rng.between(0, 50), lambda c=c: self._client_send(c, c.next_command()))  # type: ignore[misc]
        self.at_random_gaps(self._fault_rng, self.cfg.fault_gap, self.cfg.duration, self._fault)
        self.at(self.cfg.duration, self._heal_all)
        end = self.cfg.duration + self.cfg.settle
        self.run_until(end)
        self._checkpoint()
        self._record_final_state()
        return self.history

    # ------------------------------------------------------------------- nodes

    def _start(self, h: Host) -> None:
        h.sm = AppendRegister()
        h.boot()
        rng = self._node_rng.fork()
        h.node = self._factory(h.id, self.bootstrap, h.sm, rng, self.cfg.raft, h.store.load())
        self._drain(h)

    def _crash(self, h: Host) -> None:
        if h.node is None:
            return
        h.power_cut()
        h.sm = None
        if not self._calm:
            self.at(self.now + self._fault_rng.between(*self.cfg.restart_delay), lambda: self._restart(h))

    def _restart(self, h: Host) -> None:
        if h.node is None:
            self._start(h)

    def _paused(self, h: Host) -> bool:
        return h.paused_until > self.now

    def _tick(self, h: Host) -> None:
        self.at(self.now + self.cfg.tick_ms, lambda: self._tick(h))
        if h.node is not None and not self._paused(h):
            h.node.tick()
            self._drain(h)

    def _deliver(self, m: Message) -> None:
        h = self.hosts[m.dst]
        if h.node is None or not self.network.connected(m.src, m.dst):
            return
        if self._paused(h):
            self.at(h.paused_until, lambda: self._deliver(m))  # like SIGSTOP: the socket buffers it
            return
        h.node.step(m)
        self._drain(h)

    def _drain(self, h: Host) -> None:
        assert h.node is not None
        rd = h.node.ready()
        if rd.empty:
            return
        self._record(h, rd)
        if self.cfg.send_before_persist:
            self._send_messages(rd.early_messages)
            self._send(h, rd.messages, rd.replies)
            if not self._calm and self._torn_rng.chance(self.cfg.torn_crash):
                self._crash(h)
                return
            h.store.persist(rd)
            h.node.advance(rd)
            self._drain(h)
            return
        self._disk.submit(h, rd)

    def _crashes(self, h: Host, point: CrashPoint) -> bool:
        """A crash mid-write loses it and the writes behind it; after persisting, only messages."""
        chance = self.cfg.lost_write_crash if point == "mid_write" else self.cfg.torn_crash
        if self._calm or not self._torn_rng.chance(chance):
            return False
        self._crash(h)
        return True

    def _send_messages(self, messages: Sequence[Message]) -> None:
        for m in messages:
            for d in self.network.delays(m.src, m.dst):
                self.at(self.now + d, lambda m=m: self._deliver(m))  # type: ignore[misc]

    def _send(self, h: Host, messages: Sequence[Message], replies: Sequence[ClientReply]) -> None:
        self._send_messages(messages)
        for r in replies:
            self._respond(h.id, ClientResponse(r.client_id, r.request_seq, True, r.result, h.id))

    def _record(self, h: Host, rd: Ready) -> None:
        assert h.node is not None
        if rd.snapshot is not None:
            self.history.snapshot_installs.add((h.id, h.incarnation, rd.snapshot.index))
        for a in rd.applied:
            self.history.applied.append(Applied(self.now, h.id, h.incarnation, a))
        for ev in rd.events:
            if isinstance(ev, BecameLeader):
                self.history.elections.append(Election(self.now, ev.term, h.id, self._view(h.node)))

    @staticmethod
    def _view(node: RaftNode) -> LogView:
        log = node.log
        return LogView(node.id, log.snapshot_index, log.snapshot_term, log.entries(log.snapshot_index + 1))

    def _checkpoint(self) -> None:
        views = [self._view(h.node) for h in self.hosts.values() if h.node is not None]
        self.history.checkpoints.append((self.now, views))

    def leader(self) -> Host | None:
        """The live, unpaused host that leads the highest term, if any."""
        best: Host | None = None
        for h in self.hosts.values():
            if h.node is None or h.node.role is not Role.LEADER or self._paused(h):
                continue
            if best is None or (best.node is not None and h.node.term > best.node.term):
                best = h
        return best

    # ----------------------------------------------------------------- clients

    def _client_send(self, c: SimClient, req: ClientRequest) -> None:
        self.history.submitted.add(req.command)
        if c.id == PROBE and self.history.liveness_probe_sent_at == 0:
            self.history.liveness_probe_sent_at = self.now
        for d in self.network.delays(c.id, req.node):
            self.at(self.now + d, lambda: self._on_client_request(req))
        seq, attempt = c.seq, c.attempt
        self.at(self.now + self.cfg.client_timeout, lambda: self._client_timeout(c, seq, attempt))

    def _client_timeout(self, c: SimClient, seq: int, attempt: int) -> None:
        if c.pending is not None and c.seq == seq and c.attempt == attempt:
            self._client_send(c, c.retry(self._client_rng.choice(sorted(self.hosts))))

    def _on_client_request(self, req: ClientRequest) -> None:
        h = self.hosts[req.node]
        if h.node is None:
            return
        if self._paused(h):
            self.at(h.paused_until, lambda: self._on_client_request(req))
            return
        res = h.node.propose(req.command, req.client_id, req.request_seq)
        if not isinstance(res, Accepted):
            hint = res.leader_hint if isinstance(res, NotLeader) else None
            self._respond(h.id, ClientResponse(req.client_id, req.request_seq, False, leader_hint=hint))
        self._drain(h)

    def _respond(self, node: str, resp: ClientResponse) -> None:
        c = self.clients.get(resp.client_id)
        if c is None:
            return
        for d in self.network.delays(node, c.id):
            self.at(self.now + d, lambda: self._on_client_response(c, resp))

    def _on_client_response(self, c: SimClient, resp: ClientResponse) -> None:
        if c.pending is None or resp.request_seq != c.seq:
            return  # stale or duplicated
        if resp.ok:
            self.history.acks.append(Ack(self.now, c.id, c.seq, c.pending, resp.result))
            c.pending = None
            c.acked += 1
            if c.id == PROBE:
                self.history.liveness_probe_acked_at = self.now
            elif self.now < self.cfg.duration:
                req = c.next_command()
                think = self._client_rng.between(*self.cfg.client_think)
                self.at(self.now + think, lambda: self._client_send(c, req))
            return
        target = resp.leader_hint or self._client_rng.choice(sorted(self.hosts))
        req = c.retry(target)
        self.at(self.now + 5, lambda: self._client_send(c, req))

    # ------------------------------------------------------------------ faults

    def _fault(self) -> None:
        kinds = [k for k, w in self.cfg.fault_weights for _ in range(w)]
        if not kinds:
            return
        kind = self._fault_rng.choice(kinds)
        self.history.faults.append((self.now, kind))
        self._checkpoint()
        getattr(self, f"_fault_{kind}")()

    def _fault_partition(self) -> None:
        ids = self._fault_rng.shuffled(sorted(self.hosts))
        cut = self._fault_rng.between(1, len(ids) - 1)
        self.network.partition([ids[:cut], ids[cut:]])

    def _fault_isolate_leader(self) -> None:
        lead = self.leader()
        if lead is not None:
            self.network.partition([[i for i in self.hosts if i != lead.id], [lead.id]])

    def _fault_heal(self) -> None:
        self.network.heal()

    def _fault_crash(self) -> None:
        self._crash(self.hosts[self._fault_rng.choice(sorted(self.hosts))])

    def _fault_crash_leader(self) -> None:
        lead = self.leader()
        if lead is not None:
            self._crash(lead)

    def _fault_crash_all(self) -> None:
        for h in self.hosts.values():
            self._crash(h)

    def _fault_pause(self) -> None:
        h = self.hosts[self._fault_rng.choice(sorted(self.hosts))]
        if h.node is not None:
            h.paused_until = self.now + self._fault_rng.between(*self.cfg.pause_time)

    def _fault_membership(self) -> None:
        lead = self.leader()
        if lead is None or lead.node is None:
            return
        members = lead.node.members
        spares = sorted(set(self.hosts) - set(members))
        if spares and (len(members) <= 3 or self._fault_rng.chance(0.5)):
            lead.node.propose_membership(add=self._fault_rng.choice(spares))
        elif len(members) > 3:
            lead.node.propose_membership(remove=self._fault_rng.choice([m for m in members if m != lead.id]))
        self._drain(lead)

    def _fault_transfer(self) -> None:
        lead = self.leader()
        if lead is None or lead.node is None:
            return
        others = [m for m in lead.node.members if m != lead.id]
        if others:
            lead.node.transfer_leadership(self._fault_rng.choice(others))
            self._drain(lead)

    def _heal_all(self) -> None:
        """End of the faulty phase: heal, restart, resume, calm the network, send the probe."""
        self._calm = True
        self.network.heal()
        self.network.profile = CALM
        for h in self.hosts.values():
            h.paused_until = 0
            if h.node is None:
                self._start(h)
        probe = SimClient(PROBE, self._client_rng.choice(self.bootstrap))
        self.clients[PROBE] = probe
        self._client_send(probe, probe.next_command())

    def _record_final_state(self) -> None:
        live = [h for h in self.hosts.values() if h.node is not None and h.sm is not None]
        best = max(live, key=lambda h: (h.node.applied if h.node else 0, h.id))
        assert best.sm is not None
        self.history.final_register = list(best.sm.items)
        self.history.final_node = best.id
