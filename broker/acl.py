"""The one access-control list of an edgebus broker, for Mosquitto and the embedded broker alike.

:class:`BusAcl` states who may publish and subscribe where, once: Mosquitto
gets it as ACL-file lines (:meth:`BusAcl.mosquitto_lines`, used by
:mod:`broker.mosquitto_config`) and the embedded broker asks
:meth:`BusAcl.allows` for every publish, subscribe and delivery
(:mod:`broker.amqtt_fixes.topic_acl`). Both read the same :class:`AclRule`
list, so the two brokers cannot drift apart; ``tests/test_acl_battery.py``
runs one battery of real clients against both.

Two roles (DESIGN.md section 6: the broker, not the payload, tells devices apart):

* **device** - the user name is the device id (``%u`` below). A device
  writes only under ``{root}/%u/#`` and its Home Assistant discovery topics
  ``{ha}/+/%u/#`` (and ``{ha}/+/{node}/#`` when its id is not
  Home-Assistant-safe), reads its own commands ``{root}/%u/cmd/#`` and
  ``{ha}/status``, and in the coordination protocols only its own lanes:
  lock requests on ``{root}/_sys/lock/+/req/%u`` (and ``.../req/%u/{node}``),
  its replies on ``{root}/_sys/lock/+/reply/%u/#``, the groups' deadlock
  reports ``{root}/_sys/lock/+/events``, two-phase commit messages from
  ``{root}/_sys/tx/+/from/%u`` and to ``{root}/_sys/tx/+/to/%u``, and as a
  PBFT replica or client (its identity in the group file is its user name):
  it reads only its own inbox ``{root}/_sys/bft/+/to/%u``, writes any
  inbox ``{root}/_sys/bft/+/to/+`` (broadcasts and replies; every frame is
  Ed25519-signed, so the signature, not the topic, says who sent it), the
  group's ``evidence``, its own ``status/%u``, ``deadletter/%u`` and
  ``quarantined/%u``, and reads the coordinator's retained ``decided``. No
  Raft peer or admin topic, no ``_anomaly``, no other device.
* **coordinator** - coordinators, Raft nodes and operators: read and write
  everything under ``{root}/#`` and ``{ha}/#`` (also through ``$share/...``)
  and read ``$SYS/#``.

A user that is neither may do nothing.

>>> acl = BusAcl(devices=("cam-1",), coordinators=("coord",))
>>> acl.allows("cam-1", "publish", "edgebus/cam-1/metrics")
True
>>> acl.allows("cam-1", "publish", "edgebus/cam-2/metrics")
False
>>> acl.allows("cam-1", "publish", "edgebus/_sys/raft/site/admin/req")
False
>>> acl.allows("coord", "publish", "edgebus/_sys/raft/site/admin/req")
True
>>> acl.allows("cam-1", "subscribe", "edgebus/_sys/bft/fleet/to/cam-2")
False
>>> acl.allows("cam-1", "publish", "edgebus/_sys/bft/fleet/to/cam-2")
True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from schemas.errors import ConfigError, TopicError
from schemas.topics import TopicTree, ha_slug, validate_name

__all__ = ["ACCESS_KINDS", "AclRule", "Action", "BusAcl", "Role", "filter_covers", "topic_matches"]

ACCESS_KINDS = ("read", "write", "readwrite")
_USER = "%u"


class Role(StrEnum):
    DEVICE = "device"
    COORDINATOR = "coordinator"


class Action(StrEnum):
    """What a client asks the broker for (amqtt's names)."""

    PUBLISH = "publish"  # needs write access to the topic
    SUBSCRIBE = "subscribe"  # needs read access to every topic the filter can match
    RECEIVE = "receive"  # a delivery: needs read access to the topic


@dataclass(frozen=True, slots=True)
class AclRule:
    """``access`` (read, write or readwrite) to the topics ``pattern`` matches; ``%u`` is the user name."""

    access: str
    pattern: str

    def __post_init__(self) -> None:
        if self.access not in ACCESS_KINDS:
            raise ConfigError(f"ACL access must be one of {', '.join(ACCESS_KINDS)}, not {self.access!r}")
        if not self.pattern or any(c in self.pattern for c in "\r\n\0"):
            raise ConfigError(f"ACL pattern {self.pattern!r} is empty or holds a line break")
        for level in self.pattern.split("/"):
            if _USER in level and level != _USER:
                raise ConfigError(f"ACL pattern {self.pattern!r}: %u must be a whole level (Mosquitto "
                                  "substitutes nothing else)")

    def reads(self) -> bool:
        return self.access in ("read", "readwrite")

    def writes(self) -> bool:
        return self.access in ("write", "readwrite")

    def for_user(self, user: str) -> str:
        return self.pattern.replace(_USER, user)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (MQTT 3.1.1 section 4.7; ``$`` needs a ``$`` filter)."""
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    if topic.startswith("$") != topic_filter.startswith("$"):
        return False
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def filter_covers(allowed: str, requested: str) -> bool:
    """Whether every topic ``requested`` (a subscription filter) can match is matched by ``allowed``."""
    a_levels, r_levels = allowed.split("/"), requested.split("/")
    if requested.startswith("$") != allowed.startswith("$"):
        return False
    for i, level in enumerate(a_levels):
        if level == "#":
            return True
        if i >= len(r_levels):
            return False
        wanted = r_levels[i]
        if wanted == "#" or (level != "+" and (wanted == "+" or wanted != level)):
            return False
    return len(a_levels) == len(r_levels)


def _strip_shared(topic_filter: str) -> str:
    """``$share/{name}/{filter}`` is checked as ``{filter}`` (as Mosquitto does)."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else ""
    return topic_filter


@dataclass(frozen=True, slots=True)
class BusAcl:
    """Who may do what on one broker; see the module docstring."""

    devices: tuple[str, ...] = ()
    coordinators: tuple[str, ...] = ()
    root: str = "edgebus"
    ha_prefix: str = "homeassistant"
    _roles: dict[str, Role] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "coordinators", tuple(self.coordinators))
        try:
            TopicTree(self.root)
            validate_name(self.ha_prefix, "ha_prefix")
        except TopicError as exc:
            raise ConfigError(str(exc)) from exc
        roles: dict[str, Role] = {}
        for users, role in ((self.devices, Role.DEVICE), (self.coordinators, Role.COORDINATOR)):
            for user in users:
                if user in roles:
                    raise ConfigError(f"user {user!r} is listed twice (as {roles[user]} and as {role})")
                roles[user] = role
        object.__setattr__(self, "_roles", roles)

    # -- the one definition --------------------------------------------------------------------

    def device_rules(self) -> tuple[AclRule, ...]:
        """What every device may do, as ``%u`` patterns (Mosquitto's ``pattern`` lines)."""
        root, ha, sys = self.root, self.ha_prefix, f"{self.root}/_sys"
        return (
            AclRule("write", f"{root}/%u/#"),
            AclRule("read", f"{root}/%u/cmd/#"),
            AclRule("write", f"{ha}/+/%u/#"),
            AclRule("write", f"{sys}/lock/+/req/%u"),
            AclRule("write", f"{sys}/lock/+/req/%u/+"),
            AclRule("read", f"{sys}/lock/+/reply/%u/#"),
            AclRule("write", f"{sys}/tx/+/from/%u"),
            AclRule("read", f"{sys}/tx/+/to/%u"),
            # PBFT (broker/bft/replica_driver.py, client.py): exactly what the driver and client use
            AclRule("read", f"{sys}/bft/+/to/%u"),
            AclRule("write", f"{sys}/bft/+/status/%u"),
            AclRule("write", f"{sys}/bft/+/deadletter/%u"),
            AclRule("write", f"{sys}/bft/+/quarantined/%u"),
        )

    def device_shared_rules(self, device: str) -> tuple[AclRule, ...]:
        """Per-device rules without ``%u`` (Mosquitto warns about a pattern that names no user)."""
        rules = [AclRule("read", f"{self.ha_prefix}/status"),
                 AclRule("read", f"{self.root}/_sys/lock/+/events")]
        node = ha_slug(device)
        if node != device:
            rules.append(AclRule("write", f"{self.ha_prefix}/+/{node}/#"))
        bft = f"{self.root}/_sys/bft/+"
        rules += [AclRule("write", f"{bft}/to/+"),  # signed frames: the signature names the sender
                  AclRule("write", f"{bft}/evidence"),
                  AclRule("read", f"{bft}/decided")]
        return tuple(rules)

    def coordinator_rules(self) -> tuple[AclRule, ...]:
        return (AclRule("readwrite", f"{self.root}/#"), AclRule("readwrite", f"{self.ha_prefix}/#"),
                AclRule("read", "$SYS/#"))

    def role(self, user: str | None) -> Role | None:
        return None if user is None else self._roles.get(user)

    def rules_for(self, user: str) -> tuple[str, ...]:
        """``access topic`` lines for ``user`` as both brokers apply them (for an operator to read)."""
        return tuple(f"{r.access} {r.for_user(user)}" for r in self._user_rules(user))

    def _user_rules(self, user: str) -> Iterable[AclRule]:
        role = self.role(user)
        if role is Role.DEVICE:
            return (*self.device_rules(), *self.device_shared_rules(user))
        if role is Role.COORDINATOR:
            # Mosquitto applies pattern lines to every user; a coordinator's own rules cover them.
            return self.coordinator_rules()
        return ()

    # -- Mosquitto -----------------------------------------------------------------------------

    def mosquitto_lines(self) -> list[str]:
        """The ACL file's lines (``pattern`` for devices, then ``user`` blocks)."""
        lines = [
            "# edgebus ACL - generated by `edge-broker mosquitto-config` from broker/acl.py;",
            "# regenerate, do not edit.",
            "",
            "# Devices: the user name is the device id (%u). Patterns apply to every user.",
            *(f"pattern {r.access} {r.pattern}" for r in self.device_rules()),
            "",
            "# Each device: Home Assistant's birth topic, the lock groups' deadlock reports, the PBFT",
            "# groups' inboxes (signed frames) and evidence, and the coordinator's decided state.",
            "# (Topic lines before any user line would apply only to anonymous clients.)",
        ]
        for device in self.devices:
            lines.append(f"user {device}")
            lines += [f"topic {r.access} {r.pattern}" for r in self.device_shared_rules(device)]
        lines += ["", "# Coordinators, Raft nodes and operators: everything under the root and HA."]
        for user in self.coordinators:
            lines.append(f"user {user}")
            lines += [f"topic {r.access} {r.pattern}" for r in self.coordinator_rules()]
        return lines

    # -- the in-process matcher (the embedded broker) ----------------------------------------------

    def allows(self, user: str | None, action: Action | str, topic: str) -> bool:
        """Whether ``user`` may ``action`` on ``topic`` (a filter for ``subscribe``), as Mosquitto decides."""
        if user is None or not topic:
            return False
        action = Action(action)
        rules = self._user_rules(user)
        if action is Action.PUBLISH:
            if "+" in topic or "#" in topic:
                return False
            return any(r.writes() and topic_matches(r.for_user(user), topic) for r in rules)
        if action is Action.SUBSCRIBE:
            wanted = _strip_shared(topic)
            return bool(wanted) and any(r.reads() and filter_covers(r.for_user(user), wanted) for r in rules)
        return any(r.reads() and topic_matches(r.for_user(user), topic) for r in rules)
