"""The HTTP API of a running coordinator fed through Mosquitto: what it answers, and how it refuses."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.messages import Detection, DetectionsBatch, FrameDetections, encode_record
from tests.brokers import MosquittoUnderTest
from tests.bus_helpers import wait_until
from tests.http_helpers import TOKEN, ApiCoordinator, Sender, api_coordinator, metrics_batch, normal

pytestmark = pytest.mark.integration

DEVICE = "gw-9"
T0 = 1_763_900_000_000


@pytest.fixture
def api(mosquitto_broker: MosquittoUnderTest, tmp_path: Path) -> Iterator[ApiCoordinator]:
    with api_coordinator(mosquitto_broker, tmp_path / "coordinator") as running:
        yield running


@pytest.fixture
def sender(mosquitto_broker: MosquittoUnderTest) -> Iterator[Sender]:
    s = Sender(mosquitto_broker)
    yield s
    s.stop()


def feed_incident(api: ApiCoordinator, sender: Sender) -> None:
    """50 ordinary readings, then 97 (an anomaly), a status and a malformed message; all stored."""
    sender.publish(f"edgebus/{DEVICE}/status", "online", retain=True)
    sender.publish(f"edgebus/{DEVICE}/metrics", metrics_batch(DEVICE, 0, normal(50, 0)))
    sender.publish(f"edgebus/{DEVICE}/metrics", metrics_batch(DEVICE, 50, [97.0]))
    sender.publish(f"edgebus/{DEVICE}/metrics", b"EB\x01 not a record")
    sender.flush()
    assert wait_until(lambda: api.store.count_samples(DEVICE) == 51)
    assert wait_until(lambda: len(api.store.anomalies(DEVICE)) == 1 and len(api.store.dead_letters()) == 1)


def error_of(response: object) -> dict[str, str]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]  # type: ignore[no-any-return]


def test_devices_history_and_anomalies_from_the_stream(api: ApiCoordinator, sender: Sender) -> None:
    feed_incident(api, sender)
    devices = api.http.get("/api/v1/devices").json()["items"]
    assert [d["id"] for d in devices] == [DEVICE]
    device = api.http.get(f"/api/v1/devices/{DEVICE}").json()
    assert device["status"] == "online"
    assert device["sequence"] == {"epoch": 7, "received": 51, "missing": 0, "duplicates": 0, "epochs_seen": 1}
    assert device["metrics"] == ["cpu_percent"] and device["last_values"]["cpu_percent"] == 97.0
    assert device["open_anomalies"] == 1

    history = api.http.get(f"/api/v1/devices/{DEVICE}/metrics/cpu_percent/history",
                           params={"since": T0, "until": T0 + 60_000, "points": 10}).json()
    assert history["raw_samples"] == 51 and len(history["t"]) <= 10
    assert sum(history["count"]) == 51 and max(history["max"]) == 97.0
    assert history["bucket_ms"] == 6000 and history["t"][0] == T0
    stored = [s.value for s in api.store.samples(DEVICE, "cpu_percent")]
    assert history["avg"][0] == pytest.approx(sum(stored[:6]) / 6)
    [mark] = history["anomalies"]
    assert mark["value"] == 97.0 and mark["time_ms"] == T0 + 50_000 and not mark["acknowledged"]

    iso = api.http.get(f"/api/v1/devices/{DEVICE}/metrics/cpu_percent/history",
                       params={"since": "2025-11-23T12:13:20Z", "until": "2025-11-23T12:14:20+00:00",
                               "points": 10}).json()
    assert (iso["since_ms"], iso["until_ms"]) == (T0, T0 + 60_000) and iso["t"] == history["t"]

    [anomaly] = api.http.get("/api/v1/anomalies", params={"state": "open"}).json()["items"]
    assert (anomaly["device"], anomaly["metric"], anomaly["value"]) == (DEVICE, "cpu_percent", 97.0)
    assert anomaly["expected"]["low"] < 20 < anomaly["expected"]["high"]
    assert api.http.get(f"/api/v1/anomalies/{anomaly['id']}").json() == anomaly


def test_acknowledging_needs_the_token_and_keeps_the_first(api: ApiCoordinator, sender: Sender) -> None:
    feed_incident(api, sender)
    [anomaly] = api.http.get("/api/v1/anomalies").json()["items"]
    url = f"/api/v1/anomalies/{anomaly['id']}/acknowledge"
    refused = api.http.post(url)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert error_of(refused)["code"] == "unauthorized"
    wrong = {"Authorization": "Bearer wrong-token-of-enough-length"}
    assert api.http.post(url, headers=wrong).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    done = api.http.post(url, headers=auth, json={"by": "alice"})
    assert done.status_code == 200
    assert done.json()["acknowledged_by"] == "alice" and done.json()["acknowledged_ms"] > 0
    again = api.http.post(url, headers=auth, json={"by": "bob"}).json()
    assert again["acknowledged_by"] == "alice" and again["acknowledged_ms"] == done.json()["acknowledged_ms"]
    assert api.http.get("/api/v1/anomalies", params={"state": "open"}).json()["items"] == []
    assert [a["id"] for a in api.http.get("/api/v1/anomalies", params={"state": "acknowledged"})
            .json()["items"]] == [anomaly["id"]]
    assert api.http.post("/api/v1/anomalies/999999/acknowledge", headers=auth).status_code == 404


def test_without_a_configured_token_changes_are_refused(mosquitto_broker: MosquittoUnderTest,
                                                         tmp_path: Path) -> None:
    with api_coordinator(mosquitto_broker, tmp_path, token=None) as api:
        refused = api.http.post("/api/v1/anomalies/1/acknowledge", headers={"Authorization": "Bearer x" * 3})
        assert refused.status_code == 403 and error_of(refused)["code"] == "changes_disabled"


@pytest.mark.parametrize(("path", "params", "status", "field"), [
    ("/api/v1/devices/nope", {}, 404, "device"),
    ("/api/v1/devices/gw-9/metrics/nope/history", {}, 404, "metric"),
    ("/api/v1/devices/gw-9/metrics/cpu_percent/history", {"since": "yesterday"}, 422, "since"),
    ("/api/v1/devices/gw-9/metrics/cpu_percent/history", {"since": "2025-13-45"}, 400, "since"),
    ("/api/v1/devices/gw-9/metrics/cpu_percent/history", {"since": 2000, "until": 1000}, 400, "since"),
    ("/api/v1/devices/gw-9/metrics/cpu_percent/history", {"points": 0}, 422, "points"),
    ("/api/v1/devices/gw-9/metrics/cpu_percent/history", {"points": 10**9}, 422, "points"),
    ("/api/v1/devices/gw-9/metrics/cpu_percent/history", {"since": 0, "until": 99_999_999_999_999}, 400,
     "until"),
    ("/api/v1/anomalies", {"limit": 100_000}, 422, "limit"),
    ("/api/v1/anomalies", {"state": "maybe"}, 422, "state"),
    ("/api/v1/anomalies", {"cursor": "not-a-cursor"}, 400, "cursor"),
    ("/api/v1/anomalies/0", {}, 422, "anomaly_id"),
    ("/api/v1/anomalies/99999", {}, 404, "anomaly_id"),
    ("/api/v1/events", {"cursor": "WzEsMl0"}, 400, "cursor"),
    ("/api/v1/devices/gw-9/detections", {"cursor": "MTI"}, 400, "cursor"),
    ("/api/v1/export.csv", {"device": "nope"}, 404, "device"),
    ("/api/v1/export.csv", {}, 422, "device"),
    ("/api/v1/devices/gw-9/cameras/front/tracks/5/snapshot.jpg", {}, 404, None),
])
def test_bad_input_is_a_json_4xx(api: ApiCoordinator, sender: Sender, path: str, params: dict[str, object],
                                  status: int, field: str | None) -> None:
    sender.publish(f"edgebus/{DEVICE}/metrics", metrics_batch(DEVICE, 0, normal(3, 0)))
    sender.flush()
    assert wait_until(lambda: api.store.count_samples(DEVICE) == 3)
    response = api.http.get(path, params=params)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error.get("field") == field, error


def test_export_is_every_stored_sample_as_csv(api: ApiCoordinator, sender: Sender) -> None:
    feed_incident(api, sender)
    sender.publish(f"edgebus/{DEVICE}/metrics", metrics_batch(DEVICE, 51, [1.5, 2.5], metric="temp_c"))
    sender.flush()
    assert wait_until(lambda: api.store.count_samples(DEVICE) == 53)
    response = api.http.get("/api/v1/export.csv", params={"device": DEVICE})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 53
    stored = {(s.seq, s.name, float(s.value)) for s in api.store.iter_samples(DEVICE)}
    assert {(int(r["seq"]), r["metric"], float(r["value"])) for r in rows} == stored
    assert rows[0]["time"] == "2025-11-23T12:13:20.000Z" and rows[0]["time_ms"] == str(T0)
    only = api.http.get("/api/v1/export.csv", params={"device": DEVICE, "metric": "temp_c",
                                                      "since": T0 + 52_000}).text
    assert [r["value"] for r in csv.DictReader(io.StringIO(only))] == ["2.5"]


def jpeg() -> bytes:
    image = np.zeros((24, 32, 3), dtype=np.uint8)
    image[:, :16] = (0, 128, 255)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data)


def test_camera_events_detections_and_snapshots(api: ApiCoordinator, sender: Sender) -> None:
    picture = jpeg()
    start = {"type": "start", "version": 1, "camera": "front", "track_id": 7, "label": "person",
             "confidence": 0.8, "box": [0.1, 0.2, 0.3, 0.4], "time_ms": T0}
    end = {**start, "type": "end", "time_ms": T0 + 4000, "duration_ms": 4000, "reason": "lost",
           "snapshot_jpeg_b64": base64.b64encode(picture).decode()}
    sender.publish(f"edgebus/{DEVICE}/events/front", json.dumps(start))
    sender.publish(f"edgebus/{DEVICE}/events/front", json.dumps(end))
    frames = tuple(FrameDetections(T0 + i * 100, (Detection("person", 0.9, (0.1, 0.1, 0.5, 0.5), 7),
                                                  Detection("car", 0.6, (0.5, 0.5, 0.9, 0.9), None)))
                   for i in range(25))
    sender.publish(f"edgebus/{DEVICE}/detections/front",
                   encode_record(DetectionsBatch(device=DEVICE, camera="front", epoch=3, first_seq=0,
                                                 frames=frames)))
    sender.flush()
    assert wait_until(lambda: len(api.store.events(DEVICE)) == 2 and len(api.store.detections(DEVICE)) == 50)

    events = api.http.get("/api/v1/events", params={"device": DEVICE}).json()["items"]
    assert [e["type"] for e in events] == ["end", "start"]
    assert "snapshot_jpeg_b64" not in events[0]["event"] and events[0]["event"]["duration_ms"] == 4000
    assert events[1]["snapshot_url"] is None
    image = api.http.get(events[0]["snapshot_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == picture
    assert api.http.get(f"/api/v1/devices/{DEVICE}").json()["cameras"] == ["front"]

    seen: list[tuple[int, str]] = []
    cursor = None
    for _ in range(10):
        page = api.http.get(f"/api/v1/devices/{DEVICE}/detections",
                            params={"limit": 15, **({"cursor": cursor} if cursor else {})}).json()
        seen += [(d["seq"], d["label"]) for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 50
    assert seen[0][0] == 24 and seen[-1][0] == 0  # newest first


def test_prometheus_scrape_parses_and_counts(api: ApiCoordinator, sender: Sender) -> None:
    feed_incident(api, sender)
    response = api.http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}
    assert samples[("edgebus_ingest_samples_total", ())] == 51
    assert samples[("edgebus_device_samples_received_total", (("device", DEVICE),))] == 51
    assert samples[("edgebus_device_samples_missing", (("device", DEVICE),))] == 0
    assert samples[("edgebus_device_online", (("device", DEVICE),))] == 1
    assert samples[("edgebus_ingest_dead_letters_total", (("reason", "malformed"),))] == 1
    assert samples[("edgebus_anomalies_total", ())] == 1
    assert samples[("edgebus_anomalies_open", ())] == 1
    assert samples[("edgebus_store_samples_written_total", ())] == 51
    assert samples[("edgebus_broker_connected", ())] == 1
    last_seen = samples[("edgebus_device_last_seen_timestamp_seconds", (("device", DEVICE),))]
    assert last_seen == api.store.devices()[0].last_seen_ms / 1000


def test_ready_only_while_the_broker_is_connected(api: ApiCoordinator,
                                                  mosquitto_broker: MosquittoUnderTest) -> None:
    ready = api.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"broker", "store", "ingest"}
    mosquitto_broker.stop()
    assert wait_until(lambda: api.http.get("/readyz").status_code == 503)
    checks = api.http.get("/readyz").json()["checks"]
    assert not checks["broker"]["ok"] and checks["store"]["ok"] and checks["ingest"]["ok"]
    assert api.http.get("/healthz").status_code == 200  # alive, just not ready
    mosquitto_broker.start()
    assert wait_until(lambda: api.http.get("/readyz").status_code == 200)


def test_dashboard_and_openapi_are_served(api: ApiCoordinator) -> None:
    page = api.http.get("/")
    assert page.status_code == 200 and "<title>edgebus fleet</title>" in page.text
    for asset in ("/static/app.js", "/static/chart.js", "/static/style.css"):
        assert api.http.get(asset).status_code == 200, asset
    document = api.http.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1/devices/{device}/metrics/{metric}/history" in document["paths"]
    assert api.http.get("/api/v1/nothing-here").json()["error"]["code"] == "not_found"
