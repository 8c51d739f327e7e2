"""The planner: from the fleet's view and the time, the moves to start now, each with its reason.

A pure function of :class:`~protocols.placement.plan.PlanInput` (no clock, no
randomness, no state kept between calls; input order does not matter), so the
same view always gives the same plan, a standby coordinator plans exactly what
the leader would, and the simulator and the property tests drive it directly.

One round, in this order:

1. **place** work with no owner and **evacuate** work whose owner is gone or
   has been offline longer than ``evacuate_after_ms``: highest priority first,
   each to the agent with the best score that passes every hard limit. Not
   budgeted: that work is not running.
2. **relieve** overloaded agents (CPU or memory over its threshold, detectors
   asked for more than they measured, or the CPU forecast over the threshold),
   worst first, until they are not.
3. **drain**: move everything off drained agents; **pin**: move work off
   agents it may no longer run on (pinned elsewhere, out of reach).
4. **rebalance**: while some agent's utilisation (the score's weights over
   its CPU, memory and transaction shares) is more than
   ``rebalance_tolerance`` above the fleet's mean (or below it), the move
   that most narrows the spread of utilisation.
5. place again what step 1 could not, in case steps 2-4 made room.

Hard limits, never broken: the target is online, not cordoned or drained,
can reach the workload, is among its pinned agents, has an accelerator if it
needs one and the detector backend it runs, and has the memory it requests.
Guards on steps 2-4 (running work): at most ``move_budget`` moves in any
``budget_window_ms``, counting the recent ones in the input; nothing in flight
moves. Guards on steps 2 and 4 (voluntary): the move raises the workload's
score by more than ``hysteresis``, the workload has stayed ``min_dwell_ms``,
both agents are settled, and the target does not become overloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.placement.config import PlannerConfig
from protocols.placement.ledger import Ledger
from protocols.placement.moves import Move, MoveReason
from protocols.placement.plan import Blocked, Plan, PlanInput
from protocols.placement.workload import Workload

__all__ = ["Planner", "plan"]

_HOT_SOURCES = 4  # rebalancing looks at this many of the busiest agents as sources each move


@dataclass(slots=True)
class _Round:
    led: Ledger
    budget_left: int
    moves: list[Move] = field(default_factory=list)
    moved: set[str] = field(default_factory=set)
    unplaced: dict[str, str] = field(default_factory=dict)
    stuck: dict[str, str] = field(default_factory=dict)
    budget_exhausted: bool = False

    def add(self, move: Move) -> None:
        self.led.apply(move.workload, move.target)
        self.moves.append(move)
        self.moved.add(move.workload)
        if move.reason.budgeted:
            self.budget_left -= 1

    def spend(self) -> bool:
        """True if a budgeted move may start; else note that the budget held one back."""
        if self.budget_left > 0:
            return True
        self.budget_exhausted = True
        return False


@dataclass(frozen=True, slots=True)
class _Candidate:
    key: tuple[float, ...]
    workload: str
    source: str
    target: str
    gain: float


class Planner:
    """``Planner(config).plan(view)``; the methods starting with ``_`` are its rules, one each."""

    def __init__(self, config: PlannerConfig | None = None) -> None:
        self.config = config or PlannerConfig()

    def plan(self, inp: PlanInput) -> Plan:
        rnd = _Round(Ledger(inp, self.config), self._budget_left(inp))
        self._place_homeless(rnd)
        self._relieve(rnd)
        self._drain(rnd)
        self._repin(rnd)
        self._rebalance(rnd)
        self._place_homeless(rnd)
        return Plan(inp.now_ms, tuple(rnd.moves),
                    tuple(Blocked(w, why) for w, why in sorted(rnd.unplaced.items())),
                    tuple(Blocked(w, why) for w, why in sorted(rnd.stuck.items())),
                    max(0, rnd.budget_left), rnd.budget_exhausted)

    def relief_for(self, inp: PlanInput, agent: str) -> Move | None:
        """The one move that would best relieve ``agent`` now, ignoring budget, dwell and settling.

        For advice ("move camera door to gw-1"); hard limits and hysteresis still apply.
        """
        led = Ledger(inp, self.config)
        if agent not in led.agents:
            return None
        rnd = _Round(led, 1)
        best = self._best_voluntary(rnd, agent, self._agents(led), None, guarded=False)
        if best is None:
            return None
        return Move(best.workload, agent, best.target, MoveReason.RELIEVE,
                    f"{agent}: {led.overload(agent) or 'busiest'}; {best.target} has room", best.gain)

    # -- the rules, one method each (tests break them one at a time) --------------------------

    def _budget_left(self, inp: PlanInput) -> int:
        since = inp.now_ms - self.config.budget_window_ms
        used = sum(1 for r in inp.moves if r.reason.budgeted and r.started_ms > since)
        return max(0, self.config.move_budget - used)

    def _agents(self, led: Ledger) -> list[str]:
        """Agents in the order ties are broken: by id, whatever order the input listed them in."""
        return list(led.agents)

    def _refusal(self, led: Ledger, w: Workload, agent: str) -> str | None:
        return led.refusal(w, agent)

    def _may_move(self, rnd: _Round, workload: str) -> bool:
        return workload not in rnd.led.in_flight and workload not in rnd.moved

    def _dwelt(self, led: Ledger, workload: str) -> bool:
        since = led.inp.placement.since(workload)
        return since is None or led.now_ms - since >= self.config.min_dwell_ms

    def _worth_it(self, gain: float) -> bool:
        return gain > self.config.hysteresis

    def _drained(self, led: Ledger) -> frozenset[str]:
        return led.controls.drained

    # -- 1. place and evacuate -------------------------------------------------------------

    def _homeless(self, rnd: _Round) -> list[tuple[Workload, MoveReason, str | None, str]]:
        led = rnd.led
        out: list[tuple[Workload, MoveReason, str | None, str]] = []
        for w in sorted(led.workloads.values(), key=lambda w: (-w.priority, -w.memory_mb, w.id)):
            if not self._may_move(rnd, w.id):
                continue
            owner = led.inp.placement.agent_of(w.id)
            if owner is None:
                out.append((w, MoveReason.PLACE, None, "new work"))
            elif owner not in led.agents:
                out.append((w, MoveReason.EVACUATE, owner, f"{owner} is unknown"))
            elif not led.agents[owner].online:
                down_ms = led.now_ms - led.agents[owner].status_since_ms
                if down_ms >= self.config.evacuate_after_ms:
                    out.append((w, MoveReason.EVACUATE, owner, f"{owner} offline for {down_ms / 1000:.0f} s"))
        return out

    def _place_homeless(self, rnd: _Round) -> None:
        rnd.unplaced.clear()
        for w, reason, source, why in self._homeless(rnd):
            target, refused = self._best_home(rnd, w, source)
            if target is None:
                rnd.unplaced[w.id] = self._nowhere(rnd.led, w, refused)
                continue
            rnd.add(Move(w.id, source, target, reason, f"{why}; {target} has the best score"))

    def _best_home(self, rnd: _Round, w: Workload, source: str | None,
                   ) -> tuple[str | None, list[tuple[str, str]]]:
        """The agent with the best score that passes every hard limit, and why the others did not."""
        led = rnd.led
        best: str | None = None
        best_score = 0.0
        refused: list[tuple[str, str]] = []
        for a in self._agents(led):
            if a == source:
                continue
            why = self._refusal(led, w, a)
            if why is not None:
                refused.append((a, why))
                continue
            score = led.score(w, a, adding=True)
            if best is None or score > best_score:
                best, best_score = a, score
        return best, refused

    @staticmethod
    def _nowhere(led: Ledger, w: Workload, refused: list[tuple[str, str]]) -> str:
        if not refused:
            return "no agent can take it: there are no other agents"
        groups: dict[str, list[str]] = {}
        short = [a for a, why in refused if why.endswith("MB free")]
        for a, why in refused:
            if not why.endswith("MB free"):
                groups.setdefault(why, []).append(a)
        if short:
            most = max(0, max(led.free_memory_mb(a) for a in short))
            groups[f"not enough memory for its {w.memory_mb} MB (at most {most} MB free)"] = short
        parts = [f"{why}: {', '.join(agents[:3])}{f' and {len(agents) - 3} more' if len(agents) > 3 else ''}"
                 for why, agents in groups.items()]
        return "no agent can take it: " + "; ".join(parts)

    # -- 2. relieve ----------------------------------------------------------------------

    def _relieve(self, rnd: _Round) -> None:
        led = rnd.led
        drained = self._drained(led)
        sources = [a for a in self._agents(led)
                   if led.online(a) and a not in drained and led.settled(a) and led.overload(a) is not None]
        sources.sort(key=lambda a: -led.severity(a))
        for s in sources:
            while (why := led.overload(s)) is not None:
                best = self._best_voluntary(rnd, s, self._agents(led), None)
                if best is None:
                    break
                if not rnd.spend():
                    return
                rnd.add(Move(best.workload, s, best.target, MoveReason.RELIEVE,
                             f"{s}: {why}; {best.target} has room", best.gain))

    def _best_voluntary(self, rnd: _Round, source: str, targets: list[str], mean: float | None,
                        guarded: bool = True) -> _Candidate | None:
        """The best voluntary move off ``source`` to one of ``targets``; None if none is worth it.

        With ``mean`` (rebalancing) a move must also narrow the spread of
        utilisation around it, and the one that narrows it most wins; else the one
        that raises the workload's score most.
        """
        led = rnd.led
        best: _Candidate | None = None
        for wid in sorted(led.holds[source]):
            if not self._may_move(rnd, wid) or led.inp.placement.agent_of(wid) != source:
                continue
            if guarded and not self._dwelt(led, wid):
                continue
            w = led.workloads[wid]
            for t in targets:
                if t == source or (guarded and not led.settled(t)) or self._refusal(led, w, t) is not None:
                    continue
                if led.would_overload(w, t):
                    continue
                gain = led.gain(w, source, t)
                if not self._worth_it(gain):
                    continue
                if mean is None:
                    key: tuple[float, ...] = (gain, -w.priority)
                else:
                    narrowed = self._narrowing(led, w, source, t, mean)
                    if narrowed <= 0:
                        continue
                    key = (narrowed, gain, -w.priority)
                if best is None or key > best.key:
                    best = _Candidate(key, wid, source, t, gain)
        return best

    @staticmethod
    def _narrowing(led: Ledger, w: Workload, source: str, target: str, mean: float) -> float:
        """How much moving ``w`` shrinks the two agents' squared distance from the mean utilisation."""
        s, t = led.utilisation(source), led.utilisation(target)
        ds, dt = led.utilisation_of(w, source), led.utilisation_of(w, target)
        return (s - mean) ** 2 + (t - mean) ** 2 - (s - ds - mean) ** 2 - (t + dt - mean) ** 2

    # -- 3. drain and pins ----------------------------------------------------------------

    def _drain(self, rnd: _Round) -> None:
        led = rnd.led
        for a in self._agents(led):
            if a not in self._drained(led) or not led.online(a):
                continue  # an offline drained agent's work is evacuated after the grace period
            owned = sorted(led.inp.placement.on(a), key=lambda w: (-led.workloads[w].priority, w))
            for wid in owned:
                if not self._may_move(rnd, wid):
                    continue
                if not rnd.spend():
                    return
                target, refused = self._best_home(rnd, led.workloads[wid], a)
                if target is None:
                    rnd.stuck[wid] = f"{a} is draining; " + self._nowhere(led, led.workloads[wid], refused)
                    continue
                rnd.add(Move(wid, a, target, MoveReason.DRAIN, f"{a} is draining"))

    def _repin(self, rnd: _Round) -> None:
        led = rnd.led
        for w in sorted(led.workloads.values(), key=lambda w: (-w.priority, w.id)):
            owner = led.inp.placement.agent_of(w.id)
            if owner is None or not led.online(owner) or not self._may_move(rnd, w.id):
                continue
            why = led.disallowed(w, owner)
            if why is None:
                continue
            if not rnd.spend():
                return
            target, refused = self._best_home(rnd, w, owner)
            if target is None:
                rnd.stuck[w.id] = f"{owner} {why}; " + self._nowhere(led, w, refused)
                continue
            rnd.add(Move(w.id, owner, target, MoveReason.PIN, f"{owner} {why}"))

    # -- 4. rebalance -------------------------------------------------------------------

    def _rebalance(self, rnd: _Round) -> None:
        led = rnd.led
        tol = self.config.rebalance_tolerance
        drained = self._drained(led)
        members = [a for a in self._agents(led) if led.online(a) and a not in drained]
        if len(members) < 2:
            return
        for _ in range(len(led.workloads)):
            share = {a: led.utilisation(a) for a in members}
            mean = sum(share[a] for a in members) / len(members)
            hot = {a for a in members if share[a] > mean * (1 + tol)}
            cold = {a for a in members if share[a] < mean * (1 - tol) and led.controls.takes_new_work(a)}
            if not hot and not cold:
                return
            settled = [a for a in members if led.settled(a)]
            above = sorted((a for a in settled if share[a] > mean), key=lambda a: -share[a])
            below = [a for a in settled if share[a] < mean and led.controls.takes_new_work(a)]
            best: _Candidate | None = None
            for s in above[:_HOT_SOURCES]:
                targets = below if s in hot else [t for t in below if t in cold]
                c = self._best_voluntary(rnd, s, targets, mean)
                if c is not None and (best is None or c.key > best.key):
                    best = c
            if best is None or not rnd.spend():
                return
            s, t = best.source, best.target
            rnd.add(Move(best.workload, s, t, MoveReason.REBALANCE,
                         f"{s} at {share[s]:.0%} load (CPU {led.cpu_share(s):.0%}), {t} at {share[t]:.0%}, "
                         f"fleet mean {mean:.0%}", best.gain))


def plan(inp: PlanInput, config: PlannerConfig | None = None) -> Plan:
    """The moves to start now; see :class:`Planner`."""
    return Planner(config).plan(inp)
