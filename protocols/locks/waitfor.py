"""The wait-for graph between sessions, and the cycle search that finds a deadlock as it forms.

An edge ``A -> B`` labelled with lock ``L`` means A cannot get ``L`` before B
lets go of it (B holds ``L``, or is just ahead of A in its FIFO queue). A cycle
is a deadlock: every member waits for the next and none can move. Sessions
would eventually expire and break it, but a lease can be long and renewed by a
perfectly healthy process, so the lock service breaks it when it forms.

The graph is not stored: it is derived from the lock table, so it can never
disagree with it. The search is given the edge function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["WaitEdge", "find_cycle_through"]


@dataclass(frozen=True, slots=True)
class WaitEdge:
    """``waiter`` waits for ``blocker`` through ``lock_name``, with the priority of that wait."""

    waiter: str
    blocker: str
    lock_name: str
    priority: int


def find_cycle_through(
    start: str, lock_name: str, out_edges: Callable[[str], list[WaitEdge]]
) -> list[WaitEdge] | None:
    """A cycle that leaves ``start`` through its wait on ``lock_name``, or None.

    If the graph was acyclic before ``start`` began waiting on ``lock_name``,
    every new cycle uses that edge, so this finds one whenever one exists. The
    search is depth-first over edges in the order ``out_edges`` gives them, so
    every replica finds the same cycle.
    """
    first = next((e for e in out_edges(start) if e.lock_name == lock_name), None)
    if first is None:
        return None
    # parent[node] is the edge by which the search first reached node.
    parent: dict[str, WaitEdge] = {first.blocker: first}
    stack = [first.blocker]
    while stack:
        node = stack.pop()
        for edge in reversed(out_edges(node)):
            if edge.blocker == start:
                path = [edge]
                while path[-1] is not first:
                    path.append(parent[path[-1].waiter])
                return path[::-1]
            if edge.blocker not in parent:
                parent[edge.blocker] = edge
                stack.append(edge.blocker)
    return None
