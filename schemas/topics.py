"""The edgebus topic tree (DESIGN.md section 2): builders, subscriber filters and a parser.

Every topic edgebus publishes is made here, from validated parts, so a device id
with a ``/`` or a wildcard in it can never turn into a topic that means
something else. Under a configurable root (default ``edgebus``)::

    {root}/{device}/status                  retained  online / offline (the will)
    {root}/{device}/birth                   retained  envelope: identity, sequence epoch
    {root}/{device}/metrics                           envelope: a batch of samples
    {root}/{device}/detections/{camera}               envelope: a batch of frames
    {root}/{device}/events/{camera}                   JSON: track start / end
    {root}/{device}/state/{name}            retained  plain JSON / text
    {root}/{device}/cmd/{name[/more]}                 envelope: a command to the device
    {root}/{device}/cmd/ota                           envelope: an OTA offer (command "ota")
    {root}/{device}/cmd/ota/chunk                     raw msgpack OTA chunk frame (not an envelope)
    {root}/{device}/ota/{name}                        JSON from the device's OTA client:
                                                      ota/want = chunk requests to the server
    {root}/{device}/state/ota               retained  JSON OTA progress (schemas/ota.py)
    {root}/_anomaly/{device}/{metric}                 JSON anomaly event
    {root}/_sys/{protocol}/{group}/...                envelope: protocol messages
    homeassistant/{component}/{node}/{object}/config  Home Assistant discovery

Device ids may not start with ``_``, so ``_anomaly`` and ``_sys`` can never be
mistaken for a device.

>>> tree = TopicTree()
>>> tree.detections("cam-1", "front")
'edgebus/cam-1/detections/front'
>>> tree.parse("edgebus/cam-1/cmd/ota/chunk")
ParsedTopic(kind=<TopicKind.CMD: 'cmd'>, device='cam-1', name='ota/chunk', rest=())
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from schemas.errors import TopicError

__all__ = [
    "DEFAULT_ROOT",
    "DEVICE_ID_MAX_CHARS",
    "NAME_MAX_CHARS",
    "TOPIC_MAX_BYTES",
    "ParsedTopic",
    "TopicKind",
    "TopicTree",
    "ha_slug",
    "validate_command_name",
    "validate_device_id",
    "validate_name",
    "validate_publish_topic",
    "validate_topic_filter",
]

DEFAULT_ROOT = "edgebus"
DEVICE_ID_MAX_CHARS = 64
NAME_MAX_CHARS = 128
# MQTT encodes a topic's length in two bytes.
TOPIC_MAX_BYTES = 65535

ANOMALY_LEVEL = "_anomaly"
#: The command-lane name the coordinator's stored acknowledgement travels on (not a command).
STORED_ACK_NAME = "stored"
SYS_LEVEL = "_sys"

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ID_CHAR_RE = re.compile(r"[^A-Za-z0-9_.-]")
_HA_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
_HA_BAD_CHARS_RE = re.compile(r"[^A-Za-z0-9_-]")
_ALLOWED = "letters, digits, '_', '.' and '-'"


def _check_identifier(value: object, what: str, max_chars: int) -> str:
    """One topic level from the id charset; errors name ``what`` and quote the value."""
    if not isinstance(value, str):
        raise TopicError(f"{what} must be a string, not {type(value).__name__}")
    if _ID_RE.fullmatch(value) and len(value) <= max_chars:
        return value
    if not value:
        raise TopicError(f"{what} must not be empty")
    if len(value) > max_chars:
        raise TopicError(f"{what} {value[:20]!r}... is {len(value)} characters; the limit is "
                         f"{max_chars}")
    bad = _ID_CHAR_RE.search(value)
    if bad is not None:
        raise TopicError(f"{what} {value!r} contains {bad.group()!r}; allowed are {_ALLOWED}")
    raise TopicError(f"{what} {value!r} must start with a letter or digit"
                     + (" ('_' names are reserved for edgebus)" if value[0] == "_" else ""))


def validate_device_id(device: str) -> str:
    """Return ``device`` if it is a valid device id, else raise :class:`TopicError`.

    1-64 characters from ``[A-Za-z0-9_.-]``, starting with a letter or digit:
    an id is one topic level, and ``_`` starts the reserved ``_anomaly`` and
    ``_sys`` levels.

    >>> validate_device_id("cam-1")
    'cam-1'
    >>> validate_device_id("_sys")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    schemas.errors.TopicError: device id '_sys' must start with a letter or digit ...
    """
    return _check_identifier(device, "device id", DEVICE_ID_MAX_CHARS)


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a valid single-level name (camera, metric, state, protocol ...).

    Same charset as device ids, up to 128 characters; ``what`` goes into the
    error message.
    """
    return _check_identifier(name, what, NAME_MAX_CHARS)


