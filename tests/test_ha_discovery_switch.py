"""Home Assistant discovery across runs: switching mode, and entities gone while the agent was down.

Each run is a fresh publisher on a fresh session, as after an agent restart,
sharing only the ledger file in the agent's data directory. What a Home
Assistant starting afterwards would find retained on the broker must be
exactly the last run's documents: no device document beside per-entity ones
(the "conflicting MQTT discovery message" warnings), no entity of a camera
that is gone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.home_assistant.publisher import HomeAssistantPublisher
from broker.session import BusSession
from schemas.ha_discovery import (
    CameraEntities,
    DeviceDescription,
    DiscoveryMode,
    describe_metric,
    discovery_inventory,
    discovery_messages,
    stale_messages,
)
from tests.brokers import RunningBroker
from tests.bus_helpers import WAIT, Inbox, config_for

pytestmark = pytest.mark.integration

DEVICE = "gw-9"
MARKER = "homeassistant/zz/end-of-retained"


def description(*cameras: str) -> DeviceDescription:
    return DeviceDescription(
        device=DEVICE, sw_version="0.1.0",
        metrics=(describe_metric("cpu_percent"), describe_metric("temp_soc_c")),
        cameras=tuple(CameraEntities(name, ("person",)) for name in cameras))


def run(broker: RunningBroker, ledger: Path, desc: DeviceDescription, mode: DiscoveryMode,
        live: Inbox) -> None:
    """One agent run: connect, publish discovery, deliver everything, stop."""
    session = BusSession(config_for(broker, device=DEVICE, client_id=f"edgebus-{DEVICE}"))
    publisher = HomeAssistantPublisher(session, desc, mode, ledger=ledger).start()
    expected = {m.topic for m in discovery_messages(desc, mode)}
    seen = len(live.messages)
    session.start()
    try:
        assert live.wait_for(lambda ms: expected <= {m.topic for m in ms[seen:] if m.payload})
    finally:
        publisher.stop()
        session.stop(flush_timeout=WAIT)


def retained(broker: RunningBroker) -> dict[str, Any]:
    """What a Home Assistant subscribing now is handed: every retained discovery document."""
    inbox = Inbox()
    session = BusSession(config_for(broker, client_id="home-assistant"))
    session.subscribe("homeassistant/#", inbox)
    session.start()
    try:
        assert session.wait_subscribed(WAIT)
        # Retained messages come first on a new subscription; the marker comes after them.
        session.publish(MARKER, b"end")
        assert inbox.wait_for(lambda ms: any(m.topic == MARKER for m in ms))
        return {m.topic: json.loads(m.payload) for m in inbox.messages
                if m.topic != MARKER and m.payload}
    finally:
        session.stop()


def test_switching_mode_and_losing_a_camera_leave_nothing_stale(mosquitto_broker: RunningBroker,
                                                                   tmp_path: Path) -> None:
    ledger = tmp_path / "home-assistant.json"
    live = Inbox()
    watcher = BusSession(config_for(mosquitto_broker, client_id="watcher"))
    watcher.subscribe("homeassistant/#", live)
    watcher.start()
    assert watcher.wait_subscribed(WAIT)
    try:
        two = description("front", "back")
        run(mosquitto_broker, ledger, two, "device", live)
        assert set(retained(mosquitto_broker)) == {f"homeassistant/device/{DEVICE}/config"}

        # Restarted with per-entity discovery: the device document is cleared before any
        # per-entity document is published.
        seen = len(live.messages)
        run(mosquitto_broker, ledger, two, "entity", live)
        order = [(m.topic, bool(m.payload)) for m in live.messages[seen:]]
        assert order[0] == (f"homeassistant/device/{DEVICE}/config", False)
        assert set(retained(mosquitto_broker)) == set(discovery_inventory(two, "entity"))

        # Restarted without camera "back": its per-entity documents are gone too.
        one = description("front")
        run(mosquitto_broker, ledger, one, "entity", live)
        now = retained(mosquitto_broker)
        assert set(now) == set(discovery_inventory(one, "entity"))
        assert not any("back" in topic for topic in now)

        # And back to device-based discovery: one document, the camera's entities in it.
        seen = len(live.messages)
        run(mosquitto_broker, ledger, one, "device", live)
        cleared = [m.topic for m in live.messages[seen:] if not m.payload]
        assert set(cleared) == set(discovery_inventory(one, "entity"))
        now = retained(mosquitto_broker)
        assert set(now) == {f"homeassistant/device/{DEVICE}/config"}
        assert set(now[f"homeassistant/device/{DEVICE}/config"]["cmps"]) == {
            entity for _, entity in discovery_inventory(one, "device")[
                f"homeassistant/device/{DEVICE}/config"]}
        assert json.loads(ledger.read_text())["topics"] == {
            topic: [list(e) for e in entities]
            for topic, entities in discovery_inventory(one, "device").items()}
    finally:
        watcher.stop()


def test_stale_messages_are_pure_and_minimal() -> None:
    two, one = description("front", "back"), description("front")
    device = discovery_inventory(two, "device")
    # Nothing changed: nothing to clear.
    assert stale_messages(device, two, "device") == []
    # A camera gone in device mode: one update reducing its entities to their platform.
    [update] = stale_messages(device, one, "device")
    assert update.config is not None
    assert update.config["cmps"]["back_occupancy"] == {"p": "binary_sensor"}
    assert update.config["cmps"]["back_person_count"] == {"p": "sensor"}
    assert "unique_id" in update.config["cmps"]["front_occupancy"]
    # Another mode or prefix: every old topic is emptied.
    to_entity = stale_messages(device, two, "entity")
    assert [(m.topic, m.payload()) for m in to_entity] == [
        (f"homeassistant/device/{DEVICE}/config", b"")]
    moved = stale_messages(discovery_inventory(one, "entity"), one, "entity", prefix="ha")
    assert {m.topic for m in moved} == set(discovery_inventory(one, "entity"))
    assert all(m.config is None for m in moved)


def test_an_unreadable_ledger_is_ignored_with_a_warning(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    ledger = tmp_path / "home-assistant.json"
    ledger.write_text("{not json")
    session = BusSession(config_for_offline())
    publisher = HomeAssistantPublisher(session, description("front"), ledger=ledger)
    assert "ignoring" in caplog.text
    assert publisher.publish_discovery() == 1
    assert json.loads(ledger.read_text())["topics"]
    session.outbox.close()


def config_for_offline() -> Any:
    from broker.session import BusConfig

    return BusConfig(device=DEVICE, clean_start=True)
