"""The properties every plan must keep, as checkers over (input, plan, config).

Each returns its violations (an empty list: the plan keeps the property). The
property tests run them over generated fleets, the simulator over every plan
it makes, and the tests show each one catching a planner broken on purpose.
The hard-limit and completeness checkers recount memory on their own rather
than trust the planner's ledger; the hysteresis checker replays the plan on a
fresh ledger, since the score is the ledger's definition.
"""

from __future__ import annotations

from collections.abc import Callable

from protocols.placement.agent_view import AgentView
from protocols.placement.config import PlannerConfig
from protocols.placement.ledger import Ledger
from protocols.placement.plan import Plan, PlanInput
from protocols.placement.workload import Workload

__all__ = ["PLAN_CHECKS", "check_plan", "homeless", "requested_memory"]

Checker = Callable[[PlanInput, Plan, PlannerConfig], list[str]]


def requested_memory(inp: PlanInput) -> dict[str, int]:
    """Per agent: its reserve plus the memory of what it owns or receives (in-flight moves count twice)."""
    out = {a.id: a.capacity.reserved_memory_mb for a in inp.agents}
    flying = {r.workload: r.target for r in inp.moves if r.in_flight}
    for w in inp.workloads:
        ends = {inp.placement.agent_of(w.id), flying.get(w.id)}
        for a in ends:
            if a in out:
                out[a] += w.memory_mb
    return out


def _static_refusal(inp: PlanInput, w: Workload, v: AgentView | None) -> str | None:
    if v is None or not v.online:
        return "is not online"
    if v.id in inp.controls.cordoned or v.id in inp.controls.drained:
        return "is cordoned or drained"
    if w.reachable_from is not None and v.id not in w.reachable_from:
        return "cannot reach it"
    if not inp.controls.allows(w.id, v.id):
        return "is not among its pinned agents"
    if w.needs_accelerator and v.capacity.accelerators == 0:
        return "has no accelerator"
    if w.backend is not None and w.backend not in v.capacity.detector_fps:
        return f"has no {w.backend} detector"
    return None


def homeless(inp: PlanInput, config: PlannerConfig) -> list[str]:
    """Workloads with no running owner that the planner must place now (not in flight)."""
    agents = {a.id: a for a in inp.agents}
    flying = {r.workload for r in inp.moves if r.in_flight}
    out = []
    for w in inp.workloads:
        owner = inp.placement.agent_of(w.id)
        if w.id in flying:
            continue
        v = agents.get(owner) if owner is not None else None
        if owner is None or v is None or (
                not v.online and inp.now_ms - v.status_since_ms >= config.evacuate_after_ms):
            out.append(w.id)
    return sorted(out)


def hard_limits(inp: PlanInput, plan: Plan, config: PlannerConfig) -> list[str]:
    """Every move's target is online, not cordoned or drained, allowed for the work, and has its memory."""
    agents = {a.id: a for a in inp.agents}
    workloads = {w.id: w for w in inp.workloads}
    requested = requested_memory(inp)
    bad = []
    for m in plan.moves:
        w, v = workloads[m.workload], agents.get(m.target)
        why = _static_refusal(inp, w, v)
        if why is not None:
            bad.append(f"{m.workload} -> {m.target}, which {why}")
            continue
        assert v is not None
        requested[m.target] += w.memory_mb
        if requested[m.target] > v.capacity.memory_mb:
            bad.append(f"{m.workload} -> {m.target}: memory requests reach {requested[m.target]} MB of "
                       f"{v.capacity.memory_mb} MB")
    return bad


def well_formed(inp: PlanInput, plan: Plan, config: PlannerConfig) -> list[str]:
    """Each workload moves at most once, never while in flight, and from the agent that owns it."""
    flying = {r.workload for r in inp.moves if r.in_flight}
    seen: set[str] = set()
    bad = []
    for m in plan.moves:
        if m.workload in seen:
            bad.append(f"{m.workload} moves twice in one plan")
        seen.add(m.workload)
        if m.workload in flying:
            bad.append(f"{m.workload} moves while its last move is in flight")
        if m.source != inp.placement.agent_of(m.workload):
            owner = inp.placement.agent_of(m.workload)
            bad.append(f"{m.workload} moves from {m.source}, but {owner} owns it")
    return bad


