"""The zero-set-up broker: a real MQTT 3.1.1 broker (amqtt 0.12) inside the process.

:class:`EmbeddedBroker` runs amqtt in a thread of its own with its own asyncio
event loop, so synchronous code can start and stop it::

    with EmbeddedBroker(port=0, data_dir=Path("data/broker")) as broker:
        print(broker.url, broker.credentials[0].username)

Clients must log in: by default the broker has one user whose random password
is kept in ``<data_dir>/credentials.json`` (see :mod:`broker.credentials`),
and its password file ``<data_dir>/amqtt-passwd`` is rewritten from the
credentials on every start (Argon2id hashes, which is what amqtt 0.12's
``FileAuthPlugin`` verifies; ``$6$`` sha512-crypt is deprecated there).

What the embedded broker does (tests in ``tests/test_embedded_broker.py`` and
the conformance battery ``tests/conformance``, which runs every case against
Mosquitto too; figures in ``notes/broker-choice.md``):

* **amqtt 0.12.1 with fixes.** :mod:`broker.amqtt_fixes` (applied once, at
  the first start; refused on any other amqtt release) makes amqtt keep
  what edgebus relies on: a silent client's will after 1.5 x its keepalive,
  unacknowledged QoS 1/2 messages and PUBREL resent with DUP on reconnect,
  a take-over that keeps the session live and sends no will, a CONNECT with
  a wrong password that touches no session, delivery at min(publish QoS,
  subscription QoS), RETAIN 0 on queued messages, retained messages only for
  a new matching subscription.
* **Persistent sessions** (``clean_session=False``, a stable client id, a
  user that logged in) keep their subscriptions and get the QoS 1/2 messages
  published while they were away. Disconnected sessions are dropped after
  ``session_expiry_interval`` seconds (default: never).
* **Restarts keep state**: sessions, queued messages and retained messages
  are stored in ``<data_dir>/broker.sqlite3`` (:mod:`broker.amqtt_session_store`;
  ``persistence=False`` keeps them in memory only). A crash of the process
  loses the messages that were in flight to connected clients; a clean stop
  keeps them.
* **MQTT 3.1.1 only.** amqtt parses an MQTT 5 CONNECT as if it were 3.1.1
  and usually waits for bytes that never come, so an MQTT 5 client gets no
  CONNACK and gives up only at its own connect timeout (a client that
  probes for MQTT 5 should keep that timeout short, or ask for 3.1.1).
  ``$share/...`` subscriptions are granted but never delivered. Both need
  Mosquitto (``edge-broker run --mosquitto``).
* **Anonymous clients are refused** (CONNACK "not authorised") unless
  ``allow_anonymous=True``. With ``allow_anonymous=True`` amqtt marks *every*
  session anonymous, including ones that logged in, and then queues nothing
  for offline persistent sessions - which is why the default has credentials.
* **Per-device lanes** (``bus_acl=``, a :class:`broker.acl.BusAcl`): the
  same ACL the generated Mosquitto configuration has, enforced by
  :mod:`broker.amqtt_acl` on every publish, subscribe, delivery and will; a
  denied publish is dropped silently (MQTT 3.1.1 has no way to say no), a
  denied subscribe gets return code 0x80, a CONNECT whose will names a topic
  the user may not write is refused. Give every device its own user
  (``credentials``) and name them in the ACL. Without an ACL every user
  that logs in may do everything (``edge-broker run`` says so when it starts).
* **Revocation without a restart** (:meth:`EmbeddedBroker.revoke_device`):
  the device's user is refused from then on, its live connection is
  dropped, and ``<data_dir>/revoked-devices.json`` keeps it out across
  restarts (:mod:`broker.revocation`). With ``audit=`` (a
  :class:`broker.audit.AuditLog`) every refused login and ACL denial is an
  audit record (:mod:`broker.amqtt_auth`, :mod:`broker.amqtt_acl`).
* **Simple topic ACLs** (``acl=``, a mapping per user) are checked on publish
  and on subscribe, with amqtt's own plugin (no ``%u``, no delivery check).
* **Speed**: 1-2 thousand QoS 1 messages a second on one core, and password
  checks run Argon2id on the broker's event loop (tens of ms per CONNECT),
  so a reconnect storm of many clients is slow; use Mosquitto for a real
  fleet (:mod:`broker.mosquitto_config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from broker.acl import BusAcl
from broker.audit import AuditLog
from broker.credentials import Credentials, load_or_create_credentials, write_private_text
from broker.revocation import REVOKED_FILE, Revocation, RevocationEvents, RevokedDevices, drop_password_user
from schemas.errors import BrokerError, ConfigError, EdgebusError, TopicError
from schemas.topics import validate_topic_filter

__all__ = ["ACL_ACTIONS", "PASSWORD_FILE", "STORE_FILE", "EmbeddedBroker", "quiet_amqtt_logging"]

logger = logging.getLogger(__name__)

PASSWORD_FILE = "amqtt-passwd"
#: Sessions, queued and retained messages (:mod:`broker.broker_store`), in the data directory.
STORE_FILE = "broker.sqlite3"
ACL_ACTIONS = ("publish", "subscribe")
# OWASP's minimum for Argon2id (19 MiB, 2 passes, 1 lane): amqtt verifies on its
# event loop, and pwdlib's default (64 MiB, 3 passes, 4 lanes) costs ~4x as much.
_ARGON2_TIME_COST, _ARGON2_MEMORY_KIB, _ARGON2_LANES = 2, 19456, 1
_NOISY_LOGGERS = ("amqtt", "transitions")
_SHUTDOWN_TIMEOUT = 5.0
_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}


def quiet_amqtt_logging(level: int = logging.WARNING) -> None:
    """Raise amqtt's (very chatty) loggers to ``level`` unless the application set them."""
    for name in _NOISY_LOGGERS:
        log = logging.getLogger(name)
        if log.level == logging.NOTSET:
            log.setLevel(level)


