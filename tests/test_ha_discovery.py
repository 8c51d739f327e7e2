"""Home Assistant discovery documents (schemas/ha_discovery.py): pure, no broker."""

from __future__ import annotations

import doctest
import json
import re
from typing import Any

import pytest

import schemas.ha_discovery
from schemas.errors import CodecError, ConfigError
from schemas.ha_discovery import (
    CameraEntities,
    DeviceDescription,
    MetricEntity,
    camera_state_payload,
    describe_metric,
    device_discovery,
    discovery_messages,
    entity_discovery,
    metrics_state_payload,
    removal_messages,
)

GATEWAY_METRICS = ("cpu_percent", "mem_used_percent", "disk_used_percent", "temp_soc_c", "load1",
                   "net_rx_bytes_per_s", "net_tx_bytes_per_s", "battery_percent", "outbox_depth",
                   "dropped", "disk_data.v2_used_percent", "agent_cpu_percent")
HA_ID = re.compile(r"[A-Za-z0-9_-]+")


def gateway(device: str = "gw-1", **overrides: Any) -> DeviceDescription:
    values: dict[str, Any] = {
        "device": device, "sw_version": "0.1.0", "model": "Raspberry Pi 4", "name": "Gateway 1",
        "metrics": tuple(describe_metric(name) for name in GATEWAY_METRICS),
        "cameras": (CameraEntities("front", ("person", "car")),
                    CameraEntities("yard-2", ("dog",))),
    }
    values.update(overrides)
    return DeviceDescription(**values)


def components(desc: DeviceDescription) -> dict[str, dict[str, Any]]:
    config = device_discovery(desc).config
    assert config is not None
    return dict(config["cmps"])


def test_doctests() -> None:
    assert doctest.testmod(schemas.ha_discovery).failed == 0


def test_device_document_has_what_home_assistant_requires() -> None:
    desc = gateway()
    message = device_discovery(desc)
    assert message.topic == "homeassistant/device/gw-1/config"
    config = json.loads(message.payload())
    assert config["dev"] == {"identifiers": ["edgebus_gw-1"], "name": "Gateway 1",
                             "manufacturer": "edgebus", "model": "Raspberry Pi 4",
                             "sw_version": "0.1.0"}
    assert config["o"]["name"] == "edgebus" and config["o"]["sw_version"] == "0.1.0"
    assert config["availability"] == [{"topic": "edgebus/gw-1/status",
                                       "payload_available": "online",
                                       "payload_not_available": "offline"}]
    cmps = config["cmps"]
    # 12 metrics, 3 label counts, 2 occupancy sensors, 2 stream connectivity sensors.
    assert len(cmps) == 12 + 3 + 2 + 2
    for key, component in cmps.items():
        assert HA_ID.fullmatch(key), key
        assert component["p"] in ("sensor", "binary_sensor")
        assert component["unique_id"] == f"edgebus_gw-1_{key}"
        assert component["state_topic"].startswith("edgebus/gw-1/state/")
        assert "{{" in component["value_template"]
        assert component["name"]


def test_entities_map_metrics_and_cameras_to_the_documented_state_topics() -> None:
    cmps = components(gateway())
    cpu = cmps["cpu_percent"]
    assert cpu["state_topic"] == "edgebus/gw-1/state/metrics"
    assert cpu["unit_of_measurement"] == "%" and cpu["state_class"] == "measurement"
    temp = cmps["temp_soc_c"]
    assert (temp["device_class"], temp["unit_of_measurement"]) == ("temperature", "°C")
    assert cmps["net_rx_bytes_per_s"]["device_class"] == "data_rate"
    assert cmps["net_rx_bytes_per_s"]["unit_of_measurement"] == "B/s"
    assert (cmps["battery_percent"]["device_class"], cmps["battery_percent"]["unit_of_measurement"]) \
        == ("battery", "%")
    assert cmps["dropped"]["state_class"] == "total_increasing"
    assert cmps["outbox_depth"]["entity_category"] == "diagnostic"
    assert cmps["agent_cpu_percent"]["entity_category"] == "diagnostic"
    assert "entity_category" not in cpu
    # The dotted metric keeps its real name in the template but gets an HA-safe id.
    assert "disk_data_v2_used_percent" in cmps
    assert "'disk_data.v2_used_percent'" in cmps["disk_data_v2_used_percent"]["value_template"]

    person = cmps["front_person_count"]
    assert person["p"] == "sensor"
    assert person["state_topic"] == "edgebus/gw-1/state/front_objects"
    occupancy = cmps["front_occupancy"]
    assert occupancy["p"] == "binary_sensor"
    assert occupancy["device_class"] == "occupancy"
    assert (occupancy["payload_on"], occupancy["payload_off"]) == ("ON", "OFF")
    assert occupancy["state_topic"] == "edgebus/gw-1/state/front_objects"
    assert cmps["yard-2_occupancy"]["state_topic"] == "edgebus/gw-1/state/yard-2_objects"


