"""Subscription routing and MQTT filter matching."""

from __future__ import annotations

import pytest

from broker.router import ReceivedMessage, SubscriptionRouter, strip_share, topic_matches
from schemas.errors import SubscriptionRefused, TopicError


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("+/+", "a/b", True),
        ("+", "a/b", False),
        ("#", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/+/c", "a//c", True),
        ("edgebus/+/detections/+", "edgebus/cam/detections/front", True),
    ],
)
def test_topic_matches(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def test_shared_subscriptions_route_on_the_inner_filter() -> None:
    assert strip_share("$share/coord/edgebus/+/metrics") == "edgebus/+/metrics"
    with pytest.raises(TopicError):
        strip_share("$share/onlygroup")
    router = SubscriptionRouter()
    got: list[str] = []
    router.add("$share/coord/edgebus/+/metrics", lambda m: got.append(m.topic))
    router.dispatch(ReceivedMessage("edgebus/a/metrics", b"", 1, False))
    assert got == ["edgebus/a/metrics"]


def test_subscriptions_merge_qos_and_failing_handlers_are_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = SubscriptionRouter()
    got: list[str] = []

    def boom(_: ReceivedMessage) -> None:
        raise RuntimeError("handler bug")

    r1 = router.add("x/#", boom, qos=0)
    router.add("x/#", lambda m: got.append(m.topic), qos=1)
    assert router.subscriptions() == [("x/#", 1)]
    assert router.dispatch(ReceivedMessage("x/y", b"", 1, False)) == 2
    assert got == ["x/y"]
    assert "handler bug" in caplog.text
    assert router.remove(r1) is False  # the other route still needs x/#


def test_bad_filters_are_refused() -> None:
    router = SubscriptionRouter()
    with pytest.raises(TopicError):
        router.add("a/#/b", lambda m: None)
    with pytest.raises(ValueError, match="qos"):
        router.add("a", lambda m: None, qos=5)


def test_remembered_matches_follow_routes_added_and_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    router = SubscriptionRouter()
    got: list[str] = []
    first = router.add("edgebus/+/metrics", lambda m: got.append("first"))
    message = ReceivedMessage("edgebus/a/metrics", b"", 1, False)
    assert router.dispatch(message) == 1
    second = router.add("edgebus/a/#", lambda m: got.append("second"))
    assert router.dispatch(message) == 2  # a route added after the topic was seen gets it
    router.remove(first)
    assert router.dispatch(message) == 1
    router.remove(second)
    assert router.dispatch(message) == 0
    assert got == ["first", "first", "second", "second"]
    monkeypatch.setattr(SubscriptionRouter, "CACHE_TOPICS", 3)
    router.add("edgebus/#", lambda m: None)
    for i in range(10):  # many distinct topics: what is remembered stays bounded, matching stays right
        assert router.dispatch(ReceivedMessage(f"edgebus/d{i}/metrics", b"", 1, False)) == 1
    assert len(router._matches) <= 3


def test_a_route_waits_for_its_suback_and_a_refusal_raises() -> None:
    router = SubscriptionRouter()
    route = router.add("x/#", lambda m: None)
    assert route.wait_subscribed(0) is False  # no session has subscribed it
    route.suback.mark_acknowledged()
    assert route.wait_subscribed(0) is True
    route.suback.mark_pending()  # the connection ended
    assert route.wait_subscribed(0) is False
    route.suback.mark_refused("Not authorized")
    with pytest.raises(SubscriptionRefused, match=r"'x/#'.*Not authorized"):
        route.wait_subscribed(0)
    assert [r.topic_filter for r in router.routes_for("x/#")] == ["x/#"]
    assert router.routes_for("x/+") == []
