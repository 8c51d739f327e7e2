"""Placement of camera streams and inference jobs on agents, sans I/O: the balancer's pure core.

* :mod:`~protocols.placement.agent_view`, :mod:`~protocols.placement.workload`,
  :mod:`~protocols.placement.assignment`: the fleet model (what each agent can
  carry and carries, what each workload needs, who owns what since when).
* :mod:`~protocols.placement.controls`: the operator's pins, cordons and drains.
* :mod:`~protocols.placement.bottleneck`: the weighted bottleneck ranking and
  its advice in plain words.
* :mod:`~protocols.placement.planner`: the deterministic planner, whose
  :class:`~protocols.placement.plan.Plan` lists moves with reasons; the
  :mod:`~protocols.placement.ledger` projects load as moves are planned.
* :mod:`~protocols.placement.baselines`: the static and greedy planners the
  benchmark compares against; :mod:`~protocols.placement.checks`: the
  properties every plan must keep.
* :mod:`~protocols.placement.sim`: a seeded fleet simulator on virtual time.

See ``protocols/placement/README.md`` for how the coordinator binds it.
"""

from protocols.placement.agent_view import AgentCapacity, AgentLoad, AgentView
from protocols.placement.assignment import Assignment, Placement
from protocols.placement.bottleneck import (
    AgentBottleneck,
    BottleneckConfig,
    bottleneck_advice,
    rank_bottlenecks,
)
from protocols.placement.config import PlannerConfig
from protocols.placement.controls import OperatorControls
from protocols.placement.moves import Move, MoveReason, MoveRecord, MoveState
from protocols.placement.plan import Blocked, Plan, PlanInput
from protocols.placement.planner import Planner, plan
from protocols.placement.workload import Workload, WorkloadKind

__all__ = [
    "AgentBottleneck",
    "AgentCapacity",
    "AgentLoad",
    "AgentView",
    "Assignment",
    "Blocked",
    "BottleneckConfig",
    "Move",
    "MoveReason",
    "MoveRecord",
    "MoveState",
    "OperatorControls",
    "Placement",
    "Plan",
    "PlanInput",
    "Planner",
    "PlannerConfig",
    "Workload",
    "WorkloadKind",
    "bottleneck_advice",
    "plan",
    "rank_bottlenecks",
]
