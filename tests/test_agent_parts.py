"""The agent's pure parts: configuration, report by exception, shedding, scheduling, sd_notify."""

from __future__ import annotations

import itertools
import math
import random
import socket
from pathlib import Path
from typing import Any

import pytest

from agents.assembly import load_config
from agents.collectors.base import CollectorContext, collector_names, create_collector
from agents.config import AgentConfig
from agents.pressure import ProcessCpuShare
from agents.report_by_exception import DeadbandFilter
from agents.shedding import Pressure, SheddingPolicy
from agents.systemd import SystemdNotifier
from broker.scheduler import Scheduler
from schemas.errors import ConfigError
from schemas.messages import MetricSample

REPO = Path(__file__).resolve().parents[1]


def minimal(**tables: Any) -> dict[str, Any]:
    return {"device": {"id": "gw-1"}, **tables}


def test_example_configuration_loads() -> None:
    config = load_config(REPO / "config" / "agent.example.toml")
    assert config.device.id == "gw-1"
    assert config.broker.device == "gw-1"
    assert config.broker.outbox_path == Path("data/agent-gw-1/outbox.sqlite")
    assert config.metrics.deadbands["cpu_percent"] == 2.0


@pytest.mark.parametrize(("data", "named"), [
    ({"devise": {}}, "devise"),
    (minimal(metrics={"intervall": 2}), "metrics.intervall"),
    (minimal(broker={"hots": "x"}), "broker.hots"),
    (minimal(home_assistant={"mode": "device", "prefx": "ha"}), "home_assistant.prefx"),
    (minimal(shedding={"hi": 0.5}), "shedding.hi"),
    ({"device": {"id": "gw-1", "colour": "red"}}, "device.colour"),
])
def test_unknown_keys_are_named(data: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        AgentConfig.from_mapping(data)


@pytest.mark.parametrize(("data", "fragment"), [
    ({}, "device.id is required"),
    ({"device": {"id": "bad/id"}}, "device.id"),
    (minimal(metrics={"interval": "fast"}), "metrics: interval must be a number"),
    (minimal(metrics={"interval": 0}), r"metrics: interval must be in \(0"),
    (minimal(metrics={"interval": math.nan}), "metrics: interval must be a number"),
    (minimal(metrics={"heartbeat": math.inf}), "metrics: heartbeat must be a number"),
    (minimal(metrics={"interval": 1e300, "batch_interval": 1e300}), "metrics: interval must be in"),
    (minimal(metrics={"deadband": math.nan}), "metrics: deadband must be a number"),
    (minimal(shedding={"high": math.nan}), "shedding: high must be a number"),
    (minimal(ota={"request_timeout": math.inf}), "ota: request_timeout must be a number"),
    (minimal(ota={"window": 0}), "ota: window must be between 1 and 1024"),
    (minimal(metrics={"interval": 5, "batch_interval": 1}), "batch_interval"),
    (minimal(metrics={"collectors": "cpu"}), "metrics.collectors"),
    (minimal(metrics={"deadbands": {"cpu_percent": -1}}), "metrics.deadbands: cpu_percent"),
    (minimal(home_assistant={"mode": "everything"}), "home_assistant.mode"),
    (minimal(broker={"device": "other"}), "device.id instead"),
    (minimal(cameras={"name": "x"}), "array of tables"),
])
def test_bad_values_say_what_is_wrong(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        AgentConfig.from_mapping(data)


def test_collector_tables_are_checked_at_load(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[device]\nid = "gw-1"\n[metrics.disk]\npath = ["/"]\n')
    with pytest.raises(ConfigError, match=r"metrics\.disk: unknown key 'path'"):
        load_config(path)
    path.write_text('[device]\nid = "gw-1"\n[metrics]\ncollectors = ["cpu", "gpu"]\n')
    with pytest.raises(ConfigError, match="unknown collector type 'gpu'"):
        load_config(path)


def test_every_builtin_collector_reports_named_numbers(tmp_path: Path) -> None:
    assert collector_names() == ["agent", "battery", "cpu", "disk", "injected_load", "memory", "network",
                                 "temperature"]
    load = tmp_path / "load.json"
    load.write_text('{"cpu_percent": 95, "note": "text is skipped"}')
    for name in collector_names():
        options = {"file": str(load)} if name == "injected_load" else {}
        collector = create_collector(name, options, CollectorContext())
        first = collector.collect(1_000)
        second = collector.collect(2_000)
        for s in first + second:
            assert s.name and isinstance(s.value, int | float)
    cpu = create_collector("cpu", {}, CollectorContext()).collect(1_000)
    assert {"cpu_percent", "load1"} <= {s.name for s in cpu}
    mem = create_collector("memory", {}, CollectorContext()).collect(1_000)
    assert 0 <= next(s.value for s in mem if s.name == "mem_used_percent") <= 100
    injected = create_collector("injected_load", {"file": str(load)}, CollectorContext()).collect(1_000)
    assert [(s.name, s.value) for s in injected] == [("cpu_percent", 95.0)]
    with pytest.raises(ConfigError, match="file is required"):
        create_collector("injected_load", {}, CollectorContext())
    net = create_collector("network", {}, CollectorContext())
    assert net.collect(1_000) == []  # a rate needs two readings
    assert {s.name for s in net.collect(2_000)} >= {"net_rx_bytes_per_s", "net_tx_bytes_per_s"}


def test_agent_health_comes_from_the_context() -> None:
    class Context(CollectorContext):
        def agent_health(self) -> dict[str, float]:
            return {"outbox_depth": 7}

    names = {s.name: s.value for s in create_collector("agent", {}, Context()).collect(1)}
    assert names["agent_outbox_depth"] == 7
    assert "agent_rss_bytes" in names


def test_deadband_suppresses_small_moves_and_keeps_a_heartbeat() -> None:
    f = DeadbandFilter(deadbands={"temp_c": 0.5}, default_deadband=0.0, heartbeat_ms=10_000)

    def sent(t: int, value: float) -> bool:
        return bool(f.admit([MetricSample(t, "temp_c", value)]))

    assert sent(0, 40.0)          # first value is always news
    assert not sent(1_000, 40.4)  # inside the band
    assert not sent(2_000, 39.6)  # inside the band around the last *sent* value
    assert sent(3_000, 40.6)      # moved by more than 0.5 from 40.0
    assert not sent(4_000, 40.6)
    assert sent(13_000, 40.6)     # heartbeat: unchanged but 10 s since last sent
    assert f.suppressed == 3
    # other metrics use the default band of 0: any change is news
    assert f.admit([MetricSample(0, "load1", 1.0)]) and f.admit([MetricSample(1, "load1", 1.01)])


def test_shedding_moves_one_level_at_a_time_with_hysteresis() -> None:
    policy = SheddingPolicy(high=0.9, low=0.7, levels=2, dwell_s=0.0)
    hot, warm, cool = Pressure(0.95, 0.1, 0), Pressure(0.8, 0.1, 0), Pressure(0.1, 0.1, 0)
    assert policy.update(hot, 0.0) == 1 and not policy.allows(2) and policy.allows(1)
    assert policy.update(hot, 1.0) == 2 and not policy.allows(1) and policy.allows(0)
    assert policy.update(hot, 2.0) == 2  # capped; priority 0 always runs
    assert policy.allows(0)
    assert policy.update(warm, 3.0) == 2  # between low and high: stays
    assert policy.update(cool, 4.0) == 1
    assert policy.update(cool, 5.0) == 0 and policy.allows(2)
    # a full outbox is pressure too
    assert policy.update(Pressure(0, 0, 0.99), 6.0) == 1
    assert policy.changes == 5
    with pytest.raises(ConfigError):
        SheddingPolicy(high=0.5, low=0.6)
    with pytest.raises(ConfigError, match="dwell"):
        SheddingPolicy(dwell_s=math.nan)


def noisy_readings(seconds: int, seed: int = 7) -> list[Pressure]:
    """A busy box: the agent's CPU share swings across both thresholds from one second to the next."""
    rng = random.Random(seed)
    return [Pressure(rng.uniform(0.55, 1.0), 0.3, 0.0) for _ in range(seconds)]


def level_changes(policy: SheddingPolicy, readings: list[Pressure]) -> list[float]:
    """The times (one reading a second) at which the level changed."""
    times = []
    for second, reading in enumerate(readings):
        before = policy.level
        if policy.update(reading, float(second)) != before:
            times.append(float(second))
    return times


def test_noisy_readings_change_the_level_at_most_once_per_dwell() -> None:
    readings = noisy_readings(240)  # 4 minutes, one reading a second
    flapping = level_changes(SheddingPolicy(high=0.9, low=0.75, dwell_s=0.0), readings)
    assert len(flapping) > 60  # without a dwell these readings flap (the bug: 72 in 4 minutes)
    policy = SheddingPolicy(high=0.9, low=0.75, dwell_s=10.0)
    changes = level_changes(policy, readings)
    assert 0 < len(changes) <= 240 / 10 + 1 and policy.changes == len(changes)
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(changes))


def test_sustained_pressure_still_sheds_one_level_per_dwell_and_recovers() -> None:
    policy = SheddingPolicy(high=0.9, low=0.75, levels=3, dwell_s=10.0)
    hot, cool = Pressure(0.95, 0.2, 0.0), Pressure(0.1, 0.2, 0.0)
    assert [policy.update(hot, float(t)) for t in range(0, 40, 5)] == [1, 1, 2, 2, 3, 3, 3, 3]
    assert [policy.update(cool, float(t)) for t in range(40, 80, 5)] == [2, 2, 1, 1, 0, 0, 0, 0]
    assert policy.changes == 6


class FakeProcess:
    def __init__(self, *percents: float) -> None:
        self.percents = [0.0, *percents]

    def cpu_percent(self, interval: float | None = None) -> float:
        return self.percents.pop(0)


def test_cpu_pressure_is_the_agents_own_share_of_its_cpus() -> None:
    share = ProcessCpuShare(FakeProcess(150.0, 400.0, 0.0), cpus=2)  # psutil: 100 = one core
    assert share.read() == 0.75
    assert share.read() == 1.0  # clamped
    assert share.read() == 0.0


def test_shedding_table_is_strict() -> None:
    assert AgentConfig.from_mapping(minimal()).shedding.dwell == 10.0
    assert AgentConfig.from_mapping(minimal(shedding={"dwell": 0})).shedding.dwell == 0.0
    for table, key in (({"dwell": -1}, "dwell"), ({"dwell": math.inf}, "dwell"),
                       ({"low": 0.95}, "shedding.low")):
        with pytest.raises(ConfigError, match=key):
            AgentConfig.from_mapping(minimal(shedding=table))


def test_scheduler_runs_by_priority_sheds_and_survives_failures() -> None:
    policy = SheddingPolicy(high=0.9, low=0.5, levels=2)
    scheduler = Scheduler(policy)
    ran: list[str] = []
    scheduler.add("optional", 1.0, lambda now: ran.append("optional"), start=0.0, priority=2)
    scheduler.add("core", 1.0, lambda now: ran.append("core"), start=0.0, priority=0)

    def broken(now: float) -> None:
        raise RuntimeError("sensor gone")

    bad = scheduler.add("broken", 1.0, broken, start=0.0, priority=1)
    assert scheduler.run_due(0.0) == 3 and scheduler.next_due() == 1.0
    assert ran == ["core", "optional"] and bad.failures == 1
    policy.update(Pressure(1, 1, 1), 0.5)  # level 1: priority 2 is shed
    ran.clear()
    scheduler.run_due(1.0)
    assert ran == ["core"] and scheduler.shed_total == 1
    # a late tick skips missed turns instead of running a backlog
    ran.clear()
    scheduler.run_due(5.5)
    assert scheduler.next_due() == 6.0
    assert ran == ["core"]
    assert scheduler.failures_total == 3


def test_systemd_notifier_sends_datagrams(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
        assert notifier.enabled and notifier.watchdog_interval == 2.0
        assert notifier.ready("up")
        assert server.recv(256) == b"READY=1\nSTATUS=up"
        assert notifier.watchdog()
        assert server.recv(256) == b"WATCHDOG=1"
    outside = SystemdNotifier({})
    assert not outside.enabled and not outside.ready() and outside.watchdog_interval is None
    other_pid = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"})
    assert other_pid.watchdog_interval is None  # the watchdog is meant for another process


def test_camera_example_configuration_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cv2")
    from agents.assembly import parse_cameras

    monkeypatch.chdir(REPO)  # its source is the repository's test photographs
    config = load_config(REPO / "config" / "camera.example.toml")
    (camera,) = parse_cameras(config)
    assert camera.config.name == "door" and camera.priority == 2
    assert camera.config.detector["type"] == "ssdlite"
