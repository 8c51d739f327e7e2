"""The one exception tree of edgebus: every error it raises on purpose, in one module.

Every error edgebus raises on purpose derives from :class:`EdgebusError`, so a
caller can catch edgebus failures without knowing which library sits below.
Errors from paho, amqtt, sqlite, SQLAlchemy or the file system are converted
at the I/O boundary with ``raise ... from exc`` (usually through
:func:`converted`), so the original stays in the traceback as ``__cause__``.

    EdgebusError
    ├── ConfigError              operator configuration is wrong (names the key)
    │   └── CommandRefused       a command asks more than this device allows (``reason``)
    ├── TopicError               a topic or device id is malformed
    ├── CodecError               a payload cannot be decoded or encoded
    │   ├── PayloadTooLarge      over the configured size limit
    │   ├── UnsupportedVersion   a format or record version this build does not know
    │   ├── LockCodecError       a lock command or result is malformed (also a LockError)
    │   └── TxError              a two-phase commit record or log command is malformed
    ├── LockError                a lock command is invalid for the lock table
    │   ├── LockCodecError
    │   └── StaleTokenError      a fenced resource refused an older fencing token
    ├── BusError                 talking to the broker failed
    │   ├── NotConnected         the operation needs a live connection
    │   ├── BrokerError          the embedded broker could not start or stop
    │   ├── SubscriptionRefused  the broker refused a SUBSCRIBE (SUBACK failure code)
    │   ├── OutboxError          the on-disk outbox could not be read or written
    │   └── CoordinationError    a Raft group or the lock service could not do what was asked
    │       ├── CoordinationTimeout  no answer in time
    │       ├── AdminRefused     a membership change or transfer was refused (``reason``)
    │       ├── TxAborted        a two-phase commit transaction was aborted (``tx_id``, ``reason``)
    │       └── LockUnavailable  a lock was refused for good
    │           └── DeadlockVictim   this session was chosen to break a wait-for cycle
    ├── StorageError             durable local state (a Raft node's log) could not be read or written
    │   └── StoreError           the coordinator's database failed (``transient``: retrying can help)
    ├── ApiError                 an HTTP API request is refused (``status``, ``code``, ``field``)
    ├── UpdateRefused            an over-the-air offer is refused (signature, key, requirements)
    ├── UpdateFailed             an accepted update ended failed or rolled back (``reason``, ``phase``)
    ├── BundleInvalid            a flashing bundle failed verification
    └── SourceUnavailable        a camera source could not be opened or read

The tree lives in ``schemas`` (the lowest layer) so that every layer can raise
and catch it without importing upwards.

>>> issubclass(DeadlockVictim, BusError), issubclass(StoreError, StorageError)
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.ota import Phase

__all__ = [
    "AdminRefused",
    "ApiError",
    "BrokerError",
    "BundleInvalid",
    "BusError",
    "CodecError",
    "ConfigError",
    "CoordinationError",
    "CommandRefused",
    "CoordinationTimeout",
    "DeadlockVictim",
    "EdgebusError",
    "LockCodecError",
    "LockError",
    "LockUnavailable",
    "NotConnected",
    "OutboxError",
    "PayloadTooLarge",
    "SourceUnavailable",
    "StaleTokenError",
    "StorageError",
    "StoreError",
    "SubscriptionRefused",
    "TopicError",
    "TxAborted",
    "TxError",
    "UnsupportedVersion",
    "UpdateFailed",
    "UpdateRefused",
    "converted",
]


class EdgebusError(Exception):
    """Base of every error edgebus raises on purpose."""


class ConfigError(EdgebusError, ValueError):
    """Operator configuration is invalid; the message names the offending key."""


class CommandRefused(ConfigError):
    """A command asks what the device's own configuration does not allow; ``reason`` says which bound.

    Reasons: ``out_of_bounds`` (a number outside its command bound),
    ``source_not_allowed`` (a camera source outside the allow-list),
    ``too_many_cameras`` (the agent's camera cap). A ConfigError, so callers
    that refuse bad tables refuse these too.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TopicError(EdgebusError, ValueError):
    """A topic, topic filter or device id is malformed."""


class CodecError(EdgebusError, ValueError):
    """A payload is truncated, corrupt, or otherwise cannot be decoded or encoded."""


class TxError(CodecError):
    """A two-phase commit record, log command or stored record is malformed.

    A :class:`CodecError`, so a driver that drops undecodable payloads drops these too.
    """


class PayloadTooLarge(CodecError):
    """A payload (compressed or decompressed) exceeds the configured limit."""


class UnsupportedVersion(CodecError):
    """A payload names a format, record type or record version this build does not know."""


class LockError(EdgebusError, ValueError):
    """A lock command is invalid (bad name, bad session, bad token)."""


class LockCodecError(LockError, CodecError):
    """A lock command or result could not be decoded."""


class StaleTokenError(LockError):
    """A fenced resource refused a fencing token older than one it has already seen."""


class BusError(EdgebusError):
    """Talking to the MQTT broker failed."""


class NotConnected(BusError):
    """The operation needs a live broker connection and there is none."""


class BrokerError(BusError):
    """The embedded broker could not be started, configured or stopped."""


class SubscriptionRefused(BusError):
    """The broker answered a SUBSCRIBE with a failure code (0x80 and up: ACL, bad filter, quota)."""


class OutboxError(BusError):
    """The on-disk outbox could not be opened, read or written."""


class CoordinationError(BusError):
    """A Raft group or the lock service could not do what was asked."""


class CoordinationTimeout(CoordinationError):
    """No answer in time: no leader reachable, or the lock stayed held by someone else."""


class AdminRefused(CoordinationError):
    """The leader refused a membership change or transfer; ``reason`` says why and what to do instead.

    Raised at once for a refusal that retrying cannot fix (removing the leader
    itself: transfer leadership first), and at the deadline for one that
    persisted (another change still uncommitted, a target that never caught up).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TxAborted(CoordinationError):
    """The group decided to abort a transaction: nothing of it was applied anywhere.

    ``reason`` says why, as the log recorded it: a participant's no vote with
    its resource's reason (``"cam-b voted no: camera 7 is not in this agent's
    table"``), ``"timeout"``, a deadlock victim's lock reason.
    """

    def __init__(self, tx_id: str, reason: str) -> None:
        super().__init__(f"transaction {tx_id} aborted: {reason or 'no reason given'}")
        self.tx_id = tx_id
        self.reason = reason


class ApiError(EdgebusError):
    """An HTTP API request refused with a client error; the API answers it as one JSON body.

    ``status`` is the HTTP status, ``code`` a stable name for scripts, ``field``
    the parameter at fault when there is one.
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


class LockUnavailable(CoordinationError):
    """The lock was refused for good: busy (no wait), deadlock victim, or the session is gone."""


class DeadlockVictim(LockUnavailable):
    """This session's wait closed (or sat in) a wait-for cycle and it was chosen to break it.

    Its waits were cancelled; locks it already holds are still held. Release
    them (or some of them) and retry, or give up.
    """


class StorageError(EdgebusError):
    """Durable state on this machine (a Raft node's log and vote) could not be read or written."""


class StoreError(StorageError):
    """The database could not be opened, migrated, read or written (the cause is chained).

    ``transient`` is True when trying again later can succeed (the database
    was locked, unreachable or out of space), False when the same request
    will fail again (a constraint, bad data).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class UpdateRefused(EdgebusError):
    """An offered update is not to be installed; ``reason`` is the machine-readable why.

    Reasons: ``unknown_key`` (the signer is not in the ring), ``bad_signature``,
    ``revoked_key`` (the signer was revoked: a valid signature does not help),
    and the agent's own refusals (``incompatible``, ``hash_mismatch``).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UpdateFailed(EdgebusError):
    """An update ends in ``phase`` (refused, failed or rolled back) for ``reason``.

    ``reason`` is the machine-readable word (``hash_mismatch``, ``install_failed``
    ...); the command dispatcher answers an offer with it. ``phase`` defaults to
    ``Phase.FAILED``.
    """

    def __init__(self, reason: str, detail: str, phase: Phase | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        if phase is None:
            from schemas.ota import Phase  # schemas.ota imports this module

            phase = Phase.FAILED
        self.reason = reason
        self.detail = detail
        self.phase = phase


class BundleInvalid(EdgebusError):
    """A bundle failed verification: bad signature, unknown key, or a file that does not match."""


class SourceUnavailable(EdgebusError):
    """A camera source could not be opened or read (live sources retry, others end)."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


@contextmanager
def converted(error: Callable[[str], EdgebusError], what: str,
              *causes: type[BaseException]) -> Iterator[None]:
    """Raise ``causes`` that escape the block as ``error(f"{what}: {cause}")``, chained.

    The one way a library's exception becomes an edgebus error at the I/O
    boundary; edgebus errors raised inside pass through unchanged.

    >>> with converted(ConfigError, "cannot read /etc/edgebus.toml", OSError):
    ...     raise FileNotFoundError(2, "No such file or directory")
    Traceback (most recent call last):
    ...
    schemas.errors.ConfigError: cannot read /etc/edgebus.toml: No such file or directory
    """
    try:
        yield
    except EdgebusError:
        raise
    except causes as exc:
        raise error(f"{what}: {_describe(exc)}") from exc