def _normalise_acl(acl: Mapping[str, Mapping[str, Sequence[str]]], users: set[str],
                   allow_anonymous: bool) -> dict[str, dict[str, list[str]]]:
    """Validate ``{user: {"publish": [...], "subscribe": [...]}}``; errors name the key."""
    if not isinstance(acl, Mapping):
        raise ConfigError(f"acl must be a mapping of user name to rules, not {type(acl).__name__}")
    if not acl:
        raise ConfigError("acl is empty: nobody could publish or subscribe; pass acl=None "
                          "to let every user do everything")
    known = users | ({"anonymous"} if allow_anonymous else set())
    rules: dict[str, dict[str, list[str]]] = {action: {} for action in ACL_ACTIONS}
    for user, entry in acl.items():
        if user not in known:
            raise ConfigError(f"acl.{user}: no such user (known: {', '.join(sorted(known))})")
        if not isinstance(entry, Mapping):
            raise ConfigError(f"acl.{user} must be a mapping with keys "
                              f"{' and '.join(ACL_ACTIONS)}")
        for action in entry:
            if action not in ACL_ACTIONS:
                raise ConfigError(f"acl.{user}.{action}: unknown key (expected "
                                  f"{' or '.join(ACL_ACTIONS)})")
        for action in ACL_ACTIONS:
            filters = entry.get(action, ())
            if isinstance(filters, str) or not isinstance(filters, Sequence):
                raise ConfigError(f"acl.{user}.{action} must be a list of topic filters")
            for topic_filter in filters:
                try:
                    validate_topic_filter(topic_filter)
                except TopicError as exc:
                    raise ConfigError(f"acl.{user}.{action}: {exc}") from exc
            # Every listed user gets an entry in both tables: amqtt lets everyone
            # publish anywhere when its publish table is empty.
            rules[action][user] = list(filters)
    return rules


def _argon2_hash(password: str) -> str:
    try:
        from pwdlib.hashers.argon2 import Argon2Hasher
    except ImportError as exc:  # pragma: no cover - pwdlib comes with amqtt
        raise BrokerError("the embedded broker needs amqtt: pip install 'edgebus[broker]'") \
            from exc
    hasher = Argon2Hasher(time_cost=_ARGON2_TIME_COST, memory_cost=_ARGON2_MEMORY_KIB,
                          parallelism=_ARGON2_LANES)
    return str(hasher.hash(password))


