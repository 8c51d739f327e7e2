"""``/api/v1/coordination``: Raft groups (leader, each node's role, term, commit), two-phase-commit
transactions (the leader's open list and recent decisions) and lock events (deadlocks), as the
coordinator overhears them on the broker (:mod:`coordinator.coordination_view`).

Lock holders are not published by the lock service (they live in each Raft
node's replicated table), so they are not listed here.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from coordinator.http.context import ApiContext, api_context
from coordinator.http.errors import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["coordination"], responses=ERROR_RESPONSES)


class RaftGroup(BaseModel):
    group: str
    leader: str | None = Field(description="the leader the node with the newest term names")
    term: int
    nodes: list[dict[str, Any]] = Field(description="each node's retained status as published")


class TxGroup(BaseModel):
    group: str
    open: dict[str, Any] | None = Field(description="the leader's retained list of open transactions")
    events: list[dict[str, Any]] = Field(description="recent decided/ended events, newest first")


class LockGroup(BaseModel):
    group: str
    events: list[dict[str, Any]] = Field(description="recent lock events (deadlocks), newest first")


class Coordination(BaseModel):
    watching: bool = Field(description="false when this process does not follow the coordination topics")
    raft: list[RaftGroup]
    transactions: list[TxGroup]
    locks: list[LockGroup]


@router.get("/coordination", response_model=Coordination,
            summary="Raft groups and leaders, open transactions, lock events")
def coordination(ctx: Annotated[ApiContext, Depends(api_context)]) -> dict[str, Any]:
    view = ctx.coordination
    if view is None:
        return {"watching": False, "raft": [], "transactions": [], "locks": []}
    return {"watching": True, "raft": view.raft_groups(), "transactions": view.transactions(),
            "locks": view.locks()}
