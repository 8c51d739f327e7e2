"""The PBFT simulator: 3f+1 replicas (some Byzantine), clients and a faulty network on a virtual clock.

Everything random comes from one seed, forked per component, so a run replays
exactly (``run_seed(seed, config)``). Frames travel as bytes, so every replica
reads everything through the one validated decoder. A crash keeps only what
``Replica.durable()`` returns (what a real replica writes before it sends); a
pause (SIGSTOP) queues the frames sent to the replica until it resumes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols.pbft.client import Client
from protocols.pbft.config import PbftConfig
from protocols.pbft.evidence import statement
from protocols.pbft.messages import Prepare, PrePrepare, Signed, decode_frame
from protocols.pbft.output import Durable, Executed, Quarantined, ViewEntered
from protocols.pbft.replica import Replica
from protocols.pbft.signing import SimKeys
from protocols.pbft.sim.byzantine import BEHAVIOURS, PRIMARY_BEHAVIOURS
from protocols.pbft.state_machine import DecisionLog
from protocols.sim.clock import VirtualClock
from protocols.sim.network import Network, NetworkProfile
from protocols.sim.prng import SplitMix64
from schemas.errors import CodecError

FAULTS = ("partition", "isolate_primary", "heal", "crash", "pause")
ReplicaClass = Callable[..., Replica]
PROBE = "probe"


@dataclass(frozen=True, slots=True)
class PbftSimConfig:
    """One simulated run's shape; times are virtual milliseconds."""

    replicas: int = 4
    clients: int = 3
    duration: int = 1_500  # faulty phase; then everything heals and restarts
    settle: int = 5_000  # calm phase: the probe request sent at its start must be accepted before it ends
    tick_ms: int = 10
    checkpoint_interval: int = 4
    window: int = 12
    batch_max: int = 4
    view_change_ticks: int = 15
    resend_ticks: int = 5
    network: NetworkProfile = field(default_factory=NetworkProfile)
    fault_gap: tuple[int, int] = (100, 500)
    fault_weights: tuple[tuple[str, int], ...] = (
        ("partition", 2), ("isolate_primary", 2), ("heal", 4), ("crash", 2), ("pause", 2),
    )
    restart_delay: tuple[int, int] = (20, 500)
    pause_time: tuple[int, int] = (50, 500)
    client_think: tuple[int, int] = (0, 40)
    byzantine: tuple[str, ...] = ()  # behaviour names, one per Byzantine replica

    def __post_init__(self) -> None:
        unknown = [k for k, _ in self.fault_weights if k not in FAULTS]
        unknown += [b for b in self.byzantine if b not in BEHAVIOURS]
        if unknown:
            raise ValueError(f"unknown faults or behaviours {unknown}; known: {FAULTS}, {sorted(BEHAVIOURS)}")

    def pbft(self, ids: tuple[str, ...]) -> PbftConfig:
        return PbftConfig(
            ids, checkpoint_interval=self.checkpoint_interval, window=self.window, batch_max=self.batch_max,
            view_change_ticks=self.view_change_ticks, resend_ticks=self.resend_ticks,
        )