def _validate_multilevel_name(name: str, what: str) -> str:
    """A name that may span levels (``ota/chunk``); every level is validated."""
    if not isinstance(name, str):
        raise TopicError(f"{what} must be a string, not {type(name).__name__}")
    for level in name.split("/"):
        if not level:
            raise TopicError(f"{what} {name!r} has an empty level")
        _check_identifier(level, f"{what} level", NAME_MAX_CHARS)
    return name


def validate_command_name(name: str) -> str:
    """Return ``name`` if it is a valid command name: name levels joined by ``/``."""
    return _validate_multilevel_name(name, "command name")


def _check_utf8_length(topic: str, what: str) -> None:
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise TopicError(f"{what} {topic[:40]!r} is not valid UTF-8: {exc.reason}") from exc
    if size > TOPIC_MAX_BYTES:
        raise TopicError(f"{what} {topic[:40]!r}... is {size} bytes in UTF-8; MQTT allows "
                         f"{TOPIC_MAX_BYTES}")


def validate_publish_topic(topic: str) -> str:
    """Return ``topic`` if a client may publish to it, else raise :class:`TopicError`.

    Non-empty, at most 65535 UTF-8 bytes, no wildcards and no NUL (MQTT 3.1.1
    section 4.7).

    >>> validate_publish_topic("edgebus/+/status")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    schemas.errors.TopicError: publish topic 'edgebus/+/status' contains the wildcard '+'; ...
    """
    if not isinstance(topic, str):
        raise TopicError(f"publish topic must be a string, not {type(topic).__name__}")
    if not topic:
        raise TopicError("publish topic must not be empty")
    for char in ("+", "#"):
        if char in topic:
            raise TopicError(f"publish topic {topic!r} contains the wildcard {char!r}; "
                             "wildcards are for subscriptions only")
    if "\x00" in topic:
        raise TopicError(f"publish topic {topic!r} contains a NUL character")
    _check_utf8_length(topic, "publish topic")
    return topic


def validate_topic_filter(topic_filter: str) -> str:
    """Return ``topic_filter`` if it is a valid MQTT subscription filter, else raise.

    ``#`` must be the last level and alone in it; ``+`` must be alone in its
    level. (``$share/...`` prefixes are the session's business: strip them first.)

    >>> validate_topic_filter("edgebus/+/detections/#")
    'edgebus/+/detections/#'
    >>> validate_topic_filter("edgebus/cam#")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    schemas.errors.TopicError: topic filter 'edgebus/cam#': '#' must be alone in its level, ...
    """
    if not isinstance(topic_filter, str):
        raise TopicError(f"topic filter must be a string, not {type(topic_filter).__name__}")
    if not topic_filter:
        raise TopicError("topic filter must not be empty")
    if "\x00" in topic_filter:
        raise TopicError(f"topic filter {topic_filter!r} contains a NUL character")
    _check_utf8_length(topic_filter, "topic filter")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level:
            if level != "#":
                raise TopicError(f"topic filter {topic_filter!r}: '#' must be alone in its "
                                 f"level, found {level!r}")
            if i != len(levels) - 1:
                raise TopicError(f"topic filter {topic_filter!r}: '#' must be the last level")
        if "+" in level and level != "+":
            raise TopicError(f"topic filter {topic_filter!r}: '+' must be alone in its level, "
                             f"found {level!r}")
    return topic_filter


def ha_slug(value: str) -> str:
    """``value`` made fit for a Home Assistant node or object id (``[A-Za-z0-9_-]+``).

    >>> ha_slug("gw-1.site")
    'gw-1_site'
    """
    slug = _HA_BAD_CHARS_RE.sub("_", value)
    if not slug:
        raise TopicError("a Home Assistant id must not be empty")
    return slug


class TopicKind(enum.Enum):
    """Which branch of the tree a topic is on."""

    STATUS = "status"
    BIRTH = "birth"
    METRICS = "metrics"
    DETECTIONS = "detections"
    EVENTS = "events"
    STATE = "state"
    CMD = "cmd"
    OTA = "ota"
    ANOMALY = "anomaly"
    SYS = "sys"


# Device branches that end at the device-level keyword and those that take one name level.
_LEAF_KINDS = {"status": TopicKind.STATUS, "birth": TopicKind.BIRTH,
               "metrics": TopicKind.METRICS}
