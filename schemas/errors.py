"""The one exception tree of edgebus.

Every error edgebus raises on purpose derives from :class:`EdgebusError`, so a
caller can catch edgebus failures without knowing which library sits below.
Errors from paho, amqtt, sqlite or the file system are converted at the I/O
boundary with ``raise ... from exc`` so the original stays in the traceback.

    EdgebusError
    ├── ConfigError          operator configuration is wrong (names the key)
    ├── TopicError           a topic or device id is malformed
    ├── CodecError           a payload cannot be decoded or encoded
    │   ├── PayloadTooLarge  over the configured size limit
    │   └── UnsupportedVersion   a format or record version this build does not know
    └── BusError             talking to the broker failed
        ├── NotConnected     the operation needs a live connection
        ├── BrokerError      the embedded broker could not start or stop
        ├── SubscriptionRefused  the broker refused a SUBSCRIBE (SUBACK failure code)
        └── OutboxError      the on-disk outbox could not be read or written

The tree lives in ``schemas`` (the lowest layer) so that every layer can raise
and catch it without importing upwards.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BusError",
    "CodecError",
    "ConfigError",
    "EdgebusError",
    "NotConnected",
    "OutboxError",
    "PayloadTooLarge",
    "SubscriptionRefused",
    "TopicError",
    "UnsupportedVersion",
]


class EdgebusError(Exception):
    """Base of every error edgebus raises on purpose."""


class ConfigError(EdgebusError, ValueError):
    """Operator configuration is invalid; the message names the offending key."""


class TopicError(EdgebusError, ValueError):
    """A topic, topic filter or device id is malformed."""


class CodecError(EdgebusError, ValueError):
    """A payload is truncated, corrupt, or otherwise cannot be decoded or encoded."""


class PayloadTooLarge(CodecError):
    """A payload (compressed or decompressed) exceeds the configured limit."""


class UnsupportedVersion(CodecError):
    """A payload names a format, record type or record version this build does not know."""


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
