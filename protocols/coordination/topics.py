"""Where the coordination traffic of one group lives in the topic tree.

Raft peers talk on ``{root}/_sys/raft/{group}/{node}`` (each node's inbox) and
publish a retained status on ``{root}/_sys/raft/{group}/{node}/status``.
Lock clients speak in their own *lane*: the broker user name they logged in
with (the device id for a device), so the broker's ACL (``%u`` patterns, see
:mod:`broker.acl`) lets a client write only its own request topics and read
only its own replies, and the nodes take the requester's identity from the
topic a request arrived on, never from its payload. A client sends to
``{root}/_sys/lock/{group}/req/{lane}/{leader}`` once a reply told it the
leader, else (and on every retry) to ``{root}/_sys/lock/{group}/req/{lane}``,
which every node hears and only the leader acts on, and hears answers and lock
events on ``{root}/_sys/lock/{group}/reply/{lane}/{client}``. A node's presence
is the ordinary device status of ``raft-{group}-{node}``, whose will says
``offline``. Raft peer topics and the admin topics below are for coordination
nodes and operators only (the broker's coordinator users).

Operators' membership requests (:class:`protocols.coordination.wire.AdminRequest`)
follow the same pattern under the Raft group: ``{root}/_sys/raft/{group}/admin/req``
(every node hears it, only the leader acts), ``.../admin/req/{node}`` (one node;
a follower answers "not leader" with its hint) and answers on
``.../admin/reply/{client}``. These are three and four levels below the group,
so they never collide with a node's inbox (one level) or status (two).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.topics import TopicTree, validate_name

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

    def requests(self, lane: str) -> str:
        """Requests of one lane (a broker user) that every node hears."""
        return self.tree.sys("lock", self.group, "req", lane)

    def requests_for(self, lane: str, node: str) -> str:
        """Requests for one node: a client that knows the leader sends here, so followers never see them."""
        return self.tree.sys("lock", self.group, "req", lane, node)

    def all_requests(self) -> str:
        """What a node subscribes to for the requests every node hears (every lane)."""
        return f"{self.tree.sys('lock', self.group, 'req')}/+"

    def all_requests_for(self, node: str) -> str:
        """What a node subscribes to for the requests sent to it by name (every lane)."""
        return f"{self.tree.sys('lock', self.group, 'req')}/+/{validate_name(node, 'node id')}"

    def request_lane(self, topic: str) -> str | None:
        """The lane a request topic names (``.../req/{lane}[/{node}]``), or None for any other topic."""
        prefix = self.tree.sys("lock", self.group, "req") + "/"
        if not topic.startswith(prefix):
            return None
        levels = topic[len(prefix):].split("/")
        return levels[0] if 1 <= len(levels) <= 2 and levels[0] else None

    def reply(self, lane: str, client: str) -> str:
        """Answers and lock events for ``client`` of ``lane``."""
        return self.tree.sys("lock", self.group, "reply", lane, client)

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
