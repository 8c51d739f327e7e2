"""Commands to this device: decode, de-duplicate, run the handler, answer - and survive bad input.

Commands arrive as envelopes holding a :class:`~schemas.command.Command` on
``{root}/{device}/cmd/{name}``; the built-in names and their argument shapes
are in :mod:`agents.commands.handlers`. Every command gets one
JSON reply, readable by any MQTT client::

    {"id": "c-17", "name": "config", "device": "gw-1", "ok": true, "result": {...}}
    {"id": "c-18", "name": "assign", "device": "gw-1", "ok": false,
     "reason": "bad_args", "error": "assign needs args.camera"}

It goes to the command's ``reply_to`` (not retained: a reply is an answer to
a waiting requester, and a retained one would greet every later subscriber)
or, without one, to ``{root}/{device}/state/last_command`` (retained, like
every state topic: an operator can always read how the last command went).
A payload that cannot be decoded has no ``reply_to``; its error goes to
``last_command`` with ``"id": null``.

**Duplicates.** Commands travel at QoS 1 and may arrive twice. The replies to
the last ``remember`` command ids are kept; a command id seen again is
answered with the same reply and its handler does not run again (also for
failed commands: re-running a half-applied ``config`` is worse than
repeating its error).

**Threads.** The subscription handler runs on the session's network thread,
so it only puts the raw message on a bounded queue; one worker thread
decodes and runs handlers in arrival order, so a slow handler (a camera
that takes seconds to open) never stalls the connection, and handlers never
run concurrently with each other. When the queue is full the command is
refused with reason ``queue_full`` (answered from the network thread) rather
than blocking the network thread.

**Raw topics.** :meth:`CommandDispatcher.register_raw` claims a name whose
messages are not command envelopes (``ota/chunk``: a stream of binary chunk
frames). They go straight to the callback on the network thread, with no
decode, no de-duplication and no reply, so the callback must only hand the
payload on; a callback that raises is logged and counted, never fatal.

**Handler-chosen reasons.** A handler that raises an edgebus error carrying a
string ``reason`` attribute (``UpdateRefused("bad_signature")``) is answered
with that reason, so a requester can act on it; it is counted as ``rejected``,
except a :class:`~schemas.errors.CommandRefused` whose reason is one of
:data:`REASONS` (``source_not_allowed``, ``too_many_cameras``): counted under it.

**Bounds.** Before a built-in handler runs, the numbers in its args are checked
against what a command may set (:mod:`agents.commands.bounds`, ``[commands]``
in agent.toml); one outside is refused as ``out_of_bounds``, the handler unrun.

**Bad input** (garbage, another record type, another device's command, an
unknown name, a handler that raises) is answered with an error, counted by
reason (:meth:`CommandDispatcher.stats`), logged, and kept in a short
dead-letter list (:meth:`CommandDispatcher.dead_letters`); it never stops the
dispatcher. Handler exceptions that are not edgebus errors are logged with
their traceback: they are bugs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from agents.commands.bounds import bounds_problem
from agents.commands.handlers import BUILTIN_COMMANDS, CommandHandler, builtin_args_problem
from agents.config import CommandsConfig
from broker.router import ReceivedMessage, Route
from broker.session import BusSession
from schemas.command import Command
from schemas.envelope import EnvelopeCodec
from schemas.errors import (
    CodecError,
    CommandRefused,
    ConfigError,
    EdgebusError,
    TopicError,
    UnsupportedVersion,
)
from schemas.messages import DEFAULT_CODEC, decode_record
from schemas.record_base import jsonable
from schemas.topics import TopicKind, validate_command_name, validate_device_id

__all__ = [
    "LAST_COMMAND_STATE",
    "REASONS",
    "CommandDispatcher",
    "CommandHandler",
    "CommandStats",
    "DeadLetter",
    "RawHandler",
]

logger = logging.getLogger(__name__)

RawHandler = Callable[[ReceivedMessage], None]
LAST_COMMAND_STATE: Final = "last_command"
JSON_CONTENT_TYPE: Final = "application/json"
#: Why a command failed; each is a counter in :class:`CommandStats`.
REASONS: Final = (
    "malformed",            # not an envelope, or a corrupt record
    "unsupported_version",  # a record type or version this agent does not know
    "wrong_type",           # a valid record that is not a command
    "wrong_device",         # a command for another device
    "name_mismatch",        # the record's name differs from the topic's
    "unknown_command",      # no handler by that name
    "no_handler",           # a built-in name the runtime did not register
    "bad_args",             # args the command cannot use (or the handler raised CodecError)
    "out_of_bounds",        # a number outside what a command may set (agents/commands/bounds.py)
    "source_not_allowed",   # a camera source outside [commands]' allow-list
    "too_many_cameras",     # the agent already runs [commands] max_cameras
    "rejected",             # the handler refused it (ConfigError)
    "handler_error",        # the handler raised anything else
    "queue_full",           # too many commands waiting; refused unrun
    "internal",             # a bug in the dispatcher itself
)
_ERROR_MAX_CHARS = 500
_STOP: Final = object()


@dataclass(frozen=True, slots=True)
class CommandStats:
    """A snapshot: commands received, succeeded, answered as duplicates, failed by reason.

    Raw messages (:meth:`CommandDispatcher.register_raw`) are counted apart: a
    download's thousands of chunk frames are not commands.
    """

    received: int
    succeeded: int
    duplicates: int
    errors: Mapping[str, int]
    queued: int
    raw_received: int = 0
    raw_failed: int = 0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused command message, kept briefly for an operator to inspect."""

    time_ms: int
    topic: str
    reason: str
    error: str
    payload_head: bytes


