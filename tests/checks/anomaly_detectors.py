"""The contract of a stream anomaly detector (coordinator/anomaly/base.py), checked for one ``type``.

Every check takes the registered type name and builds its detectors through
the registry with default options, as an operator's ``type = "..."`` would.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pytest

from coordinator.anomaly import AlertKind, AnomalyEngine, Severity
from coordinator.anomaly.alert import Alert
from coordinator.anomaly.base import ANOMALY_DETECTORS, ForecastPoint, StreamDetector, create_factory
from schemas.errors import ConfigError

__all__ = ["yield_checks"]

MINUTE = 60_000
WHERE = "anomaly.detector"
Check = Callable[[str], None]


def build(kind: str, device: str = "gw-1", metric: str = "cpu") -> StreamDetector:
    return create_factory({"type": kind}, WHERE)(device, metric)


def stream(n: int = 1500, seed: int = 11) -> tuple[list[int], list[float]]:
    """A minute-by-minute metric: noise on a slow cycle, a spike, a level shift, a stuck run, some ints,
    and non-finite values (which every detector must skip)."""
    rng = np.random.default_rng(seed)
    times = [i * MINUTE for i in range(n)]
    values: list[float] = [50.0 + 5.0 * math.sin(i / 120) + float(rng.normal(0, 1.0)) for i in range(n)]
    values[700] += 60.0
    for i in range(900, 1100):
        values[i] += 25.0
    for i in range(1200, 1300):
        values[i] = 51.25
    for i in range(300, 320):
        values[i] = round(values[i])  # an int is a number too
    for i, bad in ((400, math.nan), (401, math.inf), (800, -math.inf), (1150, math.nan)):
        values[i] = bad
    return times, values


def alerts_of(found: list[tuple[int, Alert]]) -> list[tuple[int, dict[str, object]]]:
    return [(i, a.to_json_dict()) for i, a in found]


def step_each(det: StreamDetector, times: list[int], values: list[float]) -> list[tuple[int, Alert]]:
    return [(i, a) for i, (t, v) in enumerate(zip(times, values, strict=True))
            if (a := det.step(t, v)) is not None]


def feed(det: StreamDetector, values: Iterable[float], start: int = 0) -> list[tuple[int, Alert]]:
    """``step`` over ``values``, one a minute from minute ``start``: (minute, alert) for each alert."""
    return [(i, a) for i, v in enumerate(values, start=start)
            if (a := det.step(i * MINUTE, float(v))) is not None]


def future(det: StreamDetector, after_ms: int) -> tuple[list[float], list[ForecastPoint]]:
    """What a detector would say next (learning nothing): peeks at a few probe values and a forecast."""
    return [det.peek(after_ms, probe) for probe in (0.0, 49.0, 50.0, 75.0, 1e6)], det.forecast(5)


# -- the checks --------------------------------------------------------------------------------------


def check_selected_by_type(kind: str) -> None:
    """``type = kind`` builds the registered class; ``prepare`` runs (the engine calls it)."""
    cls = ANOMALY_DETECTORS.get(kind, WHERE)
    assert kind == cls.TYPE
    cls.prepare()
    assert type(build(kind)) is cls


def check_unknown_option_refused(kind: str) -> None:
    """An operator's typo is a ConfigError naming the key and where it was."""
    with pytest.raises(ConfigError, match=r"anomaly\.detector.*'no_such_option'"):
        create_factory({"type": kind, "no_such_option": 1}, WHERE)
    with pytest.raises(ConfigError, match="no_such_option"):
        AnomalyEngine({"detector": {"type": kind, "no_such_option": 1}})


def check_documented_types(kind: str) -> None:
    """``step`` returns None or an Alert about this stream and sample, with a calibrated score in [0, 1];
    ``peek`` a float and ``peek_calibrated`` one in [0, 1]; ``forecast`` ``horizon`` points after the last
    sample with ``low <= mean <= high`` (nothing before any sample)."""
    det = build(kind, "gw-7", "temp")
    assert det.forecast(3) == []
    times, values = stream()
    for t, v in zip(times, values, strict=True):
        score = det.peek(t, v) if math.isfinite(v) else None
        calibrated = det.peek_calibrated(t, v) if math.isfinite(v) else None
        alert = det.step(t, v)
        if score is not None:
            assert isinstance(score, float)
            assert isinstance(calibrated, float) and 0.0 <= calibrated <= 1.0
        if alert is None:
            continue
        assert isinstance(alert, Alert)
        assert (alert.device, alert.metric, alert.time_ms, alert.value) == ("gw-7", "temp", t, v)
        assert math.isfinite(alert.score) and isinstance(alert.severity, Severity)
        assert isinstance(alert.kind, AlertKind) and alert.explanation
        assert alert.calibrated is not None and 0.0 <= alert.calibrated <= 1.0
    points = det.forecast(4)
    assert det.forecast(0) == []
    assert len(points) == 4 and all(isinstance(p, ForecastPoint) for p in points)
    assert [p.time_ms for p in points] == sorted({p.time_ms for p in points})
    assert points[0].time_ms > times[-1]
    assert all(p.low <= p.mean <= p.high for p in points)


