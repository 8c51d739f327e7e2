"""On a real broker: a critical anomaly fires the configured action and flips the Home Assistant sensor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.session import BusSession
from coordinator.actions import parse_actions
from coordinator.anomaly.engine import AnomalyEngine
from coordinator.batch_job import BatchJobConfig
from coordinator.fleet_view import FleetView
from coordinator.ha_anomalies import HomeAssistantConfig
from coordinator.ingest import Ingest, IngestBatch
from coordinator.processor import FleetProcessor
from coordinator.services import Services, ServicesConfig
from coordinator.store.base import open_store
from coordinator.store.records import RetentionResult
from schemas.ha_discovery import DeviceDescription
from schemas.messages import Command, MetricSample, MetricsBatch, decode_record, encode_record
from tests.brokers import RunningBroker
from tests.bus_helpers import WAIT, Inbox, config_for, wait_until
from tests.test_coordinator_periodic import history

pytestmark = pytest.mark.integration

DEVICES = ("gw-1", "gw-2", "cam-1")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def session(broker: RunningBroker, name: str, watch: str | None = None) -> tuple[BusSession, Inbox]:
    """A started session (3.1.1 straight away where the broker has no MQTT 5: no probe to wait for)."""
    inbox = Inbox()
    bus = BusSession(config_for(broker, client_id=name,
                                protocol="auto" if broker.speaks_mqtt5 else "3.1.1"))
    if watch is not None:
        bus.subscribe(watch, inbox)
    bus.start()
    assert bus.wait_connected(WAIT), bus.stats().last_error
    return bus, inbox


def metrics(first_seq: int, values: list[float]) -> bytes:
    return encode_record(MetricsBatch(device="gw-1", epoch=3, first_seq=first_seq, samples=tuple(
        MetricSample(1_763_900_000_000 + (first_seq + i) * 1000, "cpu_percent", v)
        for i, v in enumerate(values))))


def normal(n: int, start: int) -> list[float]:
    return [20.0 + ((start + i) * 7 % 11 - 5) * 0.6 for i in range(n)]


def last_state(inbox: Inbox, topic: str) -> dict[str, object] | None:
    """The newest JSON document on ``topic``, or None before the first."""
    payloads = inbox.payloads(topic)
    return json.loads(payloads[-1]) if payloads else None


def active(inbox: Inbox, topic: str) -> bool:
    return (last_state(inbox, topic) or {}).get("active") is True


def last_json(messages: list[bytes]) -> dict[str, object]:
    assert messages
    document: dict[str, object] = json.loads(messages[-1])
    return document


def test_critical_alert_commands_the_group_and_flips_the_anomaly_sensor(
        broker: RunningBroker, tmp_path: Path) -> None:
    watcher, inbox = session(broker, "watcher", "#")
    sender, _ = session(broker, "sender")
    clock = FakeClock()
    store = open_store({}, data_dir=tmp_path)
    bus = BusSession(config_for(broker, client_id="coordinator",
                                protocol="auto" if broker.speaks_mqtt5 else "3.1.1"))
    ingest = Ingest(bus, batch_wait=0.01)
    processor = FleetProcessor(bus, ingest, store, AnomalyEngine({"detector": {"warmup": 30}}),
                               data_dir=tmp_path)
    rules = parse_actions([{"when": "critical", "metric": "cpu_*", "command": "config",
                            "args": {"max_fps": 5}, "to": ["gw-*"]}])
    services = Services(bus, processor, store, ServicesConfig(
        batch=BatchJobConfig(enabled=False), actions=tuple(rules),
        home_assistant=HomeAssistantConfig(clear_after_s=60)), clock=clock)
    view = FleetView(ingest.sequence_snapshot, forecast=processor.forecast)
    ingest.sinks += [services.known, processor, view]
    ingest.start()
    bus.start()
    late: BusSession | None = None
    try:
        assert bus.wait_connected(WAIT)
        for device in DEVICES:
            sender.publish(f"edgebus/{device}/status", "online", retain=True)
        assert wait_until(lambda: services.known.snapshot() == sorted(DEVICES))

        # Each device gets a problem binary sensor on the agent's own Home Assistant device.
        topic = "homeassistant/binary_sensor/gw-1/anomaly/config"
        assert inbox.wait_for(lambda ms: any(m.topic == topic for m in ms))
        discovery = last_json(inbox.payloads(topic))
        assert discovery["device_class"] == "problem"
        assert discovery["state_topic"] == "edgebus/_anomaly/gw-1/state"
        agent_device = DeviceDescription(device="gw-1", sw_version="1")
        assert discovery["dev"] == {"identifiers": [agent_device.identifier]}
        assert discovery["unique_id"] == "edgebus_gw-1_anomaly"
        assert {"value_template", "payload_on", "payload_off", "availability"} <= set(discovery)
        state_topic = "edgebus/_anomaly/gw-1/state"
        assert inbox.wait_for(lambda ms: any(m.topic == state_topic for m in ms))
        assert last_json(inbox.payloads(state_topic)) == {"active": False}

        sender.publish("edgebus/gw-1/metrics", metrics(0, normal(50, 0)))
        sender.publish("edgebus/gw-1/metrics", metrics(50, [97.0]))  # a critical incident
        # Commands, not the stored acknowledgements that share the device's command lane (cmd/stored).
        def is_command(topic: str) -> bool:
            return "/cmd/" in topic and not topic.endswith("/cmd/stored")

        assert inbox.wait_for(lambda ms: sum(is_command(m.topic) for m in ms) == 2)
        assert processor.alerts == 1 and services.actions is not None and services.actions.fired == 1
        commands = {m.topic: decode_record(m.payload) for m in inbox.messages if is_command(m.topic)}
        assert set(commands) == {"edgebus/gw-1/cmd/config", "edgebus/gw-2/cmd/config"}  # not cam-1
        for cmd_topic, command in commands.items():
            assert isinstance(command, Command)
            assert command.name == "config" and dict(command.args) == {"max_fps": 5}
            assert cmd_topic == f"edgebus/{command.device}/cmd/config"

        assert inbox.wait_for(lambda ms: active(inbox, state_topic))
        state = last_json(inbox.payloads(state_topic))
        assert state["metric"] == "cpu_percent" and "97" in str(state["explanation"])

        # The live view shows the next minute's forecast interval for the device.
        line = next(li for li in view.table().splitlines() if li.startswith("gw-1"))
        assert "[" in line and "cpu_percent in 1m" in view.table()

        # The next incident inside the cooldown is not sent again.
        sender.publish("edgebus/gw-1/metrics", metrics(51, normal(20, 51)))
        sender.publish("edgebus/gw-1/metrics", metrics(71, [99.0]))
        # (alert listeners run after the count, on the processor's writer thread)
        assert wait_until(lambda: processor.alerts == 2 and services.actions.suppressed == 1)
        assert services.actions.commands_sent == 2

        # While the episode lasts the sensor stays on, even past the quiet period ...
        assert services.sensors is not None and services.sensors.tick() == []
        clock.now += 61
        assert services.sensors.tick() == []
        # ... and normal samples close the episode, which clears it.
        sender.publish("edgebus/gw-1/metrics", metrics(72, normal(15, 72)))
        assert wait_until(lambda: store.count_samples("gw-1") == 87)
        assert ingest.drain(WAIT) and processor.episode_open("gw-1", "cpu_percent") is False
        assert services.sensors.tick() == ["gw-1"]
        assert inbox.wait_for(lambda ms: last_state(inbox, state_topic) == {"active": False})

        # Discovery and state are retained: a Home Assistant that connects later sees them.
        assert bus.flush(WAIT)
        late, late_inbox = session(broker, "late", "#")
        assert late_inbox.wait_for(lambda ms: {topic, state_topic} <= {m.topic for m in ms if m.retain})
    finally:
        bus.stop()
        ingest.stop()
        store.close()
        sender.stop()
        watcher.stop()
        if late is not None:
            late.stop()


def test_periodic_batch_alerts_are_stored_and_published_and_retention_runs(
        broker: RunningBroker, tmp_path: Path) -> None:
    watcher, inbox = session(broker, "watcher", "edgebus/_anomaly/#")
    bus, _ = session(broker, "coordinator")
    clock = FakeClock()
    store = open_store({}, data_dir=tmp_path)
    rows, times = history(odd=300)
    retained_at: list[int] = []
    apply_retention = store.apply_retention

    def retention(now_ms: int) -> RetentionResult:
        retained_at.append(now_ms)
        return apply_retention(now_ms)

    store.apply_retention = retention  # type: ignore[method-assign]
    ingest = Ingest(bus)  # not started: the batch is handed to the processor directly
    processor = FleetProcessor(bus, ingest, store, AnomalyEngine(), data_dir=tmp_path)
    services = Services(bus, processor, store, ServicesConfig(
        batch=BatchJobConfig.from_mapping({"interval_s": 60, "window_s": 3600}),
        home_assistant=HomeAssistantConfig(clear_after_s=600)),
        clock=clock, wall_clock_ms=lambda: times[-1] + 1)
    try:
        processor(IngestBatch(samples=rows))
        assert processor.flush(10)  # stored on the processor's writer thread
        assert processor.alerts == 0  # nothing unusual per metric
        clock.now += 60
        # The batch detector, retention (a minute after start) and the sensors' tick.
        assert services.scheduler.run_due() == 3
        assert retained_at == [times[-1] + 1]
        (record,) = store.anomalies("gw-1")
        assert record.time_ms == times[300] and record.metric == "cpu+net+temp"
        alert_topic, state_topic = "edgebus/_anomaly/gw-1/multivariate", "edgebus/_anomaly/gw-1/state"
        assert inbox.wait_for(lambda ms: any(m.topic == alert_topic for m in ms)
                              and active(inbox, state_topic))
        assert json.loads(inbox.payloads(alert_topic)[0])["kind"] == "multivariate"
        assert services.batch is not None and services.batch.alerts == 1
        assert processor.episode_open("gw-1", "cpu+net+temp") is None  # nobody tracks this episode
        clock.now += 3600  # retention hourly; the sensor clears after its quiet period
        services.scheduler.run_due()
        assert retained_at == [times[-1] + 1] * 2
        assert len(store.anomalies("gw-1")) == 1  # the next batch run did not repeat the episode
        assert inbox.wait_for(lambda ms: last_state(inbox, state_topic) == {"active": False})
    finally:
        bus.stop()
        store.close()
        watcher.stop()
