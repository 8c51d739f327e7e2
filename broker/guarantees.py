"""Which of edgebus's broker guarantees hold on the embedded broker, and which need Mosquitto.

One short block, printed by ``edge-broker run`` and ``edge-coordinator start``
(``make demo``) when they start a broker, so nobody takes the zero-set-up
broker for more than it is. The facts come from the conformance battery
(``tests/conformance``: every case passes on Mosquitto; on the embedded
broker MQTT 5 and ``$share`` are expected failures) and from
``bench/broker.py``.

>>> print(guarantees_block("embedded"))
guarantees on the embedded broker (amqtt 0.12.1 + edgebus fixes, MQTT 3.1.1):
  kept:           wills (offline within 1.5 x keepalive), QoS 1/2 redelivery with DUP,
                  session take-over, sessions, queued and retained messages across restarts
  need Mosquitto: MQTT 5, $share, over ~2k msg/s, connects under 2 ms
  switch:         edge-broker run --mosquitto
"""

from __future__ import annotations

from typing import Literal

__all__ = ["EMBEDDED_KEEPS", "NEEDS_MOSQUITTO", "guarantees_block"]

#: What the embedded broker keeps (each proved by a conformance case).
EMBEDDED_KEEPS = (
    "wills (offline within 1.5 x keepalive)",
    "QoS 1/2 redelivery with DUP",
    "session take-over",
    "sessions, queued and retained messages across restarts",
)
#: What only Mosquitto gives (expected failures of the embedded broker, or bench targets it misses).
NEEDS_MOSQUITTO = (
    "MQTT 5",
    "$share",
    "over ~2k msg/s",
    "connects under 2 ms",
)

BrokerKind = Literal["embedded", "mosquitto"]
_LABEL = 18


def _lines(label: str, items: tuple[str, ...], width: int = 96) -> list[str]:
    """``items`` after ``label``, comma-separated, wrapped under the first item."""
    lines, line = [], f"  {label:<{_LABEL - 2}}"
    for n, item in enumerate(items):
        text = item + ("," if n < len(items) - 1 else "")
        if len(line) + len(text) + 1 > width and line.strip() != label.strip():
            lines.append(line.rstrip())
            line = " " * _LABEL
        line += text + " "
    return [*lines, line.rstrip()]


def guarantees_block(kind: BrokerKind) -> str:
    """The lines to print when a broker of ``kind`` starts (no trailing newline)."""
    if kind == "embedded":
        return "\n".join([
            "guarantees on the embedded broker (amqtt 0.12.1 + edgebus fixes, MQTT 3.1.1):",
            *_lines("kept:", EMBEDDED_KEEPS),
            *_lines("need Mosquitto:", NEEDS_MOSQUITTO),
            f"  {'switch:':<{_LABEL - 2}}edge-broker run --mosquitto",
        ])
    return "\n".join([
        "guarantees on Mosquitto (MQTT 3.1.1 and 5):",
        *_lines("kept:", (*EMBEDDED_KEEPS, *NEEDS_MOSQUITTO)),
        f"  {'note:':<{_LABEL - 2}}Mosquitto before 2.0.21 checks keepalives every ~6 s,",
        f"{'':<{_LABEL}}so offline comes within 1.5 x keepalive + 6 s",
    ])