_NAMED_KINDS = {"detections": (TopicKind.DETECTIONS, "camera"),
                "events": (TopicKind.EVENTS, "camera"), "state": (TopicKind.STATE, "state name"),
                "ota": (TopicKind.OTA, "ota topic name")}


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """What a topic under the root means.

    ``name`` is the camera (detections, events), the state name, the command
    name (may contain ``/``), the OTA topic name (``want``), the metric (anomaly) or the protocol (sys);
    ``rest`` holds the levels after the protocol for sys topics (group first)
    and is empty otherwise. ``device`` is None only for sys topics.
    """

    kind: TopicKind
    device: str | None = None
    name: str | None = None
    rest: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicTree:
    """Builds, filters and parses the topics under one root.

    The root may span several levels (``site-a/edgebus``); each is validated
    like a name.
    """

    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        _validate_multilevel_name(self.root, "topic root")

    # -- publish topics -------------------------------------------------------

    def _device_topic(self, device: str, leaf: str) -> str:
        return f"{self.root}/{validate_device_id(device)}/{leaf}"

    def status(self, device: str) -> str:
        """The retained ``online``/``offline`` topic (also the will)."""
        return self._device_topic(device, "status")

    def birth(self, device: str) -> str:
        """The retained birth record topic."""
        return self._device_topic(device, "birth")

    def metrics(self, device: str) -> str:
        """The topic a device publishes its metrics batches to."""
        return self._device_topic(device, "metrics")

    def detections(self, device: str, camera: str) -> str:
        """The topic of one camera's detection batches."""
        return self._device_topic(device, f"detections/{validate_name(camera, 'camera')}")

    def events(self, device: str, camera: str) -> str:
        """The topic of one camera's track start/end events (JSON)."""
        return self._device_topic(device, f"events/{validate_name(camera, 'camera')}")

    def device_detections(self, device: str) -> str:
        """Every camera's detections of one device: ``{root}/{device}/detections/+``."""
        return self._device_topic(device, "detections/+")

    def device_events(self, device: str) -> str:
        """Every camera's track events of one device: ``{root}/{device}/events/+``."""
        return self._device_topic(device, "events/+")

    def state(self, device: str, name: str) -> str:
        """A retained human-readable state topic."""
        return self._device_topic(device, f"state/{validate_name(name, 'state name')}")

    def cmd(self, device: str, name: str) -> str:
        """The topic a command ``name`` (may span levels: ``ota/chunk``) is sent to."""
        return self._device_topic(device, f"cmd/{validate_command_name(name)}")

    def stored_ack(self, device: str) -> str:
        """The retained acknowledgement of what of ``device``'s samples the coordinator stored
        (:mod:`schemas.stored_ack`); in the device's command lane, so only it reads it."""
        return self._device_topic(device, f"cmd/{STORED_ACK_NAME}")

    def ota(self, device: str, name: str) -> str:
        """A topic the device's OTA client publishes to the server on (``ota/want``)."""
        return self._device_topic(device, f"ota/{validate_name(name, 'ota topic name')}")

    def anomaly(self, device: str, metric: str) -> str:
        """The topic the coordinator reports anomalies of one device metric on."""
        return (f"{self.root}/{ANOMALY_LEVEL}/{validate_device_id(device)}/"
                f"{validate_name(metric, 'metric')}")

    def sys(self, protocol: str, group: str, *parts: str) -> str:
        """A protocol topic; every part is one level and is validated like a name."""
        levels = [validate_name(protocol, "protocol"), validate_name(group, "group")]
        levels += [validate_name(part, "sys topic level") for part in parts]
        return f"{self.root}/{SYS_LEVEL}/" + "/".join(levels)

    @staticmethod
    def ha_discovery(component: str, node: str, object_id: str,
                     prefix: str = "homeassistant") -> str:
        """A Home Assistant MQTT discovery config topic (outside the root, by HA's rules).

        ``node`` and ``object_id`` must match ``[A-Za-z0-9_-]+``; see :func:`ha_slug`.
        """
        for what, value in (("component", component), ("node id", node),
                            ("object id", object_id)):
            if not isinstance(value, str) or not _HA_ID_RE.fullmatch(value):
                raise TopicError(f"Home Assistant {what} {value!r} must match [A-Za-z0-9_-]+ "
                                 "(use ha_slug())")
        _validate_multilevel_name(prefix, "discovery prefix")
        return f"{prefix}/{component}/{node}/{object_id}/config"

    def build(self, parsed: ParsedTopic) -> str:
        """The topic ``parsed`` came from: ``tree.build(tree.parse(t)) == t``."""
        kind = parsed.kind
        if kind is TopicKind.SYS:
            if parsed.name is None or not parsed.rest:
                raise TopicError("a sys topic needs a protocol (name) and a group (rest[0])")
            return self.sys(parsed.name, *parsed.rest)
        if parsed.device is None:
            raise TopicError(f"a {kind.value} topic needs a device")
        if kind in (TopicKind.STATUS, TopicKind.BIRTH, TopicKind.METRICS):
            return self._device_topic(parsed.device, kind.value)
        if parsed.name is None:
            raise TopicError(f"a {kind.value} topic needs a name")
        builders = {TopicKind.DETECTIONS: self.detections, TopicKind.EVENTS: self.events,
                    TopicKind.STATE: self.state, TopicKind.CMD: self.cmd,
                    TopicKind.OTA: self.ota, TopicKind.ANOMALY: self.anomaly}
        return builders[kind](parsed.device, parsed.name)

    # -- subscription filters -------------------------------------------------

    def all_status(self) -> str:
        """Every device's status: ``{root}/+/status``."""
        return f"{self.root}/+/status"

    def all_births(self) -> str:
        """Every device's birth: ``{root}/+/birth``."""
        return f"{self.root}/+/birth"

    def all_metrics(self) -> str:
        """Every device's metrics: ``{root}/+/metrics``."""
        return f"{self.root}/+/metrics"

    def all_detections(self) -> str:
        """Every camera of every device: ``{root}/+/detections/+``.

        Like every ``+`` filter it would also match an anomaly of a device that
        is itself named ``detections``; check :meth:`parse`'s ``kind``.
        """
        return f"{self.root}/+/detections/+"

    def all_events(self) -> str:
        """Every camera's track events: ``{root}/+/events/+``."""
        return f"{self.root}/+/events/+"

    def all_states(self) -> str:
        """Every device's state topics: ``{root}/+/state/+``."""
        return f"{self.root}/+/state/+"

    def all_ota(self, name: str) -> str:
        """One OTA topic of every device (``name="want"``: every chunk request)."""
        return f"{self.root}/+/ota/{validate_name(name, 'ota topic name')}"

    def all_anomalies(self) -> str:
        """Every anomaly event: ``{root}/_anomaly/+/+``."""
        return f"{self.root}/{ANOMALY_LEVEL}/+/+"

    def device_commands(self, device: str) -> str:
        """Every command to one device: ``{root}/{device}/cmd/#``."""
        return self._device_topic(device, "cmd/#")

    def device_everything(self, device: str) -> str:
        """Everything one device publishes or is sent: ``{root}/{device}/#``."""
        return self._device_topic(device, "#")

    def sys_group(self, protocol: str, group: str) -> str:
        """Every message of one protocol group: ``{root}/_sys/{protocol}/{group}/#``."""
        return (f"{self.root}/{SYS_LEVEL}/{validate_name(protocol, 'protocol')}/"
                f"{validate_name(group, 'group')}/#")

    def everything(self) -> str:
        """The whole tree: ``{root}/#``."""
        return f"{self.root}/#"

    # -- parsing --------------------------------------------------------------

    def parse(self, topic: str) -> ParsedTopic:
        """What ``topic`` means; :class:`TopicError` for anything outside the tree.

        >>> TopicTree().parse("edgebus/gw-2/metrics")
        ParsedTopic(kind=<TopicKind.METRICS: 'metrics'>, device='gw-2', name=None, rest=())
        """
        if not isinstance(topic, str):
            raise TopicError(f"topic must be a string, not {type(topic).__name__}")
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            raise TopicError(f"topic {topic!r} is not under the root {self.root!r}")
        levels = topic[len(prefix):].split("/")
        try:
            return self._parse_levels(levels)
        except TopicError as exc:
            raise TopicError(f"topic {topic!r} is not in the edgebus tree: {exc}") from None

    @staticmethod
    def _parse_levels(levels: list[str]) -> ParsedTopic:
        first = levels[0]
        if first == ANOMALY_LEVEL:
            if len(levels) != 3:
                raise TopicError("an anomaly topic is _anomaly/{device}/{metric}")
            return ParsedTopic(TopicKind.ANOMALY, validate_device_id(levels[1]),
                               validate_name(levels[2], "metric"))
        if first == SYS_LEVEL:
            if len(levels) < 3:
                raise TopicError("a sys topic is _sys/{protocol}/{group}/...")
            rest = tuple(validate_name(level, "sys topic level") for level in levels[2:])
            return ParsedTopic(TopicKind.SYS, None, validate_name(levels[1], "protocol"), rest)
        device = validate_device_id(first)
        if len(levels) < 2:
            raise TopicError("nothing after the device id")
        branch = levels[1]
        if branch in _LEAF_KINDS:
            if len(levels) != 2:
                raise TopicError(f"nothing may follow {branch!r}")
            return ParsedTopic(_LEAF_KINDS[branch], device)
        if branch in _NAMED_KINDS:
            if len(levels) != 3:
                raise TopicError(f"{branch!r} is followed by exactly one name level")
            kind, what = _NAMED_KINDS[branch]
            return ParsedTopic(kind, device, validate_name(levels[2], what))
        if branch == "cmd":
            name = "/".join(levels[2:])
            if not name:
                raise TopicError("'cmd' needs a command name")
            return ParsedTopic(TopicKind.CMD, device, validate_command_name(name))
        raise TopicError(f"unknown branch {branch!r}")
