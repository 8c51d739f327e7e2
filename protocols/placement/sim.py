"""A seeded fleet simulator on virtual time: the planner (or a baseline) run against a moving fleet.

Every ``tick_ms`` the simulator applies the load steps that are due, finishes
the moves whose hand-over is over, counts frames, and records each agent's
true CPU share. Every ``report_every_ms`` agents report their load (the true
value plus measurement noise, capped at 100% like a real CPU meter, with a
trend forecast standing in for the anomaly engine's); every
``plan_every_ms`` the planner sees the reports and starts its moves.

An agent's utilisation follows the demand placed on it: its background plus
the CPU of the streams it runs, over its cores. A move takes ``handover_ms``
during which the stream runs nowhere and its frames are dropped (counted);
an agent that leaves stops its streams (frames lost to the outage) until the
planner evacuates them or it comes back. Frames beyond a box's CPU are
dropped as overload.

    report = FleetSim(7).run()               # the balancer on the standard fleet
    report = FleetSim(7, planner=greedy_plan).run()   # a baseline, same fleet
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from protocols.placement.agent_view import AgentLoad, AgentView
from protocols.placement.assignment import Placement
from protocols.placement.checks import check_plan
from protocols.placement.config import PlannerConfig
from protocols.placement.controls import OperatorControls
from protocols.placement.moves import Move, MoveRecord
from protocols.placement.plan import Plan, PlanInput
from protocols.placement.planner import Planner
from protocols.placement.scenario import Fleet, LoadStep, StepKind, build_fleet
from protocols.placement.workload import Workload
from protocols.sim.prng import SplitMix64

__all__ = ["FleetSim", "FleetSimConfig", "FrameCounts", "PlanFn", "SimReport", "run_fleet"]

PlanFn = Callable[[PlanInput], Plan]
_MAX_KEPT = 20  # violations kept per checker (all are counted)


@dataclass(frozen=True, slots=True)
class FleetSimConfig:
    agents: int = 50
    streams: int = 200
    duration_ms: int = 24 * 60_000
    tick_ms: int = 1_000
    report_every_ms: int = 5_000
    plan_every_ms: int = 5_000
    handover_ms: int = 2_000
    noise: float = 0.01  # measurement noise, +- share of the box
    forecast_window: int = 6  # reports the trend forecast fits
    forecast_horizon_ms: int = 30_000
    abort_chance: float = 0.0  # a move's transaction aborts (nothing changes)
    steps: tuple[LoadStep, ...] | None = None  # None: the fleet's standard day
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    check_plans: bool = True  # run every plan checker over every plan

    def __post_init__(self) -> None:
        if self.agents < 1 or self.streams < 0 or self.tick_ms < 1 or self.duration_ms < 0:
            raise ValueError("need agents >= 1, streams >= 0, tick_ms >= 1 and duration_ms >= 0")
        for name in ("report_every_ms", "plan_every_ms", "handover_ms"):
            value = getattr(self, name)
            if value < 0 or value % self.tick_ms or (value == 0 and name != "handover_ms"):
                raise ValueError(f"{name} must be a positive multiple of tick_ms ({self.tick_ms})")
        if not 0 <= self.abort_chance <= 1 or self.noise < 0 or self.forecast_window < 3:
            raise ValueError("need 0 <= abort_chance <= 1, noise >= 0 and forecast_window >= 3")


@dataclass(frozen=True, slots=True)
class FrameCounts:
    arrived: float = 0.0
    processed: float = 0.0
    dropped_overload: float = 0.0  # beyond the box's CPU
    dropped_handover: float = 0.0  # while a running stream moved
    lost_outage: float = 0.0  # while its agent was gone and before it was placed again


@dataclass(frozen=True, slots=True)
class SimReport:
    """A run's record: per-tick CPU shares, every move, frame counts, and any checker's complaints."""

    seed: int
    config: FleetSimConfig
    fleet: Fleet
    times: tuple[int, ...]
    # per tick (the load before its plan), per agent in fleet order; None: offline
    cpu: tuple[tuple[float | None, ...], ...]
    utilisation: tuple[tuple[float | None, ...], ...]  # the same, weighted as the planner weighs load
    moves: tuple[MoveRecord, ...]
    plans: int
    frames: FrameCounts
    violations: Mapping[str, tuple[str, ...]]
    violation_counts: Mapping[str, int]
    placement: Placement
    controls: OperatorControls

    @property
    def ok(self) -> bool:
        return not any(self.violation_counts.values())

    def index_at(self, t_ms: int) -> int:
        """The last tick at or before ``t_ms``."""
        return max(0, min(len(self.times) - 1, t_ms // self.config.tick_ms))

    def cv(self, i: int, of: str = "utilisation") -> float:
        """Coefficient of variation over the online agents at tick ``i`` of ``utilisation`` or ``cpu``."""
        xs = [x for x in (self.utilisation if of == "utilisation" else self.cpu)[i] if x is not None]
        if not xs:
            return 0.0
        mean = sum(xs) / len(xs)
        if mean == 0:
            return 0.0
        return math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs)) / mean

    def peak(self, i: int) -> float:
        """The highest CPU share at tick ``i``."""
        return max((x for x in self.cpu[i] if x is not None), default=0.0)

    def balanced(self, i: int, cv_target: float) -> bool:
        """Utilisation's CV under ``cv_target`` and no agent's CPU at the overload threshold."""
        return self.cv(i) < cv_target and self.peak(i) < self.config.planner.overload_cpu

    def time_to_balance(self, start_ms: int, end_ms: int, cv_target: float) -> tuple[int | None, int | None]:
        """(when some agent first crossed the overload threshold in [start, end), how long until balanced).

        (None, None): nothing overloaded; (t, None): never balanced again before ``end_ms``.
        """
        over = self.config.planner.overload_cpu
        first = None
        for i in range(self.index_at(start_ms), self.index_at(end_ms)):
            if first is None and self.peak(i) >= over:
                first = i
            if first is not None and self.balanced(i, cv_target):
                return self.times[first], self.times[i] - self.times[first]
        return (None if first is None else self.times[first]), None

    def max_budgeted_in_window(self) -> int:
        """The most budgeted moves that started in any window of ``budget_window_ms``."""
        return _most_in_window([r.started_ms for r in self.moves if r.reason.budgeted],
                               self.config.planner.budget_window_ms)

    def moves_per_minute(self, start_ms: int = 0, end_ms: int | None = None,
                         budgeted_only: bool = False) -> float:
        """Moves started per minute in [start, end): all, or only those the budget counts."""
        end = self.config.duration_ms if end_ms is None else end_ms
        n = sum(1 for r in self.moves
                if start_ms <= r.started_ms < end and (r.reason.budgeted or not budgeted_only))
        return n / max(1e-9, (end - start_ms) / 60_000)


def _most_in_window(starts: list[int], window_ms: int) -> int:
    """The most of ``starts`` that fall in any window (t - window_ms, t]."""
    starts = sorted(starts)
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while starts[lo] <= t - window_ms:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class FleetSim:
    """One run of ``planner`` over the fleet of ``seed``; :meth:`run` returns its :class:`SimReport`."""

    def __init__(self, seed: int, config: FleetSimConfig | None = None, planner: PlanFn | None = None,
                 fleet: Fleet | None = None) -> None:
        self.seed = seed
        self.cfg = config or FleetSimConfig()
        self.fleet = fleet or build_fleet(seed, self.cfg.agents, self.cfg.streams,
                                          duration_ms=self.cfg.duration_ms)
        steps = self.cfg.steps if self.cfg.steps is not None else self.fleet.steps
        self.steps = sorted(steps, key=lambda s: s.at_ms)
        self.planner = planner or Planner(self.cfg.planner).plan
        self.rng = SplitMix64(seed * 7919 + 17)
        self.agents = {a.id: a for a in self.fleet.agents}
        self.online = dict.fromkeys(self.agents, True)
        self.status_since = dict.fromkeys(self.agents, 0)
        self.base = {w.id: w for w in self.fleet.streams}
        self.ramp: dict[str, tuple[float, float, int, int]] = {w: (1.0, 1.0, 0, 0) for w in self.base}
        self.placement = self.fleet.initial
        self.running: dict[str, str | None] = {w: self.placement.agent_of(w) for w in self.base}
        self.hotspots: dict[str, list[str]] = {}
        self.flying: dict[str, tuple[int, bool, int]] = {}  # workload -> (record index, was running, finish)
        self.records: list[MoveRecord] = []
        self.controls = OperatorControls()
        self.views: dict[str, AgentView] = {}
        self.reported: dict[str, list[tuple[int, float]]] = {a: [] for a in self.agents}
        self.frames = {k: 0.0 for k in ("arrived", "processed", "dropped_overload", "dropped_handover",
                                        "lost_outage")}
        self.violations: dict[str, list[str]] = {}
        self.violation_counts: dict[str, int] = {}
        self.plans = 0

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> SimReport:
        cfg = self.cfg
        times: list[int] = []
        cpu: list[tuple[float | None, ...]] = []
        util: list[tuple[float | None, ...]] = []
        pc = cfg.planner
        order = [a.id for a in self.fleet.agents]
        step_i = 0
        for t in range(0, cfg.duration_ms + 1, cfg.tick_ms):
            while step_i < len(self.steps) and self.steps[step_i].at_ms <= t:
                self._apply_step(self.steps[step_i], t)
                step_i += 1
            self._finish_moves(t)
            load = self._true_load(t)
            times.append(t)  # the load at t, before the planner acts on it
            cpu.append(tuple(load[a][0] if self.online[a] else None for a in order))
            util.append(tuple(
                pc.cpu_weight * load[a][0] + pc.memory_weight * load[a][1]
                + pc.tx_weight * load[a][2] / self.agents[a].capacity.max_tx_per_s if self.online[a] else None
                for a in order))
            if t % cfg.report_every_ms == 0:
                self._report(t, load)
            if t % cfg.plan_every_ms == 0 and self._plan(t):
                load = self._true_load(t)
            self._count_frames(load)
        budget = cfg.planner.move_budget
        most = _most_in_window([r.started_ms for r in self.records if r.reason.budgeted],
                               cfg.planner.budget_window_ms)
        if most > budget:
            self._note("budget_window", [f"{most} budgeted moves began in one window; budget {budget}"])
        return SimReport(self.seed, cfg, self.fleet, tuple(times), tuple(cpu), tuple(util),
                         tuple(self.records), self.plans,
                         FrameCounts(**self.frames),
                         {k: tuple(v) for k, v in self.violations.items()}, dict(self.violation_counts),
                         self.placement, self.controls)

    # -- the world ---------------------------------------------------------------------------

    def _factor(self, w: str, t: int) -> float:
        start_f, end_f, start, end = self.ramp[w]
        if t >= end:
            return end_f
        return start_f + (end_f - start_f) * (t - start) / (end - start)

    def demand(self, w: str, t: int) -> Workload:
        """Stream ``w`` as it is at ``t``: its CPU scaled by the steps so far."""
        base = self.base[w]
        f = self._factor(w, t)
        return base if f == 1.0 else replace(base, cpu_cores=base.cpu_cores * f)

    def _apply_step(self, step: LoadStep, t: int) -> None:
        if step.kind is StepKind.HOTSPOT:
            hit = sorted(w for w, a in self.placement.owners().items() if a in step.ids)
            self.hotspots[step.label] = hit
            step = replace(step, kind=StepKind.DEMAND, ids=tuple(hit))
        elif step.kind is StepKind.HOTSPOT_END:
            calmed = tuple(self.hotspots.pop(step.label, ()))
            step = replace(step, kind=StepKind.DEMAND, ids=calmed, factor=1.0)
        for x in step.ids:
            if step.kind is StepKind.DEMAND:
                self.ramp[x] = (self._factor(x, t), step.factor, t, t + step.ramp_ms)
            elif step.kind is StepKind.LEAVE and self.online[x]:
                self.online[x], self.status_since[x] = False, t
                for w, a in self.running.items():
                    if a == x:
                        self.running[w] = None
            elif step.kind is StepKind.RETURN and not self.online[x]:
                self.online[x], self.status_since[x] = True, t
                for w in self.placement.on(x):
                    if w not in self.flying:
                        self.running[w] = x
            elif step.kind is StepKind.DRAIN:
                self.controls = self.controls.drain(x)
            elif step.kind is StepKind.UNDRAIN:
                self.controls = self.controls.undrain(x)
            elif step.kind is StepKind.CORDON:
                self.controls = self.controls.cordon(x)
            elif step.kind is StepKind.UNCORDON:
                self.controls = self.controls.uncordon(x)

    def _true_load(self, t: int) -> dict[str, tuple[float, float, float, float]]:
        """Per agent: (CPU share, memory share, transactions/s, frames/s in), from what it runs now."""
        out = {a.id: [a.background_cpu, a.background_memory, 0.0, 0.0] for a in self.fleet.agents}
        for w, a in self.running.items():
            if a is None:
                continue
            d, cap = self.demand(w, t), self.agents[a].capacity
            row = out[a]
            row[0] += d.cpu_cores / cap.cores
            row[1] += d.memory_mb / cap.memory_mb
            row[2] += d.tx_per_s
            row[3] += d.fps
        return {a: (r[0], r[1], r[2], r[3]) for a, r in out.items()}

    def _noise(self) -> float:
        return (self.rng.next_u64() / 2**63 - 1.0) * self.cfg.noise

    def _report(self, t: int, load: Mapping[str, tuple[float, float, float, float]]) -> None:
        for a, agent in self.agents.items():
            if not self.online[a]:
                old = self.views.get(a)
                self.views[a] = AgentView(a, agent.capacity, old.load if old else AgentLoad(),
                                          False, self.status_since[a])
                continue
            cpu, mem, tx, fps_in = load[a]
            measured = min(1.0, max(0.0, cpu + self._noise()))
            history = self.reported[a]
            history.append((t, measured))
            del history[: -self.cfg.forecast_window]
            done = fps_in * min(1.0, 1.0 / cpu) if cpu > 0 else fps_in
            per_frame = 1000.0 / agent.capacity.detector_fps.get("ssdlite", 30.0)
            self.views[a] = AgentView(a, agent.capacity, AgentLoad(
                measured_ms=t, cpu_share=measured, memory_share=min(1.0, mem), tx_per_s=tx,
                inference_ms=per_frame * max(1.0, cpu), frames_in_per_s=fps_in, frames_done_per_s=done,
                forecast_cpu_share=self._forecast(history)), True, self.status_since[a])

    def _forecast(self, history: list[tuple[int, float]]) -> float | None:
        """The least-squares trend of the last reports, ``forecast_horizon_ms`` ahead (a stand-in)."""
        if len(history) < 3:
            return None
        n = len(history)
        mt = sum(t for t, _ in history) / n
        mv = sum(v for _, v in history) / n
        var = sum((t - mt) ** 2 for t, _ in history)
        slope = sum((t - mt) * (v - mv) for t, v in history) / var if var else 0.0
        ahead = history[-1][0] + self.cfg.forecast_horizon_ms
        return min(2.0, max(0.0, mv + slope * (ahead - mt)))

    # -- planning and moves ----------------------------------------------------------------

    def _plan(self, t: int) -> bool:
        horizon = t - 2 * self.cfg.planner.budget_window_ms
        recent = tuple(r for r in self.records if r.in_flight or r.started_ms > horizon)
        inp = PlanInput(t, tuple(self.views[a] for a in sorted(self.views)),
                        tuple(self.demand(w, t) for w in sorted(self.base)), self.placement, recent,
                        self.controls)
        plan = self.planner(inp)
        self.plans += 1
        if self.cfg.check_plans:
            for name, problems in check_plan(inp, plan, self.cfg.planner).items():
                self._note(name, [f"t={t}: {p}" for p in problems])
        for m in plan.moves:
            self._start(m, t)
        return bool(plan.moves)

    def _start(self, m: Move, t: int) -> None:
        if m.workload in self.flying or self.placement.agent_of(m.workload) != m.source:
            self._note("sim", [f"t={t}: cannot start {m}"])
            return
        self.records.append(MoveRecord.start(m, t))
        self.flying[m.workload] = (len(self.records) - 1, self.running[m.workload] is not None,
                                   t + self.cfg.handover_ms)
        self.running[m.workload] = None

    def _finish_moves(self, t: int) -> None:
        for w in sorted(self.flying):
            index, _, finish = self.flying[w]
            if finish > t:
                continue
            del self.flying[w]
            rec = self.records[index]
            committed = self.online[rec.target] and not (self.cfg.abort_chance and self.rng.chance(
                self.cfg.abort_chance))
            self.records[index] = rec.finish(committed, t)
            if committed:
                self.placement = self.placement.moved(w, rec.target, t)
                self.running[w] = rec.target
            else:
                owner = self.placement.agent_of(w)
                self.running[w] = owner if owner is not None and self.online[owner] else None

    def _count_frames(self, load: Mapping[str, tuple[float, float, float, float]]) -> None:
        dt = self.cfg.tick_ms / 1000
        f = self.frames
        for w, a in self.running.items():
            frames = self.base[w].fps * dt
            f["arrived"] += frames
            if a is not None:
                done = frames * min(1.0, 1.0 / load[a][0]) if load[a][0] > 0 else frames
                f["processed"] += done
                f["dropped_overload"] += frames - done
            elif w in self.flying and self.flying[w][1]:
                f["dropped_handover"] += frames
            else:
                f["lost_outage"] += frames

    def _note(self, name: str, problems: list[str]) -> None:
        self.violation_counts[name] = self.violation_counts.get(name, 0) + len(problems)
        kept = self.violations.setdefault(name, [])
        kept.extend(problems[: max(0, _MAX_KEPT - len(kept))])


def run_fleet(seed: int, config: FleetSimConfig | None = None, planner: PlanFn | None = None,
              fleet: Fleet | None = None) -> SimReport:
    """Simulate ``seed`` (the same seed and planner replay exactly)."""
    return FleetSim(seed, config, planner, fleet).run()
