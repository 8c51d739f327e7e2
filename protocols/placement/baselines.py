"""The two planners the benchmark measures the balancer against, on the same fleet in the same run.

* :func:`static_plan`: placement from configuration, never moved (what edgebus
  did before: a camera runs where its agent.toml says, forever).
* :func:`greedy_plan`: greedy least-loaded without hysteresis: new and orphaned
  work goes to the agent with the lowest CPU share that passes the hard limits;
  then, again and again, a workload of the busiest agent that can shed one
  goes to the least loaded agent that can take it, whenever that lowers the
  busier of the two. No score margin, no
  dwell time, no move budget, no settling: it chases every measurement.

Both keep the hard limits (they use the same :class:`~protocols.placement.ledger.Ledger`).
"""

from __future__ import annotations

from protocols.placement.config import PlannerConfig
from protocols.placement.ledger import Ledger
from protocols.placement.moves import Move, MoveReason
from protocols.placement.plan import Blocked, Plan, PlanInput

__all__ = ["greedy_plan", "static_plan"]


def static_plan(inp: PlanInput, config: PlannerConfig | None = None) -> Plan:
    """No moves, ever; work without a running owner stays so."""
    led = Ledger(inp, config or PlannerConfig())
    homeless = [w for w in led.workloads if led.location[w] is None or not led.online(led.location[w] or "")]
    return Plan(inp.now_ms, (), tuple(Blocked(w, "static placement never moves work") for w in homeless))


def greedy_plan(inp: PlanInput, config: PlannerConfig | None = None) -> Plan:
    led = Ledger(inp, config or PlannerConfig())
    moves: list[Move] = []
    moved: set[str] = set()
    unplaced: list[Blocked] = []

    def add(workload: str, source: str | None, target: str, reason: MoveReason, detail: str) -> None:
        led.apply(workload, target)
        moves.append(Move(workload, source, target, reason, detail))
        moved.add(workload)

    for wid, w in led.workloads.items():
        if wid in led.in_flight:
            continue
        owner = inp.placement.agent_of(wid)
        if owner is not None and led.online(owner):
            continue
        fits = [a for a in led.agents if led.refusal(w, a) is None]
        if not fits:
            unplaced.append(Blocked(wid, "no agent can take it"))
            continue
        target = min(fits, key=lambda a: led.after(w, a)[0])
        add(wid, owner, target, MoveReason.PLACE if owner is None else MoveReason.EVACUATE, "least loaded")

    online = [a for a in led.agents if led.online(a)]
    for _ in range(len(led.workloads)):
        by_load = sorted(online, key=lambda a: (led.cpu_share(a), a))
        best: tuple[float, str, str, str] | None = None
        for source in reversed(by_load):
            base = led.cpu_share(source)
            for wid in sorted(led.holds[source]):
                if wid in moved or wid in led.in_flight or inp.placement.agent_of(wid) != source:
                    continue
                w = led.workloads[wid]
                least = next((t for t in by_load if t != source and led.refusal(w, t) is None), None)
                if least is None:
                    continue
                peak = max(base - w.cpu_cores / led.agents[source].capacity.cores, led.after(w, least)[0])
                if peak < base and (best is None or peak < best[0]):
                    best = (peak, wid, source, least)
            if best is not None:
                break  # the busiest agent that can shed anything sheds first
        if best is None:
            break
        peak, wid, source, target = best
        add(wid, source, target, MoveReason.REBALANCE, f"{source} is the busiest agent that can shed work")
    return Plan(inp.now_ms, tuple(moves), tuple(unplaced))
