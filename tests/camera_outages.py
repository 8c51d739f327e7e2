"""One scenario for every kind of real stream: a camera agent through repeated outages.

A real ``edge-agent`` process watches a real stream server (MJPEG over HTTP
or RTSP, tests/stream_servers.py) showing a person, with the stock SSDLite
detector and Home Assistant discovery on. The server is killed and started
again several times. Everything is read off a real broker, as a user would:

* a person is found: a track starts, ``state/door_objects`` counts one;
* when the server dies the camera's health turns ``reconnecting``, the open
  track ends with reason ``source_lost`` and the count drops to zero, and the
  camera's Home Assistant entities (evaluated from the discovery document's
  availability templates) become unavailable;
* when it is back: ``streaming``, available, and a new track;
* the agent's thread count is the same after every recovery, its memory
  does not climb with the outages, and frames handed on are never closer
  than the configured rate allows (no burst after an open);
* the agent's log has one warning per outage and one recovery line, and
  nothing printed by OpenCV or FFmpeg;
* every JSON payload conforms to its schema in schemas/json/.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from schemas.detections import DetectionsBatch
from schemas.messages import decode_record
from tests.agent_helpers import agent_toml, reap_agent, spawn_agent, stop_agent
from tests.brokers import RunningBroker
from tests.bus_helpers import Inbox, observer
from tests.json_schema import assert_conforms
from tests.stream_servers import StreamServer

DEVICE = "cam-s"
CAMERA = "door"
FPS = 5
#: Recovery includes the reconnect back-off and, for RTSP, a few seconds of stream probing.
RECOVERY = 60.0
#: Memory an agent may gain over the outages (decoder buffers settle; a leak per outage would not).
RSS_SLACK_KB = 40_000

TOPIC = f"edgebus/{DEVICE}"
HEALTH = f"{TOPIC}/state/{CAMERA}_health"
OBJECTS = f"{TOPIC}/state/{CAMERA}_objects"
EVENTS = f"{TOPIC}/events/{CAMERA}"
DETECTIONS = f"{TOPIC}/detections/{CAMERA}"
DISCOVERY = f"homeassistant/device/{DEVICE}/config"


def health(inbox: Inbox) -> list[dict[str, Any]]:
    return [json.loads(p) for p in inbox.payloads(HEALTH) if p]


def events(inbox: Inbox) -> list[dict[str, Any]]:
    return [json.loads(p) for p in inbox.payloads(EVENTS)]


def last_json(inbox: Inbox, topic: str) -> Any:
    payloads = inbox.payloads(topic)
    return json.loads(payloads[-1]) if payloads else None


def analysed_frames(inbox: Inbox) -> list[Any]:
    batches = [decode_record(p) for p in inbox.payloads(DETECTIONS)]
    return [f for b in batches if isinstance(b, DetectionsBatch) for f in b.frames]


def frames_of(inbox: Inbox, track_id: int) -> int:
    return sum(1 for f in analysed_frames(inbox) if any(d.track_id == track_id for d in f.detections))


def available(inbox: Inbox, entity: str) -> bool:
    """Home Assistant's view: every availability topic of ``entity`` says available (mode ``all``)."""
    jinja2_sandbox = pytest.importorskip("jinja2.sandbox")
    env = jinja2_sandbox.ImmutableSandboxedEnvironment()
    document = last_json(inbox, DISCOVERY)
    assert document is not None, "no device discovery document"
    component = document["cmps"][entity]
    availability = component.get("availability", document["availability"])
    assert component.get("availability_mode", "all") == "all" or len(availability) == 1
    for entry in availability:
        payloads = inbox.payloads(entry["topic"])
        if not payloads:
            return False
        value = payloads[-1].decode()
        if "value_template" in entry:
            value = env.from_string(entry["value_template"]).render(
                value=value, value_json=json.loads(value)).strip()
        if value != entry.get("payload_available", "online"):
            return False
    return True


def threads_and_rss(pid: int) -> tuple[int, int]:
    """The process's thread count and resident memory (KiB), from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    threads = re.search(r"^Threads:\s+(\d+)", status, re.M)
    rss = re.search(r"^VmRSS:\s+(\d+)", status, re.M)
    assert threads and rss
    return int(threads.group(1)), int(rss.group(1))


def run_outages(broker: RunningBroker, tmp_path: Path, server: StreamServer, outages: int) -> None:
    config = agent_toml(broker, tmp_path, DEVICE, home_assistant=True, interval=0.5,
                        collectors=["agent"], extra=f"""
[[cameras]]
name = "{CAMERA}"
source = "{server.url}"
fps = {FPS}
track_timeout = 3
batch_interval = 0.5
reconnect_min_delay = 0.2
labels = ["person"]