class _Failure(Exception):
    """Ends processing of one message with a reason (a REASONS entry) and an error text."""

    def __init__(self, reason: str, error: str, command: Command | None = None, *,
                 counted_as: str | None = None) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.command = command  # when decoded: where to reply, and what to call it
        self.counted_as = counted_as or reason  # the REASONS counter (a handler's reason is its own)


def _check_handler(name: str, handler: object, what: str) -> None:
    """A valid command name and a callable, or a ConfigError saying which is wrong."""
    try:
        validate_command_name(name)
    except TopicError as exc:
        raise ConfigError(str(exc)) from None
    if not callable(handler):
        raise ConfigError(f"{what} is not callable")


class CommandDispatcher:
    """Runs the commands sent to ``device`` through ``handlers`` (name -> callable).

    A handler gets the :class:`Command` and returns a JSON-able result (what
    changed, the new state ...). ``queue_size`` bounds the commands waiting for
    the worker; ``remember`` bounds the command ids kept for de-duplication.
    """

    def __init__(self, session: BusSession, device: str,
                 handlers: Mapping[str, CommandHandler] | None = None, *,
                 queue_size: int = 64, remember: int = 1024, dead_letters: int = 32,
                 codec: EnvelopeCodec = DEFAULT_CODEC, limits: CommandsConfig | None = None) -> None:
        try:
            validate_device_id(device)
        except TopicError as exc:
            raise ConfigError(f"command dispatcher: {exc}") from None
        if queue_size < 1 or remember < 1 or dead_letters < 0:
            raise ConfigError("command dispatcher: queue_size and remember must be at least 1")
        self.session = session
        self.device = device
        self.topic_filter = session.topics.device_commands(device)
        self.last_command_topic = session.topics.state(device, LAST_COMMAND_STATE)
        #: The coordinator's stored acknowledgement shares the lane; the session reads it, not us.
        self._not_commands = frozenset({session.topics.stored_ack(device)})
        self._codec = codec
        self.limits = limits or CommandsConfig()
        self._lock = threading.Lock()
        self._handlers: dict[str, CommandHandler] = {}
        self._raw: dict[str, RawHandler] = {}  # full topic -> callback
        self._raw_received = 0
        self._raw_failed = 0
        for name, handler in (handlers or {}).items():
            self.register(name, handler)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._replies: OrderedDict[str, bytes] = OrderedDict()
        self._remember = remember
        self._dead: deque[DeadLetter] = deque(maxlen=dead_letters)
        self._received = 0
        self._succeeded = 0
        self._duplicates = 0
        self._errors = dict.fromkeys(REASONS, 0)
        self._route: Route | None = None
        self._worker: threading.Thread | None = None

    # -- set-up --------------------------------------------------------

    def register(self, name: str, handler: CommandHandler) -> None:
        """Run ``handler`` for commands named ``name`` (replaces an earlier one)."""
        _check_handler(name, handler, f"the handler for command {name!r}")
        with self._lock:
            self._handlers[name] = handler

    def register_raw(self, name: str, callback: RawHandler) -> None:
        """Give messages on ``{root}/{device}/cmd/{name}`` to ``callback`` as they are.

        It runs on the session's network thread (keep it short: queue the work),
        gets no de-duplication and sends no reply. It takes precedence over a
        command handler of the same name.
        """
        _check_handler(name, callback, f"the raw handler for {name!r}")
        with self._lock:
            self._raw[self.session.topics.cmd(self.device, name)] = callback

    def start(self) -> CommandDispatcher:
        """Start the worker and subscribe to ``{root}/{device}/cmd/#``."""
        if self._worker is not None:
            return self
        self._worker = threading.Thread(target=self._work, name=f"edgebus-commands-{self.device}",
                                        daemon=True)
        self._worker.start()
        self._route = self.session.subscribe(self.topic_filter, self._on_message, qos=1)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Unsubscribe, run what is already queued (within ``timeout``), stop the worker."""
        if self._route is not None:
            self.session.unsubscribe(self._route)
            self._route = None
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            logger.warning("command queue still full at stop; %d commands not run",
                           self._queue.qsize())
            return
        worker.join(timeout)
        if worker.is_alive():
            logger.warning("a command handler was still running at stop")

    # -- inspection ----------------------------------------------------

    def stats(self) -> CommandStats:
        with self._lock:
            return CommandStats(self._received, self._succeeded, self._duplicates,
                                MappingProxyType(dict(self._errors)), self._queue.qsize(),
                                self._raw_received, self._raw_failed)

    def dead_letters(self) -> list[DeadLetter]:
        """The most recently refused messages, oldest first."""
        with self._lock:
            return list(self._dead)

    # -- network thread ------------------------------------------------

    def _on_message(self, message: ReceivedMessage) -> None:
        if message.topic in self._not_commands:
            return
        with self._lock:
            raw = self._raw.get(message.topic)
            if raw is None:
                self._received += 1
            else:
                self._raw_received += 1
        if raw is not None:
            self._run_raw(raw, message)
            return
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            try:
                self._refuse_busy(message)
            except Exception:  # the network thread must survive anything
                logger.exception("refusing a command on a full queue failed")

    def _run_raw(self, callback: RawHandler, message: ReceivedMessage) -> None:
        try:
            callback(message)
        except Exception:  # the network thread must survive anything
            with self._lock:
                self._raw_failed += 1
            logger.exception("raw handler for %s failed", message.topic)

    def _refuse_busy(self, message: ReceivedMessage) -> None:
        command: Command | None = None
        try:
            record = decode_record(message.payload, self._codec)
            command = record if isinstance(record, Command) else None
        except CodecError:
            pass
        failure = _Failure("queue_full", f"agent busy: {self._queue.maxsize} commands waiting; "
                                         "not run, send again later")
        self._reject(message, command, failure)

    # -- worker thread -------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, ReceivedMessage)
            try:
                self._process(item)
            except Exception as exc:
                logger.exception("command dispatcher failed on %s", item.topic)
                try:
                    self._reject(item, None, _Failure("internal", f"internal error: {exc!r}"))
                except Exception:
                    logger.exception("could not even report the failure")

    def _process(self, message: ReceivedMessage) -> None:
        command: Command | None = None
        try:
            command = self._decode(message)
            cached = self._cached_reply(command.command_id)
            if cached is not None:
                with self._lock:
                    self._duplicates += 1
                logger.info("command %s (%s) seen before; repeating its reply",
                            command.command_id, command.name)
                self._send(command, cached)
                return
            result = self._run(command)
        except _Failure as failure:
            command = command or failure.command
            reply = self._reject(message, command, failure)
            if command is not None and failure.reason not in ("wrong_device", "name_mismatch"):
                self._cache_reply(command.command_id, reply)
            return
        reply = self._reply(command, ok=True, result=result)
        with self._lock:
            self._succeeded += 1
        self._cache_reply(command.command_id, reply)
        self._send(command, reply)

    def _decode(self, message: ReceivedMessage) -> Command:
        parsed = None
        with contextlib.suppress(TopicError):
            parsed = self.session.topics.parse(message.topic)
        try:
            record = decode_record(message.payload, self._codec)
        except UnsupportedVersion as exc:
            raise _Failure("unsupported_version", str(exc)) from None
        except CodecError as exc:
            raise _Failure("malformed", f"not a command envelope: {exc}") from None
        if not isinstance(record, Command):
            raise _Failure("wrong_type", f"expected a command record, got a {record.TYPE} record")
        if record.device != self.device:
            raise _Failure("wrong_device", f"command for device {record.device!r} arrived at "
                                           f"{self.device!r}", record)
        if parsed is None or parsed.kind is not TopicKind.CMD or parsed.name != record.name:
            topic_name = parsed.name if parsed is not None else message.topic
            raise _Failure("name_mismatch", f"command {record.name!r} arrived on the topic of "
                                            f"{topic_name!r}", record)
        return record

    def _run(self, command: Command) -> Any:
        with self._lock:
            handler = self._handlers.get(command.name)
        if handler is None:
            if command.name in BUILTIN_COMMANDS:
                raise _Failure("no_handler", f"this agent has no handler for {command.name!r}")
            known = ", ".join(sorted(self._handlers)) or "none"
            raise _Failure("unknown_command", f"unknown command {command.name!r} (known: {known})")
        problem = builtin_args_problem(command)
        if problem is not None:
            raise _Failure("bad_args", problem)
        problem = bounds_problem(command, self.limits)
        if problem is not None:
            raise _Failure("out_of_bounds", problem)
        try:
            return handler(command)
        except CommandRefused as exc:
            counted = exc.reason if exc.reason in REASONS else "rejected"
            raise _Failure(exc.reason[:64], str(exc), counted_as=counted) from None
        except ConfigError as exc:
            raise _Failure("rejected", str(exc)) from None
        except CodecError as exc:
            raise _Failure("bad_args", str(exc)) from None
        except EdgebusError as exc:
            reason = getattr(exc, "reason", None)
            if isinstance(reason, str) and reason:
                raise _Failure(reason[:64], str(exc), counted_as="rejected") from None
            raise _Failure("handler_error", f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:
            logger.exception("handler for command %s (%s) raised", command.name,
                             command.command_id)
            raise _Failure("handler_error", f"{type(exc).__name__}: {exc}") from None

    # -- replies -------------------------------------------------------

    def _reject(self, message: ReceivedMessage, command: Command | None,
                failure: _Failure) -> bytes:
        """Count, log, dead-letter and answer one refused message; returns the reply sent."""
        error = failure.error[:_ERROR_MAX_CHARS]
        with self._lock:
            self._errors[failure.counted_as] += 1
            self._dead.append(DeadLetter(time.time_ns() // 1_000_000, message.topic,
                                         failure.reason, error, message.payload[:64]))
        logger.warning("command on %s refused (%s): %s", message.topic, failure.reason, error)
        reply = self._reply(command, ok=False, reason=failure.reason, error=error,
                            topic=message.topic)
        self._send(command, reply)
        return reply

    def _reply(self, command: Command | None, *, ok: bool, result: Any = None,
               reason: str | None = None, error: str | None = None, topic: str = "") -> bytes:
        body: dict[str, Any] = {
            "id": command.command_id if command is not None else None,
            "name": command.name if command is not None else self._name_from_topic(topic),
            "device": self.device,
            "ok": ok,
        }
        if ok:
            body["result"] = jsonable(result)
        else:
            body["reason"] = reason
            body["error"] = error
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=repr).encode()

    def _name_from_topic(self, topic: str) -> str | None:
        prefix = f"{self.session.topics.root}/{self.device}/cmd/"
        return topic[len(prefix):] if topic.startswith(prefix) else None

    def _send(self, command: Command | None, reply: bytes) -> None:
        reply_to = command.reply_to if command is not None else None
        if reply_to is not None:
            ok = self.session.publish(reply_to, reply, qos=1, retain=False,
                                      content_type=JSON_CONTENT_TYPE)
        else:
            ok = self.session.publish(self.last_command_topic, reply, qos=1, retain=True,
                                      content_type=JSON_CONTENT_TYPE)
        if not ok:
            logger.warning("outbox refused the reply to command %s",
                           command.command_id if command is not None else "(undecodable)")

    def _cached_reply(self, command_id: str) -> bytes | None:
        with self._lock:
            reply = self._replies.get(command_id)
            if reply is not None:
                self._replies.move_to_end(command_id)
            return reply

    def _cache_reply(self, command_id: str, reply: bytes) -> None:
        with self._lock:
            self._replies[command_id] = reply
            self._replies.move_to_end(command_id)
            while len(self._replies) > self._remember:
                self._replies.popitem(last=False)

