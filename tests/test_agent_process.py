"""The agent as a real process against real brokers: presence, metrics, nothing lost."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.command import Command
from schemas.messages import Birth, MetricsBatch, decode_record, encode_record
from tests.agent_helpers import agent_toml, reap_agent, spawn_agent, stop_agent
from tests.brokers import RunningBroker
from tests.bus_helpers import WAIT, Inbox, observer, tracked, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
DEVICE = "gw-t"


def write_config(broker: RunningBroker, tmp_path: Path, **overrides: object) -> Path:
    metrics: dict[str, object] = {"interval": 0.2, "batch_interval": 0.4,
                                  "collectors": ["cpu", "memory", "agent"], **overrides}
    return agent_toml(broker, tmp_path, DEVICE, **metrics)


@pytest.fixture
def agent_process(broker: RunningBroker, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = spawn_agent(write_config(broker, tmp_path), "--stop-timeout", "10")
    try:
        yield proc
    finally:
        reap_agent(proc)


def metrics_batches(inbox: Inbox) -> list[MetricsBatch]:
    out = []
    for m in list(inbox.messages):
        if m.topic == f"edgebus/{DEVICE}/metrics":
            record = decode_record(m.payload)
            assert isinstance(record, MetricsBatch)
            out.append(record)
    return out


def test_agent_announces_itself_publishes_metrics_and_goes_offline_cleanly(
        broker: RunningBroker, agent_process: subprocess.Popen[str]) -> None:
    obs, inbox = observer(broker, f"edgebus/{DEVICE}/#")
    try:
        assert inbox.wait_last(f"edgebus/{DEVICE}/status", b"online")
        assert inbox.wait_for(lambda ms: len(metrics_batches(inbox)) >= 3)
        birth = decode_record(inbox.payloads(f"edgebus/{DEVICE}/birth")[-1])
        assert isinstance(birth, Birth) and birth.device == DEVICE
        names = {s.name for b in metrics_batches(inbox) for s in b.samples}
        assert {"cpu_percent", "mem_used_percent", "agent_outbox_depth", "agent_shed_level"} <= names
        assert all(b.epoch == birth.epoch for b in metrics_batches(inbox))
        assert stop_agent(agent_process) == 0
        assert inbox.wait_last(f"edgebus/{DEVICE}/status", b"offline")
        seq = tracked(inbox)[0].device(DEVICE)
        assert seq.missing == 0 and seq.received > 0
    finally:
        obs.stop()


def test_kill_9_shows_offline_by_will(broker: RunningBroker,
                                      agent_process: subprocess.Popen[str]) -> None:
    obs, inbox = observer(broker, f"edgebus/{DEVICE}/status")
    try:
        assert inbox.wait_last(f"edgebus/{DEVICE}/status", b"online")
        agent_process.kill()
        agent_process.wait(timeout=WAIT)
        # keepalive 30 s is the bound; the broker sees the socket close at once
        assert inbox.wait_last(f"edgebus/{DEVICE}/status", b"offline", timeout=45)
    finally:
        obs.stop()


def test_broker_outage_loses_no_sample(broker: RunningBroker,
                                       agent_process: subprocess.Popen[str]) -> None:
    """Stop the broker while the agent samples; every sample arrives afterwards, once by seq."""
    obs, inbox = observer(broker, f"edgebus/{DEVICE}/metrics")
    try:
        assert inbox.wait_for(lambda ms: len(metrics_batches(inbox)) >= 2)
        broker.stop()
        seen_at_stop = tracked(inbox)[0].device(DEVICE).highest
        time.sleep(2.0)  # the agent keeps sampling into its outbox (about 5 batches)
        # Hold the agent while the broker comes back, so the observer (whose subscription a
        # restarted broker without persistence has forgotten) is listening before it resends.
        agent_process.send_signal(signal.SIGSTOP)
        broker.start()
        assert obs.wait_subscribed(WAIT)  # listening again before the agent resends
        agent_process.send_signal(signal.SIGCONT)
        assert wait_until(lambda: len(metrics_batches(inbox)) >= 10, timeout=30)
        assert stop_agent(agent_process) == 0
        time.sleep(0.5)
        tracker, deliveries = tracked(inbox)
        seq = tracker.device(DEVICE)
        if broker.kind == "mosquitto":
            assert seq.missing == 0, f"lost {seq.missing} samples: {seq.ranges}"
        else:
            # amqtt acknowledges a QoS 1 publish before it forwards it and keeps nothing
            # across a stop, so the one batch it acknowledged in the instant it was stopped
            # can vanish inside the broker (README, "Delivery guarantees"). Everything the
            # agent queued while the broker was down must still arrive.
            gaps = [(a[1], b[0]) for a, b in zip(seq.ranges, seq.ranges[1:], strict=False)]
            assert len(gaps) <= 1, f"more than the batch cut by the stop is missing: {seq.ranges}"
            assert all(start == seen_at_stop + 1 for start, _end in gaps), (seen_at_stop, seq.ranges)
        # At-least-once: a batch in flight when the broker died may arrive twice. Its
        # sequence numbers say so, and every copy is identical, so dropping by seq is exact.
        copies: dict[int, set[bytes]] = {}
        for m in inbox.messages:
            record = decode_record(m.payload)
            assert isinstance(record, MetricsBatch)
            copies.setdefault(record.first_seq, set()).add(m.payload)
        assert all(len(payloads) == 1 for payloads in copies.values())
        assert len(deliveries) >= 10
    finally:
        obs.stop()


def command(name: str, command_id: str, **args: object) -> bytes:
    return encode_record(Command(device=DEVICE, name=name, command_id=command_id,
                                 time_ms=1_700_000_000_000, args=args))


def last_reply(inbox: Inbox, command_id: str | None) -> dict[str, object] | None:
    for payload in reversed(inbox.payloads(f"edgebus/{DEVICE}/state/last_command")):
        if not payload:
            continue
        reply = json.loads(payload)
        if reply.get("id") == command_id:
            return dict(reply)
    return None


def test_discovery_and_commands_on_a_running_agent(broker: RunningBroker, tmp_path: Path) -> None:
    config = agent_toml(broker, tmp_path, DEVICE, home_assistant=True, interval=0.2,
                        batch_interval=0.4, collectors=["cpu", "memory", "agent"])
    obs, inbox = observer(broker, f"edgebus/{DEVICE}/#")
    assert obs.subscribe(f"homeassistant/device/{DEVICE}/config", inbox).wait_subscribed(WAIT)
    proc = spawn_agent(config)
    discovery_topic = f"homeassistant/device/{DEVICE}/config"
    try:
        # Discovery names the metrics the device really reports, once it has reported them.
        def has_cpu(ms: object) -> bool:
            docs = [json.loads(p) for p in inbox.payloads(discovery_topic) if p]
            return any("cpu_percent" in json.dumps(d.get("cmps", {})) for d in docs)

        assert inbox.wait_for(has_cpu), "no discovery document with cpu_percent"
        # Published once, complete: the first document already names every collector's metrics
        # (rates included), not an empty device first.
        first = json.loads(inbox.payloads(discovery_topic)[0])
        assert {"cpu_percent", "mem_used_percent", "agent_rss_bytes"} <= set(first["cmps"])
        assert first["cmps"]["agent_rss_bytes"]["name"] == "Agent memory (RSS)"
        assert first["cmps"]["agent_rss_bytes"]["unit_of_measurement"] == "B"
        # A gateway without cameras does not claim them.
        birth = decode_record(inbox.payloads(f"edgebus/{DEVICE}/birth")[-1])
        assert isinstance(birth, Birth) and "cameras" not in birth.capabilities
        assert "metrics" in birth.capabilities
        doc = [json.loads(p) for p in inbox.payloads(discovery_topic) if p][-1]
        assert doc["dev"]["identifiers"] == ["edgebus_gw-t"]
        components = doc["cmps"].values()
        assert all("unique_id" in c and "p" in c for c in components)
        avail = json.dumps(doc.get("availability", doc.get("avty", "")))
        assert f"edgebus/{DEVICE}/status" in avail
        assert inbox.wait_for(lambda ms: bool(inbox.payloads(f"edgebus/{DEVICE}/state/metrics")))
        state = json.loads(inbox.payloads(f"edgebus/{DEVICE}/state/metrics")[-1])
        assert "cpu_percent" in state

        # A config command changes the batch interval live and is answered.
        obs.publish(f"edgebus/{DEVICE}/cmd/config",
                    command("config", "c-1", metrics={"report_by_exception": True, "deadband": 5.0}))
        assert inbox.wait_for(lambda ms: last_reply(inbox, "c-1") is not None)
        reply = last_reply(inbox, "c-1")
        assert reply is not None and reply["ok"] is True, reply
        assert reply["result"] == {"changed": ["deadband", "report_by_exception"]}

        # Garbage, a bad config and a camera command on a camera-less agent: answered, counted.
        obs.publish(f"edgebus/{DEVICE}/cmd/config", b"\x00not an envelope")
        obs.publish(f"edgebus/{DEVICE}/cmd/config", command("config", "c-2", metrics={"intervall": 1}))
        assert inbox.wait_for(lambda ms: last_reply(inbox, "c-2") is not None)
        bad = last_reply(inbox, "c-2")
        assert bad is not None and bad["ok"] is False and "intervall" in str(bad["error"])
        assert last_reply(inbox, None) is not None  # the garbage got an answer with id null
        # ... and the agent is still publishing metrics afterwards
        count = len(inbox.payloads(f"edgebus/{DEVICE}/metrics"))
        assert inbox.wait_for(lambda ms: len(inbox.payloads(f"edgebus/{DEVICE}/metrics")) > count + 1)

        # rebirth re-publishes the birth
        births = len(inbox.payloads(f"edgebus/{DEVICE}/birth"))
        obs.publish(f"edgebus/{DEVICE}/cmd/rebirth", command("rebirth", "c-3"))
        assert inbox.wait_for(lambda ms: len(inbox.payloads(f"edgebus/{DEVICE}/birth")) > births)
        assert stop_agent(proc) == 0
    finally:
        reap_agent(proc)
        obs.stop()


@pytest.mark.parametrize(("args", "key"), [
    ({"interval": math.nan}, "interval"),
    ({"interval": math.inf, "batch_interval": math.inf}, "interval"),
    ({"batch_interval": -1.0}, "batch_interval"),
    ({"interval": 1e300, "batch_interval": 1e300}, "interval"),
    ({"heartbeat": math.inf}, "heartbeat"),
    ({"deadband": math.nan}, "deadband"),
    ({"deadbands": {"cpu_percent": math.nan}}, "cpu_percent"),
], ids=["nan", "inf", "negative", "huge", "inf-heartbeat", "nan-deadband", "nan-deadbands"])
def test_config_command_with_a_bad_number_is_refused_and_the_agent_keeps_running(
        mosquitto_broker: RunningBroker, tmp_path: Path, args: dict[str, object], key: str) -> None:
    """NaN, inf, negative or huge values by ``config``: refused naming the key; sampling goes on."""
    proc = spawn_agent(write_config(mosquitto_broker, tmp_path))
    obs, inbox = observer(mosquitto_broker, f"edgebus/{DEVICE}/#")
    metrics_topic = f"edgebus/{DEVICE}/metrics"
    try:
        assert inbox.wait_for(lambda ms: len(inbox.payloads(metrics_topic)) >= 1), "no metrics at all"
        obs.publish(f"edgebus/{DEVICE}/cmd/config", command("config", "bad-1", metrics=args))
        assert inbox.wait_for(lambda ms: last_reply(inbox, "bad-1") is not None)
        reply = last_reply(inbox, "bad-1")
        assert reply is not None and reply["ok"] is False, reply
        assert reply["reason"] == "rejected" and key in str(reply["error"]), reply
        # Still up, still sampling and publishing at the old interval.
        count = len(inbox.payloads(metrics_topic))
        assert inbox.wait_for(lambda ms: len(inbox.payloads(metrics_topic)) >= count + 3)
        assert proc.poll() is None
        assert stop_agent(proc) == 0
    finally:
        reap_agent(proc)
        obs.stop()