[cameras.detector]
type = "ssdlite"
threshold = 0.5
""")
    obs, inbox = observer(broker, "#")
    samples: list[tuple[int, int]] = []
    server.start()
    proc = spawn_agent(config)
    try:
        def streaming_times() -> int:
            return sum(1 for h in health(inbox) if h["state"] == "streaming")

        assert inbox.wait_for(lambda ms: streaming_times() == 1, timeout=RECOVERY), health(inbox)
        for outage in range(outages):
            assert inbox.wait_for(lambda ms, n=outage: any(e["type"] == "start"
                                                           for e in events(inbox)[2 * n:]),
                                  timeout=RECOVERY), f"no person found before outage {outage}"
            track = [e for e in events(inbox) if e["type"] == "start"][-1]["track_id"]
            # The person stays in view for a while, so the track has a real duration.
            assert inbox.wait_for(lambda ms, t=track: frames_of(inbox, t) >= 4, timeout=RECOVERY)
            assert last_json(inbox, OBJECTS) == {"person": 1}
            assert inbox.wait_for(lambda ms: available(inbox, f"{CAMERA}_occupancy"))
            if outage:
                samples.append(threads_and_rss(proc.pid))

            server.kill()
            assert inbox.wait_for(lambda ms, t=track: health(inbox)[-1]["state"] == "reconnecting"
                                  and any(e["type"] == "end" and e["track_id"] == t
                                          for e in events(inbox))), health(inbox)[-3:]
            end = next(e for e in events(inbox) if e["type"] == "end" and e["track_id"] == track)
            assert end["reason"] == "source_lost"
            assert end["duration_ms"] >= 2 * 1000 // FPS  # seen in 4 frames at most 5 a second
            assert inbox.wait_for(lambda ms: last_json(inbox, OBJECTS) == {"person": 0})
            assert not available(inbox, f"{CAMERA}_occupancy")
            assert not available(inbox, f"{CAMERA}_person_count")
            assert available(inbox, f"{CAMERA}_stream")  # it reads "disconnected", not unknown
            # While the server is down, reopening fails, and the health says why.
            assert inbox.wait_for(lambda ms: "connection refused" in health(inbox)[-1]["error"]), \
                health(inbox)[-1]
            assert health(inbox)[-1]["state"] == "reconnecting"

            server.start()
            assert inbox.wait_for(lambda ms, n=outage: streaming_times() == n + 2, timeout=RECOVERY), \
                health(inbox)[-3:]
        assert inbox.wait_for(lambda ms: any(e["type"] == "start" for e in events(inbox)[2 * outages:]),
                              timeout=RECOVERY), "no person found after the last outage"
        samples.append(threads_and_rss(proc.pid))
        assert stop_agent(proc) == 0
    finally:
        reap_agent(proc)
        server.kill()
        obs.stop()

    kinds = [(e["type"], e.get("reason")) for e in events(inbox)]
    assert kinds == [("start", None), ("end", "source_lost")] * outages + [
        ("start", None), ("end", "stopped")]
    states = [h["state"] for h in health(inbox)]
    collapsed = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
    assert collapsed == ["connecting", "streaming", *["reconnecting", "streaming"] * outages, "stopped"]
    assert all(h["source"] == server.url for h in health(inbox))
    # Frames were paced, before and after every open: never a burst (a stall is caught up
    # by half an interval at most).
    times = [f.time_ms for f in analysed_frames(inbox)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.4 * 1000 / FPS, sorted(gaps)[:5]
    # The log tells the outages in the agent's own words, one warning as each began and one
    # line as each ended; OpenCV and FFmpeg print nothing of their own.
    log = (config.parent / "agent.log").read_text()
    assert log.count("streaming again after") == outages, log
    assert log.count("stream dropped; retrying") == outages, log
    assert not re.search(r"\[ ?(WARN|ERROR)|\[(tcp|http|rtsp) @|\[OPENCV|cap_ffmpeg|VIDEOIO", log), log
    # Everything published in plain JSON is what schemas/json/ (and FORMAT.md) say.
    for topic, schema in ((HEALTH, "camera-health"), (EVENTS, "track-event"),
                          (OBJECTS, "camera-objects"), (f"{TOPIC}/state/metrics", "metrics-state"),
                          (DISCOVERY, "ha-device-discovery")):
        payloads = [p for p in inbox.payloads(topic) if p]
        assert payloads, topic
        for payload in payloads:
            assert_conforms(payload, schema)
    # Nothing grows with the outages: the same threads after every recovery, memory flat.
    threads = [t for t, _ in samples]
    assert threads == [threads[0]] * len(threads), samples
    assert samples[-1][1] - samples[0][1] < RSS_SLACK_KB, samples