def render(template: str, value_json: dict[str, Any]) -> str:
    """What Home Assistant's Jinja makes of ``template`` for this JSON state."""
    jinja2_sandbox = pytest.importorskip("jinja2.sandbox")
    env = jinja2_sandbox.ImmutableSandboxedEnvironment()
    return str(env.from_string(template).render(value_json=value_json)).strip()


def test_camera_entities_are_unavailable_while_the_stream_is_down() -> None:
    cmps = components(gateway())
    status = {"topic": "edgebus/gw-1/status", "payload_available": "online",
              "payload_not_available": "offline"}
    for key in ("front_person_count", "front_car_count", "front_occupancy"):
        availability = cmps[key]["availability"]
        assert cmps[key]["availability_mode"] == "all"
        assert availability[0] == status
        assert availability[1]["topic"] == "edgebus/gw-1/state/front_health"
        template = availability[1]["value_template"]
        assert render(template, {"state": "streaming"}) == "online"
        for state in ("connecting", "reconnecting", "failed", "ended", "stopped"):
            assert render(template, {"state": state}) == "offline"
    stream = cmps["front_stream"]
    assert (stream["p"], stream["device_class"]) == ("binary_sensor", "connectivity")
    assert stream["state_topic"] == stream["json_attributes_topic"] == "edgebus/gw-1/state/front_health"
    assert "availability" not in stream  # the device's: an outage reads "disconnected", not unknown
    assert render(stream["value_template"], {"state": "streaming"}) == "ON"
    assert render(stream["value_template"], {"state": "reconnecting"}) == "OFF"
    assert cmps["front_person_count"]["unit_of_measurement"] == "people"
    # Per-entity documents carry the same availability.
    documents = {m.topic: m.config for m in entity_discovery(gateway())}
    occupancy = documents["homeassistant/binary_sensor/gw-1/front_occupancy/config"]
    assert occupancy is not None and occupancy["availability"] == cmps["front_occupancy"]["availability"]
    cpu = documents["homeassistant/sensor/gw-1/cpu_percent/config"]
    assert cpu is not None and cpu["availability"] == [status]


def test_entity_mode_documents_are_self_contained() -> None:
    desc = gateway()
    messages = entity_discovery(desc)
    assert len(messages) == len(components(desc))
    topics = [m.topic for m in messages]
    assert len(set(topics)) == len(topics)
    assert "homeassistant/sensor/gw-1/cpu_percent/config" in topics
    assert "homeassistant/binary_sensor/gw-1/front_occupancy/config" in topics
    unique_ids = set()
    for message in messages:
        config = json.loads(message.payload())
        assert "p" not in config  # the component is in the topic
        assert config["dev"]["identifiers"] == ["edgebus_gw-1"]
        assert config["o"]["name"] == "edgebus"
        assert config["availability"][0]["topic"] == "edgebus/gw-1/status"
        assert config["state_topic"].startswith("edgebus/gw-1/state/")
        unique_ids.add(config["unique_id"])
    assert len(unique_ids) == len(messages)
    assert discovery_messages(desc, "entity") == messages
    assert discovery_messages(desc, "device") == [device_discovery(desc)]


