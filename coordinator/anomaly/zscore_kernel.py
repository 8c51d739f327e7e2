"""A numba-compiled :meth:`RobustZScoreDetector.step_many`: the same arithmetic, about ten times faster.

``step_many`` is the coordinator's ingest hot path and pure Python costs a few
microseconds per sample. The kernel here is its loop, statement for statement,
over numpy arrays: the same IEEE double operations in the same order (no
fastmath, no parallel), so results stay bit-identical to calling ``step`` per
sample (``tests/test_zscore_kernel.py`` holds the two equal, state included).

The kernel cannot build :class:`Alert` objects; where the loop would build one
it writes an event row with every number the alert builder would read at that
moment, and :func:`run_kernel` builds the alerts afterwards. Level acceptances
are events too, so the same debug line is logged.

numba is optional: without it (or with ``EDGEBUS_JIT=0`` in the environment)
:data:`AVAILABLE` is False, nothing here imports numba or numpy, and the
detector keeps its Python loop. The first call compiles (seconds); numba caches
the machine code beside this file, so later processes only load it. Call
:func:`warm_up` at start-up to pay that before the first batch.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from coordinator.anomaly.alert import Alert
from coordinator.anomaly.plugins.robust_zscore import _GAUSS_MAD, RobustZScoreDetector  # it imports us lazily

__all__ = ["AVAILABLE", "run_kernel", "warm_up"]

logger = logging.getLogger(__name__)

#: True when the compiled kernel can run: numba imports and ``EDGEBUS_JIT`` is not ``0``.
AVAILABLE = False
if os.environ.get("EDGEBUS_JIT", "").strip() != "0":
    try:
        import numba
        import numpy as np

        AVAILABLE = True
    except ImportError as exc:  # an optional speed-up: the Python loop is the reference anyway
        logger.debug("numba is not usable (%s); the anomaly detector runs in pure Python", exc)

# The float buffer: the state (F_*: every float the loop carries), the constants (C_*), the profile's values.
F_DT, F_OFFSET, F_SCALE, F_OFFSET_SCALE, F_RUN_SHIFT = 0, 1, 2, 3, 4
F_TH_U, F_TH_ME, F_TH_CR, F_TH_CMAX = 5, 6, 7, 8
F_DR_U, F_DR_ME, F_DR_CR, F_DR_CMAX = 9, 10, 11, 12
F_S_LAST, F_S_RR = 13, 14
F_SIZE = 15
# The int buffer: the state (I_*: every int and bool, None as a has-flag, and where the last/first times
# came from), the constants (K_*), the profile's counts.
I_N, I_LAST_MS, I_HAS_LAST, I_FIRST_MS, I_HAS_FIRST = 0, 1, 2, 3, 4
I_TH_EXC, I_TH_RUN, I_DR_EXC, I_DR_RUN = 5, 6, 7, 8
I_G_OPEN, I_G_NORMAL, I_G_BREACH, I_S_RUN, I_S_CHANGES, I_STUCK_OPEN = 9, 10, 11, 12, 13, 14
I_LAST_INDEX, I_FIRST_INDEX = 15, 16  # sample index that set last_ms (and stuck.last) / first_ms, or -1
I_SIZE = 17
C_BIN_MS, C_RATE_DIV, C_CLIP, C_LEVEL_ALPHA, C_SCALE_ALPHA, C_OFF_SCALE_ALPHA = 0, 1, 2, 3, 4, 5
C_TH_BQ, C_TH_FLOOR, C_TH_RATE, C_TH_RISK, C_TH_DOWN = 6, 7, 8, 9, 10
C_DR_BQ, C_DR_FLOOR, C_DR_RATE, C_DR_RISK, C_DR_DOWN = 11, 12, 13, 14, 15
C_S_LOG_IMPROBABILITY = 16
C_SIZE = 17
K_WARMUP, K_HALF_WARMUP, K_SEASON_MS, K_PERIOD, K_ADAPT_AFTER, K_CLOSE_AFTER, K_S_MIN = 0, 1, 2, 3, 4, 5, 6
K_SIZE = 7
# Event rows: (index, kind, then the numbers the alert builder or the log line needs).
EV_STUCK, EV_VALUE, EV_LEVEL = 0.0, 1.0, 2.0
E_INDEX, E_KIND, E_DEVIATION, E_DRIFT, E_EXPECTED, E_BASE, E_OFFSET, E_SCALE = 0, 1, 2, 3, 4, 5, 6, 7
E_THRESHOLD, E_DRIFT_THRESHOLD, E_RUN, E_REQUIRED = 8, 9, 10, 11
E_RUN_SHIFT, E_BREACH_RUN = 2, 3  # the level event's columns
E_SIZE = 12
EVENTS_PER_SAMPLE = 2  # an alert and a level acceptance (adapt_after == 1) can share a sample



def _kernel_py(times: Any, values: Any, floats: Any, ints: Any, events: Any) -> int:
    """``RobustZScoreDetector._step_many_python`` over arrays: state in place, alerts as event rows.

    ``floats`` is the float state, the float constants and the profile's
    values; ``ints`` the int state, the int constants and the profile's counts
    (two buffers, not six arrays: each argument costs the caller more than a
    short run takes). Keep the loop a line-by-line copy of the Python one
    (same operations, same order, comparisons for max/min): bit-identity
    rests on it.
    """
    fs, fc, pvalues = floats[:F_SIZE], floats[F_SIZE:F_SIZE + C_SIZE], floats[F_SIZE + C_SIZE:]
    ist, ic, pcounts = ints[:I_SIZE], ints[I_SIZE:I_SIZE + K_SIZE], ints[I_SIZE + K_SIZE:]
    warmup, half_warmup, season_ms = ic[K_WARMUP], ic[K_HALF_WARMUP], ic[K_SEASON_MS]
    period, adapt_after, close_after, s_min = ic[K_PERIOD], ic[K_ADAPT_AFTER], ic[K_CLOSE_AFTER], ic[K_S_MIN]
    bin_ms, rate_div, clip, level_alpha = fc[C_BIN_MS], fc[C_RATE_DIV], fc[C_CLIP], fc[C_LEVEL_ALPHA]
    scale_alpha, off_scale_alpha = fc[C_SCALE_ALPHA], fc[C_OFF_SCALE_ALPHA]
    th_bq, th_floor, th_rate, th_risk, th_down = fc[C_TH_BQ], fc[C_TH_FLOOR], fc[C_TH_RATE], fc[C_TH_RISK], \
        fc[C_TH_DOWN]
    dr_bq, dr_floor, dr_rate, dr_risk, dr_down = fc[C_DR_BQ], fc[C_DR_FLOOR], fc[C_DR_RATE], fc[C_DR_RISK], \
        fc[C_DR_DOWN]
    s_log_improbability = fc[C_S_LOG_IMPROBABILITY]
    nbins = len(pvalues)

    dt_ms, offset, scale, offset_scale, run_shift = fs[F_DT], fs[F_OFFSET], fs[F_SCALE], fs[F_OFFSET_SCALE], \
        fs[F_RUN_SHIFT]
    th_u, th_me, th_cr, th_cmax = fs[F_TH_U], fs[F_TH_ME], fs[F_TH_CR], fs[F_TH_CMAX]
    dr_u, dr_me, dr_cr, dr_cmax = fs[F_DR_U], fs[F_DR_ME], fs[F_DR_CR], fs[F_DR_CMAX]
    s_last, s_rr = fs[F_S_LAST], fs[F_S_RR]
    n, last_ms, has_last, first_ms, has_first = ist[I_N], ist[I_LAST_MS], ist[I_HAS_LAST] != 0, \
        ist[I_FIRST_MS], ist[I_HAS_FIRST] != 0
    th_exc, th_run, dr_exc, dr_run = ist[I_TH_EXC], ist[I_TH_RUN], ist[I_DR_EXC], ist[I_DR_RUN]
    g_open, g_normal, g_breach = ist[I_G_OPEN] != 0, ist[I_G_NORMAL], ist[I_G_BREACH]
    s_run, s_changes, stuck_open = ist[I_S_RUN], ist[I_S_CHANGES], ist[I_STUCK_OPEN] != 0
    last_index, first_index = ist[I_LAST_INDEX], ist[I_FIRST_INDEX]
    inf = math.inf
    k = 0
    for i in range(len(times)):
        time_ms = times[i]
        value = values[i]
        if not math.isfinite(value):
            continue
        if has_last and time_ms > last_ms:
            gap = float(time_ms - last_ms)
            dt_ms = gap if dt_ms == 0.0 else dt_ms + 0.05 * (gap - dt_ms)
        last_ms = time_ms
        has_last = True
        last_index = i
        if not has_first:
            first_ms = time_ms
            has_first = True
            first_index = i
        n += 1
        warm = n > warmup
        seasoned = warm and time_ms - first_ms >= season_ms

        # _judge, with SeasonalProfile.value / _neighbours
        if period:
            position = (time_ms % period) / bin_ms - 0.5
            below = math.floor(position)
            w = position - below
            lo, hi = below % nbins, (below + 1) % nbins
        else:
            lo = hi = 0
            w = 0.0
        seen_lo, seen_hi = pcounts[lo] > 0, pcounts[hi] > 0
        if seen_lo and seen_hi:
            base = pvalues[lo] * (1.0 - w) + pvalues[hi] * w
        elif seen_lo:
            base = pvalues[lo]
        elif seen_hi:
            base = pvalues[hi]
        else:
            base = value - offset
        expected = base + offset
        x = 1e-9 + 1e-6 * abs(expected)
        sc = x if x > scale else scale
        residual = value - expected
        deviation = abs(residual) / sc
        cs = clip * sc
        x = residual if residual < cs else cs
        clipped = x if x > -cs else -cs
        new_offset = offset + level_alpha * clipped
        m = offset_scale
        x = 0.05 * sc
        if x > m:
            m = x
        x = 1e-9 + 1e-6 * abs(base)
        if x > m:
            m = x
        drift = abs(new_offset) / m

        # StuckRun.update
        same = value == s_last
        if same:
            s_run += 1
        else:
            s_run = 1
            if not math.isnan(s_last):
                s_changes = 1_000_000 if s_changes + 1 > 1_000_000 else s_changes + 1
        s_last = value
        if s_run <= 3:
            s_rr += 0.02 * ((1.0 if same else 0.0) - s_rr)

        alerted = False
        if stuck_open and s_run == 1:
            stuck_open = False
        if warm and not stuck_open and s_run >= s_min and s_changes >= 10 and s_rr < 0.99:
            if s_rr <= 0.0:
                required = s_min
            else:
                c = math.ceil(s_log_improbability / math.log(s_rr))
                required = c if c > s_min else s_min
            if s_run >= required:
                stuck_open = alerted = True
                x = th_u + th_me * math.log((th_risk if th_risk > th_cr else th_cr) / th_risk)
                events[k, E_INDEX] = i
                events[k, E_KIND] = EV_STUCK
                events[k, E_EXPECTED] = expected
                events[k, E_SCALE] = scale
                events[k, E_THRESHOLD] = x if x > th_floor else th_floor
                events[k, E_RUN] = s_run
                events[k, E_REQUIRED] = required
                k += 1

        # PeaksOverThreshold.value, only where step's breach test reads it
        breach = False
        if warm and not stuck_open:
            x = th_u + th_me * math.log((th_risk if th_risk > th_cr else th_cr) / th_risk)
            if deviation > (x if x > th_floor else th_floor):
                breach = True
            elif seasoned:
                x = dr_u + dr_me * math.log((dr_risk if dr_risk > dr_cr else dr_cr) / dr_risk)
                breach = drift > (x if x > dr_floor else dr_floor)

        # EpisodeGate.update
        opened = False
        if breach:
            g_normal = 0
            g_breach += 1
            if not g_open:
                g_open = opened = True
        else:
            g_breach = 0
            if g_open:
                g_normal += 1
                if g_normal >= close_after:
                    g_open = False
        if opened and not alerted:
            events[k, E_INDEX] = i
            events[k, E_KIND] = EV_VALUE
            events[k, E_DEVIATION] = deviation
            events[k, E_DRIFT] = drift
            events[k, E_EXPECTED] = expected
            events[k, E_BASE] = base
            events[k, E_OFFSET] = new_offset
            events[k, E_SCALE] = scale
            x = th_u + th_me * math.log((th_risk if th_risk > th_cr else th_cr) / th_risk)
            events[k, E_THRESHOLD] = x if x > th_floor else th_floor
            x = dr_u + dr_me * math.log((dr_risk if dr_risk > dr_cr else dr_cr) / dr_risk)
            events[k, E_DRIFT_THRESHOLD] = x if x > dr_floor else dr_floor
            k += 1

        # _learn
        offset = new_offset
        if stuck_open:
            continue
        if breach:
            run_shift += (value - base - run_shift) / g_breach
            if g_breach >= adapt_after:
                events[k, E_INDEX] = i
                events[k, E_KIND] = EV_LEVEL
                events[k, E_RUN_SHIFT] = run_shift
                events[k, E_BREACH_RUN] = g_breach
                k += 1
                for j in range(nbins):  # SeasonalProfile.shift
                    pvalues[j] = pvalues[j] + run_shift
                offset = 0.0
                g_breach = 0
                run_shift = 0.0
            continue
        run_shift = 0.0
        limit = cs if n > 2 else inf
        x = 1.0 / n
        alpha = scale_alpha if scale_alpha > x else x
        y = abs(residual)
        scale += alpha * (_GAUSS_MAD * (limit if limit < y else y) - scale)
        off_limit = 2.0 * offset_scale if n > warmup else inf
        alpha = off_scale_alpha if off_scale_alpha > x else x
        y = abs(offset)
        offset_scale += alpha * (_GAUSS_MAD * (off_limit if off_limit < y else y) - offset_scale)
        x = base + limit
        y = value if value < x else x
        x = base - limit
        target = y if y > x else x
        # SeasonalProfile.sample_rate and .learn
        if period:
            x = dt_ms / rate_div
            rate = x if x < 0.5 else 0.5
        else:
            rate = 0.0
        share = 1.0 - w
        count = pcounts[lo]
        if not (share <= 0.0 and count > 0):
            count = 1_000_000 if count + 1 > 1_000_000 else count + 1
            pcounts[lo] = count
            x = 1.0 / count
            pvalues[lo] += (rate if rate > x else x) * (share if count > 1 else 1.0) * (target - pvalues[lo])
        count = pcounts[hi]
        if not (w <= 0.0 and count > 0):
            count = 1_000_000 if count + 1 > 1_000_000 else count + 1
            pcounts[hi] = count
            x = 1.0 / count
            pvalues[hi] += (rate if rate > x else x) * (w if count > 1 else 1.0) * (target - pvalues[hi])

        # PeaksOverThreshold.learn, deviation then drift
        if n > half_warmup:
            m = th_me
            x = 0.02 * th_u
            if x > m:
                m = x
            if m < 1e-3:
                m = 1e-3
            step = th_rate * m
            if deviation > th_u:
                th_cr *= 0.999
                th_run += 1
                x = deviation - th_u
                if x > th_cmax:
                    th_cmax = x
                if th_run <= 3 or th_exc < 20:
                    th_u += step * th_bq
            else:
                ended = th_run > 0
                th_cr += 0.001 * ((1.0 if ended else 0.0) - th_cr)
                if ended:
                    th_exc += 1
                    x = 1.0 / th_exc
                    th_me += (th_rate if th_rate > x else x) * (th_cmax - th_me)
                    th_run = 0
                    th_cmax = 0.0
                th_u -= step * th_down
        if seasoned:
            m = dr_me
            x = 0.02 * dr_u
            if x > m:
                m = x
            if m < 1e-3:
                m = 1e-3
            step = dr_rate * m
            if drift > dr_u:
                dr_cr *= 0.999
                dr_run += 1
                x = drift - dr_u
                if x > dr_cmax:
                    dr_cmax = x
                if dr_run <= 3 or dr_exc < 20:
                    dr_u += step * dr_bq
            else:
                ended = dr_run > 0
                dr_cr += 0.001 * ((1.0 if ended else 0.0) - dr_cr)
                if ended:
                    dr_exc += 1
                    x = 1.0 / dr_exc
                    dr_me += (dr_rate if dr_rate > x else x) * (dr_cmax - dr_me)
                    dr_run = 0
                    dr_cmax = 0.0
                dr_u -= step * dr_down

    fs[F_DT], fs[F_OFFSET], fs[F_SCALE], fs[F_OFFSET_SCALE], fs[F_RUN_SHIFT] = \
        dt_ms, offset, scale, offset_scale, run_shift
    fs[F_TH_U], fs[F_TH_ME], fs[F_TH_CR], fs[F_TH_CMAX] = th_u, th_me, th_cr, th_cmax
    fs[F_DR_U], fs[F_DR_ME], fs[F_DR_CR], fs[F_DR_CMAX] = dr_u, dr_me, dr_cr, dr_cmax
    fs[F_S_LAST], fs[F_S_RR] = s_last, s_rr
    ist[I_N], ist[I_LAST_MS], ist[I_HAS_LAST], ist[I_FIRST_MS], ist[I_HAS_FIRST] = \
        n, last_ms, has_last, first_ms, has_first
    ist[I_TH_EXC], ist[I_TH_RUN], ist[I_DR_EXC], ist[I_DR_RUN] = th_exc, th_run, dr_exc, dr_run
    ist[I_G_OPEN], ist[I_G_NORMAL], ist[I_G_BREACH] = g_open, g_normal, g_breach
    ist[I_S_RUN], ist[I_S_CHANGES], ist[I_STUCK_OPEN] = s_run, s_changes, stuck_open
    ist[I_LAST_INDEX], ist[I_FIRST_INDEX] = last_index, first_index
    return k


# Python's error model: a division by zero raises (as in the Python loop) instead of giving inf.
_kernel: Any = numba.njit(cache=True, error_model="python")(_kernel_py) if AVAILABLE else _kernel_py
_compiled = False


def warm_up() -> bool:
    """Compile (or load from the cache) now rather than on the first batch; True if the kernel is in use.

    A kernel that fails to compile turns itself off with a warning: ingest keeps the Python loop.
    """
    global AVAILABLE, _compiled
    if not AVAILABLE:
        return False
    if _compiled:
        return True
    logger.info("preparing the anomaly scoring kernel (numba: compiled once, then loaded from its cache)")
    started = time.perf_counter()
    try:  # an empty run has the argument types of every run: the one signature compiled
        _kernel(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(F_SIZE + C_SIZE + 1, np.float64),
                np.zeros(I_SIZE + K_SIZE + 1, np.int64), np.zeros((0, E_SIZE), np.float64))
    except Exception as exc:  # numba's own errors are many types; the Python loop still works
        logger.warning("the anomaly scoring kernel is off, the Python loop runs instead: %s", exc)
        AVAILABLE = False
        return False
    _compiled = True
    logger.debug("anomaly scoring kernel ready in %.2f s (%s)", time.perf_counter() - started,
                 "loaded from the cache" if _kernel.stats.cache_hits else "compiled")
    return True


def run_kernel(det: RobustZScoreDetector, times: Sequence[int], values: Sequence[float]
               ) -> list[tuple[int, Alert]]:
    """``det.step_many(times, values)`` through the compiled kernel; the detector ends in the same state.

    Inputs the kernel cannot take exactly (times that are not all ints, values
    that are not all ints or floats, a length mismatch) and a run that would
    raise (an alert that cannot be built) go to the Python loop, which then
    behaves (and raises) exactly as it always did: the kernel works on copies,
    so nothing was changed yet.
    """
    count = len(times)
    if len(values) != count:
        return det._step_many_python(times, values)
    t = np.ascontiguousarray(times)
    v = np.ascontiguousarray(values)
    if t.dtype != np.int64 or t.ndim != 1 or v.ndim != 1:
        return det._step_many_python(times, values)
    if v.dtype != np.float64:
        # ints beyond 2**53 compare exactly in Python but not as doubles
        if v.dtype != np.int64 or (count and (v.max() > 2 ** 53 or v.min() < -(2 ** 53))):
            return det._step_many_python(times, values)
        v = v.astype(np.float64)
    if not _compiled and not warm_up():
        return det._step_many_python(times, values)
    try:
        return _run(det, times, values, t, v)
    except (ArithmeticError, ValueError):
        return det._step_many_python(times, values)


def _run(det: RobustZScoreDetector, times: Sequence[int], values: Sequence[float], t: Any, v: Any
         ) -> list[tuple[int, Alert]]:
    """Pack, run, build the alerts, and only then write the state back (so that a failure changes nothing)."""
    count = len(t)
    opts, profile, stuck, gate = det.opts, det.profile, det.stuck, det.gate
    th, dr = det.threshold, det.drift_threshold
    last_ms, first_ms = det.last_ms, det.first_ms
    floats = np.array([det.dt_ms, det.offset, det.scale, det.offset_scale, det.run_shift,  # F_*
                       th.u, th.mean_excess, th.cluster_rate, th.cluster_max,
                       dr.u, dr.mean_excess, dr.cluster_rate, dr.cluster_max,
                       stuck.last, stuck.repeat_rate,
                       profile.bin_ms, profile.bin_ms * profile.memory_periods, opts.clip,  # C_*
                       opts.level_alpha, opts.scale_alpha, opts.scale_alpha / 10,
                       th.base_quantile, th.floor, th.rate, th.risk, 1.0 - th.base_quantile,
                       dr.base_quantile, dr.floor, dr.rate, dr.risk, 1.0 - dr.base_quantile,
                       math.log(stuck.improbability), *profile.values], dtype=np.float64)
    ints = np.array([det.n, 0 if last_ms is None else last_ms, last_ms is not None,  # I_*
                     0 if first_ms is None else first_ms, first_ms is not None,
                     th.excesses, th.run, dr.excesses, dr.run,
                     gate.is_open, gate.normal_run, gate.breach_run, stuck.run, stuck.changes, det.stuck_open,
                     -1, -1,
                     opts.warmup, opts.warmup // 2, opts.season_ms, profile.period_ms,  # K_*
                     opts.adapt_after, gate.close_after, stuck.min_samples, *profile.counts], dtype=np.int64)
    events = np.empty((EVENTS_PER_SAMPLE * count, E_SIZE), dtype=np.float64)

    found: list[tuple[int, Alert]] = []
    levels: list[tuple[float, int]] = []
    written = _kernel(t, v, floats, ints, events)
    for row in events[:written].tolist():
        i, kind = int(row[E_INDEX]), row[E_KIND]
        if kind == EV_VALUE:
            found.append((i, det._value_alert(
                times[i], values[i], row[E_DEVIATION], row[E_DRIFT], row[E_EXPECTED], row[E_BASE],
                row[E_OFFSET], scale=row[E_SCALE], threshold=row[E_THRESHOLD],
                drift_threshold=row[E_DRIFT_THRESHOLD])))
        elif kind == EV_STUCK:
            found.append((i, det._stuck_alert(times[i], values[i], int(row[E_RUN]), int(row[E_REQUIRED]),
                                              row[E_EXPECTED], scale=row[E_SCALE],
                                              threshold=row[E_THRESHOLD])))
        else:
            levels.append((row[E_RUN_SHIFT], int(row[E_BREACH_RUN])))

    fl, il = floats.tolist(), ints.tolist()
    (det.dt_ms, det.offset, det.scale, det.offset_scale, det.run_shift,
     th.u, th.mean_excess, th.cluster_rate, th.cluster_max,
     dr.u, dr.mean_excess, dr.cluster_rate, dr.cluster_max, _, stuck.repeat_rate) = fl[:F_SIZE]
    (det.n, _, _, _, _, th.excesses, th.run, dr.excesses, dr.run, g_open, gate.normal_run, gate.breach_run,
     stuck.run, stuck.changes, stuck_open, last_index, first_index) = il[:I_SIZE]
    gate.is_open, det.stuck_open = bool(g_open), bool(stuck_open)
    if last_index >= 0:  # the caller's objects, as the Python loop keeps them (an int value stays an int)
        det.last_ms, stuck.last = times[last_index], values[last_index]
    if first_index >= 0:
        det.first_ms = times[first_index]
    profile.values[:] = fl[F_SIZE + C_SIZE:]
    profile.counts[:] = il[I_SIZE + K_SIZE:]
    if levels:
        log = logging.getLogger(type(det).__module__)
        for run_shift, breach_run in levels:
            log.debug("%s/%s: accepting a new level (%+.4g) after %d anomalous samples",
                      det.device, det.metric, run_shift, breach_run)
    return found
