"""Where one group's two-phase commit traffic lives in the topic tree.

* ``{root}/_sys/tx/{group}/from/{id}``: what participant or client ``id``
  sends the group (begin, votes, acks, status queries); every node hears
  every lane (``from/+``), only the leader acts, and it refuses a message
  that speaks for another id than its lane's (a vote of participant ``p``
  arrives on ``from/p`` or not at all). The broker's ACL lets a device write
  only ``from/{its device id}``; coordinator users may write any lane.
* ``{root}/_sys/tx/{group}/to/{id}``: what the group sends one participant or
  client (prepare, decision, status reply). Participant and client ids share
  this namespace; a device reads only ``to/{its device id}``, so a
  participant or client that runs as a device user takes its device id.
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

    def group_inbox(self, sender: str) -> str:
        """Where ``sender`` (a participant or client id) writes to the group."""
        return self.tree.sys("tx", self.group, "from", sender)

    def all_group_inboxes(self) -> str:
        """What a node subscribes to: every sender's lane."""
        return f"{self.tree.sys('tx', self.group, 'from')}/+"

    def sender_lane(self, topic: str) -> str | None:
        """The sender id a ``from/{id}`` topic names, or None for any other topic."""
        prefix = self.tree.sys("tx", self.group, "from") + "/"
        lane = topic[len(prefix):] if topic.startswith(prefix) else ""
        return lane if lane and "/" not in lane else None

    def to(self, member: str) -> str:
        """The inbox of one participant or client."""
        return self.tree.sys("tx", self.group, "to", member)

    def events(self) -> str:
        return self.tree.sys("tx", self.group, "events")

    def open_transactions(self) -> str:
        return self.tree.sys("tx", self.group, "open")

    def dead_letters(self) -> str:
        return self.tree.sys("tx", self.group, "errors")
