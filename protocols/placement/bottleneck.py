"""Bottleneck ranking: a weighted, normalised score per agent, the top bottleneck, and advice in plain words.

Each metric is normalised to [0, 1] against a fixed reference, not against the
rest of the fleet, so a score means the same in any fleet and an idle fleet
has no bottleneck (ranking within the fleet would always crown one):

========================  ===========================================================
latency                   inference ms / ``latency_budget_ms`` (capped at 1)
throughput                the share of arriving frames not processed
cpu, memory               the measured shares (capped at 1)
transactions              transactions/s / the agent's ``max_tx_per_s`` (capped at 1)
lock_contention           the share of lock requests that waited
========================  ===========================================================

>>> from protocols.placement.agent_view import AgentCapacity, AgentLoad, AgentView
>>> busy = AgentView("gw-3", AgentCapacity(4, 4096), AgentLoad(cpu_share=0.94, memory_share=0.3))
>>> idle = AgentView("gw-1", AgentCapacity(4, 4096), AgentLoad(cpu_share=0.2))
>>> [(b.agent, round(b.score, 3), b.top_text) for b in rank_bottlenecks([idle, busy])]
[('gw-3', 0.233, 'CPU at 94%'), ('gw-1', 0.04, 'CPU at 20%')]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from protocols.placement.agent_view import AgentView
from protocols.placement.config import PlannerConfig
from protocols.placement.ledger import Ledger
from protocols.placement.plan import PlanInput
from protocols.placement.planner import Planner
from protocols.placement.validation import fraction, from_table, frozen, non_negative, positive
from schemas.errors import ConfigError

__all__ = ["METRICS", "AgentBottleneck", "BottleneckConfig", "bottleneck_advice", "normalised_load",
           "rank_bottlenecks"]

METRICS = ("latency", "throughput", "cpu", "memory", "transactions", "lock_contention")


@dataclass(frozen=True, slots=True)
class BottleneckConfig:
    """The metrics' weights (non-negative, summing to 1) and the references they are normalised by.

    ``alarm``: a normalised metric at or above it makes the agent a bottleneck.
    """

    latency: float = 0.25
    throughput: float = 0.20
    cpu: float = 0.20
    memory: float = 0.15
    transactions: float = 0.10
    lock_contention: float = 0.10
    latency_budget_ms: float = 200.0
    alarm: float = 0.8

    def __post_init__(self) -> None:
        for m in METRICS:
            object.__setattr__(self, m, non_negative(f"bottleneck: {m}", getattr(self, m), ConfigError))
        total = sum(self.weights().values())
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ConfigError(f"bottleneck: the weights ({', '.join(METRICS)}) must sum to 1, "
                              f"not {total:.6g}")
        object.__setattr__(self, "latency_budget_ms",
                           positive("bottleneck: latency_budget_ms", self.latency_budget_ms, ConfigError))
        if fraction("bottleneck: alarm", self.alarm, ConfigError) == 0:
            raise ConfigError("bottleneck: alarm must be above 0")

    def weights(self) -> dict[str, float]:
        return {m: float(getattr(self, m)) for m in METRICS}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "bottleneck") -> BottleneckConfig:
        """A config from a TOML table; an unknown key is an error naming it."""
        return from_table(cls, data, where, "bottleneck")


@dataclass(frozen=True, slots=True)
class AgentBottleneck:
    """One agent's score (0: idle, 1: every metric at its reference), its parts, its most loaded metric."""

    agent: str
    score: float
    parts: Mapping[str, float]
    top: str
    top_text: str
    alarming: bool

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "score": round(self.score, 4),
                "parts": {m: round(v, 4) for m, v in self.parts.items()},
                "top": self.top, "top_text": self.top_text, "alarming": self.alarming}


def normalised_load(view: AgentView, config: BottleneckConfig | None = None) -> dict[str, float]:
    """Each metric of ``view``'s load in [0, 1] (see the module's table)."""
    cfg = config or BottleneckConfig()
    load, cap = view.load, view.capacity
    shortfall = 0.0 if load.frames_in_per_s == 0 else 1.0 - load.frames_done_per_s / load.frames_in_per_s
    return {
        "latency": min(1.0, load.inference_ms / cfg.latency_budget_ms),
        "throughput": min(1.0, max(0.0, shortfall)),
        "cpu": min(1.0, load.cpu_share),
        "memory": min(1.0, load.memory_share),
        "transactions": min(1.0, load.tx_per_s / cap.max_tx_per_s),
        "lock_contention": load.lock_contention,
    }


def _describe(metric: str, view: AgentView) -> str:
    load = view.load
    if metric == "latency":
        return f"inference latency {load.inference_ms:.0f} ms"
    if metric == "throughput":
        missed = 1.0 - load.frames_done_per_s / load.frames_in_per_s if load.frames_in_per_s else 0.0
        return f"{max(0.0, missed):.0%} of its frames not processed"
    if metric == "cpu":
        return f"CPU at {load.cpu_share:.0%}"
    if metric == "memory":
        return f"memory at {load.memory_share:.0%}"
    if metric == "transactions":
        return (f"transactions at {load.tx_per_s:.0f}/s ({load.tx_per_s / view.capacity.max_tx_per_s:.0%} of "
                f"{view.capacity.max_tx_per_s:.0f}/s)")
    return f"lock contention at {load.lock_contention:.0%}"


def rank_bottlenecks(agents: Iterable[AgentView], config: BottleneckConfig | None = None,
                     ) -> tuple[AgentBottleneck, ...]:
    """The online agents, worst first (ties by id); an agent's top metric is its highest normalised one."""
    cfg = config or BottleneckConfig()
    weights = cfg.weights()
    out: list[AgentBottleneck] = []
    for view in sorted(agents, key=lambda v: v.id):
        if not view.online:
            continue
        parts = normalised_load(view, cfg)
        score = sum(weights[m] * parts[m] for m in METRICS)
        top = max(METRICS, key=lambda m: (parts[m], weights[m]))
        out.append(AgentBottleneck(view.id, score, frozen(parts), top, _describe(top, view),
                                   parts[top] >= cfg.alarm))
    out.sort(key=lambda b: -b.score)
    return tuple(out)


def bottleneck_advice(inp: PlanInput, config: BottleneckConfig | None = None,
                      planner_config: PlannerConfig | None = None) -> str:
    """The top bottleneck and what to do about it, in one sentence.

    ``"gw-3: CPU at 94% is the bottleneck; move camera door to gw-1"``. The
    move is the one the planner would make to relieve that agent now (hard
    limits and hysteresis apply; budget and dwell time do not: it is advice).
    """
    ranking = rank_bottlenecks(inp.agents, config)
    if not ranking:
        return "no agent is online"
    top = ranking[0]
    head = f"{top.agent}: {top.top_text}"
    pcfg = planner_config or PlannerConfig()
    if not top.alarming and Ledger(inp, pcfg).overload(top.agent) is None:
        return f"{head} is its heaviest load; nothing is a bottleneck"
    if top.top == "lock_contention":
        return f"{head} is the bottleneck; its lock users wait on each other, and moving work will not help"
    move = Planner(pcfg).relief_for(inp, top.agent)
    if move is None:
        if not inp.placement.on(top.agent):
            return f"{head} is the bottleneck; it runs no work that could move"
        return f"{head} is the bottleneck; no other agent has room for its work"
    workload = next(w for w in inp.workloads if w.id == move.workload)
    return f"{head} is the bottleneck; move {workload.describe()} to {move.target}"
