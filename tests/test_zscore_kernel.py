"""The compiled step_many kernel against ``step`` per sample: alerts, logs and state, bits and types."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("numba")

from coordinator.anomaly import AlertKind, AnomalyEngine, zscore_kernel
from coordinator.anomaly.alert import Alert
from coordinator.anomaly.base import StreamDetector
from coordinator.anomaly.plugins import robust_zscore
from coordinator.anomaly.plugins.robust_zscore import RobustZScoreDetector, RobustZScoreOptions
from coordinator.anomaly.series_shape import CONTINUOUS, LEVELS, SPARSE

MINUTE = 60_000
DAY_MS = 86_400_000
ROOT = Path(__file__).resolve().parent.parent
DETECTOR_LOG = "coordinator.anomaly.plugins.robust_zscore"
RUN_KERNEL = zscore_kernel.run_kernel  # the kernel whatever the run's length (tests patch the attribute)


def run_uncompiled(det: RobustZScoreDetector, times: Sequence[int], values: Sequence[float]) -> Any:
    """The same kernel run as plain Python, as on a machine without numba."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zscore_kernel, "AVAILABLE", False)
        return RUN_KERNEL(det, times, values)


def step_each(det: RobustZScoreDetector, times: Sequence[int], values: Sequence[float]) -> Any:
    """The reference: ``step`` per sample."""
    return StreamDetector.step_many(det, times, values)

OPTIONS = {
    "defaults": RobustZScoreOptions(),
    "flat": RobustZScoreOptions(warmup=30, season_ms=0),
    "one-bin": RobustZScoreOptions(warmup=20, season_ms=3_600_000, season_bins=1, adapt_after=5,
                                   close_after=3, stuck_samples=5),
    "seven-bins": RobustZScoreOptions(warmup=40, season_ms=600_000, season_bins=7, min_threshold=1.0),
    # adapt_after=1: a level is accepted on the very sample that opens the episode (two events there).
    "eager": RobustZScoreOptions(warmup=10, season_ms=0, adapt_after=1, close_after=1, stuck_samples=2),
    "fast": RobustZScoreOptions(warmup=16, season_ms=7_200_000, season_bins=48, season_memory=0.1, risk=0.05,
                                base_quantile=0.5, threshold_rate=1.0, clip=1.0, level_alpha=1.0,
                                scale_alpha=1.0),
}
SEEDS = range(18)


def typed(obj: object) -> object:
    """A value with the type of every leaf (floats by their hex, so -0.0 and NaN compare too)."""
    if isinstance(obj, float):
        return (type(obj).__name__, "nan" if math.isnan(obj) else obj.hex())
    if isinstance(obj, list | tuple):
        return [type(obj).__name__, *(typed(v) for v in obj)]
    if isinstance(obj, Alert):
        return [(f.name, typed(getattr(obj, f.name))) for f in dataclasses.fields(obj)]
    slots = getattr(type(obj), "__slots__", None)
    if slots and not isinstance(obj, RobustZScoreOptions):
        return {k: typed(getattr(obj, k)) for k in slots}
    return (type(obj).__name__, obj)


