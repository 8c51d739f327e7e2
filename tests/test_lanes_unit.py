"""The lanes on paper: the one ACL's matcher, and the lock table's session owners."""

from __future__ import annotations

import msgpack
import pytest

from broker.acl import AclRule, BusAcl, filter_covers, topic_matches
from protocols.locks import (
    Acquire,
    KeepAlive,
    LockStateMachine,
    LockStatus,
    OpenSession,
    Release,
    decode_stamped,
    encode_entry,
)
from schemas.errors import ConfigError

ACL = BusAcl(devices=("cam-1", "gw.3"), coordinators=("coord",))


@pytest.mark.parametrize(("user", "action", "topic", "allowed"), [
    ("cam-1", "publish", "edgebus/cam-1/metrics", True),
    ("cam-1", "publish", "edgebus/gw.3/metrics", False),
    ("cam-1", "publish", "edgebus/_sys/lock/g/req/cam-1", True),
    ("cam-1", "publish", "edgebus/_sys/lock/g/req/cam-1/n1", True),
    ("cam-1", "publish", "edgebus/_sys/lock/g/req/cam-1/n1/x", False),
    ("cam-1", "publish", "edgebus/_sys/lock/g/req/gw.3", False),
    ("cam-1", "publish", "edgebus/_sys/raft/g/n1", False),
    ("cam-1", "publish", "edgebus/_sys/tx/g/from/cam-1", True),
    ("cam-1", "publish", "edgebus/cam-1/#", False),  # a publish topic has no wildcards
    ("gw.3", "publish", "homeassistant/sensor/gw_3/cpu/config", True),
    ("cam-1", "subscribe", "edgebus/cam-1/cmd/#", True),
    ("cam-1", "subscribe", "edgebus/+/cmd/#", False),
    ("cam-1", "subscribe", "edgebus/_sys/lock/+/reply/cam-1/#", True),
    ("cam-1", "subscribe", "edgebus/_sys/lock/g/reply/#", False),
    ("cam-1", "subscribe", "$share/x/edgebus/cam-1/cmd/#", True),
    ("cam-1", "subscribe", "$share/x/edgebus/gw.3/cmd/#", False),
    ("cam-1", "receive", "edgebus/_sys/tx/g/to/cam-1", True),
    ("cam-1", "receive", "edgebus/_sys/tx/g/to/gw.3", False),
    ("coord", "publish", "edgebus/_sys/raft/g/admin/req", True),
    ("coord", "subscribe", "$share/c/edgebus/+/metrics", True),
    ("coord", "subscribe", "$SYS/#", True),
    ("coord", "publish", "elsewhere/x", False),
    ("stranger", "publish", "edgebus/stranger/metrics", False),
    (None, "publish", "edgebus/x/metrics", False),
])
def test_the_matcher(user: str | None, action: str, topic: str, allowed: bool) -> None:
    assert ACL.allows(user, action, topic) is allowed


def test_filters_and_rules() -> None:
    assert topic_matches("a/+/c", "a/b/c") and not topic_matches("a/+", "a/b/c")
    assert not topic_matches("#", "$SYS/x") and topic_matches("$SYS/#", "$SYS/x")
    assert filter_covers("a/#", "a/+/c") and not filter_covers("a/+/c", "a/#")
    assert filter_covers("a/+/c", "a/b/c") and not filter_covers("a/b/c", "a/+/c")
    with pytest.raises(ConfigError, match="whole level"):
        AclRule("read", "a/x%u/b")
    with pytest.raises(ConfigError, match="listed twice"):
        BusAcl(devices=("a",), coordinators=("a",))


def test_a_session_belongs_to_the_lane_that_opened_it() -> None:
    sm = LockStateMachine()
    assert sm.apply(OpenSession("s", 1000), 1, "cam-2").status is LockStatus.OK
    token = sm.apply(Acquire("s", "door"), 2, "cam-2").token
    for command in (KeepAlive("s"), Acquire("s", "vault"), Release("s", "door", token or 0)):
        assert sm.apply(command, 3, "cam-1").status is LockStatus.NOT_OWNER
    assert sm.holder("door") == ("s", token) and sm.owner("s") == "cam-2"
    restored = LockStateMachine.from_snapshot(sm.snapshot())
    assert restored.owner("s") == "cam-2"
    assert restored.apply(Release("s", "door", token or 0), 4, "cam-2").status is LockStatus.RELEASED


def test_entries_and_snapshots_from_before_lanes_still_load() -> None:
    assert decode_stamped(encode_entry(5, KeepAlive("s"))) == (5, KeepAlive("s"), "")
    assert decode_stamped(encode_entry(5, KeepAlive("s"), "cam-1")) == (5, KeepAlive("s"), "cam-1")
    old = msgpack.packb([1, 10, 2, 2, [["s", 1000, 1010, 1]], [["door", "s", 1, []]]])
    sm = LockStateMachine.from_snapshot(old)
    assert sm.owner("s") == "" and sm.holder("door") == ("s", 1)
    assert sm.apply(KeepAlive("s"), 11, "cam-1").status is LockStatus.NOT_OWNER
