"""The online per-stream detector and the engine: behaviour, not numbers copied from a run."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from coordinator.anomaly import AlertKind, AnomalyEngine, Severity
from coordinator.anomaly.checkpoint import MAGIC
from coordinator.anomaly.plugins.robust_zscore import RobustZScoreDetector, RobustZScoreOptions
from coordinator.anomaly.series_shape import LEVELS, SPARSE
from coordinator.store.plugins.sql import SqlStore
from coordinator.store.records import WriteBatch
from schemas.errors import CodecError, ConfigError, UnsupportedVersion
from tests.checks.anomaly_detectors import MINUTE, feed

DAY_SAMPLES = 1440


def seasonal(n: int, seed: int, *, noise: float = 1.0, amp: float = 10.0, level: float = 50.0) -> np.ndarray:
    """A metric sampled each minute: level + daily cycle + Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return level + amp * np.sin(2 * math.pi * t / DAY_SAMPLES) + rng.normal(0, noise, n)


def trained(n: int = 2 * DAY_SAMPLES, seed: int = 1, **options: object) -> RobustZScoreDetector:
    det = RobustZScoreDetector("gw-1", "cpu", RobustZScoreOptions.from_mapping(options, "test"))
    feed(det, seasonal(n, seed))  # false alerts on clean data are the subject of their own test
    return det


def test_scores_a_sample_before_learning_from_it() -> None:
    det = trained()
    t, spike = 2 * DAY_SAMPLES * MINUTE, 50.0 + 30.0
    before = det.peek(t, spike)
    alert = det.step(t, spike)
    assert alert is not None and alert.kind is AlertKind.DEVIATION
    assert alert.score == pytest.approx(before)
    # Having learned the spike, the detector thinks less of the same value: it was scored beforehand.
    assert det.peek(t + MINUTE, spike) < before


def test_scores_are_not_saturated() -> None:
    det = trained()
    t = 2 * DAY_SAMPLES * MINUTE
    small, large = copy.deepcopy(det).step(t, 70.0), copy.deepcopy(det).step(t, 500.0)
    assert small is not None and large is not None
    assert large.score > 5 * small.score
    assert large.severity is Severity.CRITICAL


def test_one_alert_per_episode_of_a_flapping_anomaly() -> None:
    det = trained()
    start = 2 * DAY_SAMPLES
    values = seasonal(40, seed=9)
    values[::2] += 40.0  # breach on every other sample for 40 samples
    alerts = feed(det, values, start=start)
    assert len(alerts) == 1
    assert alerts[0][0] == start


def test_level_shift_alerts_once_then_adapts() -> None:
    det = trained()
    start = 2 * DAY_SAMPLES
    values = seasonal(DAY_SAMPLES, seed=3) + 25.0
    alerts = feed(det, values, start=start)
    assert [i for i, _ in alerts] == [start]
    later = start + DAY_SAMPLES
    assert det.peek(later * MINUTE, float(seasonal(1, seed=4)[0] + 25.0)) < det.threshold.value


def test_slow_drift_is_caught_before_it_is_learned() -> None:
    det = trained(n=3 * DAY_SAMPLES)
    start = 3 * DAY_SAMPLES
    values = seasonal(400, seed=5) + np.linspace(0.0, 12.0, 400)
    alerts = feed(det, values, start=start)
    assert alerts, "a drift of 12 sd over 400 samples went unnoticed"
    assert alerts[0][1].kind in (AlertKind.DRIFT, AlertKind.DEVIATION)


def test_stuck_sensor_is_reported_once() -> None:
    det = trained()
    start = 2 * DAY_SAMPLES
    frozen = np.full(120, 47.25)
    alerts = feed(det, frozen, start=start)
    stuck = [a for _, a in alerts if a.kind is AlertKind.STUCK]
    assert len(stuck) == 1
    assert "stuck at 47.25" in stuck[0].explanation