def stream(n: int, seed: int) -> list[tuple[int, float]]:
    """A seeded stream of one of three families (by ``seed % 3``), in segments of a seeded order, with odd
    gaps and repeated or backward times, some int values and some non-finite ones:

    * a gauge: calm, spikes, level shifts, drifts, stuck runs, quantised (int) stretches and a noiseless
      fast cycle (which the trend predictor judges);
    * a sparse counter: bursts on zeros, storms, giant bursts, long zero runs and dense stretches (which
      make it continuous for a while);
    * a series of levels: square waves and states, values off the levels, new levels, big jumps, stuck
      runs and noisy stretches (which make it continuous for good).
    """
    rng = np.random.default_rng(seed)
    family = seed % 3
    t = int(rng.choice([0, 1_700_000_000_123, -36_000_000]))  # negative times exercise the floor modulo
    every = int(rng.choice([MINUTE, 10_000, 5 * MINUTE]))
    noise = float(rng.choice([0.01, 1.0, 4.0]))
    level, out, size = 50.0, [], max(noise, 1.0)  # the size of anomalies
    low, step, high = float(rng.integers(0, 20)), float(rng.choice([1.0, 2.5, 10.0])), 3
    burst_rate, burst_size = float(rng.uniform(0.05, 0.3)), float(rng.uniform(1, 500))
    segments = (["calm", "spikes", "shift", "drift", "stuck", "quantised", "bad", "cycle"],
                ["quiet", "quiet", "storm", "giant", "zeros", "dense", "bad"],
                ["wave", "wave", "state", "offlevel", "newlevel", "jump", "stuck", "noisy", "bad"])[family]
    while len(out) < n:
        kind = rng.choice(segments)
        length = int(rng.integers(30, 400)) if kind != "dense" else int(rng.integers(300, 700))
        slope = float(rng.uniform(0.02, 0.2)) * noise
        stuck_at: float = round(level) if rng.random() < 0.5 else level + 0.25
        if kind == "shift":
            level += float(rng.choice([-1, 1]) * rng.uniform(10, 30)) * size
        if kind == "newlevel":
            high += 1
        period = int(rng.integers(4, 40))
        state = int(rng.integers(0, high + 1))
        for j in range(length):
            t += int(rng.choice([every, every, every, 0, every // 2, 2 * every, -5, 50 * every]))
            x: float
            if family == 0:
                x = level + 10 * math.sin(2 * math.pi * t / DAY_MS) + float(rng.normal(0, noise))
                if kind == "spikes" and rng.random() < 0.03:
                    x += float(rng.choice([-1, 1]) * rng.uniform(5, 80)) * size
                elif kind == "drift":
                    x += j * slope
                elif kind == "stuck" and j > 10:
                    x = stuck_at
                elif kind == "quantised":
                    x = round(x)
                elif kind == "cycle":
                    x = level + 20 * math.sin(2 * math.pi * j / 25)
            elif family == 1:
                rate = {"storm": 0.9, "zeros": 0.0, "dense": 1.0}.get(str(kind), burst_rate)
                x = 0.0
                if rng.random() < rate:
                    x = float(round(burst_size * math.exp(rng.normal(0, 0.7))
                                    * (8 if kind == "storm" else 1)))
                if kind == "giant" and j == length // 2:
                    x = burst_size * 1e4
            else:
                if kind in ("wave", "offlevel", "newlevel", "jump"):
                    x = low + step * (high if (j // period) % 2 else 0)
                else:
                    if rng.random() < 0.1:
                        state = min(high, max(0, state + int(rng.choice([-1, 1]))))
                    x = low + step * state
                if kind == "offlevel" and rng.random() < 0.03:
                    x += step * float(rng.uniform(-5, 5))
                elif kind == "jump" and j == length // 2:
                    x = low + step * 20 * high
                elif kind == "stuck" and j > 10:
                    x = low
                elif kind == "noisy":
                    x += float(rng.normal(0, step))
            if kind == "bad" and rng.random() < 0.03:
                x = float(rng.choice([math.nan, math.inf, -math.inf]))
            if rng.random() < 0.02 or (family and j % 7 == 0):
                x = round(x) if math.isfinite(x) else x
            out.append((t, x))
        if kind == "drift":
            level += length * slope
    return out[:n]


def chunks(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Chunk bounds below, at and above the dispatch threshold, empty ones included."""
    bounds, start, at = [], 0, robust_zscore._KERNEL_MIN_RUN
    while start < n:
        size = int(rng.choice([rng.integers(0, at), rng.integers(at - 2, at + 3), rng.integers(at, 600)]))
        bounds.append((start, min(n, start + size)))
        start += size
    return bounds


class Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


@pytest.fixture
def detector_logs() -> Any:
    logs, log = Logs(), logging.getLogger(DETECTOR_LOG)
    level = log.level
    log.addHandler(logs)
    log.setLevel(logging.DEBUG)
    yield logs
    log.removeHandler(logs)
    log.setLevel(level)


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lengths of the runs step_many handed to the kernel."""
    calls: list[int] = []
    real = zscore_kernel.run_kernel

    def counting(det: RobustZScoreDetector, times: Sequence[int], values: Sequence[float]) -> Any:
        calls.append(len(times))
        return real(det, times, values)

    monkeypatch.setattr(zscore_kernel, "run_kernel", counting)
    return calls


def test_warm_up_compiles_the_kernel() -> None:
    assert zscore_kernel.AVAILABLE
    assert zscore_kernel.warm_up()


@pytest.mark.parametrize("name", OPTIONS)
@pytest.mark.parametrize("seed", SEEDS)
def test_kernel_is_step_bit_for_bit(name: str, seed: int, detector_logs: Logs,
                                    kernel_calls: list[int]) -> None:
    opts = OPTIONS[name]
    samples = stream(2000, seed)
    one, many, direct, plain = (RobustZScoreDetector("gw-1", "cpu", opts) for _ in range(4))
    rng = np.random.default_rng(seed)
    alerts = 0
    for start, end in chunks(len(samples), rng):
        times, values = [t for t, _ in samples[start:end]], [v for _, v in samples[start:end]]
        expected = [(i, a) for i, (t, v) in enumerate(zip(times, values, strict=True))
                    if (a := one.step(t, v)) is not None]
        expected_logs = detector_logs.take()
        got = many.step_many(times, values)  # dispatches by length
        assert typed(got) == typed(expected), (start, end)
        assert detector_logs.take() == expected_logs
        assert typed(many) == typed(one), (start, end)
        got = RUN_KERNEL(direct, times, values)
        assert typed(got) == typed(expected), (start, end)
        assert detector_logs.take() == expected_logs
        assert typed(direct) == typed(one), (start, end)
        got = run_uncompiled(plain, times, values)
        assert typed(got) == typed(expected), (start, end)
        assert detector_logs.take() == expected_logs
        assert typed(plain) == typed(one), (start, end)
        alerts += len(expected)
    assert alerts
    assert kernel_calls and min(kernel_calls) >= robust_zscore._KERNEL_MIN_RUN


def test_the_streams_hold_every_kind_of_event(detector_logs: Logs) -> None:
    """What the bit-for-bit test covers: every alert kind and every score behind a deviation, every kind of
    series and changes of kind, level acceptances, int and non-finite values."""
    kinds: set[AlertKind] = set()
    reasons: set[str] = set()
    judged: set[int] = set()
    accepted = changed = ints = bad = 0
    explained = {"the expected": "profile", "trend predicts": "trend", "unlike the levels": "levels",
                 "burst of": "burst size", "bursts in": "burst rate", "has drifted": "drift",
                 "stuck at": "stuck"}
    for name in ("defaults", "one-bin", "eager"):
        for seed in SEEDS[:12]:
            det = RobustZScoreDetector("gw-1", "cpu", OPTIONS[name])
            samples = stream(2000, seed)
            for t, v in samples:
                alert = det.step(t, v)
                judged.add(det.kind)
                if alert is not None:
                    kinds.add(alert.kind)
                    reasons |= {r for text, r in explained.items() if text in alert.explanation}
            ints += sum(isinstance(v, int) for _, v in samples)
            bad += sum(not math.isfinite(v) for _, v in samples)
            lines = detector_logs.take()
            accepted += sum("accepting a new level" in line for line in lines)
            changed += sum("series from now on" in line for line in lines)
    assert kinds == {AlertKind.DEVIATION, AlertKind.DRIFT, AlertKind.STUCK}
    assert reasons == set(explained.values())
    assert judged == {CONTINUOUS, SPARSE, LEVELS}
    assert accepted > 10 and changed > 3 and ints > 100 and bad > 10


@pytest.mark.parametrize("tail_shape", [True, False])
def test_kernel_is_step_bit_for_bit_with_a_shaped_tail(tail_shape: bool) -> None:
    """A heavy-tailed gauge (Student t noise, spikes, a level shift and a sparse stretch that resets the
    threshold): the deviation threshold measures a shape, and alerts are built from the shaped tail."""
    rng = np.random.default_rng(42)
    n = 6000
    values = 50.0 + 5.0 * np.sin(2 * math.pi * np.arange(n) / 288) + rng.standard_t(3, n)
    values[rng.integers(300, n, 12)] += rng.choice([-1.0, 1.0], 12) * 40.0
    values[3000:4000] = np.where(rng.random(1000) < 0.98, 0.0, values[3000:4000])
    values[4500:] += 25.0
    opts = RobustZScoreOptions(tail_shape=tail_shape)
    one, many = RobustZScoreDetector("gw-1", "cpu", opts), RobustZScoreDetector("gw-1", "cpu", opts)
    shapes, kinds, alerts = [], set(), 0
    for start in range(0, n, 500):
        times = [i * 5 * MINUTE for i in range(start, start + 500)]
        chunk = values[start:start + 500].tolist()
        expected = []
        for i, (t, v) in enumerate(zip(times, chunk, strict=True)):
            if (a := one.step(t, v)) is not None:
                expected.append((i, a))
            kinds.add(one.kind)
            shapes.append(one.threshold.shape)
        assert typed(RUN_KERNEL(many, times, chunk)) == typed(expected), start
        assert typed(many) == typed(one), start
        alerts += len(expected)
    assert (max(shapes) > 0.0) is tail_shape
    assert kinds == {CONTINUOUS, SPARSE} and one.kind == CONTINUOUS  # a reset threshold, shaped again
    assert alerts > 5


def test_short_runs_take_step_and_a_disabled_jit_runs_the_kernel_as_python(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the kernel ran")

    monkeypatch.setattr(zscore_kernel, "run_kernel", refuse)
    det = RobustZScoreDetector("gw-1", "cpu", OPTIONS["flat"])
    short = robust_zscore._KERNEL_MIN_RUN - 1
    det.step_many(list(range(short)), [1.0] * short)
    with pytest.raises(AssertionError, match="the kernel ran"):
        det.step_many(list(range(short + 1)), [1.0] * (short + 1))
    monkeypatch.undo()
    monkeypatch.setattr(zscore_kernel, "AVAILABLE", False)
    monkeypatch.setattr(zscore_kernel, "_compiled_kernel", refuse)
    plain_runs: list[int] = []
    real = zscore_kernel.step_many_kernel

    def counting(times: Any, *args: Any) -> int:
        plain_runs.append(len(times))
        return real(times, *args)

    monkeypatch.setattr(zscore_kernel, "step_many_kernel", counting)
    samples = stream(1000, 3)
    reference, det = (RobustZScoreDetector("gw-1", "cpu", OPTIONS["flat"]) for _ in range(2))
    expected = step_each(reference, [t for t, _ in samples], [v for _, v in samples])
    assert typed(det.step_many([t for t, _ in samples], [v for _, v in samples])) == typed(expected)
    assert typed(det) == typed(reference)
    assert plain_runs == [1000]  # the plain Python kernel ran, the compiled one never


def run_python(code: str, **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


CHECK_PURE = """
import sys
{setup}
from coordinator.anomaly import zscore_kernel
from coordinator.anomaly.plugins.robust_zscore import RobustZScoreDetector, RobustZScoreOptions
det = RobustZScoreDetector("gw-1", "cpu", RobustZScoreOptions(warmup=10, season_ms=0))
found = det.step_many([i * 1000 for i in range(200)], [1.0 + i % 3 for i in range(199)] + [99.0])
print(zscore_kernel.AVAILABLE, zscore_kernel.warm_up(), sys.modules.get("numba") is not None,
      [i for i, _ in found])
"""


def test_edgebus_jit_0_keeps_numba_out() -> None:
    assert run_python(CHECK_PURE.format(setup=""), EDGEBUS_JIT="0") == "False False False [199]"


def test_without_numba_the_module_imports_and_the_loop_runs() -> None:
    setup = "sys.modules['numba'] = None  # import numba now raises ImportError"
    assert run_python(CHECK_PURE.format(setup=setup)) == "False False False [199]"


def test_the_first_call_logs_the_compilation(monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(zscore_kernel, "_compiled", False)
    with caplog.at_level(logging.INFO, logger=zscore_kernel.__name__):
        zscore_kernel.run_kernel(RobustZScoreDetector("gw-1", "cpu", RobustZScoreOptions()), [0], [1.0])
        zscore_kernel.run_kernel(RobustZScoreDetector("gw-1", "cpu", RobustZScoreOptions()), [0], [1.0])
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == \
        ["preparing the anomaly scoring kernel (numba: compiled once, then loaded from its cache)"]


def test_a_checkpoint_taken_after_the_kernel_restores_to_the_python_paths_future() -> None:
    config = {"detector": {"warmup": 30}, "metrics": {"temp": {"season_ms": 3_600_000, "season_bins": 6}}}
    past = [("gw-1", metric, t, v) for metric, seed in (("cpu", 3), ("temp", 4))
            for t, v in stream(3000, seed)]
    future = [("gw-1", metric, t, v) for metric, seed in (("cpu", 3), ("temp", 4))
              for t, v in stream(6000, seed)[3000:]]
    kernel, reference = AnomalyEngine(config), AnomalyEngine(config)
    assert typed(kernel.observe_many(past)) == typed([a for s in past for a in reference.observe(*s)])
    blob = kernel.checkpoint()
    assert b"numpy" not in blob  # plain Python state: no numpy scalars or arrays were left behind
    restored = AnomalyEngine(config)
    restored.restore(blob)
    for key, det in reference._streams.items():
        assert typed(restored._streams[key]) == typed(det)
    again = AnomalyEngine(config)
    again.restore(blob)
    expected = [a for s in future for a in reference.observe(*s)]
    got = [a for s in future for a in restored.observe(*s)]
    assert len(expected) > 3 and typed(got) == typed(expected)
    assert typed(again.observe_many(future)) == typed(expected)  # the kernel from restored state too
    for key, det in reference._streams.items():
        assert typed(again._streams[key]) == typed(det)


def same_outcome(feed: Callable[[Any], object], warm: list[tuple[int, float]]) -> None:
    """``feed`` gives (or raises) the same on the kernel, compiled or not, as ``step`` does, and leaves
    the same state."""
    pure, jit, plain = (RobustZScoreDetector("gw-1", "cpu", OPTIONS["flat"]) for _ in range(3))
    for det in (pure, jit, plain):
        step_each(det, [t for t, _ in warm], [v for _, v in warm])
    outcomes = []
    for step_many in (lambda t, v: step_each(pure, t, v), lambda t, v: RUN_KERNEL(jit, t, v),
                      lambda t, v: run_uncompiled(plain, t, v)):
        try:
            outcomes.append(typed(feed(step_many)))
        except Exception as exc:
            outcomes.append((type(exc).__name__, str(exc)))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert typed(jit) == typed(pure)
    assert typed(plain) == typed(pure)


@pytest.mark.parametrize("case", ["none-value", "str-value", "lengths", "float-times", "huge-ints",
                                  "infinite-score", "empty"])
def test_odd_inputs_behave_as_step(case: str) -> None:
    warm = [(i * MINUTE, 50.0 + 0.001 * math.sin(i)) for i in range(200)]  # a tiny scale: scores can overflow
    times = [(200 + i) * MINUTE for i in range(40)]
    values: list[Any] = [50.0 + 0.001 * math.cos(i) for i in range(40)]
    feeds: dict[str, Callable[[Any], object]] = {
        "none-value": lambda f: f(times, [*values[:20], None, *values[21:]]),
        "str-value": lambda f: f(times, [*values[:20], "51.0", *values[21:]]),
        "lengths": lambda f: f(times, values[:-1]),
        "float-times": lambda f: f([t + 0.5 for t in times], values),
        "huge-ints": lambda f: f(times, [2 ** 60 + i // 3 for i in range(40)]),  # equal as doubles
        "infinite-score": lambda f: f(times, [*values[:30], 1e308, *values[31:]]),
        "empty": lambda f: f([], []),
    }
    same_outcome(feeds[case], warm)


def test_numpy_array_input_scores_as_lists() -> None:
    samples = stream(3000, 5)
    lists, arrays = (RobustZScoreDetector("gw-1", "cpu", OPTIONS["defaults"]) for _ in range(2))
    expected = step_each(lists, [t for t, _ in samples], [v for _, v in samples])
    got = RUN_KERNEL(arrays, np.array([t for t, _ in samples]), np.array([float(v) for _, v in samples]))
    assert [(i, a.score, a.kind) for i, a in got] == [(i, a.score, a.kind) for i, a in expected]
    assert typed(arrays.profile) == typed(lists.profile) and typed(arrays.threshold) == typed(lists.threshold)


def test_the_kernel_cache_goes_stale_when_a_module_it_takes_constants_from_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """numba stamps its cache with the kernel's own file only; a changed threshold.py must recompile."""
    from types import SimpleNamespace

    def stamp_with(threshold_source: str) -> object:
        source = tmp_path / "threshold.py"
        source.write_text(threshold_source)
        fake = SimpleNamespace(__file__=str(source))
        monkeypatch.setitem(sys.modules, "coordinator.anomaly.threshold", fake)
        cache_file = SimpleNamespace(_source_stamp=("mtime", "size"))
        zscore_kernel._stamp_with_constants(SimpleNamespace(_cache=SimpleNamespace(_cache_file=cache_file)))
        return cache_file._source_stamp

    assert stamp_with("SHAPE_DOUBT = 1.645\n") == stamp_with("SHAPE_DOUBT = 1.645\n")
    assert stamp_with("SHAPE_DOUBT = 1.645\n") != stamp_with("SHAPE_DOUBT = 1.0\n")


def test_the_compiled_kernels_cache_is_stamped_with_its_constant_modules() -> None:
    if not zscore_kernel.AVAILABLE:
        pytest.skip("numba kernel off (EDGEBUS_JIT=0)")
    stamp = zscore_kernel._compiled_kernel._cache._cache_file._source_stamp
    assert isinstance(stamp, tuple) and len(stamp) == 2 and len(stamp[1]) == 64
