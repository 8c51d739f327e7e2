"""``/api/v1/ws``: the live feed over a WebSocket (the messages are :mod:`.live_feed`'s).

On connect the server sends ``{"type": "hello", "series": [...], "max_queue": n,
"server_time_ms": t}``. The client then sends JSON objects:

* ``{"subscribe": ["device/metric", "*/metric", ...]}``: points of these series too;
* ``{"unsubscribe": [...]}``; ``{"ping": x}`` (answered with ``{"type": "pong", "ping": x}``).

Series may also be given on the URL: ``/api/v1/ws?series=gw-1/cpu_percent,*/temp_c``.
A request the server cannot use is answered with ``{"type": "error", "message": ...}``;
the connection stays open. A client that lets more than ``max_queue`` messages
pile up is closed with code 1008 (:data:`~.live_feed.CLOSE_TOO_SLOW`): it
should reconnect and catch up from the REST API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from coordinator.http.context import ApiContext
from coordinator.http.live_feed import CLOSE_TOO_SLOW, LiveClient, LiveFeed

__all__ = ["router"]

logger = logging.getLogger(__name__)

#: The longest client message read (a subscribe list of MAX_SERIES names fits).
MAX_CLIENT_MESSAGE = 64 * 1024
#: How long a close may take when the client is not reading.
CLOSE_TIMEOUT_S = 5.0

router = APIRouter()


async def _send_loop(ws: WebSocket, client: LiveClient) -> None:
    while True:
        await client.wake.wait()
        client.wake.clear()
        for text in client.take():
            await ws.send_text(text)


async def _until_dropped(client: LiveClient) -> None:
    await client.dropped.wait()


async def _reply(ws: WebSocket, message: dict[str, Any]) -> None:
    await ws.send_text(json.dumps(message, separators=(",", ":")))


async def _receive_loop(ws: WebSocket, feed: LiveFeed, client: LiveClient) -> None:
    while True:
        text = await ws.receive_text()
        if len(text) > MAX_CLIENT_MESSAGE:
            await _reply(ws, {"type": "error", "message": f"messages are at most {MAX_CLIENT_MESSAGE} bytes"})
            continue
        try:
            request = json.loads(text)
        except ValueError:
            await _reply(ws, {"type": "error", "message": "send JSON objects"})
            continue
        if not isinstance(request, dict):
            await _reply(ws, {"type": "error", "message": "send JSON objects"})
            continue
        try:
            if "subscribe" in request or "unsubscribe" in request:
                for key in ("subscribe", "unsubscribe"):
                    names = request.get(key, [])
                    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                        raise ValueError(f"{key} takes a list of 'device/metric' strings")
                feed.unsubscribe(client, request.get("unsubscribe", []))
                series = feed.subscribe(client, request.get("subscribe", []))
                await _reply(ws, {"type": "subscribed", "series": series})
            elif "ping" in request:
                await _reply(ws, {"type": "pong", "ping": request["ping"]})
            else:
                raise ValueError("known requests: subscribe, unsubscribe, ping")
        except ValueError as exc:
            await _reply(ws, {"type": "error", "message": str(exc)})


@router.websocket("/api/v1/ws")
async def live_feed(ws: WebSocket) -> None:
    ctx: ApiContext = ws.app.state.context
    feed = ctx.feed
    await ws.accept()
    client = feed.connect(asyncio.get_running_loop())
    tasks: list[asyncio.Task[None]] = []
    try:
        wanted = [s for s in ws.query_params.get("series", "").split(",") if s]
        try:
            series = feed.subscribe(client, wanted)
        except ValueError as exc:
            await _reply(ws, {"type": "error", "message": str(exc)})
            series = feed.subscribe(client, [])
        await _reply(ws, {"type": "hello", "series": series, "max_queue": client.max_queue,
                          "server_time_ms": ctx.wall_clock_ms()})
        tasks = [asyncio.create_task(_send_loop(ws, client)),
                 asyncio.create_task(_receive_loop(ws, feed, client)),
                 asyncio.create_task(_until_dropped(client))]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if client.overflowed:
            logger.info("live feed: closing a client that fell %d messages behind", client.max_queue)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(CLOSE_TOO_SLOW, "too slow: the live feed left you behind; "
                                                "reconnect"), CLOSE_TIMEOUT_S)
            return
        for task in done:
            failure = task.exception()
            if failure is not None and not isinstance(failure, WebSocketDisconnect | RuntimeError):
                logger.warning("live feed connection failed: %r", failure)
    except WebSocketDisconnect:
        pass
    finally:
        for task in tasks:
            task.cancel()
        feed.disconnect(client)