def hysteresis(inp: PlanInput, plan: Plan, config: PlannerConfig) -> list[str]:
    """Every voluntary move raises its workload's score by more than the hysteresis margin."""
    led = Ledger(inp, config)
    bad = []
    for m in plan.moves:
        if m.reason.voluntary and m.source is not None:
            gain = led.gain(led.workloads[m.workload], m.source, m.target)
            if not gain > config.hysteresis:
                bad.append(f"{m.reason} {m.workload} {m.source} -> {m.target} gains {gain:.4f}, "
                           f"not more than {config.hysteresis}")
        led.apply(m.workload, m.target)
    return bad


def dwell(inp: PlanInput, plan: Plan, config: PlannerConfig) -> list[str]:
    """A voluntary move takes only work that has stayed ``min_dwell_ms`` where it is."""
    bad = []
    for m in plan.moves:
        since = inp.placement.since(m.workload)
        if m.reason.voluntary and since is not None and inp.now_ms - since < config.min_dwell_ms:
            bad.append(f"{m.workload} moved {inp.now_ms - since} ms after it arrived on {m.source}")
    return bad


def budget(inp: PlanInput, plan: Plan, config: PlannerConfig) -> list[str]:
    """Budgeted moves in the window ending now, the recent ones and this plan's, stay within the budget."""
    since = inp.now_ms - config.budget_window_ms
    recent = sum(1 for r in inp.moves if r.reason.budgeted and r.started_ms > since)
    planned = sum(1 for m in plan.moves if m.reason.budgeted)
    if planned and recent + planned > config.move_budget:
        return [f"{recent} recent + {planned} planned budgeted moves exceed the budget of "
                f"{config.move_budget}"]
    return []


def complete(inp: PlanInput, plan: Plan, config: PlannerConfig) -> list[str]:
    """Work with no running owner is placed, or listed unplaced only when no agent could take it."""
    agents = {a.id: a for a in inp.agents}
    workloads = {w.id: w for w in inp.workloads}
    moved = {m.workload for m in plan.moves}
    unplaced = {b.workload for b in plan.unplaced}
    requested = requested_memory(inp)
    for m in plan.moves:
        requested[m.target] = requested.get(m.target, 0) + workloads[m.workload].memory_mb
    bad = []
    for wid in homeless(inp, config):
        if wid not in moved and wid not in unplaced:
            bad.append(f"{wid} has no running owner, and the plan neither places it nor says why")
    for wid in sorted(unplaced):
        w = workloads[wid]
        for v in agents.values():
            if _static_refusal(inp, w, v) is None and requested[v.id] + w.memory_mb <= v.capacity.memory_mb:
                bad.append(f"{wid} left unplaced though {v.id} could take it")
                break
    return bad


def drain_progress(inp: PlanInput, plan: Plan, config: PlannerConfig) -> list[str]:
    """With budget left, nothing movable stays on an online drained agent unless no agent can take it."""
    if plan.budget_left == 0:
        return []
    agents = {a.id: a for a in inp.agents}
    flying = {r.workload for r in inp.moves if r.in_flight}
    moved = {m.workload for m in plan.moves}
    stuck = {b.workload for b in plan.stuck}
    bad = []
    for a in sorted(inp.controls.drained):
        if a in agents and agents[a].online:
            left = [w for w in inp.placement.on(a) if w not in flying | moved | stuck]
            if left:
                bad.append(f"{a} is draining, budget is left, and {left[:3]} stay on it")
    return bad


PLAN_CHECKS: dict[str, Checker] = {
    "hard_limits": hard_limits,
    "well_formed": well_formed,
    "hysteresis": hysteresis,
    "dwell": dwell,
    "budget": budget,
    "complete": complete,
    "drain_progress": drain_progress,
}


def check_plan(inp: PlanInput, plan: Plan, config: PlannerConfig) -> dict[str, list[str]]:
    """Every checker's violations, by name."""
    return {name: fn(inp, plan, config) for name, fn in PLAN_CHECKS.items()}
