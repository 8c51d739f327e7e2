"""Where the coordination traffic of one group lives in the topic tree.

Raft peers talk on ``{root}/_sys/raft/{group}/{node}`` (each node's inbox) and
publish a retained status on ``{root}/_sys/raft/{group}/{node}/status``.
Clients send to ``{root}/_sys/lock/{group}/req/{leader}`` once a reply told
them the leader, else (and on every retry) to ``{root}/_sys/lock/{group}/req``,
which every node hears and only the leader acts on and hear answers and lock
events on ``{root}/_sys/lock/{group}/reply/{client}``. A node's presence is the
ordinary device status of ``raft-{group}-{node}``, whose will says ``offline``.

Operators' membership requests (:class:`protocols.coordination.wire.AdminRequest`)
follow the same pattern under the Raft group: ``{root}/_sys/raft/{group}/admin/req``
(every node hears it, only the leader acts), ``.../admin/req/{node}`` (one node;
a follower answers "not leader" with its hint) and answers on
``.../admin/reply/{client}``. These are three and four levels below the group,
so they never collide with a node's inbox (one level) or status (two).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.topics import TopicTree

__all__ = ["CoordinationTopics"]


@dataclass(frozen=True, slots=True)
class CoordinationTopics:
    tree: TopicTree
    group: str

    def inbox(self, node: str) -> str:
        return self.tree.sys("raft", self.group, node)

    def node_status(self, node: str) -> str:
        return self.tree.sys("raft", self.group, node, "status")

    def all_node_status(self) -> str:
        return f"{self.tree.sys('raft', self.group)}/+/status"

    def requests(self) -> str:
        return self.tree.sys("lock", self.group, "req")

    def requests_for(self, node: str) -> str:
        """Requests for one node: a client that knows the leader sends here, so followers never see them."""
        return self.tree.sys("lock", self.group, "req", node)

    def reply(self, client: str) -> str:
        return self.tree.sys("lock", self.group, "reply", client)

    def admin_requests(self) -> str:
        return self.tree.sys("raft", self.group, "admin", "req")

    def admin_requests_for(self, node: str) -> str:
        """Admin requests for one node: it answers even as a follower (not leader, with its hint)."""
        return self.tree.sys("raft", self.group, "admin", "req", node)

    def admin_reply(self, client: str) -> str:
        return self.tree.sys("raft", self.group, "admin", "reply", client)

    def lock_events(self) -> str:
        return self.tree.sys("lock", self.group, "events")

    def presence_device(self, node: str) -> str:
        """The device id whose ``status`` (and will) tells whether ``node`` is alive."""
        return f"raft-{self.group}-{node}"

    def presence(self, node: str) -> str:
        return self.tree.status(self.presence_device(node))
