"""Where one group's two-phase commit traffic lives in the topic tree.

* ``{root}/_sys/tx/{group}/group``: what clients and participants send the
  group (begin, votes, acks, status queries); every node hears it, only the
  leader acts.
* ``{root}/_sys/tx/{group}/to/{id}``: what the group sends one participant or
  client (prepare, decision, status reply). Participant and client ids share
  this namespace.
* ``{root}/_sys/tx/{group}/events``: a JSON line per decided and ended
  transaction, for operators and dashboards.
* ``{root}/_sys/tx/{group}/open``: retained JSON, the transactions the log
  holds open (``edge-bus tx list``).
* ``{root}/_sys/tx/{group}/errors``: JSON dead letters for refused input.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.topics import TopicTree

__all__ = ["TxTopics"]


@dataclass(frozen=True, slots=True)
class TxTopics:
    tree: TopicTree
    group: str

    def group_inbox(self) -> str:
        return self.tree.sys("tx", self.group, "group")

    def to(self, member: str) -> str:
        """The inbox of one participant or client."""
        return self.tree.sys("tx", self.group, "to", member)

    def events(self) -> str:
        return self.tree.sys("tx", self.group, "events")

    def open_transactions(self) -> str:
        return self.tree.sys("tx", self.group, "open")

    def dead_letters(self) -> str:
        return self.tree.sys("tx", self.group, "errors")
