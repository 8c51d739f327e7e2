"""Which devices an update goes to: retained births in a group that announce ``ota``.

``edge-flash ota publish --to GROUP`` reads the retained births on
``{root}/+/birth`` and keeps the devices whose ``groups`` hold GROUP (``all``:
every device) and whose capabilities include ``ota``; a retained ``offline``
status leaves a device out (an offline canary would only hold the rollout up).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from broker.router import ReceivedMessage
from broker.session import BusSession
from schemas.birth import Birth
from schemas.errors import CodecError, NotConnected, TopicError
from schemas.messages import decode_record

__all__ = ["ALL_DEVICES", "OTA_CAPABILITY", "discover_devices"]

logger = logging.getLogger(__name__)

OTA_CAPABILITY = "ota"
ALL_DEVICES = "all"


def _groups_of(birth: Birth) -> tuple[str, ...]:
    groups = getattr(birth, "groups", None)
    if groups is None:  # an older schemas without the field keeps unknown wire keys in extra
        groups = birth.extra.get("groups", ())
    return tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, Sequence) else ()


def discover_devices(session: BusSession, group: str, *, settle: float = 3.0,
                     quiet: float = 0.5) -> tuple[list[str], dict[str, str]]:
    """Devices whose retained birth puts them in ``group`` (or ``all``) and lists ``ota``.

    Returns ``(devices, skipped)``; ``skipped`` maps members left out to why: no
    ``ota`` capability, or ``offline`` (retained status), since an offline canary
    would only hold the rollout up until its timeout. Waits until no birth
    arrived for ``quiet`` seconds, at most ``settle``.
    """
    births: dict[str, Birth] = {}
    offline: set[str] = set()
    lock = threading.Lock()
    last = [time.monotonic()]

    def on_status(msg: ReceivedMessage) -> None:
        device = msg.topic[len(session.topics.root) + 1:].split("/", 1)[0]
        with lock:
            if msg.payload == b"offline":
                offline.add(device)
            else:
                offline.discard(device)

    def on_birth(msg: ReceivedMessage) -> None:
        try:
            record = decode_record(msg.payload)
        except (CodecError, TopicError) as exc:
            logger.warning("ignoring an undecodable birth on %s: %s", msg.topic, exc)
            return
        if isinstance(record, Birth):
            with lock:
                births[record.device] = record
                last[0] = time.monotonic()

    routes = [session.subscribe(session.topics.all_status(), on_status),
              session.subscribe(session.topics.all_births(), on_birth)]
    try:
        if not session.wait_connected(session.config.connect_timeout + 5):
            raise NotConnected(f"cannot reach the broker at {session.config.host}:{session.config.port}: "
                              f"{session.stats().last_error or 'no answer'}")
        start = time.monotonic()
        with lock:
            last[0] = start
        while time.monotonic() - start < settle:
            with lock:
                idle = time.monotonic() - last[0]
            if births and idle >= quiet:
                break
            time.sleep(0.05)
    finally:
        for route in routes:
            session.unsubscribe(route)
    with lock:
        found = dict(births)
        gone = set(offline)
    members = sorted(d for d, b in found.items() if group == ALL_DEVICES or group in _groups_of(b))
    skipped = {d: "no ota capability" for d in members if OTA_CAPABILITY not in found[d].capabilities}
    skipped.update({d: "offline" for d in members if d in gone and d not in skipped})
    devices = [d for d in members if d not in skipped]
    logger.info("discovery: %d births, %d in group %s, %d to update, %d skipped",
                len(found), len(members), group, len(devices), len(skipped))
    return devices, skipped