@dataclass(frozen=True, slots=True)
class Execution:
    time: int
    replica: str
    seq: int
    digest: bytes
    results: tuple[tuple[str, int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Acceptance:
    time: int
    client: str
    timestamp: int
    result: bytes


@dataclass(slots=True)
class PbftHistory:
    honest: tuple[str, ...]
    byzantine: dict[str, str]
    executions: list[Execution] = field(default_factory=list)
    acceptances: list[Acceptance] = field(default_factory=list)
    quarantines: list[tuple[int, str, str]] = field(default_factory=list)  # time, by, offender
    exposed: dict[str, int] = field(default_factory=dict)  # liar -> when honest replicas held a contradiction
    views: list[tuple[int, str, int]] = field(default_factory=list)
    final_quarantined: dict[str, tuple[str, ...]] = field(default_factory=dict)
    settle_start: int = 0
    probe_accepted: int | None = None
    faults: list[tuple[int, str]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)


class PbftSimulation:
    def __init__(
        self, seed: int, cfg: PbftSimConfig, replica_class: ReplicaClass = Replica,
        client_class: Callable[..., Client] = Client,
    ) -> None:
        self.seed, self.cfg = seed, cfg
        root = SplitMix64(seed)
        self.rng_net, self.rng_fault, self.rng_client, self.rng_byz = (root.fork() for _ in range(4))
        self.clock = VirtualClock()
        self.net = Network(self.rng_net, cfg.network)
        self.ids = tuple(f"r{i}" for i in range(cfg.replicas))
        self.client_ids = tuple(f"c{i}" for i in range(cfg.clients))
        self.keys = SimKeys([*self.ids, *self.client_ids, PROBE, "mallory"], seed)
        self.keys_public = SimKeys([*self.ids, *self.client_ids, PROBE], seed)  # "mallory" is nobody's key
        self.pcfg = cfg.pbft(self.ids)
        byz: dict[str, str] = {}
        for b in cfg.byzantine:
            if b in PRIMARY_BEHAVIOURS and self.ids[0] not in byz:
                byz[self.ids[0]] = b
            else:
                free = [r for r in self.ids if r not in byz]
                byz[self.rng_byz.choice(free)] = b
        self.replica_class = replica_class
        self.history = PbftHistory(tuple(r for r in self.ids if r not in byz), byz)
        self.replicas: dict[str, Replica | None] = {r: self._make(r, None) for r in self.ids}
        self.durable: dict[str, Durable] = {}
        self.paused: dict[str, list[bytes]] = {}
        self.incarnation = dict.fromkeys(self.ids, 0)
        self.clients = {
            c: client_class(self.pcfg, self.keys.signer(c), self.keys_public) for c in self.client_ids
        }
        self.probe = client_class(self.pcfg, self.keys.signer(PROBE), self.keys_public)
        self._said: dict[tuple[str, str, tuple[str, int, int]], set[bytes]] = {}

    def _make(self, r: str, durable: Durable | None) -> Replica:
        behaviour = self.history.byzantine.get(r)
        if behaviour is not None:
            return BEHAVIOURS[behaviour](
                self.pcfg, DecisionLog(), self.keys.signer(r), self.keys_public, self.rng_byz.fork(),
                self.client_ids, durable,
            )
        return self.replica_class(self.pcfg, DecisionLog(), self.keys.signer(r), self.keys_public, durable)

    # ------------------------------------------------------------------ running

    def run(self) -> PbftHistory:
        c = self.cfg
        end = c.duration + c.settle
        for t in range(c.tick_ms, end, c.tick_ms):
            self.clock.at(t, self._tick_all)
        for cid in self.client_ids:
            start = self.rng_client.between(*c.client_think)
            self.clock.at(start, functools.partial(self._client_submit, cid))
        if c.fault_weights:
            self.clock.at_random_gaps(self.rng_fault, c.fault_gap, c.duration, self._fault)
        self.clock.at(c.duration, self._settle)
        self.clock.at(c.duration + 50, self._probe_submit)
        self.clock.run_until(end, stop=self._done)
        for r in self.history.honest:
            node = self.replicas[r]
            self.history.final_quarantined[r] = tuple(sorted(node.quarantined)) if node else ()
            if node:
                for k, n in node.dropped.items():
                    self.history.dropped[k] = self.history.dropped.get(k, 0) + n
        return self.history

    def _done(self) -> bool:
        """The probe got through and every liar caught so far is shut out everywhere (or time is up)."""
        if self.history.probe_accepted is None:
            return False
        for liar in self.history.exposed:
            for r in self.history.honest:
                node = self.replicas[r]
                if node is not None and liar not in node.quarantined:
                    return False
        return True

    def _tick_all(self) -> None:
        for r, node in self.replicas.items():
            if node is not None and r not in self.paused:
                node.tick()
                self._flush(r, node)
        for cid, cl in [*self.clients.items(), (PROBE, self.probe)]:
            frame = cl.tick()
            if frame is not None:
                self._broadcast_from(cid, frame)

    def _client_submit(self, cid: str) -> None:
        if self.clock.now >= self.cfg.duration:
            return
        cl = self.clients[cid]
        op = json.dumps({"key": f"k{self.rng_client.below(4)}", "value": f"{cid}@{self.clock.now}"}).encode()
        self._broadcast_from(cid, cl.submit(op))

    def _probe_submit(self) -> None:
        self._broadcast_from(PROBE, self.probe.submit(b'{"key":"probe","value":"after-heal"}'))

    def _broadcast_from(self, src: str, frame: bytes) -> None:
        for r in self.ids:
            self._transmit(src, r, frame)

    def _flush(self, r: str, node: Replica) -> None:
        out = node.drain()
        for s in out.sends:
            if s.dst is None:
                for dst in self.ids:
                    if dst != r:
                        self._transmit(r, dst, s.frame)
            else:
                self._transmit(r, s.dst, s.frame)
        if r not in self.history.honest:
            return
        for e in out.events:
            if isinstance(e, Executed):
                self.history.executions.append(Execution(self.clock.now, r, e.seq, e.digest, e.results))
            elif isinstance(e, Quarantined):
                self.history.quarantines.append((self.clock.now, r, e.offender))
            elif isinstance(e, ViewEntered):
                self.history.views.append((self.clock.now, r, e.view))

    def _transmit(self, src: str, dst: str, frame: bytes) -> None:
        inc = self.incarnation.get(dst, 0)
        for delay in self.net.delays(src, dst):
            self.clock.at(self.clock.now + delay, functools.partial(self._deliver, src, dst, frame, inc))

    def _deliver(self, src: str, dst: str, frame: bytes, inc: int) -> None:
        if dst in self.clients or dst == PROBE:
            cl = self.probe if dst == PROBE else self.clients[dst]
            acc = cl.receive(frame)
            if acc is not None:
                self.history.acceptances.append(Acceptance(self.clock.now, dst, acc.timestamp, acc.result))
                if dst == PROBE:
                    self.history.probe_accepted = self.clock.now
                else:
                    self.clock.at(
                        self.clock.now + self.rng_client.between(*self.cfg.client_think),
                        lambda: self._client_submit(dst),
                    )
            return
        node = self.replicas.get(dst)
        if node is None or self.incarnation[dst] != inc:
            return  # crashed: the frame is lost
        if dst in self.paused:
            self.paused[dst].append(frame)
            return
        if self.history.byzantine and dst in self.history.honest:
            self._note_statements(dst, frame)
        node.receive(frame)
        self._flush(dst, node)

    def _note_statements(self, dst: str, frame: bytes) -> None:
        """Record what Byzantine replicas signed that reached each honest one (first-hand, or inside an
        honest replica's prepare): an honest replica holding a contradiction has caught a liar."""
        try:
            f = decode_frame(frame)
        except CodecError:
            return
        signed: list[Signed] = []
        if isinstance(f, PrePrepare):
            signed.append(f.header)
        elif isinstance(f, Signed):
            signed.append(f)
            if isinstance(f.msg, Prepare):
                signed.append(f.msg.header)
        for s in signed:
            st = statement(s)
            if st is None or s.signer not in self.history.byzantine or not self.keys_public.verify(
                s.signer, s.body, s.signature
            ):
                continue
            seen = self._said.setdefault((dst, s.signer, st[0]), set())
            seen.add(st[1])
            if len(seen) > 1:
                self.history.exposed.setdefault(s.signer, self.clock.now)

    # ------------------------------------------------------------------ faults

    def _fault(self) -> None:
        total = sum(w for _, w in self.cfg.fault_weights)
        pick = self.rng_fault.below(total)
        kind = self.cfg.fault_weights[-1][0]
        for name, w in self.cfg.fault_weights:
            if pick < w:
                kind = name
                break
            pick -= w
        self.history.faults.append((self.clock.now, kind))
        live = [r for r in self.ids if self.replicas[r] is not None and r not in self.paused]
        if kind == "partition":
            order = self.rng_fault.shuffled(self.ids)
            cut = self.rng_fault.between(1, len(order) - 1)
            self.net.partition([order[:cut], order[cut:]])
        elif kind == "isolate_primary":
            views = [n.view for n in self.replicas.values() if n is not None]
            p = self.pcfg.primary(max(views, default=0))
            self.net.partition([[p], [r for r in self.ids if r != p]])
        elif kind == "heal":
            self.net.heal()
        elif kind == "crash" and live:
            r = self.rng_fault.choice(live)
            self._crash(r)
            back = self.clock.now + self.rng_fault.between(*self.cfg.restart_delay)
            self.clock.at(back, lambda: self._restart(r))
        elif kind == "pause" and live:
            r = self.rng_fault.choice(live)
            self.paused[r] = []
            back = self.clock.now + self.rng_fault.between(*self.cfg.pause_time)
            self.clock.at(back, lambda: self._resume(r))

    def _crash(self, r: str) -> None:
        node = self.replicas[r]
        if node is None:
            return
        self.durable[r] = node.durable()
        self._said = {k: v for k, v in self._said.items() if k[0] != r}  # what it held is gone
        self.replicas[r] = None
        self.incarnation[r] += 1
        self.paused.pop(r, None)

    def _restart(self, r: str) -> None:
        if self.replicas[r] is None:
            self.replicas[r] = self._make(r, self.durable.get(r))

    def _resume(self, r: str) -> None:
        queued = self.paused.pop(r, None)
        node = self.replicas[r]
        if queued is None or node is None:
            return
        for frame in queued:
            node.receive(frame)
            self._flush(r, node)

    def _settle(self) -> None:
        self.history.settle_start = self.clock.now
        self.net.heal()
        self.net.profile = NetworkProfile(loss=0.0, duplicate=0.0, spike_chance=0.0)
        for r in self.ids:
            self._restart(r)
            self._resume(r)