def test_a_constant_metric_is_never_stuck() -> None:
    det = RobustZScoreDetector("gw-1", "disk_total", RobustZScoreOptions())
    assert feed(det, np.full(3000, 512.0)) == []


def test_clean_seasonal_data_stays_within_a_small_false_alert_budget() -> None:
    det = RobustZScoreDetector("gw-1", "cpu", RobustZScoreOptions())
    alerts = feed(det, seasonal(7 * DAY_SAMPLES, seed=11, noise=2.0, amp=15.0))
    # About 10,000 samples; the risk default (1e-4 per sample) allows about one.
    assert len(alerts) <= 3, [a.explanation for _, a in alerts]


def test_alert_fields_explain_the_anomaly() -> None:
    det = trained()
    alert = det.step(2 * DAY_SAMPLES * MINUTE, 95.0)
    assert alert is not None
    assert alert.expected_low < 50.0 < alert.expected_high
    assert alert.threshold <= alert.score
    assert "robust sd above the expected" in alert.explanation
    assert alert.to_json_dict()["expected"] == {"low": alert.expected_low, "high": alert.expected_high}


def test_a_checkpoint_written_before_the_detectors_moved_to_plugins_restores(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from coordinator.anomaly.plugins import robust_zscore
    engine = AnomalyEngine()
    engine.observe_many(("gw-1", "cpu", i * MINUTE, float(v)) for i, v in enumerate(seasonal(300, seed=2)))
    # Pickle the detector under the module path it had before the move, as an older build did.
    monkeypatch.setitem(sys.modules, "coordinator.anomaly.robust_zscore", robust_zscore)
    for cls in (RobustZScoreDetector, RobustZScoreOptions):
        monkeypatch.setattr(cls, "__module__", "coordinator.anomaly.robust_zscore")
    blob = engine.checkpoint()
    assert b"coordinator.anomaly.robust_zscore" in blob
    monkeypatch.undo()
    restored = AnomalyEngine()
    restored.restore(blob)
    assert type(restored.detector("gw-1", "cpu")) is RobustZScoreDetector
    assert restored.detector("gw-1", "cpu").peek(300 * MINUTE, 80.0) == \
        engine.detector("gw-1", "cpu").peek(300 * MINUTE, 80.0)


def test_restore_refuses_unknown_versions_and_garbage() -> None:
    engine = AnomalyEngine()
    blob = engine.checkpoint()
    with pytest.raises(UnsupportedVersion, match="version 99"):
        engine.restore(MAGIC + bytes([99]) + blob[len(MAGIC) + 1:])
    with pytest.raises(CodecError, match="bad magic"):
        engine.restore(b"not a checkpoint")


@pytest.mark.parametrize(("config", "key"), [
    ({"detectr": {}}, "detectr"),
    ({"detector": {"type": "robust_zscore", "warmpu": 10}}, "warmpu"),
    ({"detector": {"type": "nope"}}, "nope"),
    ({"detector": {"risk": 2.0}}, "risk"),
    ({"metrics": {"cpu": {"clip": "big"}}}, "anomaly.metrics.cpu"),
])
def test_config_errors_name_the_key(config: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        AnomalyEngine(config)


def test_engine_routes_streams_and_per_metric_config() -> None:
    engine = AnomalyEngine({"detector": {"warmup": 30}, "metrics": {"battery": {"season_ms": 0}}})
    engine.observe("gw-1", "cpu", 0, 1.0)
    engine.observe("gw-2", "battery", 0, 1.0)
    assert engine.stream_count == 2
    battery = engine.detector("gw-2", "battery")
    assert isinstance(battery, RobustZScoreDetector) and battery.opts.season_ms == 0
    assert engine.forget("gw-1") == 1


def test_forecast_follows_the_daily_cycle_with_an_interval() -> None:
    engine = AnomalyEngine()
    values = seasonal(3 * DAY_SAMPLES, seed=6)
    engine.observe_many(("gw-1", "cpu", i * MINUTE, float(v)) for i, v in enumerate(values))
    points = engine.forecast("gw-1", "cpu", 360)
    assert len(points) == 360
    assert points[0].time_ms == 3 * DAY_SAMPLES * MINUTE
    ahead = np.arange(3 * DAY_SAMPLES, 3 * DAY_SAMPLES + 360)
    truth = 50.0 + 10.0 * np.sin(2 * math.pi * ahead / DAY_SAMPLES)
    means = np.array([p.mean for p in points])
    assert np.abs(means - truth).mean() < 2.0
    assert all(p.low < p.mean < p.high for p in points)
    assert engine.forecast("gw-9", "cpu", 5) == []


# -- the batch path: step_many and observe_columns give what step gives ------------------------------


def state_of(obj: object) -> object:
    """Every bit of a detector's state (floats by their hex, so -0.0 and NaN compare too)."""
    if isinstance(obj, float):
        return "nan" if math.isnan(obj) else obj.hex()
    if isinstance(obj, list):
        return [state_of(v) for v in obj]
    slots = getattr(type(obj), "__slots__", None)
    if slots:
        return {k: state_of(getattr(obj, k)) for k in slots if k != "opts"}
    return obj


def eventful(n: int, seed: int) -> list[tuple[int, float]]:
    """A stream with spikes, level shifts, drifts, stuck runs, odd gaps, repeated times, non-finite values."""
    rng = np.random.default_rng(seed)
    t, out = 0, []
    for i in range(n):
        t = max(t + int(rng.choice([MINUTE, MINUTE, MINUTE, 0, MINUTE // 2, 2 * MINUTE, -5])), 0)
        x = 50 + 10 * math.sin(2 * math.pi * t / (DAY_SAMPLES * MINUTE)) + float(rng.normal(0, 1))
        kind = (i // 300) % 6
        if kind == 1 and rng.random() < 0.02:
            x += float(rng.choice([-1, 1]) * rng.uniform(5, 60))
        x += 15 if kind == 2 else (i % 300) * 0.05 if kind == 3 else 0.0
        if kind == 4 and i % 300 > 100:
            x = 42.0
        if kind == 5 and rng.random() < 0.01:
            x = float(rng.choice([math.nan, math.inf, 7.0, 0.0, -0.0]))
        as_int = rng.random() < 0.05
        out.append((t, round(x) if as_int and math.isfinite(x) else x))
    return out


@pytest.mark.parametrize("opts", [
    RobustZScoreOptions(),
    RobustZScoreOptions(warmup=30, season_ms=0),
    RobustZScoreOptions(warmup=20, season_ms=3_600_000, season_bins=1, adapt_after=5, close_after=3,
                        stuck_samples=5),
    RobustZScoreOptions(warmup=40, season_ms=600_000, season_bins=7, min_threshold=1.0),
])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_step_many_is_step_bit_for_bit(opts: RobustZScoreOptions, seed: int) -> None:
    samples = eventful(2400, seed)
    one, many = RobustZScoreDetector("gw-1", "cpu", opts), RobustZScoreDetector("gw-1", "cpu", opts)
    expected = [(i, a) for i, (t, v) in enumerate(samples) if (a := one.step(t, v)) is not None]
    got, start = [], 0
    rng = np.random.default_rng(seed)
    while start < len(samples):
        chunk = samples[start:start + int(rng.integers(1, 400))]
        got += [(start + i, a) for i, a in many.step_many([t for t, _ in chunk], [v for _, v in chunk])]
        start += len(chunk)
    assert expected and got == expected
    assert state_of(many) == state_of(one)


def test_observe_columns_is_observe_in_sample_order() -> None:
    @dataclass
    class Columns:
        device: str
        names: list[str]
        name_index: list[int]
        times: list[int]
        values: list[float]

    streams = {("gw-1", "cpu"): eventful(900, 4), ("gw-1", "temp"): eventful(900, 5),
               ("gw-2", "cpu"): eventful(900, 6)}
    parts, flat = [], []
    for k in range(0, 900, 60):  # gw-1's batches in a fixed name order, gw-2's one metric
        for device, names in (("gw-1", ["cpu", "temp"]), ("gw-2", ["cpu"])):
            index = [j % len(names) for j in range(60 * len(names))]
            if device == "gw-1" and k % 120:
                index = [1 - j for j in index]  # another order: grouped the slow way
            rows = [(names[j], streams[(device, names[j])][k + i // len(names)]) for i, j in enumerate(index)]
            parts.append(Columns(device, names, index, [t for _, (t, _) in rows], [v for _, (_, v) in rows]))
            flat += [(device, name, t, v) for name, (t, v) in rows]
    config = {"detector": {"warmup": 30}}
    one_by_one, columns = AnomalyEngine(config), AnomalyEngine(config)
    expected = [a for s in flat for a in one_by_one.observe(*s)]
    got = [a for start in range(0, len(parts), 7) for a in columns.observe_columns(parts[start:start + 7])]
    assert len(expected) > 5 and got == expected
    assert list(columns._streams) == list(one_by_one._streams)
    for key, detector in one_by_one._streams.items():
        assert state_of(columns._streams[key]) == state_of(detector)
    grouped = AnomalyEngine(config)
    assert grouped.observe_many(flat) == expected


@dataclass
class LayoutColumns:
    device: str
    names: list[str]
    name_index: list[int]
    times: list[int]
    values: list[float]


@pytest.mark.parametrize("seed", range(12))
def test_observe_columns_is_observe_whatever_the_layout_of_the_parts(seed: int) -> None:
    """Name tables that change, repeat a name, cover part of a cycle or are shuffled: same alerts, state."""
    rng = np.random.default_rng(seed)
    metrics = ["cpu", "temp", "disk"]
    streams = {(d, m): iter(eventful(4000, seed * 10 + i)) for i, (d, m) in
               enumerate((d, m) for d in ("gw-1", "gw-2") for m in metrics)}
    parts: list[LayoutColumns] = []
    flat: list[tuple[str, str, int, float]] = []
    for _ in range(500):
        device = str(rng.choice(["gw-1", "gw-2"]))
        layout = int(rng.integers(0, 5))
        names = list(rng.permutation(metrics)[:int(rng.integers(1, 4))])
        if layout == 4 and len(names) > 1:
            names[-1] = names[0]  # a repeated name in the table
        cycles = int(rng.integers(1, 20))
        index = [j % len(names) for j in range(cycles * len(names))]
        if layout == 1:
            index = index[:-1] or index  # part of a cycle
        elif layout == 2:
            index = [int(k) for k in rng.permutation(index)]  # shuffled
        rows = [(names[k], next(streams[(device, names[k])])) for k in index]
        parts.append(LayoutColumns(device, names, index, [t for _, (t, _) in rows],
                                   [v for _, (_, v) in rows]))
        flat += [(device, name, t, v) for name, (t, v) in rows]
    config = {"detector": {"warmup": 30, "season_ms": 0}}
    one_by_one, columns = AnomalyEngine(config), AnomalyEngine(config)
    expected = [a for s in flat for a in one_by_one.observe(*s)]
    got: list[object] = []
    start = 0
    while start < len(parts):
        size = int(rng.integers(1, 25))
        got += columns.observe_columns(parts[start:start + size])
        start += size
    assert len(expected) > 3 and got == expected
    for key, detector in one_by_one._streams.items():
        assert state_of(columns._streams[key]) == state_of(detector)


def test_a_zero_minimum_threshold_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="min_threshold"):
        AnomalyEngine({"detector": {"min_threshold": 0}})


def test_joined_parts_map_each_stream_sample_back_to_its_part_and_position() -> None:
    """How alerts from a batch are put in sample order: (part, position) of every sample of a joined run."""
    from coordinator.anomaly.engine import _DeviceRun

    run = _DeviceRun(["cpu", "temp"])
    run.add(3, [0, 0, 1, 1], [0.0] * 4)  # part 3: cpu, temp, cpu, temp
    run.add(5, [2, 2], [0.0] * 2)        # part 5: cpu, temp
    run.add(8, [3, 3, 4, 4, 5, 5], [0.0] * 6)
    assert [run.where(0, i) for i in range(6)] == [(3, 0), (3, 2), (5, 0), (8, 0), (8, 2), (8, 4)]
    assert [run.where(1, i) for i in range(6)] == [(3, 1), (3, 3), (5, 1), (8, 1), (8, 3), (8, 5)]


# -- kinds of series (issue 16): each judged by what it is ---------------------------------------------


def sparse_counter(n: int, seed: int, rate: float = 0.1) -> np.ndarray:
    """A request counter: zero most minutes, a burst of log-normal size now and then."""
    rng = np.random.default_rng(seed)
    sizes = np.round(200 * np.exp(rng.normal(0, 0.8, n)))
    return np.where(rng.random(n) < rate, sizes, 0.0)


def square_wave(n: int, period: int = 60, low: float = 10.0, high: float = 35.0) -> np.ndarray:
    return np.where((np.arange(n) // (period // 2)) % 2 == 1, high, low)


def test_a_sparse_counter_raises_nothing_on_its_zeros_and_bursts() -> None:
    det = RobustZScoreDetector("gw-1", "disk_write_bytes", RobustZScoreOptions())
    assert feed(det, sparse_counter(10 * DAY_SAMPLES, seed=1)) == []
    assert det.kind == SPARSE


def test_a_storm_on_a_sparse_counter_alerts_once() -> None:
    det = RobustZScoreDetector("gw-1", "errors", RobustZScoreOptions())
    values = sparse_counter(4 * DAY_SAMPLES, seed=2)
    storm = slice(3 * DAY_SAMPLES, 3 * DAY_SAMPLES + 80)
    values[storm] = 2000.0 + np.arange(80)
    alerts = feed(det, values)
    assert [i for i, _ in alerts if i < 3 * DAY_SAMPLES] == []
    assert len(alerts) == 1 and storm.start <= alerts[0][0] < storm.stop
    assert alerts[0][1].calibrated is not None and alerts[0][1].calibrated > 0.5


def test_a_giant_burst_alerts_and_its_score_is_finite() -> None:
    det = RobustZScoreDetector("gw-1", "errors", RobustZScoreOptions())
    feed(det, sparse_counter(3 * DAY_SAMPLES, seed=3))
    alert = det.step(3 * DAY_SAMPLES * MINUTE, 1e7)
    assert alert is not None and "burst of" in alert.explanation
    assert math.isfinite(alert.score) and alert.score < 100


def test_a_square_wave_switches_quietly_and_a_value_off_its_levels_alerts() -> None:
    det = RobustZScoreDetector("gw-1", "valve", RobustZScoreOptions())
    wave = square_wave(5 * DAY_SAMPLES)
    assert feed(det, wave) == []
    assert det.kind == LEVELS
    t = 5 * DAY_SAMPLES * MINUTE
    # A switch scores as nothing (not as a step over a noise scale of zero), a value between the levels high.
    assert det.peek(t, 35.0 if wave[-1] == 10.0 else 10.0) < 1.0
    alert = copy.deepcopy(det).step(t, 22.0)
    assert alert is not None and "unlike the levels" in alert.explanation and alert.score < 1000


def test_a_square_wave_that_stops_switching_is_stuck() -> None:
    det = RobustZScoreDetector("gw-1", "valve", RobustZScoreOptions())
    feed(det, square_wave(3 * DAY_SAMPLES))
    alerts = feed(det, np.full(400, 35.0), start=3 * DAY_SAMPLES)
    assert [a.kind for _, a in alerts] == [AlertKind.STUCK]
    assert alerts[0][1].score == alerts[0][1].threshold == 90  # three times the wave's longest run


def test_a_quantised_state_steps_quietly_and_jumps_alert() -> None:
    rng = np.random.default_rng(4)
    states = np.zeros(4 * DAY_SAMPLES)
    for i in range(1, len(states)):  # a setting between 0 and 5 that moves a step now and then
        states[i] = min(5.0, max(0.0, states[i - 1] + float(rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 1]))))
    det = RobustZScoreDetector("gw-1", "fan_speed", RobustZScoreOptions())
    assert feed(det, states) == []
    t = 4 * DAY_SAMPLES * MINUTE
    jump = copy.deepcopy(det).step(t, 20.0)
    between = copy.deepcopy(det).step(t, float(states[-1]) + 0.5)
    assert jump is not None and between is not None


def test_a_noiseless_cycle_raises_no_drift_and_drift_can_be_turned_off() -> None:
    t = np.arange(6 * DAY_SAMPLES)
    for period in (DAY_SAMPLES, 97):  # the profile's period, and one it does not know
        clean = 50.0 + 20.0 * np.sin(2 * math.pi * t / period)
        assert feed(RobustZScoreDetector("gw-1", "temp", RobustZScoreOptions()), clean) == []
    ramp = seasonal(4 * DAY_SAMPLES, seed=3)
    ramp[3 * DAY_SAMPLES:] += np.minimum(np.arange(DAY_SAMPLES) / 600, 1.0) * 8.0  # 8 sd over 600 samples
    with_drift = feed(RobustZScoreDetector("gw-1", "temp", RobustZScoreOptions()), ramp)
    without = feed(RobustZScoreDetector("gw-1", "temp", RobustZScoreOptions(drift=False)), ramp)
    assert AlertKind.DRIFT in {a.kind for _, a in with_drift}
    assert AlertKind.DRIFT not in {a.kind for _, a in without}


def test_a_long_noisy_anomaly_is_one_episode() -> None:
    rng = np.random.default_rng(5)
    values = seasonal(4 * DAY_SAMPLES, seed=7)
    start, stop = 3 * DAY_SAMPLES, 3 * DAY_SAMPLES + 500
    values[start:stop] += 6.0 + rng.normal(0, 3.0, stop - start)
    new = feed(RobustZScoreDetector("gw-1", "cpu", RobustZScoreOptions()), values)
    fixed = feed(RobustZScoreDetector("gw-1", "cpu", RobustZScoreOptions(close_span=0.0)), values)
    inside = [i for i, _ in new if start <= i < stop + 10]
    assert inside == [inside[0]] and inside[0] < start + 10
    assert len([i for i, _ in fixed if start <= i < stop + 10]) > 1  # a fixed count reopens it


def test_calibrated_scores_mean_the_same_on_streams_of_any_scale() -> None:
    small, large = trained(), RobustZScoreDetector("gw-2", "bytes", RobustZScoreOptions())
    feed(large, 1e6 * seasonal(2 * DAY_SAMPLES, seed=1))
    t = 2 * DAY_SAMPLES * MINUTE
    expected = 50.0 + 10.0 * math.sin(2 * math.pi * 2 * DAY_SAMPLES / DAY_SAMPLES)
    for z, lowest, highest in ((0.5, 0.0, 0.3), (30.0, 0.5, 1.0)):
        a, b = small.peek_calibrated(t, expected + z), large.peek_calibrated(t, 1e6 * (expected + z))
        assert lowest <= a <= highest and lowest <= b <= highest
        assert abs(a - b) < 0.1
    ordered = [small.peek_calibrated(t, expected + z) for z in (5.0, 10.0, 20.0, 40.0)]
    assert ordered == sorted(ordered) and len(set(ordered)) == 4
    alert = copy.deepcopy(small).step(t, expected + 30.0)
    assert alert is not None and alert.calibrated == pytest.approx(small.peek_calibrated(t, expected + 30.0))
    assert alert.to_json_dict()["calibrated"] == round(alert.calibrated, 6)


def test_a_calibrated_score_is_kept_by_the_store(tmp_path: Path) -> None:
    store = SqlStore.open(data_dir=tmp_path)
    store.migrate()
    try:
        det = trained()
        alert = det.step(2 * DAY_SAMPLES * MINUTE, 95.0)
        assert alert is not None and alert.calibrated is not None
        store.write_batch(WriteBatch(anomalies=[alert]))
        assert [r.calibrated for r in store.anomalies()] == [alert.calibrated]
    finally:
        store.close()


# -- per-metric and per-device settings -----------------------------------------------------------------


def test_metric_globs_exact_names_and_device_rules_pick_each_streams_settings() -> None:
    engine = AnomalyEngine({
        "detector": {"warmup": 30},
        "metrics": {"disk_*_bytes": {"series": "sparse"}, "disk_total_bytes": {"series": "levels"},
                    "temp": {"drift": False}},
        "overrides": [{"group": "lab", "metric": "temp*", "warmup": 60},
                      {"device": "gw-9*", "close_after": 3}],
    })
    def opts(device: str, metric: str) -> RobustZScoreOptions:
        det = engine.detector(device, metric)
        assert isinstance(det, RobustZScoreDetector)
        return det.opts

    assert opts("gw-1", "disk_read_bytes").series == "sparse"
    assert opts("gw-1", "disk_total_bytes").series == "levels"  # an exact name before any glob
    assert opts("gw-1", "cpu") == RobustZScoreOptions(warmup=30)
    engine.set_device_groups("gw-2", ["lab"])
    # the rule over the metric's table over the default
    assert opts("gw-2", "temp") == RobustZScoreOptions(warmup=60, drift=False)
    assert opts("gw-90", "temp") == RobustZScoreOptions(warmup=30, drift=False, close_after=3)
    assert opts("gw-90", "cpu").close_after == 3


def test_a_birth_naming_new_groups_restarts_the_streams_whose_settings_change() -> None:
    engine = AnomalyEngine({"overrides": [{"group": "lab", "metric": "temp", "drift": False}]})
    for metric in ("temp", "cpu"):
        engine.observe("gw-1", metric, 0, 1.0)
    cpu = engine.detector("gw-1", "cpu")
    assert engine.set_device_groups("gw-1", ["lab"]) == 1
    assert engine.set_device_groups("gw-1", ["lab"]) == 0
    assert engine.detector("gw-1", "cpu") is cpu
    temp = engine.detector("gw-1", "temp")
    assert isinstance(temp, RobustZScoreDetector) and temp.n == 0 and not temp.opts.drift


def test_a_table_naming_another_type_starts_from_that_types_defaults() -> None:
    pytest.importorskip("river")
    engine = AnomalyEngine({"detector": {"warmup": 30, "season_ms": 0},
                            "metrics": {"ramp_*": {"type": "river_holt", "alpha": 0.5}}})
    assert type(engine.detector("gw-1", "ramp_up")).__name__ == "RiverHoltDetector"
    assert engine.detector("gw-1", "cpu").opts.season_ms == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(("config", "key"), [
    ({"overrides": [{"metric": "cpu", "warmpu": 10}]}, r"anomaly\.overrides\[0\].*warmpu"),
    ({"overrides": [{"group": ""}]}, r"anomaly\.overrides\[0\].*group"),
    ({"overrides": {"group": "lab"}}, "anomaly.overrides must be a list"),
    ({"metrics": {"disk_*": {"series": "counter"}}}, r"anomaly\.metrics\.disk_\*.*series"),
    ({"detector": {"drift": "no"}}, "drift must be true or false"),
])
def test_override_errors_name_the_table_and_key(config: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        AnomalyEngine(config)
