"""The topic tree: builders, filters, parsing and validation (schemas/topics.py)."""

from __future__ import annotations

import dataclasses
import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

import schemas.topics
from schemas.errors import TopicError
from schemas.topics import (
    ParsedTopic,
    TopicKind,
    TopicTree,
    ha_slug,
    validate_command_name,
    validate_device_id,
    validate_name,
    validate_publish_topic,
    validate_topic_filter,
)

device_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", fullmatch=True)
command_names = st.lists(names, min_size=1, max_size=4).map("/".join)
roots = st.lists(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,15}", fullmatch=True),
                 min_size=1, max_size=3).map("/".join)


def filter_matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching, written out independently of the code under test."""
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or level not in ("+", t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def test_doctests() -> None:
    assert doctest.testmod(schemas.topics).failed == 0


# -- builders ------------------------------------------------------------------------------


def test_builders_follow_the_design_table() -> None:
    tree = TopicTree()
    assert tree.status("cam-1") == "edgebus/cam-1/status"
    assert tree.birth("cam-1") == "edgebus/cam-1/birth"
    assert tree.metrics("cam-1") == "edgebus/cam-1/metrics"
    assert tree.detections("cam-1", "front") == "edgebus/cam-1/detections/front"
    assert tree.events("cam-1", "front") == "edgebus/cam-1/events/front"
    assert tree.state("cam-1", "mode") == "edgebus/cam-1/state/mode"
    assert tree.cmd("cam-1", "assign") == "edgebus/cam-1/cmd/assign"
    assert tree.cmd("cam-1", "ota/chunk") == "edgebus/cam-1/cmd/ota/chunk"
    assert tree.ota("cam-1", "want") == "edgebus/cam-1/ota/want"
    assert tree.anomaly("cam-1", "temp_c") == "edgebus/_anomaly/cam-1/temp_c"
    assert tree.sys("raft", "coord", "n1", "vote") == "edgebus/_sys/raft/coord/n1/vote"
    assert (tree.ha_discovery("sensor", "gw-1", "temp_c")
            == "homeassistant/sensor/gw-1/temp_c/config")
    assert tree.ha_discovery("sensor", "n", "o", prefix="ha") == "ha/sensor/n/o/config"


def test_custom_root_may_span_levels() -> None:
    tree = TopicTree("site-a/bus")
    assert tree.metrics("gw-1") == "site-a/bus/gw-1/metrics"
    assert tree.all_status() == "site-a/bus/+/status"
    assert tree.parse("site-a/bus/gw-1/metrics") == ParsedTopic(TopicKind.METRICS, "gw-1")


@pytest.mark.parametrize("root", ["", "a//b", "edge+bus", "#", "edge bus", "_x", "a/", 5])
def test_bad_roots_are_refused(root: object) -> None:
    with pytest.raises(TopicError):
        TopicTree(root)  # type: ignore[arg-type]


def test_tree_is_frozen() -> None:
    tree = TopicTree()
    with pytest.raises(dataclasses.FrozenInstanceError):
        tree.root = "other"  # type: ignore[misc]


@pytest.mark.parametrize("call", [
    lambda t: t.status("+"),
    lambda t: t.metrics("a/b"),
    lambda t: t.birth("#"),
    lambda t: t.birth("_sys"),
    lambda t: t.detections("d", "cam/x"),
    lambda t: t.events("d", "+"),
    lambda t: t.state("d", ""),
    lambda t: t.cmd("d", "ota//chunk"),
    lambda t: t.cmd("d", "ota/+"),
    lambda t: t.cmd("d", "/ota"),
    lambda t: t.ota("d", "want/x"),
    lambda t: t.ota("d", "+"),
    lambda t: t.anomaly("d", "temp c"),
    lambda t: t.sys("raft", "g", "a/b"),
    lambda t: t.sys("raft", "#"),
    lambda t: t.ha_discovery("sensor", "gw.1", "x"),
    lambda t: t.ha_discovery("sensor", "gw", "x", prefix="ha/#"),
])
def test_builders_validate_every_argument(call: object) -> None:
    with pytest.raises(TopicError):
        call(TopicTree())  # type: ignore[operator]


def test_error_messages_quote_the_bad_value() -> None:
    with pytest.raises(TopicError, match=r"'cam 1'.*' '"):
        validate_device_id("cam 1")
    with pytest.raises(TopicError, match=r"camera 'a\+b'"):
        TopicTree().detections("d", "a+b")
    with pytest.raises(TopicError, match="reserved"):
        validate_device_id("_anomaly")


@given(device=device_ids, camera=names, name=names, command=command_names,
       parts=st.lists(names, max_size=3), root=roots)
def test_parse_inverts_every_builder(device: str, camera: str, name: str, command: str,
                                     parts: list[str], root: str) -> None:
    tree = TopicTree(root)
    cases = [
        (tree.status(device), ParsedTopic(TopicKind.STATUS, device)),
        (tree.birth(device), ParsedTopic(TopicKind.BIRTH, device)),
        (tree.metrics(device), ParsedTopic(TopicKind.METRICS, device)),
        (tree.detections(device, camera), ParsedTopic(TopicKind.DETECTIONS, device, camera)),
        (tree.events(device, camera), ParsedTopic(TopicKind.EVENTS, device, camera)),
        (tree.state(device, name), ParsedTopic(TopicKind.STATE, device, name)),
        (tree.cmd(device, command), ParsedTopic(TopicKind.CMD, device, command)),
        (tree.ota(device, name), ParsedTopic(TopicKind.OTA, device, name)),
        (tree.anomaly(device, name), ParsedTopic(TopicKind.ANOMALY, device, name)),
        (tree.sys(name, camera, *parts),
         ParsedTopic(TopicKind.SYS, None, name, (camera, *parts))),
    ]
    for topic, expected in cases:
        assert validate_publish_topic(topic) == topic
        assert tree.parse(topic) == expected
        assert tree.build(expected) == topic


@given(device=device_ids, camera=names)
def test_filters_match_what_the_builders_make(device: str, camera: str) -> None:
    tree = TopicTree()
    pairs = [
        (tree.all_status(), tree.status(device)),
        (tree.all_births(), tree.birth(device)),
        (tree.all_metrics(), tree.metrics(device)),
        (tree.all_detections(), tree.detections(device, camera)),
        (tree.all_events(), tree.events(device, camera)),
        (tree.all_states(), tree.state(device, camera)),
        (tree.all_ota(camera), tree.ota(device, camera)),
        (tree.all_anomalies(), tree.anomaly(device, camera)),
        (tree.device_commands(device), tree.cmd(device, f"{camera}/x")),
        (tree.device_everything(device), tree.metrics(device)),
        (tree.sys_group("raft", camera), tree.sys("raft", camera, "n1")),
        (tree.everything(), tree.sys("raft", camera)),
    ]
    for topic_filter, topic in pairs:
        assert validate_topic_filter(topic_filter) == topic_filter
        assert filter_matches(topic_filter, topic), (topic_filter, topic)
    assert not filter_matches(tree.all_metrics(), tree.status(device))
    assert not filter_matches(tree.all_status(), tree.detections(device, camera))


def test_filter_strings() -> None:
    tree = TopicTree()
    assert tree.all_status() == "edgebus/+/status"
    assert tree.all_births() == "edgebus/+/birth"
    assert tree.all_metrics() == "edgebus/+/metrics"
    assert tree.all_detections() == "edgebus/+/detections/+"
    assert tree.everything() == "edgebus/#"
    assert tree.device_commands("gw-1") == "edgebus/gw-1/cmd/#"
    assert tree.all_ota("want") == "edgebus/+/ota/want"


def test_ota_want_parses_as_an_ota_topic_not_a_command() -> None:
    tree = TopicTree()
    assert tree.parse("edgebus/gw-1/ota/want") == ParsedTopic(TopicKind.OTA, "gw-1", "want")
    assert tree.parse("edgebus/gw-1/cmd/ota/chunk").kind is TopicKind.CMD
    assert tree.parse("edgebus/gw-1/state/ota") == ParsedTopic(TopicKind.STATE, "gw-1", "ota")


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", [
    "other/gw-1/status",
    "edgebusx/gw-1/status",
    "edgebus",
    "edgebus/",
    "edgebus/gw-1",
    "edgebus/gw-1/",
    "edgebus/gw-1/unknown",
    "edgebus/gw-1/status/extra",
    "edgebus/gw-1/detections",
    "edgebus/gw-1/detections/a/b",
    "edgebus/gw-1/state/",
    "edgebus/gw-1/cmd",
    "edgebus/gw-1/cmd/",
    "edgebus/gw-1/cmd/a//b",
    "edgebus/gw-1/ota",
    "edgebus/gw-1/ota/want/x",
    "edgebus/_anomaly/gw-1",
    "edgebus/_anomaly/gw-1/m/x",
    "edgebus/_sys/raft",
    "edgebus/_sys/raft/g/",
    "edgebus/_other/status",
    "edgebus/gw 1/status",
    "edgebus/+/status",
    "homeassistant/sensor/gw-1/temp/config",
])
def test_parse_refuses_topics_outside_the_tree(topic: str) -> None:
    with pytest.raises(TopicError, match="topic"):
        TopicTree().parse(topic)


@given(st.text(max_size=80))
def test_parse_raises_only_topic_errors(topic: str) -> None:
    tree = TopicTree()
    try:
        parsed = tree.parse("edgebus/" + topic)
    except TopicError:
        return
    assert tree.build(parsed) == "edgebus/" + topic


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["a", "A", "0", "cam-1", "gw_2.site", "x" * 64, "a-_.b"])
def test_valid_device_ids(device: str) -> None:
    assert validate_device_id(device) == device


@pytest.mark.parametrize("device", ["", "x" * 65, "_x", "-x", ".x", "a/b", "a+b", "a#", "+",
                                    "#", "a\x00", "a b", "a\tb", "a\n", "é", "a$", 7, None])
def test_invalid_device_ids(device: object) -> None:
    with pytest.raises(TopicError):
        validate_device_id(device)  # type: ignore[arg-type]


@given(st.text(max_size=70))
def test_device_id_validation_agrees_with_the_documented_rule(text: str) -> None:
    import re

    ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", text) is not None
    try:
        validate_device_id(text)
    except TopicError:
        assert not ok
    else:
        assert ok


def test_names_may_be_longer_than_device_ids() -> None:
    assert validate_name("m" * 128) == "m" * 128
    with pytest.raises(TopicError, match="129 characters"):
        validate_name("m" * 129, "metric")
    assert validate_command_name("ota/chunk") == "ota/chunk"


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "+", "a\x00b", "x" * 65536,
                                   "é" * 32768, "\ud800", 3])
def test_invalid_publish_topics(topic: object) -> None:
    with pytest.raises(TopicError):
        validate_publish_topic(topic)  # type: ignore[arg-type]


@pytest.mark.parametrize("topic", ["a", "/", "a//b", "$SYS/x", "x" * 65535, "é" * 32767,
                                   "edgebus/gw-1/state/mode"])
def test_valid_publish_topics(topic: str) -> None:
    assert validate_publish_topic(topic) == topic


@given(st.text(max_size=40))
def test_wildcards_are_never_publishable(text: str) -> None:
    for topic in (text + "+", "#" + text, f"a/{text}+/b"):
        with pytest.raises(TopicError):
            validate_publish_topic(topic)


@pytest.mark.parametrize("topic_filter", ["#", "+", "a/#", "+/+/x", "a/+/#", "a//b", "/",
                                          "$SYS/#", "edgebus/+/detections/+"])
def test_valid_filters(topic_filter: str) -> None:
    assert validate_topic_filter(topic_filter) == topic_filter


@pytest.mark.parametrize("topic_filter", ["", "a/#/b", "#/a", "a#", "a/b#", "a+/b", "+a",
                                          "a/+b/c", "##", "a\x00", "x" * 65536, None])
def test_invalid_filters(topic_filter: object) -> None:
    with pytest.raises(TopicError):
        validate_topic_filter(topic_filter)  # type: ignore[arg-type]


@given(st.lists(st.sampled_from(["a", "b", "+", "#", "a+", "#b", ""]), min_size=1,
                max_size=5).map("/".join))
def test_filter_validation_follows_the_mqtt_rules(topic_filter: str) -> None:
    levels = topic_filter.split("/")
    ok = (topic_filter != "" and all(level in ("+", "#") or ("+" not in level and "#" not in level)
              for level in levels)
          and "#" not in levels[:-1])
    try:
        validate_topic_filter(topic_filter)
    except TopicError:
        assert not ok
    else:
        assert ok


def test_ha_slug() -> None:
    assert ha_slug("gw-1.site") == "gw-1_site"
    assert ha_slug("a b/c") == "a_b_c"
    with pytest.raises(TopicError):
        ha_slug("")
