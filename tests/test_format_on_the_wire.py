"""FORMAT.md's promise, end to end: plain mosquitto_sub plus the documented snippet
decode what a device session publishes, with no edgebus code on the reading side."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from broker.session import BusConfig, BusSession
from broker.telemetry import MetricsPublisher
from schemas.messages import MetricSample
from tests.brokers import RunningBroker, require_tool

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def documented_decoder(tmp_path: Path) -> Path:
    text = (SCHEMAS / "FORMAT.md").read_text()
    match = re.search(r"```python example-decoder\n(.*?)```", text, re.S)
    assert match, "FORMAT.md lost its decoder snippet"
    path = tmp_path / "decode_edgebus.py"
    path.write_text(match.group(1))
    return path


def test_mosquitto_sub_and_the_format_snippet_decode_live_metrics(
        broker: RunningBroker, tmp_path: Path) -> None:
    mosquitto_sub = require_tool("mosquitto_sub")
    decoder = documented_decoder(tmp_path)
    sub = subprocess.Popen(
        [mosquitto_sub, "-h", broker.host, "-p", str(broker.port), "-u", broker.username,
         "-P", broker.password, "-t", "edgebus/gw-7/metrics", "-F", "%x", "-C", "1",
         "-W", "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    bus = BusSession(BusConfig(host=broker.host, port=broker.port, username=broker.username,
                               password=broker.password, device="gw-7", clean_start=True))
    samples = [MetricSample(1_763_900_000_000, "temp_c", 48.25),
               MetricSample(1_763_900_000_000, "load1", 0.61),
               MetricSample(1_763_900_001_000, "mem_used_bytes", 1_234_600_000)]
    try:
        bus.start()
        assert bus.wait_connected(15)
        publisher = MetricsPublisher(bus)
        for _ in range(80):  # until the subscriber (joining at an unknown moment) has one
            publisher.publish(samples)
            try:
                sub.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
        hex_out, err = sub.communicate(timeout=30)
    finally:
        bus.stop()
        sub.kill()
    assert sub.returncode == 0, err
    decoded = subprocess.run([sys.executable, str(decoder), str(SCHEMAS / "dictionaries" / "1.zdict")],
                             input=hex_out, capture_output=True, timeout=30, check=True)
    rows = [ast.literal_eval(line) for line in decoded.stdout.decode().splitlines()]
    assert [(t, name, value) for _seq, t, name, value in rows] == [
        (s.time_ms, s.name, s.value) for s in samples]
    seqs = [seq for seq, *_ in rows]
    assert seqs == list(range(seqs[0], seqs[0] + len(samples)))

