"""The amqtt plugin that keeps the embedded broker's sessions and retained messages across restarts.

MQTT 3.1.1 §3.1.2.4 keeps a persistent session's subscriptions and the QoS
1/2 messages it missed "after the Client disconnects"; §3.3.1.3 keeps the
last retained message of each topic. A broker restart is not a reason to
forget them - edgebus's "nothing accepted is lost" counts on it, and so do
device status and birth messages (retained). amqtt 0.12.1 keeps all of it in
memory.

This is amqtt's plugin API doing the job (events: client connected,
disconnected, subscribed, unsubscribed, retained message; broker start and
shutdown), with :class:`broker.broker_store.BrokerStore` (SQLite, in the
broker's data directory) underneath. amqtt ships a plugin for this,
``amqtt.contrib.persistence.SessionDBPlugin``, which was measured and not
taken (``notes/broker-choice.md``): it decodes queued payloads as UTF-8 (a
binary edgebus envelope fails, and the message is not stored), never deletes
a queued message once delivered (every restart delivers them all again),
ignores UNSUBSCRIBE, restores subscriptions through the subscribe ACL with
no user (refused once there is an ACL), and needs SQLAlchemy's asyncio
extra and aiosqlite; this one needs only the standard library.

What it keeps, and when:

* a session with CleanSession 0 and a user: from its CONNECT on, with its
  subscriptions; dropped when a CleanSession 1 CONNECT uses its client id,
  or, at the next start, when it has been offline longer than the broker's
  ``session_expiry_interval``;
* a message queued for such a session while it is offline, until the
  session reconnects (its queue is then sent); on a clean stop, also the
  messages in flight to a connected session (they come back queued);
* every retained message (an empty one removes its topic).

Writes run on the broker's event loop and are committed together once per
loop iteration (WAL, no fsync per commit: a few tens of microseconds). What
is lost by a crash of the broker process: messages that were in flight to a
connected client (sent, not yet acknowledged), and the queue of a session
that had just reconnected and not yet acknowledged it.

Restored subscriptions go through the broker's subscribe path with the
session's stored user, so the ACL in force at the restart decides (one it
now refuses is dropped, with a warning).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.broker import BrokerContext, RetainedApplicationMessage
from amqtt.plugins.base import BasePlugin
from amqtt.session import OUTGOING

from broker.broker_store import BrokerStore, StoredMessage, StoredState
from schemas.errors import StorageError

__all__ = ["PLUGIN", "SessionStorePlugin"]

logger = logging.getLogger(__name__)

#: The dotted path amqtt's configuration names the plugin by.
PLUGIN = f"{__name__}.SessionStorePlugin"


def _owed(session: Any) -> list[StoredMessage]:
    """What a session is owed at a clean stop: unacknowledged in-flight messages, then its queue."""
    owed = []
    for message in list(session.inflight_out.values()):
        # A QoS 2 message whose PUBREC came has been received; sending it again
        # would deliver it twice (its PUBREL is lost with the broker's state).
        if message.direction == OUTGOING and message.qos in (1, 2) and \
                message.puback_packet is None and message.pubrec_packet is None:
            owed.append(StoredMessage(message.topic, bytes(message.data), message.qos))
    queue = session.retained_messages
    kept = []
    while not queue.empty():
        kept.append(queue.get_nowait())
    for message in kept:
        queue.put_nowait(message)
        owed.append(StoredMessage(message.topic, bytes(message.data), message.qos or 0))
    return owed


class SessionStorePlugin(BasePlugin[BrokerContext]):  # type: ignore[misc]  # amqtt is untyped
    """amqtt broker plugin: sessions, queues and retained messages in ``Config.path`` (SQLite)."""

    @dataclass
    class Config:
        path: str
        """The SQLite file (created, with its folder, if missing)."""
        session_expiry_interval: int | None = None
        """Sessions offline longer than this many seconds are not restored (None: never expire)."""

    def __init__(self, context: BrokerContext) -> None:
        super().__init__(context)
        config: SessionStorePlugin.Config = self.config
        # Opened and read here, so that a broken file stops the broker's start
        # (amqtt reports a failed plugin constructor; an event handler's error it logs at DEBUG).
        self._store = BrokerStore(Path(config.path))
        self._state: StoredState | None = self._store.load(time.time(),
                                                           config.session_expiry_interval)
        self._persistent: set[str] = set()
        self._commit_scheduled = False
        self._closed = False

    # -- start and stop ------------------------------------------------------------

    async def on_broker_pre_start(self) -> None:
        """Put the stored sessions and retained messages back before the listeners open."""
        state, self._state = self._state, None
        if state is None:
            return
        for stored in state.sessions:
            await self.context.add_subscription(stored.client_id, None, None)
            session = self.context.get_session(stored.client_id)
            if session is None:  # pragma: no cover - add_subscription creates it
                continue
            session.clean_session = False
            session.username = stored.username
            if stored.disconnected_at is not None:
                session.last_disconnect_time = int(stored.disconnected_at)
            for topic_filter, qos in stored.subscriptions:
                # Through the broker's own subscribe path, so today's ACL decides.
                await self.context.add_subscription(stored.client_id, topic_filter, qos)
                if not any(s is session for s, _q in self.context.subscriptions.get(topic_filter, ())):
                    logger.warning("broker store: %s's subscription %r is not restored: the ACL "
                                   "refuses it now", stored.client_id, topic_filter)
                    self._guarded(self._store.unsubscribe, stored.client_id, topic_filter)
            for message in stored.queued:
                session.retained_messages.put_nowait(RetainedApplicationMessage(
                    None, message.topic, message.payload, message.qos))
            self._persistent.add(stored.client_id)
        for message in state.retained:
            self.context.retained_messages[message.topic] = RetainedApplicationMessage(
                None, message.topic, message.payload, message.qos)
        logger.info("broker store %s: %d sessions (%d queued messages), %d retained messages",
                    self._store.path, len(state.sessions),
                    sum(len(s.queued) for s in state.sessions), len(state.retained))

    async def on_broker_pre_shutdown(self) -> None:
        """Keep what each persistent session is owed: in flight to it, or still queued."""
        now = time.time()
        for session in list(self.context.sessions):
            if session.client_id in self._persistent:
                self._guarded(self._store.replace_queue, session.client_id, _owed(session))
                if session.transitions.is_connected():
                    self._guarded(self._store.session_offline, session.client_id, now)
        self._commit()

    async def on_broker_post_shutdown(self) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._store.close()
        except StorageError as exc:
            logger.error("%s", exc)

    # -- sessions --------------------------------------------------------------------

    async def on_broker_client_connected(self, client_id: str, client_session: Any) -> None:
        if client_session.clean_session or client_session.is_anonymous:
            if client_id in self._persistent:
                self._persistent.discard(client_id)
                self._guarded(self._store.forget_session, client_id)
            return
        self._persistent.add(client_id)
        self._guarded(self._store.save_session, client_id, client_session.username)
        # amqtt sends the in-memory queue now; it is the client's to acknowledge.
        self._guarded(self._store.clear_queue, client_id)

    async def on_broker_client_disconnected(self, client_id: str, client_session: Any) -> None:
        if client_id in self._persistent:
            self._guarded(self._store.session_offline, client_id, time.time())

    async def on_broker_client_subscribed(self, client_id: str, topic: str, qos: int) -> None:
        if client_id in self._persistent:
            self._guarded(self._store.subscribe, client_id, topic, qos)

    async def on_broker_client_unsubscribed(self, client_id: str, topic: str) -> None:
        if client_id in self._persistent:
            self._guarded(self._store.unsubscribe, client_id, topic)

    # -- messages --------------------------------------------------------------------

    async def on_broker_retained_message(self, *, client_id: str | None,
                                         retained_message: RetainedApplicationMessage) -> None:
        """amqtt fires this for a retained message (no client) and for one queued for a client."""
        message = retained_message
        if client_id is None:
            if message.data:
                self._guarded(self._store.retain, message.topic, bytes(message.data),
                              message.qos or 0)
            else:
                self._guarded(self._store.clear_retained, message.topic)
        elif client_id in self._persistent:
            self._guarded(self._store.queue, client_id, message.topic, bytes(message.data),
                          message.qos or 0)

    # -- internals -------------------------------------------------------------------

    def _guarded(self, write: Any, *args: Any) -> None:
        """Run one store write; a failure is logged (amqtt would hide it) and the broker goes on."""
        if self._closed:
            return
        try:
            write(*args)
        except StorageError as exc:
            logger.error("%s", exc)
            return
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._commit)

    def _commit(self) -> None:
        self._commit_scheduled = False
        if self._closed:
            return
        try:
            self._store.commit()
        except StorageError as exc:
            logger.error("%s", exc)
