"""``/api/v1/cluster``: which coordinator takes which devices (``[cluster]``, :mod:`coordinator.cluster`).

The answer is this coordinator's view: the members it sees online, the
devices it takes, and every member's last published share (the retained
``{root}/_sys/cluster/{group}/devices/{member}``), so a move is visible from
any member's API while it happens.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from coordinator.http.context import ApiContext, api_context
from coordinator.http.errors import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["cluster"], responses=ERROR_RESPONSES)


class MemberShare(BaseModel):
    online: bool = Field(description="the member's retained presence (its will sets it offline)")
    devices: list[str] = Field(description="the devices the member last said it takes")
    members: list[str] = Field(description="the live members it saw when it published")
    time_ms: int | None = Field(description="when it published that share (its clock)")


class Cluster(BaseModel):
    clustered: bool = Field(description="false without a [cluster] table (it takes every device)")
    group: str | None = None
    member: str | None = None
    members: list[str] = Field(default_factory=list, description="the live members this coordinator counts")
    owned: list[str] = Field(default_factory=list, description="the devices this coordinator takes now")
    moves: int = Field(0, description="changes of this coordinator's share since it started")
    table: dict[str, MemberShare] = Field(default_factory=dict, description="every member's published share")


@router.get("/cluster", response_model=Cluster, summary="Which coordinator takes which devices")
def cluster(ctx: Annotated[ApiContext, Depends(api_context)]) -> dict[str, Any]:
    if ctx.cluster is None:
        return {"clustered": False}
    return {"clustered": True, **ctx.cluster.snapshot()}
