"""The placement topics of one group, under ``{root}/_sys/placement/{group}/``.

* ``table`` (retained): the placement table (owners, revocations, recent
  moves, the controls in effect, the latest decisions), by the placer.
* ``controls`` (retained): the operator's pins, cordons and drains
  (:class:`~protocols.placement.OperatorControls` JSON), by
  ``edge-coordinator placement``.
* ``decisions``: one JSON object per decision (a move started or ended, a
  takeover, a change of controls).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.topics import TopicTree

__all__ = ["PlacementTopics"]


@dataclass(frozen=True, slots=True)
class PlacementTopics:
    tree: TopicTree
    group: str

    @property
    def table(self) -> str:
        return self.tree.sys("placement", self.group, "table")

    @property
    def controls(self) -> str:
        return self.tree.sys("placement", self.group, "controls")

    @property
    def decisions(self) -> str:
        return self.tree.sys("placement", self.group, "decisions")
