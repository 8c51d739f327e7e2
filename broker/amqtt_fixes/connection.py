"""Cutting one client's connection at once, as a network failure would.

amqtt closes a connection gracefully: it waits until everything queued for
the client has been written. A client that is gone (power cut, SIGSTOP, a
network that dropped) reads nothing, so once the socket's buffers are full
that wait never ends - and amqtt's take-over and disconnect paths wait on it.
The keepalive and take-over fixes abort the transport instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["abort_connection"]


def abort_connection(handler: Any) -> None:
    """Abort the TCP transport behind an amqtt protocol handler (no-op if it has none)."""
    # amqtt keeps the asyncio StreamWriter inside its StreamWriterAdapter.
    stream_writer = getattr(getattr(handler, "writer", None), "_writer", None)
    transport = getattr(stream_writer, "transport", None)
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