def test_unique_ids_are_unique_and_stable() -> None:
    first = components(gateway())
    # Built again, from entities listed in another order: the same ids for the same things.
    shuffled = gateway(metrics=tuple(reversed(gateway().metrics)))
    second = components(shuffled)
    assert {k: v["unique_id"] for k, v in first.items()} == \
        {k: v["unique_id"] for k, v in second.items()}
    ids = [c["unique_id"] for c in first.values()]
    assert len(ids) == len(set(ids))
    # Another device never shares an id.
    other = {c["unique_id"] for c in components(gateway("gw-2")).values()}
    assert not other & set(ids)


def test_odd_device_ids_are_slugged_for_home_assistant_but_not_on_the_bus() -> None:
    desc = gateway("Pi.Garage_2", cameras=())
    message = device_discovery(desc)
    assert message.topic == "homeassistant/device/Pi_Garage_2/config"
    config = message.config
    assert config is not None
    assert config["dev"]["identifiers"] == ["edgebus_Pi_Garage_2"]
    assert config["availability"][0]["topic"] == "edgebus/Pi.Garage_2/status"
    for key, component in config["cmps"].items():
        assert HA_ID.fullmatch(component["unique_id"]), component["unique_id"]
        assert component["unique_id"] == f"edgebus_Pi_Garage_2_{key}"
        assert component["state_topic"].startswith("edgebus/Pi.Garage_2/state/")
    for entity in entity_discovery(desc):
        assert entity.topic.startswith("homeassistant/sensor/Pi_Garage_2/")


def test_custom_root_and_prefix() -> None:
    desc = gateway(root="site-a/edgebus", cameras=())
    message = device_discovery(desc, prefix="ha")
    assert message.topic == "ha/device/gw-1/config"
    assert message.config is not None
    assert message.config["cmps"]["cpu_percent"]["state_topic"] == "site-a/edgebus/gw-1/state/metrics"
    with pytest.raises(ConfigError):
        device_discovery(desc, prefix="ha/#")
    with pytest.raises(ConfigError):
        discovery_messages(desc, "both")  # type: ignore[arg-type]


def test_payloads_are_json_and_keep_units_readable() -> None:
    for message in [device_discovery(gateway()), *entity_discovery(gateway())]:
        text = message.payload().decode("utf-8")
        assert json.loads(text) == message.config
    assert "°C" in device_discovery(gateway()).payload().decode()


@pytest.mark.parametrize("bad", [
    lambda: MetricEntity("cpu percent"),
    lambda: MetricEntity("cpu", device_class="cpu"),
    lambda: MetricEntity("cpu", state_class="gauge"),
    lambda: MetricEntity("cpu", icon="cpu"),
    lambda: CameraEntities("front", ()),
    lambda: CameraEntities("front", ("person", "person")),
    lambda: CameraEntities("front", ("car",), occupancy_labels=("person",)),
    lambda: CameraEntities("front/2", ("person",)),
    lambda: gateway("_sys"),
    lambda: gateway(sw_version=""),
    # two entities with one Home Assistant id: "net.rx" and "net_rx"
    lambda: gateway(metrics=(MetricEntity("net.rx"), MetricEntity("net_rx"))),
    # a metric colliding with a camera's entity
    lambda: gateway(metrics=(MetricEntity("front_occupancy"),)),
])
def test_bad_descriptions_are_config_errors(bad: Any) -> None:
    with pytest.raises(ConfigError):
        bad()


def test_occupancy_defaults_to_person_else_every_label() -> None:
    assert CameraEntities("c", ("car", "person")).occupancy_labels == ("person",)
    assert CameraEntities("c", ("car", "dog")).occupancy_labels == ("car", "dog")