def _check_port_free(host: str, port: int) -> None:
    """Fail early, with a message an operator can act on, when the address is taken."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BrokerError(f"cannot listen on {host!r}: {exc.strerror}") from exc
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # The same option asyncio's server sets, so the probe judges as it will.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise BrokerError(f"port {port} on {host or '*'} is already in use; pass "
                                      "--port (or port=0 for any free port), or stop what "
                                      "listens there") from exc
                if exc.errno == errno.EACCES:
                    raise BrokerError(f"no permission to listen on port {port}; use a port "
                                      "above 1023") from exc
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise BrokerError(f"cannot listen on {host!r}: not an address of this "
                                      "machine") from exc
                raise BrokerError(f"cannot listen on {host or '*'}:{port}: "
                                  f"{exc.strerror or exc}") from exc


def _bound_port(amqtt_broker: Any) -> int | None:
    """The port the default listener actually bound (differs from the config for port 0)."""
    # amqtt has no public accessor for its listening sockets.
    server = getattr(amqtt_broker, "_servers", {}).get("default")
    instance = getattr(server, "instance", None)
    for sock in getattr(instance, "sockets", None) or ():
        return int(sock.getsockname()[1])
    return None


def _log_client_failure(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """One log line, not a traceback, when amqtt trips over a client that hung up.

    amqtt closes a refused connection (an MQTT 5 CONNECT, say) with a socket
    call that fails when the client has already gone; asyncio would print
    the traceback as "Unhandled exception in client_connected_cb".
    """
    exc = context.get("exception")
    if isinstance(exc, OSError):
        logger.info("a client connection ended with an error: %s", exc)
        return
    loop.default_exception_handler(context)


async def _call(fn: Callable[[], int]) -> int:
    return fn()


def _client_transports(amqtt_broker: Any, user: str | None = None) -> list[asyncio.WriteTransport]:
    """The transports of the connected clients (of ``user`` only, if given; amqtt keeps them
    behind two adapters)."""
    found = []
    for session, handler in list(getattr(amqtt_broker, "sessions", {}).values()):
        if user is not None and getattr(session, "username", None) != user:
            continue
        stream_writer = getattr(getattr(handler, "writer", None), "_writer", None)
        transport = getattr(stream_writer, "transport", None)
        if isinstance(transport, asyncio.WriteTransport):
            found.append(transport)
    return found


async def _shutdown(amqtt_broker: Any) -> None:
    """Stop amqtt so that the port is free afterwards, even when amqtt's own shutdown hangs.

    amqtt stops each client's reader task by cancelling it inside
    ``asyncio.wait_for``, which on Python 3.11 swallows the cancellation when
    a packet arrives at the same moment; its shutdown then waits forever and
    never closes the listening socket. So: close the listener first, drop
    the client connections (their readers end on EOF instead), and only then
    let amqtt clean up, with a time limit.
    """
    from amqtt.errors import AMQTTError

    for server in list(getattr(amqtt_broker, "_servers", {}).values()):
        instance = getattr(server, "instance", None)
        if isinstance(instance, asyncio.AbstractServer):
            instance.close()
    for transport in _client_transports(amqtt_broker):
        transport.abort()
    # Let the readers see the end of their streams before amqtt cancels them.
    for _ in range(20):
        await asyncio.sleep(0.01)
        sessions = list(getattr(amqtt_broker, "sessions", {}).values())
        if all(getattr(getattr(s, "transitions", None), "state", "") != "connected"
               for s, _h in sessions):
            break
    try:
        await asyncio.wait_for(asyncio.shield(amqtt_broker.shutdown()), _SHUTDOWN_TIMEOUT)
    except TimeoutError:
        logger.warning("amqtt did not finish shutting down within %g s; stopping it anyway",
                       _SHUTDOWN_TIMEOUT)
    except AMQTTError as exc:
        logger.warning("amqtt did not shut down cleanly: %s", exc)


@dataclass
class _Run:
    """One run of the broker: its loop, its stop signal and how it started."""

    ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    amqtt: Any = None
    thread: threading.Thread | None = None


class EmbeddedBroker:
    """A real MQTT 3.1.1 broker (amqtt) in this process, started and stopped from sync code.

    ``credentials`` are the users that may log in; ``None`` means the one user
    in ``data_dir/credentials.json`` (created on first use). ``acl`` maps a user
    name to ``{"publish": [filters], "subscribe": [filters]}``; with an ACL,
    users it does not list may do nothing. ``port=0`` picks a free port,
    exposed as :attr:`port` once started (and kept across :meth:`stop` /
    :meth:`start`). ``persistence`` keeps sessions, queued and retained
    messages in ``data_dir/broker.sqlite3`` across restarts.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        data_dir: Path | str = Path("data/broker"),
        credentials: Sequence[Credentials] | None = None,
        acl: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        *,
        bus_acl: BusAcl | None = None,
        allow_anonymous: bool = False,
        session_expiry_interval: int | None = None,
        persistence: bool = True,
        start_timeout: float = 10.0,
        quiet_logs: bool = True,
        audit: AuditLog | None = None,
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"port must be 0-65535, not {port!r}")
        if session_expiry_interval is not None and session_expiry_interval <= 0:
            raise ConfigError("session_expiry_interval must be positive (or None for never)")
        self.host = host
        self._port = port
        self.data_dir = Path(data_dir)
        if credentials is None:
            credentials = [load_or_create_credentials(self.data_dir)]
        self.credentials: tuple[Credentials, ...] = tuple(credentials)
        if not self.credentials and not allow_anonymous:
            raise ConfigError("credentials is empty and allow_anonymous is false: "
                              "nobody could connect")
        names = [c.username for c in self.credentials]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"credentials: user {duplicates[0]!r} is listed twice")
        self.allow_anonymous = allow_anonymous
        self.audit = audit
        self.revoked = RevokedDevices(self.data_dir / REVOKED_FILE)
        #: Listeners of revocations (:meth:`revoke_device`), and the audit record of each.
        self.revocations = RevocationEvents(audit)
        self.credentials = tuple(c for c in self.credentials if c.username not in self.revoked)
        self._acl = (None if acl is None
                     else _normalise_acl(acl, set(names), allow_anonymous))
        if bus_acl is not None:
            if acl is not None:
                raise ConfigError("pass acl or bus_acl, not both")
            if not isinstance(bus_acl, BusAcl):
                raise ConfigError(f"bus_acl must be a broker.acl.BusAcl, not {type(bus_acl).__name__}")
            roleless = sorted(n for n in names if bus_acl.role(n) is None)
            if roleless:
                raise ConfigError(f"credentials: user {roleless[0]!r} is neither a device nor a "
                                  "coordinator in bus_acl, so it could do nothing")
        self.bus_acl = bus_acl
        self.session_expiry_interval = session_expiry_interval
        self.persistence = persistence
        self.start_timeout = start_timeout
        if quiet_logs:
            quiet_amqtt_logging()
        self._run: _Run | None = None
        self._lock = threading.Lock()

    # -- what clients need ---------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (the real one once started with ``port=0``)."""
        return self._port

    @property
    def connect_host(self) -> str:
        """An address a local client can connect to (loopback for a wildcard listener)."""
        return "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host

    @property
    def url(self) -> str:
        """``mqtt://host:port`` for a local client."""
        host = self.connect_host
        return f"mqtt://[{host}]:{self.port}" if ":" in host else f"mqtt://{host}:{self.port}"

    @property
    def password_file(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    @property
    def store_file(self) -> Path:
        """Where sessions, queued and retained messages are kept (with ``persistence``)."""
        return self.data_dir / STORE_FILE

    @property
    def running(self) -> bool:
        run = self._run
        return run is not None and run.ready.is_set() and run.error is None

    # -- revocation ----------------------------------------------------------

    def revoke_device(self, device_id: str, reason: str) -> Revocation:
        """Take ``device_id``'s login away: refused from now on, its live connection dropped.

        Thread-safe; callable from the broker's own event loop too (the drop
        then happens right after the call returns). Keeps the revocation in
        ``<data_dir>/revoked-devices.json``, so a restart keeps it.
        """
        entry = self.revoked.add(device_id, reason, time.time_ns() // 1_000_000)
        self.credentials = tuple(c for c in self.credentials if c.username != device_id)
        try:
            if self.password_file.exists():
                text = self.password_file.read_text(encoding="utf-8")
                write_private_text(self.password_file, drop_password_user(text, device_id))
        except OSError as exc:
            raise BrokerError(f"cannot rewrite {self.password_file}: {exc.strerror or exc}") from exc
        dropped = self._drop_connections(device_id)
        logger.info("revoked device %s (%s); dropped %d live connection(s)", device_id, reason, dropped)
        self.revocations.emit(entry, f"embedded broker, {dropped} connection(s) dropped")
        return entry

    def on_revoked(self, listener: Callable[[Revocation], object]) -> None:
        """Call ``listener`` after each revocation took effect."""
        self.revocations.on_revoked(listener)

    def apply_revocations(self) -> frozenset[str]:
        """Reread ``revoked-devices.json`` (``edge-broker revoke --data-dir``) and cut off whom it adds.

        ``edge-broker run`` calls this on SIGHUP; returns the newly revoked devices.
        """
        new = self.revoked.reload()
        for device in sorted(new):
            self.credentials = tuple(c for c in self.credentials if c.username != device)
            dropped = self._drop_connections(device)
            logger.info("device %s is revoked in %s; dropped %d live connection(s)",
                        device, self.revoked.path, dropped)
            entry = self.revoked.get(device)
            if entry is not None:
                self.revocations.emit(entry, f"from {self.revoked.path}, {dropped} connection(s) dropped")
        return new

    def _drop_connections(self, user: str) -> int:
        """Abort every live connection of ``user``; how many there were."""
        run = self._run
        if run is None or run.loop is None or run.amqtt is None or run.loop.is_closed():
            return 0
        amqtt_broker = run.amqtt

        def drop() -> int:
            transports = _client_transports(amqtt_broker, user)
            for transport in transports:
                transport.abort()
            return len(transports)

        try:
            if asyncio.get_running_loop() is run.loop:
                run.loop.call_soon(drop)  # cannot wait for our own loop: counted as none
                return 0
        except RuntimeError:
            pass
        future = asyncio.run_coroutine_threadsafe(_call(drop), run.loop)
        try:
            return future.result(self.start_timeout)
        except TimeoutError as exc:
            raise BrokerError(f"the broker did not drop {user}'s connection within "
                              f"{self.start_timeout:g} s") from exc

    # -- sync life cycle -----------------------------------------------------

    def start(self) -> None:
        """Start listening; returns once the port accepts connections.

        Raises :class:`BrokerError` (with what to do about it) when the port is
        taken or the broker cannot start within ``start_timeout`` seconds.
        """
        with self._lock:
            run = self._new_run()
            run.thread = threading.Thread(target=self._thread_main, args=(run,),
                                          name=f"edgebus-broker-{self._port}", daemon=True)
            self._run = run
            run.thread.start()
            if not run.ready.wait(self.start_timeout):
                self._request_stop(run)
                run.thread.join(self.start_timeout)
                self._run = None
                raise BrokerError(f"the embedded broker did not start within "
                                  f"{self.start_timeout:g} s")
            if run.error is not None:
                run.thread.join(self.start_timeout)
                self._run = None
                error = run.error
                if isinstance(error, BrokerError | ConfigError):
                    raise error
                raise BrokerError(f"the embedded broker could not start: {error}") from error
        logger.info("embedded broker listening on %s", self.url)

    def _new_run(self) -> _Run:
        """A run for :meth:`start` or :meth:`serve`; refuses a second one and a taken port (lock held)."""
        if self._run is not None:
            raise BrokerError(f"the embedded broker is already running on port {self.port}")
        if self._port != 0:
            _check_port_free(self.host, self._port)
        return _Run()

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect every client and close the port. Safe to call when not running."""
        with self._lock:
            run = self._run
            if run is None:
                return
            self._request_stop(run)
            if run.thread is not None:
                run.thread.join(timeout)
                if run.thread.is_alive():
                    raise BrokerError(f"the embedded broker did not stop within {timeout:g} s")
            self._run = None
        logger.info("embedded broker on port %d stopped", self.port)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- async life cycle ----------------------------------------------------

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Run the broker in the current event loop until cancelled or :meth:`stop` is called.

        ``ready`` is called once the port accepts connections.
        """
        with self._lock:
            run = self._new_run()
            self._run = run
        try:
            await self._serve(run, ready)
        finally:
            with self._lock:
                if self._run is run:
                    self._run = None

    # -- internals -----------------------------------------------------------

    def _request_stop(self, run: _Run) -> None:
        loop, stop = run.loop, run.stop
        if loop is not None and stop is not None and not loop.is_closed():
            # The loop may close between the check and the call.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

    def _thread_main(self, run: _Run) -> None:
        try:
            asyncio.run(self._serve(run, None, own_loop=True))
        except BaseException as exc:
            if not run.ready.is_set():
                run.error = exc
            else:
                logger.exception("the embedded broker failed")
        finally:
            run.ready.set()

    def _amqtt_config(self) -> dict[str, Any]:
        from broker.amqtt_auth import AUTH_PLUGIN

        plugins: dict[str, Any] = {
            AUTH_PLUGIN: {"password_file": str(self.password_file), "revoked": self.revoked,
                          "audit": self.audit, "allow_anonymous": self.allow_anonymous},
        }
        if self.allow_anonymous:
            plugins["amqtt.plugins.authentication.AnonymousAuthPlugin"] = {
                "allow_anonymous": True,
            }
        if self.persistence:
            from broker.amqtt_session_store import PLUGIN

            plugins[PLUGIN] = {"path": str(self.store_file),
                               "session_expiry_interval": self.session_expiry_interval}
        if self.bus_acl is not None:
            from broker.amqtt_acl import TOPIC_PLUGIN, WILL_PLUGIN

            plugins[TOPIC_PLUGIN] = {"acl": self.bus_acl, "audit": self.audit}
            plugins[WILL_PLUGIN] = {"acl": self.bus_acl, "audit": self.audit}
        if self._acl is not None:
            plugins["amqtt.plugins.topic_checking.TopicAccessControlListPlugin"] = {
                # amqtt 0.12 reads its subscribe table only under the deprecated key "acl".
                "acl": self._acl["subscribe"],
                "publish_acl": self._acl["publish"],
            }
        config: dict[str, Any] = {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self.host}:{self._port}",
                            "max_connections": 0},
            },
            "timeout_disconnect_delay": 0,
            "plugins": plugins,
        }
        if self.session_expiry_interval is not None:
            config["session_expiry_interval"] = self.session_expiry_interval
        return config

    def _write_password_file(self) -> None:
        lines = [f"{c.username}:{_argon2_hash(c.password)}" for c in self.credentials]
        body = "# written by edgebus on every start from the broker's credentials\n"
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            write_private_text(self.password_file, body + "".join(f"{ln}\n" for ln in lines))
        except OSError as exc:
            raise BrokerError(f"cannot write the broker's password file {self.password_file}: "
                              f"{exc.strerror or exc}") from exc

    async def _serve(self, run: _Run, ready: Callable[[], None] | None,
                     own_loop: bool = False) -> None:
        try:
            from amqtt.broker import Broker
            from amqtt.errors import AMQTTError, PluginError
        except ImportError as exc:
            raise BrokerError("the embedded broker needs amqtt: pip install 'edgebus[broker]'") \
                from exc
        from broker import amqtt_fixes

        amqtt_fixes.apply()
        run.loop = asyncio.get_running_loop()
        run.stop = asyncio.Event()
        if own_loop:
            run.loop.set_exception_handler(_log_client_failure)
        self._write_password_file()
        if self._acl is not None:
            # The only key amqtt 0.12 loads its subscribe table from warns that it is
            # deprecated in favour of one it cannot load; not the operator's concern.
            warnings.filterwarnings("ignore", message="The 'acl' option is deprecated",
                                    category=DeprecationWarning)
        try:
            amqtt_broker = Broker(self._amqtt_config(), loop=run.loop)
            await amqtt_broker.start()
        except (AMQTTError, PluginError, OSError, ValueError) as exc:
            cause = exc.__cause__ or exc
            if isinstance(cause, EdgebusError):  # the store plugin could not open its file
                raise BrokerError(f"the embedded broker could not start: {cause}") from exc
            if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                raise BrokerError(f"port {self._port} on {self.host or '*'} is already in use; "
                                  "pass --port (or port=0 for any free port)") from exc
            raise BrokerError(f"the embedded broker could not start: {cause}") from exc
        run.amqtt = amqtt_broker
        try:
            bound = _bound_port(amqtt_broker)
            if bound is not None:
                self._port = bound
            run.ready.set()
            if ready is not None:
                ready()
            await run.stop.wait()
        finally:
            await _shutdown(amqtt_broker)
