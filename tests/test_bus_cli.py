"""`edge-bus sub` and `edge-bus pub` as a user runs them, against real brokers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.session import BusConfig, BusSession
from broker.telemetry import MetricsPublisher
from schemas.messages import MetricSample
from tests.brokers import RunningBroker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def edge_bus(broker: RunningBroker, *args: str) -> list[str]:
    return [sys.executable, "-c", "from broker.bus_cli import main; raise SystemExit(main())",
            *args, "-H", broker.host, "-p", str(broker.port),
            f"--username={broker.username}", f"--password={broker.password}"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def start_sub(broker: RunningBroker, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(edge_bus(broker, "sub", *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())


def keep_sending(proc: subprocess.Popen[str], send: Callable[[], None]) -> None:
    """Send until the subscriber has what it waits for: no guess at when it subscribed."""
    for _ in range(60):
        send()
        try:
            proc.wait(timeout=0.5)
            return
        except subprocess.TimeoutExpired:
            continue


def test_sub_decodes_envelopes_and_shows_plain_payloads(broker: RunningBroker) -> None:
    # The retained plain message arrives first whenever the subscriber joins; metrics
    # batches keep coming until it has one of them too.
    proc = start_sub(broker, "--json", "-C", "2", "-W", "40",
                     "edgebus/gw/state/mode", "edgebus/gw/metrics")
    bus = BusSession(BusConfig(host=broker.host, port=broker.port, username=broker.username,
                               password=broker.password, device="gw", clean_start=True))
    try:
        bus.start()
        assert bus.wait_connected(15)
        bus.publish("edgebus/gw/state/mode", b"night", retain=True)
        publisher = MetricsPublisher(bus)
        keep_sending(proc, lambda: publisher.publish(
            [MetricSample(time_ms=1_700_000_000_000, name="temp_c", value=41.5)]))
        out, err = proc.communicate(timeout=30)
        bus.publish("edgebus/gw/state/mode", b"", retain=True)  # clear the retained message
        bus.flush(5)
    finally:
        bus.stop()
        proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    by_topic = {line["topic"]: line for line in lines}
    metrics = by_topic["edgebus/gw/metrics"]
    assert metrics["kind"] == "envelope"
    assert "temp_c" in json.dumps(metrics["payload"])
    assert "41.5" in json.dumps(metrics["payload"])
    mode = by_topic["edgebus/gw/state/mode"]
    assert (mode["kind"], mode["payload"], mode["qos"]) == ("text", "night", 1)


def test_pub_envelope_round_trips_through_sub(broker: RunningBroker) -> None:
    proc = start_sub(broker, "-v", "-C", "1", "-W", "40", "edgebus/gw/cmd/#")
    results: list[subprocess.CompletedProcess[str]] = []
    keep_sending(proc, lambda: results.append(subprocess.run(
        edge_bus(broker, "pub", "-t", "edgebus/gw/cmd/note", "--envelope",
                 "-m", '{"hello": [1, 2, 3]}'),
        capture_output=True, text=True, env=env(), timeout=30)))
    out, err = proc.communicate(timeout=30)
    assert all(r.returncode == 0 for r in results), results[-1].stderr
    assert proc.returncode == 0, err
    topic, _, payload = out.strip().partition(" ")
    assert topic == "edgebus/gw/cmd/note"
    assert "hello" in payload and "[1,2,3]" in payload


def test_sub_timeout_exit_code(broker: RunningBroker) -> None:
    out = subprocess.run(edge_bus(broker, "sub", "-W", "1", "edgebus/nobody/#"),
                         capture_output=True, text=True, env=env(), timeout=30)
    assert out.returncode == 27


def test_unreachable_broker_is_a_clear_failure() -> None:
    args = [sys.executable, "-c", "from broker.bus_cli import main; raise SystemExit(main())",
            "pub", "-t", "edgebus/x/state/y", "-m", "1", "--connect-timeout", "1",
            "-p", "1", "-u", "u", "-P", "p"]  # nothing listens on port 1
    out = subprocess.run(args, capture_output=True, text=True, env=env(), timeout=30)
    assert out.returncode == 1
    assert "could not connect" in out.stderr


def test_bad_usage_exit_code() -> None:
    out = subprocess.run([sys.executable, "-c",
                          "from broker.bus_cli import main; raise SystemExit(main())",
                          "pub", "-t", "edgebus/x/state/y", "-m", "not json", "--envelope"],
                         capture_output=True, text=True, env=env(), timeout=30)
    assert out.returncode == 2
    assert "JSON" in out.stderr


def test_sub_without_a_topic_is_a_usage_error() -> None:
    out = subprocess.run([sys.executable, "-c",
                          "from broker.bus_cli import main; raise SystemExit(main())", "sub"],
                         capture_output=True, text=True, env=env(), timeout=30)
    assert out.returncode == 2
    assert "topic" in out.stderr