def check_deterministic(kind: str) -> None:
    """The same samples give the same alerts, scores and forecasts (no hidden randomness or clock)."""
    times, values = stream()
    one, two = build(kind), build(kind)
    assert alerts_of(step_each(one, times, values)) == alerts_of(step_each(two, times, values))
    assert future(one, times[-1] + MINUTE) == future(two, times[-1] + MINUTE)


def check_finds_an_obvious_spike(kind: str) -> None:
    """After its warm-up on calm data, a sample a thousand sd away opens an episode (a deviation)."""
    rng = np.random.default_rng(5)
    det = build(kind)
    for i in range(600):
        det.step(i * MINUTE, 50.0 + float(rng.normal(0, 1.0)))
    det.step(600 * MINUTE, 50.0)  # any episode still open from the calm data closes in time
    for i in range(601, 700):
        det.step(i * MINUTE, 50.0 + float(rng.normal(0, 1.0)))
    alert = det.step(700 * MINUTE, 1050.0)
    assert alert is not None and alert.kind is AlertKind.DEVIATION and alert.score > alert.threshold


def check_step_many_matches_step(kind: str) -> None:
    """``step_many`` over runs of any length (empty, short, long) is ``step`` per sample."""
    times, values = stream()
    one, many = build(kind), build(kind)
    expected = alerts_of(step_each(one, times, values))
    got: list[tuple[int, dict[str, object]]] = []
    start = 0
    for size in (0, 1, 7, 8, 9, 0, 50, 425, 1, 500):
        got += [(start + i, a) for i, a in alerts_of(many.step_many(times[start:start + size],
                                                                      values[start:start + size]))]
        start += size
    got += [(start + i, a) for i, a in alerts_of(many.step_many(times[start:], values[start:]))]
    assert got == expected
    assert future(many, times[-1] + MINUTE) == future(one, times[-1] + MINUTE)


def check_non_finite_values_are_skipped(kind: str) -> None:
    """NaN and infinities alert nothing and teach nothing, one by one or in a run."""
    times, values = stream()
    finite = [(t, v) for t, v in zip(times, values, strict=True) if math.isfinite(v)]
    clean = build(kind)
    expected = step_each(clean, [t for t, _ in finite], [v for _, v in finite])
    det = build(kind)
    got = step_each(det, times, values)
    assert [a.to_json_dict() for _, a in got] == [a.to_json_dict() for _, a in expected]
    before = future(det, times[-1] + MINUTE)
    assert det.step_many([times[-1] + MINUTE * k for k in range(1, 11)], [math.nan] * 10) == []
    assert det.step(times[-1] + 11 * MINUTE, math.inf) is None
    assert future(det, times[-1] + MINUTE) == before


def check_empty_run_changes_nothing(kind: str) -> None:
    """``step_many([], [])`` is no alert and no change."""
    times, values = stream()
    det = build(kind)
    step_each(det, times, values)
    before = future(det, times[-1] + MINUTE)
    assert det.step_many([], []) == []
    assert future(det, times[-1] + MINUTE) == before


def check_state_survives_checkpoint_and_restore(kind: str) -> None:
    """An engine's checkpoint restores detectors that go on exactly as the originals (pickle round trip)."""
    config = {"detector": {"type": kind}}
    times, values = stream()
    samples = [("gw-1", "cpu", t, v) for t, v in zip(times, values, strict=True)]
    engine = AnomalyEngine(config)
    engine.observe_many(samples[:800])
    restored = AnomalyEngine(config)
    restored.restore(engine.checkpoint())
    assert type(restored.detector("gw-1", "cpu")) is type(engine.detector("gw-1", "cpu"))
    assert [a.to_json_dict() for a in restored.observe_many(samples[800:])] == \
        [a.to_json_dict() for a in engine.observe_many(samples[800:])]
    assert restored.forecast("gw-1", "cpu", 5) == engine.forecast("gw-1", "cpu", 5)
    copied = pickle.loads(pickle.dumps(engine.detector("gw-1", "cpu")))
    assert future(copied, times[-1] + MINUTE) == future(engine.detector("gw-1", "cpu"), times[-1] + MINUTE)


def check_peek_learns_nothing(kind: str) -> None:
    """``peek`` and ``peek_calibrated`` score a sample without learning from it."""
    times, values = stream()
    det = build(kind)
    step_each(det, times, values)
    twin = copy.deepcopy(det)
    for probe in (50.0, 500.0, -3.0):
        det.peek(times[-1] + MINUTE, probe)
        det.peek_calibrated(times[-1] + MINUTE, probe)
    assert future(det, times[-1] + MINUTE) == future(twin, times[-1] + MINUTE)
    assert det.step(times[-1] + MINUTE, 52.0) == twin.step(times[-1] + MINUTE, 52.0)


def yield_checks(kind: str) -> Iterator[Check]:
    """The checks every anomaly detector type must pass."""
    yield check_selected_by_type
    yield check_unknown_option_refused
    yield check_documented_types
    yield check_deterministic
    yield check_finds_an_obvious_spike
    yield check_step_many_matches_step
    yield check_non_finite_values_are_skipped
    yield check_empty_run_changes_nothing
    yield check_state_survives_checkpoint_and_restore
    yield check_peek_learns_nothing
