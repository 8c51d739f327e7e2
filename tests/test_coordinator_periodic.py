"""The coordinator's periodic jobs and the configuration of what runs beside ingest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from broker.scheduler import SchedulerThread
from coordinator.actions import parse_actions
from coordinator.anomaly.alert import Alert, AlertKind, Severity
from coordinator.batch_job import BatchJob, BatchJobConfig
from coordinator.config import CoordinatorConfig
from coordinator.ha_anomalies import HomeAssistantConfig
from coordinator.store.base import open_store
from coordinator.store.records import SampleRecord, WriteBatch
from schemas.errors import ConfigError

pytest.importorskip("pyod")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_scheduler_runs_due_jobs_and_survives_a_failing_one() -> None:
    clock = FakeClock()
    scheduler = SchedulerThread(clock)
    ran: list[str] = []
    scheduler.every("often", 10, lambda: ran.append("often"))
    broken = scheduler.every("broken", 10, lambda: 1 / 0)
    scheduler.every("hourly", 3600, lambda: ran.append("hourly"), first_after_s=60)
    assert scheduler.run_due() == 0
    clock.now += 10
    assert scheduler.run_due() == 2 and ran == ["often"]
    assert broken.failures == 1
    clock.now += 100  # missed turns are skipped, not run back to back
    assert scheduler.run_due() == 3 and ran == ["often", "often", "hourly"]
    assert scheduler.run_due() == 0
    clock.now += 10  # next turn: one interval after the late run
    assert scheduler.run_due() == 2 and ran.count("often") == 3
    assert broken.runs == 3 and broken.failures == 3


def history(odd: int) -> tuple[list[SampleRecord], list[int]]:
    """CPU and network traffic follow load together; row ``odd`` breaks the relation."""
    rng = np.random.default_rng(0)
    n = 400
    load = rng.uniform(0, 1, n)
    cpu = 20 + 60 * load + rng.normal(0, 3, n)
    net = 5 + 100 * load + rng.normal(0, 4, n)
    temp = 40 + rng.normal(0, 2, n)
    cpu[odd], net[odd], temp[odd] = 75.0, 6.0, 40.0
    times = [1_763_900_000_000 + i * 1000 for i in range(n)]
    rows = [SampleRecord("gw-1", 1, i * 3 + k, times[i], name, float(v))
            for i in range(n) for k, (name, v) in enumerate((("cpu", cpu[i]), ("net", net[i]),
                                                           ("temp", temp[i])))]
    return rows, times


def write_history(tmp_path: Path, odd: int) -> tuple[object, list[int]]:
    store = open_store({}, data_dir=tmp_path)
    rows, times = history(odd)
    store.write_batch(WriteBatch(samples=rows))
    return store, times


def test_batch_job_reports_a_broken_correlation_once(tmp_path: Path) -> None:
    store, times = write_history(tmp_path, odd=300)
    reported: list[list[Alert]] = []
    job = BatchJob(BatchJobConfig.from_mapping({"window_s": 3600}), store,  # type: ignore[arg-type]
                   lambda: {"gw-1": {"cpu", "net", "temp"}}, reported.append, lambda: times[-1] + 1)
    try:
        alerts = job()
        assert [a.time_ms for a in alerts] == [times[300]]
        assert alerts[0].kind is AlertKind.MULTIVARIATE and alerts[0].device == "gw-1"
        assert reported == [alerts]
        assert job() == []  # the next run over the same window does not repeat it
        assert len(reported) == 1
    finally:
        store.close()  # type: ignore[attr-defined]


def test_batch_job_waits_for_enough_rows(tmp_path: Path) -> None:
    store, times = write_history(tmp_path, odd=30)
    job = BatchJob(BatchJobConfig.from_mapping({"window_s": 40}), store,  # type: ignore[arg-type]
                   lambda: {"gw-1": {"cpu", "net", "temp"}}, lambda a: None, lambda: times[-1] + 1)
    try:
        assert job() == [] and job.scored_until == {}  # 40 rows < 15 per metric x 3 metrics
    finally:
        store.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("build", "key"), [
    (lambda: BatchJobConfig.from_mapping({"interval": 5}), "interval"),
    (lambda: BatchJobConfig.from_mapping({"window_s": -1}), "window_s"),
    (lambda: HomeAssistantConfig.from_mapping({"clear_after": 5}), "clear_after"),
    (lambda: parse_actions([{"command": "config", "to": ["gw-*"], "severity": "critical"}]), "severity"),
    (lambda: parse_actions([{"to": ["gw-*"]}]), "command"),
    (lambda: parse_actions([{"command": "config", "to": "gw-*"}]), "to"),
    (lambda: parse_actions([{"command": "config", "to": ["gw-*"], "when": "loud"}]), "when"),
    (lambda: CoordinatorConfig.from_mapping({"action": []}), "action"),
    (lambda: CoordinatorConfig.from_mapping({"anomaly": {"batch": {"enable": False}}}), "enable"),
])
def test_unknown_or_bad_keys_are_named(build, key: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=key):
        build()


def test_coordinator_config_reads_the_new_tables() -> None:
    config = CoordinatorConfig.from_mapping({
        "anomaly": {"detector": {"warmup": 30}, "batch": {"interval_s": 60, "type": "ecod"}},
        "actions": [{"command": "config", "args": {"max_fps": 5}, "to": ["gw-*", "{device}"]}],
        "home_assistant": {"prefix": "ha", "clear_after_s": 30},
    })
    assert config.services.batch.interval_s == 60 and config.services.batch.detector == {"type": "ecod"}
    (rule,) = config.services.actions
    assert rule.when is Severity.CRITICAL and rule.cooldown_s == 300 and rule.args == {"max_fps": 5}
    assert config.services.home_assistant.prefix == "ha"
    defaults = CoordinatorConfig.from_mapping({}).services
    assert defaults.batch.enabled and defaults.batch.interval_s == 300 and defaults.batch.window_s == 3600
    assert defaults.actions == () and defaults.home_assistant.clear_after_s == 300