def test_removal_of_vanished_entities() -> None:
    before = gateway()
    after = gateway(cameras=(CameraEntities("front", ("person",)),),
                    metrics=before.metrics[1:])
    # device mode: one update in which each vanished entity is only its platform
    [update] = removal_messages(before, after, "device")
    assert update.topic == "homeassistant/device/gw-1/config"
    assert update.config is not None
    cmps = update.config["cmps"]
    assert cmps["cpu_percent"] == {"p": "sensor"}
    assert cmps["front_car_count"] == {"p": "sensor"}
    assert cmps["yard-2_occupancy"] == {"p": "binary_sensor"}
    assert cmps["front_person_count"]["unique_id"] == "edgebus_gw-1_front_person_count"
    # entity mode: empty retained payloads on exactly the vanished topics
    removals = removal_messages(before, after, "entity")
    assert all(m.config is None and m.payload() == b"" for m in removals)
    assert {m.topic for m in removals} == {
        "homeassistant/sensor/gw-1/cpu_percent/config",
        "homeassistant/sensor/gw-1/front_car_count/config",
        "homeassistant/sensor/gw-1/yard-2_dog_count/config",
        "homeassistant/binary_sensor/gw-1/yard-2_occupancy/config",
        "homeassistant/binary_sensor/gw-1/yard-2_stream/config",
    }
    assert removal_messages(before, before, "device") == []
    # the whole device
    [gone] = removal_messages(before, None, "device")
    assert (gone.topic, gone.payload()) == ("homeassistant/device/gw-1/config", b"")
    assert len(removal_messages(before, None, "entity")) == len(entity_discovery(before))
    with pytest.raises(ConfigError):
        removal_messages(before, gateway("gw-2"))


def test_state_payloads() -> None:
    assert json.loads(metrics_state_payload({"load1": 0.5, "cpu_percent": 12})) == \
        {"cpu_percent": 12, "load1": 0.5}
    assert json.loads(metrics_state_payload({"temp_c": float("nan")})) == {"temp_c": None}
    with pytest.raises(CodecError):
        metrics_state_payload({"cpu_percent": "high"})  # type: ignore[dict-item]
    with pytest.raises(CodecError):
        metrics_state_payload({"bad name": 1})
    assert json.loads(camera_state_payload({"person": 2}, labels=("person", "car"))) == \
        {"car": 0, "person": 2}
    with pytest.raises(CodecError):
        camera_state_payload({"person": -1})


# -- the templates, rendered ---------------------------------------------------

SAMPLE_METRICS = {"cpu_percent": 12.5, "temp_soc_c": 48.3, "disk_data.v2_used_percent": 71,
                  "battery_percent": 88}


