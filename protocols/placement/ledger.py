"""The fleet as the planner projects it: each agent's measured load plus the moves its measurement misses.

An agent's metrics are a few seconds old; moves in flight, or finished after
the measurement, are not in them. The ledger adds their demand where the work
is going and takes it off where it left, then adds every move the planner
plans, so each decision sees the ones before it.

Rules (the binding's :class:`MoveRecord`\\ s drive them):

* source side: the work is taken off the source's measurement if that
  measurement is older than the move's start;
* target side: the work is added to the target's measurement unless the move
  committed before it was measured;
* memory for the hard limit is counted on requests, not on measurements: the
  sum of the ``memory_mb`` of every workload an agent owns or is receiving (a
  moving workload counts on both ends until its move ends), plus the box's
  reserve. So a stale measurement can never let the planner over-commit memory.
"""

from __future__ import annotations

from operator import attrgetter

from protocols.placement.agent_view import AgentView
from protocols.placement.config import PlannerConfig
from protocols.placement.moves import MoveRecord, MoveState
from protocols.placement.plan import PlanInput
from protocols.placement.workload import Workload

__all__ = ["Ledger"]


class Ledger:
    """Projected per-agent load, hard limits and the placement score; :meth:`apply` adds a planned move."""

    def __init__(self, inp: PlanInput, config: PlannerConfig) -> None:
        self.inp = inp
        self.config = config
        self.controls = inp.controls
        self.now_ms = inp.now_ms
        self.agents: dict[str, AgentView] = {a.id: a for a in sorted(inp.agents, key=attrgetter("id"))}
        self.workloads: dict[str, Workload] = {w.id: w for w in sorted(inp.workloads, key=attrgetter("id"))}
        records = sorted(inp.moves, key=lambda r: (r.started_ms, r.workload, r.target, r.source or "",
                                                   r.reason.value, r.state.value, r.finished_ms or -1))
        self.in_flight: dict[str, MoveRecord] = {r.workload: r for r in records if r.in_flight}
        self.location: dict[str, str | None] = {}
        self.holds: dict[str, set[str]] = {a: set() for a in self.agents}
        self.requested_mb: dict[str, int] = {a: v.capacity.reserved_memory_mb for a, v in self.agents.items()}
        self._cpu = {a: v.load.cpu_share * v.capacity.cores for a, v in self.agents.items()}
        self._cpu_delta = dict.fromkeys(self.agents, 0.0)
        self._mem = {a: v.load.memory_share * v.capacity.memory_mb for a, v in self.agents.items()}
        self._tx = {a: v.load.tx_per_s for a, v in self.agents.items()}
        self._detector = dict.fromkeys(self.agents, 0.0)
        for w in self.workloads.values():
            owner = inp.placement.agent_of(w.id)
            rec = self.in_flight.get(w.id)
            where = rec.target if rec is not None else owner
            self.location[w.id] = where
            if where in self.agents:
                self.holds[where].add(w.id)
                self._detector[where] += self.detector_cost(w, where)
            ends = (owner,) if rec is None or rec.target == owner else (owner, rec.target)
            for a in ends:
                if a in self.agents:
                    self.requested_mb[a] += w.memory_mb
        self._unsettled: set[str] = set()
        for r in records:
            self._note_record(r)

    def _note_record(self, r: MoveRecord) -> None:
        ends = [a for a in (r.source, r.target) if a in self.agents]
        for a in ends:
            if r.in_flight or (r.finished_ms or 0) + self.config.settle_ms > self.agents[a].load.measured_ms:
                self._unsettled.add(a)
        w = self.workloads.get(r.workload)
        if w is None or r.state is MoveState.ABORTED:
            return
        if r.source in self.agents and self.agents[r.source].load.measured_ms < r.started_ms:
            self._shift(w, r.source, -1.0)
        if r.target in self.agents and (
                r.in_flight or (r.finished_ms or 0) > self.agents[r.target].load.measured_ms):
            self._shift(w, r.target, 1.0)

    def _shift(self, w: Workload, agent: str, sign: float) -> None:
        self._cpu[agent] += sign * w.cpu_cores
        self._cpu_delta[agent] += sign * w.cpu_cores
        self._mem[agent] += sign * w.memory_mb
        self._tx[agent] += sign * w.tx_per_s

    # -- what an agent carries -------------------------------------------------------------

    def detector_cost(self, w: Workload, agent: str) -> float:
        """The share of ``agent``'s measured detector throughput that ``w``'s frames take."""
        if w.backend is None or w.fps == 0:
            return 0.0
        fps = self.agents[agent].capacity.detector_fps.get(w.backend)
        return 0.0 if fps is None else w.fps / fps

    def cpu_share(self, agent: str) -> float:
        return max(0.0, self._cpu[agent]) / self.agents[agent].capacity.cores

    def memory_share(self, agent: str) -> float:
        return max(0.0, self._mem[agent]) / self.agents[agent].capacity.memory_mb

    def tx_share(self, agent: str) -> float:
        return max(0.0, self._tx[agent]) / self.agents[agent].capacity.max_tx_per_s

    def detector_share(self, agent: str) -> float:
        return self._detector[agent]

    def forecast_cpu_share(self, agent: str) -> float | None:
        """The forecast, moved by the same moves as the measurement."""
        v = self.agents[agent]
        if v.load.forecast_cpu_share is None:
            return None
        return max(0.0, v.load.forecast_cpu_share + self._cpu_delta[agent] / v.capacity.cores)

    def free_memory_mb(self, agent: str) -> int:
        return self.agents[agent].capacity.memory_mb - self.requested_mb[agent]

    def settled(self, agent: str) -> bool:
        """No move of its is in flight, and its measurement shows its last move for ``settle_ms``."""
        return agent not in self._unsettled

    def online(self, agent: str) -> bool:
        v = self.agents.get(agent)
        return v is not None and v.online

    # -- hard limits -----------------------------------------------------------------------

    def disallowed(self, w: Workload, agent: str) -> str | None:
        """Why ``w`` may not run on ``agent`` at all (reach, pins, accelerator, detector); None: it may."""
        cap = self.agents[agent].capacity
        if w.reachable_from is not None and agent not in w.reachable_from:
            return "cannot reach it"
        if not self.controls.allows(w.id, agent):
            return "not among its pinned agents"
        if w.needs_accelerator and cap.accelerators == 0:
            return "has no accelerator"
        if w.backend is not None and w.backend not in cap.detector_fps:
            return f"has no {w.backend} detector"
        return None

    def refusal(self, w: Workload, agent: str) -> str | None:
        """Why ``agent`` cannot take ``w`` now (a hard limit); None: it can."""
        v = self.agents.get(agent)
        if v is None:
            return "unknown"
        if not v.online:
            return "offline"
        if agent in self.controls.drained:
            return "draining"
        if agent in self.controls.cordoned:
            return "cordoned"
        why = self.disallowed(w, agent)
        if why is not None:
            return why
        free = self.free_memory_mb(agent)
        if w.memory_mb > free:
            return f"has {max(free, 0)} MB free"
        return None

    # -- load ------------------------------------------------------------------------------

    def after(self, w: Workload, agent: str) -> tuple[float, float, float, float]:
        """(CPU, memory, transaction, detector) shares of ``agent`` if ``w`` were added to it."""
        cap = self.agents[agent].capacity
        return (self.cpu_share(agent) + w.cpu_cores / cap.cores,
                self.memory_share(agent) + w.memory_mb / cap.memory_mb,
                self.tx_share(agent) + w.tx_per_s / cap.max_tx_per_s,
                self.detector_share(agent) + self.detector_cost(w, agent))

    def overload(self, agent: str) -> str | None:
        """Why ``agent`` is overloaded, in plain words; None: it is not."""
        cfg = self.config
        cpu, mem, det = self.cpu_share(agent), self.memory_share(agent), self.detector_share(agent)
        if cpu >= cfg.overload_cpu:
            return f"CPU at {cpu:.0%} (limit {cfg.overload_cpu:.0%})"
        if mem >= cfg.overload_memory:
            return f"memory at {mem:.0%} (limit {cfg.overload_memory:.0%})"
        if det > 1.0:
            return f"its detectors are asked for {det:.0%} of the frames/s they measured"
        forecast = self.forecast_cpu_share(agent)
        if forecast is not None and forecast >= cfg.overload_cpu:
            return f"CPU forecast to reach {forecast:.0%} (limit {cfg.overload_cpu:.0%})"
        return None

    def severity(self, agent: str) -> float:
        """How far past its limits ``agent`` is (1.0: at a limit), to relieve the worst first."""
        cfg = self.config
        forecast = self.forecast_cpu_share(agent) or 0.0
        return max(self.cpu_share(agent) / cfg.overload_cpu, self.memory_share(agent) / cfg.overload_memory,
                   self.detector_share(agent), forecast / cfg.overload_cpu)

    def would_overload(self, w: Workload, agent: str) -> bool:
        cfg = self.config
        cpu, mem, _, det = self.after(w, agent)
        forecast = self.forecast_cpu_share(agent)
        cores = self.agents[agent].capacity.cores
        return (cpu >= cfg.overload_cpu or mem >= cfg.overload_memory or det > 1.0
                or (forecast is not None and forecast + w.cpu_cores / cores >= cfg.overload_cpu))

    # -- the placement score ----------------------------------------------------------------

    def utilisation(self, agent: str) -> float:
        """The agent's load as one number: the score's weights over its CPU, memory and transaction shares.

        The complement of its headroom score, so balancing it and scoring
        homes by headroom pull the same way.
        """
        cfg = self.config
        return (cfg.cpu_weight * self.cpu_share(agent) + cfg.memory_weight * self.memory_share(agent)
                + cfg.tx_weight * self.tx_share(agent))

    def utilisation_of(self, w: Workload, agent: str) -> float:
        """How much ``w`` adds to ``agent``'s utilisation."""
        cfg, cap = self.config, self.agents[agent].capacity
        return (cfg.cpu_weight * w.cpu_cores / cap.cores + cfg.memory_weight * w.memory_mb / cap.memory_mb
                + cfg.tx_weight * w.tx_per_s / cap.max_tx_per_s)

    def score(self, w: Workload, agent: str, adding: bool) -> float:
        """How good a home ``agent`` is for ``w``: weighted headroom with ``w`` on it (higher is better).

        ``adding``: ``w`` is not on ``agent`` yet, so its demand is added first.
        Headroom is not clipped at zero, so between two overloaded agents the
        less overloaded still scores higher.
        """
        cfg = self.config
        if adding:
            cpu, mem, tx, det = self.after(w, agent)
        else:
            cpu, mem, tx, det = (self.cpu_share(agent), self.memory_share(agent), self.tx_share(agent),
                                 self.detector_share(agent))
        s = cfg.cpu_weight * (1 - cpu) + cfg.memory_weight * (1 - mem) + cfg.tx_weight * (1 - tx)
        if w.backend is not None:
            s += cfg.performance_weight * (1 - det)
        return s

    def gain(self, w: Workload, source: str, target: str) -> float:
        """How much better ``w`` would be off at ``target`` than where it is, on ``source``."""
        return self.score(w, target, adding=True) - self.score(w, source, adding=False)

    # -- planning ------------------------------------------------------------------------

    def apply(self, workload: str, target: str) -> None:
        """Record a planned move of ``workload`` to ``target`` (from wherever it is)."""
        w = self.workloads[workload]
        source = self.location[workload]
        if source in self.agents:
            self._shift(w, source, -1.0)
            self.holds[source].discard(workload)
            self._detector[source] -= self.detector_cost(w, source)
        self._shift(w, target, 1.0)
        self.holds[target].add(workload)
        self._detector[target] += self.detector_cost(w, target)
        self.requested_mb[target] += w.memory_mb  # the source keeps its share until the move ends
        self.location[workload] = target
