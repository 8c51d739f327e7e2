"""The embedded broker's side of :class:`broker.acl.BusAcl`: amqtt plugins that enforce it.

amqtt 0.12 asks every topic plugin about each SUBSCRIBE, each PUBLISH it
receives and each delivery (``Action.RECEIVE``), and every authentication
plugin about each CONNECT. :class:`AclTopicPlugin` answers the topic
questions from the one ACL definition that Mosquitto's file is generated
from, so the two brokers enforce the same lanes:

* a denied publish is dropped (MQTT 3.1.1 has no way to say no; Mosquitto
  drops it the same way) and logged;
* a denied subscription gets return code 0x80, as in Mosquitto 2.x; a
  subscription is allowed only when every topic its filter can match may
  be read (``$share/{name}/`` is stripped first);
* a delivery is checked again, so nothing reaches a client that may not read it.

:class:`WillTopicPlugin` refuses a CONNECT whose will names a topic the user
may not write: amqtt publishes wills without asking the topic plugins, so
without it a device could leave a forged ``offline`` on another device's
status topic (Mosquitto 2.x checks the will against the ACL as well).

The plugins take the :class:`BusAcl` object itself through their
configuration (amqtt checks plugin configuration with ``dacite``; a field
typed ``Any`` is passed through as is).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action as AmqttAction
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.acl import Action, BusAcl
from broker.audit import AuditLog
from schemas.audit import AuditKind

__all__ = ["TOPIC_PLUGIN", "WILL_PLUGIN", "AclTopicPlugin", "WillTopicPlugin"]

logger = logging.getLogger(__name__)

TOPIC_PLUGIN = f"{__name__}.AclTopicPlugin"
WILL_PLUGIN = f"{__name__}.WillTopicPlugin"

_ACTIONS = {AmqttAction.PUBLISH: Action.PUBLISH, AmqttAction.SUBSCRIBE: Action.SUBSCRIBE,
            AmqttAction.RECEIVE: Action.RECEIVE}


def _acl(config: Any) -> BusAcl:
    acl = getattr(config, "acl", None)
    if not isinstance(acl, BusAcl):
        raise TypeError(f"the ACL plugins need a broker.acl.BusAcl, not {type(acl).__name__}")
    return acl


def _audit(config: Any) -> AuditLog | None:
    audit = getattr(config, "audit", None)
    return audit if isinstance(audit, AuditLog) else None


class AclTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt is untyped
    """Allow a publish, subscribe or delivery only when :meth:`BusAcl.allows` does."""

    @dataclass
    class Config:
        acl: Any = None
        audit: Any = None

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._rules = _acl(self.config)
        self._audit = _audit(self.config)

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: AmqttAction | None = None) -> bool:
        wanted = _ACTIONS.get(action) if action is not None else None
        user = session.username if session is not None else None
        allowed = wanted is not None and topic is not None and self._rules.allows(user, wanted, topic)
        if not allowed and wanted is not Action.RECEIVE:
            logger.info("ACL denied %s of %r to user %r", action, topic, user)
            if self._audit is not None:
                self._audit.record(AuditKind.ACL_DENIED, user or "", str(wanted or action),
                                   f"topic {topic}")
        return allowed


class WillTopicPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    """Refuse a CONNECT whose will topic the user may not publish to (no opinion otherwise)."""

    @dataclass
    class Config:
        acl: Any = None
        audit: Any = None

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._rules = _acl(self.config)
        self._audit = _audit(self.config)

    async def authenticate(self, *, session: Session) -> bool | None:
        topic = getattr(session, "will_topic", None)
        if not topic:
            return None
        if self._rules.allows(session.username, Action.PUBLISH, topic):
            return None
        logger.info("refused CONNECT of %r: its will names %r, which it may not publish to",
                    session.username, topic)
        if self._audit is not None:
            self._audit.record(AuditKind.ACL_DENIED, session.username or "", "will", f"topic {topic}")
        return False