def render_all(desc: DeviceDescription, states: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Every entity's value_template rendered against its state topic's JSON, as HA does."""
    jinja2_sandbox = pytest.importorskip("jinja2.sandbox")
    env = jinja2_sandbox.ImmutableSandboxedEnvironment()
    out = {}
    for key, component in components(desc).items():
        payload = states[component["state_topic"]]
        # HA parses the payload as JSON and offers it as value_json (and the raw text as value).
        rendered = env.from_string(component["value_template"]).render(
            value=json.dumps(payload), value_json=payload)
        out[key] = rendered.strip()
    return out


def test_templates_render_against_the_state_json() -> None:
    desc = gateway()
    states = {
        "edgebus/gw-1/state/metrics": json.loads(metrics_state_payload(SAMPLE_METRICS)),
        "edgebus/gw-1/state/front_objects": json.loads(camera_state_payload({"person": 2})),
        "edgebus/gw-1/state/yard-2_objects": json.loads(camera_state_payload({}, ("dog",))),
        "edgebus/gw-1/state/front_health": {"camera": "front", "state": "streaming"},
        "edgebus/gw-1/state/yard-2_health": {"camera": "yard-2", "state": "reconnecting"},
    }
    rendered = render_all(desc, states)
    assert rendered["cpu_percent"] == "12.5"
    assert rendered["temp_soc_c"] == "48.3"
    assert rendered["disk_data_v2_used_percent"] == "71"
    # Not in the state JSON: "None", which Home Assistant shows as unknown.
    assert rendered["load1"] == "None"
    assert rendered["front_person_count"] == "2"
    assert rendered["front_car_count"] == "0"  # a label not counted reads 0
    assert rendered["front_occupancy"] == "ON"
    assert rendered["yard-2_dog_count"] == "0"
    assert rendered["yard-2_occupancy"] == "OFF"
    assert (rendered["front_stream"], rendered["yard-2_stream"]) == ("ON", "OFF")


def test_occupancy_ignores_labels_outside_its_set() -> None:
    desc = gateway(metrics=(), cameras=(CameraEntities("front", ("person", "car")),))
    health = {"edgebus/gw-1/state/front_health": {"state": "streaming"}}
    states = {"edgebus/gw-1/state/front_objects": {"car": 3, "person": 0}, **health}
    assert render_all(desc, states)["front_occupancy"] == "OFF"
    states = {"edgebus/gw-1/state/front_objects": {"car": 0, "person": 1}, **health}
    assert render_all(desc, states)["front_occupancy"] == "ON"


# Every metric an agent publishes: the collectors', the agent's own health, a camera's.
AGENT_METRICS = (
    "cpu_percent", "cpu0_percent", "cpu3_percent", "load1", "load5", "load15", "mem_used_percent",
    "mem_available_bytes", "swap_used_percent", "net_rx_bytes_per_s", "net_tx_bytes_per_s",
    "net_errors_total", "battery_percent", "battery_plugged", "temp_soc_c", "temp_cpu_thermal_c",
    "disk_used_percent", "disk_data_used_percent", "agent_cpu_percent", "agent_rss_bytes",
    "agent_outbox_depth", "agent_outbox_bytes", "agent_outbox_unconfirmed", "agent_outbox_evicted_total",
    "agent_dropped_total", "agent_publish_latency_ms",
    "agent_connection_losses_total", "agent_shed_level", "agent_shed_level_changes_total",
    "agent_shed_total", "agent_job_failures_total", "agent_suppressed_total",
    *(f"camera_front_door_{m}" for m in (
        "frames_captured_total", "frames_dropped_total", "frames_shed_total",
        "frames_detected_total", "motion_skipped_total", "inference_ms", "overhead_ms",
        "active_tracks", "detector_errors_total", "streaming", "source_reconnects_total",
        "source_outages_total")))
#: Quantities without a unit: a load average, a 0/1 flag, a level.
UNITLESS = {"load1", "load5", "load15", "battery_plugged", "agent_shed_level",
            "camera_front_door_streaming"}


@pytest.mark.parametrize("name", AGENT_METRICS)
def test_every_agent_metric_reads_like_a_name_and_has_a_unit(name: str) -> None:
    entity = describe_metric(name)
    assert entity.label and entity.label[0].isupper()
    words = entity.label.lower().split()
    assert not {"percent", "bytes", "ms", "total", "c", "s"} & set(words), entity.label
    assert "_" not in entity.label and entity.label != name
    assert (entity.unit is None) == (name in UNITLESS), (name, entity.unit)
    if name.endswith("_total"):
        assert entity.state_class == "total_increasing"
    if entity.device_class is not None:
        assert entity.device_class not in schemas.ha_discovery.RECENT_SENSOR_DEVICE_CLASSES
    assert entity.diagnostic == name.startswith(("agent_", "camera_"))


def test_names_the_agent_does_not_know_get_their_unit_from_the_suffix() -> None:
    assert (describe_metric("gpu_temp_c").label, describe_metric("gpu_temp_c").unit) == (
        "GPU temperature", "°C")
    latency = describe_metric("uplink_rtt_ms")
    assert (latency.label, latency.unit, latency.device_class) == ("Uplink rtt", "ms", "duration")
    retries = describe_metric("modem_retries_total")
    assert (retries.label, retries.unit, retries.state_class) == (
        "Modem retries", "retries", "total_increasing")
    assert describe_metric("fan_speed").label == "Fan speed"


def test_device_classes_of_recent_releases_are_accepted() -> None:
    assert {"reactive_energy", "absolute_humidity", "pm4", "temperature_delta"} <= \
        schemas.ha_discovery.SENSOR_DEVICE_CLASSES
    assert MetricEntity("abs_humidity", device_class="absolute_humidity").device_class
