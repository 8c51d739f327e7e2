"""The batch loop of :meth:`RobustZScoreDetector.step_many`: one function, compiled by numba when it can be.

``step_many`` is the coordinator's ingest hot path. :func:`step_many_kernel`
is ``step`` over a run of samples in one loop over local variables; with numba
it is compiled (about ten times faster than plain Python), without it it runs
as plain Python over lists. Either way it does the same IEEE double operations
in the same order as ``step`` (no fastmath, no parallel), so results stay
bit-identical to calling ``step`` per sample (``tests/test_zscore_kernel.py``
holds them equal, state included). ``step`` stays the readable reference.

The kernel cannot build :class:`Alert` objects; where ``step`` would build one
it writes an event row with every number the alert builder would read at that
moment, and :func:`run_kernel` builds the alerts afterwards. Level acceptances
are events too, so the same debug line is logged.

numba is optional: without it (or with ``EDGEBUS_JIT=0`` in the environment)
:data:`AVAILABLE` is False, nothing here imports numba or numpy, and the
kernel runs as plain Python. The first compiled call compiles (seconds); numba
caches the machine code beside this file, so later processes only load it.
Call :func:`warm_up` at start-up to pay that before the first batch.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from coordinator.anomaly.alert import Alert
from coordinator.anomaly.base import StreamDetector
from coordinator.anomaly.plugins.robust_zscore import _GAUSS_MAD, RobustZScoreDetector  # it imports us lazily

__all__ = ["AVAILABLE", "run_kernel", "step_many_kernel", "warm_up"]

logger = logging.getLogger(__name__)

#: True when the compiled kernel can run: numba imports and ``EDGEBUS_JIT`` is not ``0``.
AVAILABLE = False
if os.environ.get("EDGEBUS_JIT", "").strip() != "0":
    try:
        import numba
        import numpy as np

        AVAILABLE = True
    except ImportError as exc:  # an optional speed-up: the same kernel runs as plain Python
        logger.debug("numba is not usable (%s); the anomaly scoring kernel runs as plain Python", exc)

# The float buffer: the state (F_*: every float the loop carries), the constants (C_*), then from P0 the
# profile's values.
F_DT, F_OFFSET, F_SCALE, F_OFFSET_SCALE, F_RUN_SHIFT = 0, 1, 2, 3, 4
F_TH_U, F_TH_ME, F_TH_CR, F_TH_CMAX = 5, 6, 7, 8
F_DR_U, F_DR_ME, F_DR_CR, F_DR_CMAX = 9, 10, 11, 12
F_S_LAST, F_S_RR = 13, 14
F_SIZE = 15
# The int buffer: the state (I_*: every int and bool, None as a has-flag, and where the last/first times
# came from), the constants (K_*), then from Q0 the profile's counts.
I_N, I_LAST_MS, I_HAS_LAST, I_FIRST_MS, I_HAS_FIRST = 0, 1, 2, 3, 4
I_TH_EXC, I_TH_RUN, I_DR_EXC, I_DR_RUN = 5, 6, 7, 8
I_G_OPEN, I_G_NORMAL, I_G_BREACH, I_S_RUN, I_S_CHANGES, I_STUCK_OPEN = 9, 10, 11, 12, 13, 14
I_LAST_INDEX, I_FIRST_INDEX = 15, 16  # sample index that set last_ms (and stuck.last) / first_ms, or -1
I_SIZE = 17
C_BIN_MS, C_RATE_DIV, C_CLIP, C_LEVEL_ALPHA, C_SCALE_ALPHA, C_OFF_SCALE_ALPHA = 15, 16, 17, 18, 19, 20
C_TH_BQ, C_TH_FLOOR, C_TH_RATE, C_TH_RISK, C_TH_DOWN = 21, 22, 23, 24, 25
C_DR_BQ, C_DR_FLOOR, C_DR_RATE, C_DR_RISK, C_DR_DOWN = 26, 27, 28, 29, 30
C_S_LOG_IMPROBABILITY = 31
P0 = 32
K_WARMUP, K_HALF_WARMUP, K_SEASON_MS, K_PERIOD = 17, 18, 19, 20
K_ADAPT_AFTER, K_CLOSE_AFTER, K_S_MIN = 21, 22, 23
Q0 = 24
# Event rows: (index, kind, then the numbers the alert builder or the log line needs).
EV_STUCK, EV_VALUE, EV_LEVEL = 0.0, 1.0, 2.0
E_INDEX, E_KIND, E_DEVIATION, E_DRIFT, E_EXPECTED, E_BASE, E_OFFSET, E_SCALE = 0, 1, 2, 3, 4, 5, 6, 7
E_THRESHOLD, E_DRIFT_THRESHOLD, E_RUN, E_REQUIRED = 8, 9, 10, 11
E_RUN_SHIFT, E_BREACH_RUN = 2, 3  # the level event's columns
E_SIZE = 12
EVENTS_PER_SAMPLE = 2  # an alert and a level acceptance (adapt_after == 1) can share a sample


def step_many_kernel(times: Any, values: Any, floats: Any, ints: Any, events: Any) -> int:
    """:meth:`RobustZScoreDetector.step` over a run, in one loop: state in place, alerts as event rows.

    ``floats`` holds the float state (``F_*``), the float constants (``C_*``)
    and from ``P0`` the profile's values; ``ints`` the int state (``I_*``),
    the int constants (``K_*``) and from ``Q0`` the profile's counts (two
    buffers, not six arrays: each argument costs the compiled call more than a
    short run takes). ``events`` is flat, ``E_SIZE`` numbers per event. The
    same function runs compiled (numpy arrays) and as plain Python (lists);
    it indexes, never slices, so both change the caller's buffers.

    It is ``step`` with its helpers (profile, thresholds, stuck run, episode
    gate) inlined over local variables: the same IEEE double operations in the
    same order, ``max``/``min`` written as comparisons that return the operand
    the builtins would, ties included. Bit-identity with ``step`` rests on
    that (``tests/test_zscore_kernel.py``).
    """
    warmup, half_warmup, season_ms = ints[K_WARMUP], ints[K_HALF_WARMUP], ints[K_SEASON_MS]
    period, adapt_after = ints[K_PERIOD], ints[K_ADAPT_AFTER]
    close_after, s_min = ints[K_CLOSE_AFTER], ints[K_S_MIN]
    bin_ms, rate_div, clip = floats[C_BIN_MS], floats[C_RATE_DIV], floats[C_CLIP]
    level_alpha, scale_alpha, off_scale_alpha = floats[C_LEVEL_ALPHA], floats[C_SCALE_ALPHA], \
        floats[C_OFF_SCALE_ALPHA]
    th_bq, th_floor, th_rate = floats[C_TH_BQ], floats[C_TH_FLOOR], floats[C_TH_RATE]
    th_risk, th_down = floats[C_TH_RISK], floats[C_TH_DOWN]
    dr_bq, dr_floor, dr_rate = floats[C_DR_BQ], floats[C_DR_FLOOR], floats[C_DR_RATE]
    dr_risk, dr_down = floats[C_DR_RISK], floats[C_DR_DOWN]
    s_log_improbability = floats[C_S_LOG_IMPROBABILITY]
    nbins = len(floats) - P0

    dt_ms, offset, scale = floats[F_DT], floats[F_OFFSET], floats[F_SCALE]
    offset_scale, run_shift = floats[F_OFFSET_SCALE], floats[F_RUN_SHIFT]
    th_u, th_me, th_cr, th_cmax = floats[F_TH_U], floats[F_TH_ME], floats[F_TH_CR], floats[F_TH_CMAX]
    dr_u, dr_me, dr_cr, dr_cmax = floats[F_DR_U], floats[F_DR_ME], floats[F_DR_CR], floats[F_DR_CMAX]
    s_last, s_rr = floats[F_S_LAST], floats[F_S_RR]
    n, last_ms, has_last, first_ms, has_first = ints[I_N], ints[I_LAST_MS], ints[I_HAS_LAST] != 0, \
        ints[I_FIRST_MS], ints[I_HAS_FIRST] != 0
    th_exc, th_run, dr_exc, dr_run = ints[I_TH_EXC], ints[I_TH_RUN], ints[I_DR_EXC], ints[I_DR_RUN]
    g_open, g_normal, g_breach = ints[I_G_OPEN] != 0, ints[I_G_NORMAL], ints[I_G_BREACH]
    s_run, s_changes, stuck_open = ints[I_S_RUN], ints[I_S_CHANGES], ints[I_STUCK_OPEN] != 0
    last_index, first_index = ints[I_LAST_INDEX], ints[I_FIRST_INDEX]
    inf = math.inf
    k = 0
    for i in range(len(times)):
        time_ms = times[i]
        value = values[i]
        if not math.isfinite(value):
            continue
        if has_last and time_ms > last_ms:
            gap = float(time_ms - last_ms)
            dt_ms = gap if dt_ms == 0.0 else dt_ms + 0.05 * (gap - dt_ms)  # base.sample_interval
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
        seen_lo, seen_hi = ints[Q0 + lo] > 0, ints[Q0 + hi] > 0
        if seen_lo and seen_hi:
            base = floats[P0 + lo] * (1.0 - w) + floats[P0 + hi] * w
        elif seen_lo:
            base = floats[P0 + lo]
        elif seen_hi:
            base = floats[P0 + hi]
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
                events[k * E_SIZE + E_INDEX] = i
                events[k * E_SIZE + E_KIND] = EV_STUCK
                events[k * E_SIZE + E_EXPECTED] = expected
                events[k * E_SIZE + E_SCALE] = scale
                events[k * E_SIZE + E_THRESHOLD] = x if x > th_floor else th_floor
                events[k * E_SIZE + E_RUN] = s_run
                events[k * E_SIZE + E_REQUIRED] = required
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
            events[k * E_SIZE + E_INDEX] = i
            events[k * E_SIZE + E_KIND] = EV_VALUE
            events[k * E_SIZE + E_DEVIATION] = deviation
            events[k * E_SIZE + E_DRIFT] = drift
            events[k * E_SIZE + E_EXPECTED] = expected
            events[k * E_SIZE + E_BASE] = base
            events[k * E_SIZE + E_OFFSET] = new_offset
            events[k * E_SIZE + E_SCALE] = scale
            x = th_u + th_me * math.log((th_risk if th_risk > th_cr else th_cr) / th_risk)
            events[k * E_SIZE + E_THRESHOLD] = x if x > th_floor else th_floor
            x = dr_u + dr_me * math.log((dr_risk if dr_risk > dr_cr else dr_cr) / dr_risk)
            events[k * E_SIZE + E_DRIFT_THRESHOLD] = x if x > dr_floor else dr_floor
            k += 1

        # _learn
        offset = new_offset
        if stuck_open:
            continue
        if breach:
            run_shift += (value - base - run_shift) / g_breach
            if g_breach >= adapt_after:
                events[k * E_SIZE + E_INDEX] = i
                events[k * E_SIZE + E_KIND] = EV_LEVEL
                events[k * E_SIZE + E_RUN_SHIFT] = run_shift
                events[k * E_SIZE + E_BREACH_RUN] = g_breach
                k += 1
                for j in range(P0, P0 + nbins):  # SeasonalProfile.shift
                    floats[j] = floats[j] + run_shift
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
        count = ints[Q0 + lo]
        if not (share <= 0.0 and count > 0):
            count = 1_000_000 if count + 1 > 1_000_000 else count + 1
            ints[Q0 + lo] = count
            x = 1.0 / count
            floats[P0 + lo] += (rate if rate > x else x) * (share if count > 1 else 1.0) * \
                (target - floats[P0 + lo])
        count = ints[Q0 + hi]
        if not (w <= 0.0 and count > 0):
            count = 1_000_000 if count + 1 > 1_000_000 else count + 1
            ints[Q0 + hi] = count
            x = 1.0 / count
            floats[P0 + hi] += (rate if rate > x else x) * (w if count > 1 else 1.0) * \
                (target - floats[P0 + hi])

        # PeaksOverThreshold.learn, deviation then drift: written out twice on purpose. The two
        # thresholds live in local scalars so numba keeps them in registers; a shared helper would
        # pass and return seven values per sample in the hot loop (tests/test_zscore_kernel.py
        # holds both copies bit-identical to PeaksOverThreshold.learn).
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

    floats[F_DT], floats[F_OFFSET], floats[F_SCALE], floats[F_OFFSET_SCALE], floats[F_RUN_SHIFT] = \
        dt_ms, offset, scale, offset_scale, run_shift
    floats[F_TH_U], floats[F_TH_ME], floats[F_TH_CR], floats[F_TH_CMAX] = th_u, th_me, th_cr, th_cmax
    floats[F_DR_U], floats[F_DR_ME], floats[F_DR_CR], floats[F_DR_CMAX] = dr_u, dr_me, dr_cr, dr_cmax
    floats[F_S_LAST], floats[F_S_RR] = s_last, s_rr
    ints[I_N], ints[I_LAST_MS], ints[I_HAS_LAST], ints[I_FIRST_MS], ints[I_HAS_FIRST] = \
        n, last_ms, has_last, first_ms, has_first
    ints[I_TH_EXC], ints[I_TH_RUN], ints[I_DR_EXC], ints[I_DR_RUN] = th_exc, th_run, dr_exc, dr_run
    ints[I_G_OPEN], ints[I_G_NORMAL], ints[I_G_BREACH] = g_open, g_normal, g_breach
    ints[I_S_RUN], ints[I_S_CHANGES], ints[I_STUCK_OPEN] = s_run, s_changes, stuck_open
    ints[I_LAST_INDEX], ints[I_FIRST_INDEX] = last_index, first_index
    return k


# Python's error model: a division by zero raises (as in plain Python) instead of giving inf.
_compiled_kernel: Any = (numba.njit(cache=True, error_model="python")(step_many_kernel) if AVAILABLE
                         else None)
_compiled = False


def warm_up() -> bool:
    """Compile (or load from the cache) now rather than on the first batch; True if the kernel is in use.

    A kernel that fails to compile turns itself off with a warning: ingest runs it as plain Python.
    """
    global AVAILABLE, _compiled
    if not AVAILABLE:
        return False
    if _compiled:
        return True
    logger.info("preparing the anomaly scoring kernel (numba: compiled once, then loaded from its cache)")
    started = time.perf_counter()
    try:  # an empty run has the argument types of every run: the one signature compiled
        _compiled_kernel(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(P0 + 1, np.float64),
                         np.zeros(Q0 + 1, np.int64), np.zeros(0, np.float64))
    except Exception as exc:  # numba's own errors are many types; the plain Python kernel still works
        logger.warning("the anomaly scoring kernel is not compiled, it runs as plain Python: %s", exc)
        AVAILABLE = False
        return False
    _compiled = True
    logger.debug("anomaly scoring kernel ready in %.2f s (%s)", time.perf_counter() - started,
                 "loaded from the cache" if _compiled_kernel.stats.cache_hits else "compiled")
    return True


def run_kernel(det: RobustZScoreDetector, times: Sequence[int], values: Sequence[float]
               ) -> list[tuple[int, Alert]]:
    """``det.step_many(times, values)`` through the kernel (compiled when it can be); same alerts, same state.

    Inputs the compiled kernel cannot take exactly (times that are not all
    ints, values that are not all ints or floats, ints beyond 2**53) run it as
    plain Python. A run that would raise (a length mismatch, a value that is
    not a number, an alert that cannot be built) goes to ``step`` sample by
    sample, which then behaves (and raises) exactly as it always does: the
    kernel works on copies of the state, so nothing was changed yet.
    """
    if len(values) != len(times):
        return _step_each(det, times, values)
    if AVAILABLE and (_compiled or warm_up()):
        t = np.ascontiguousarray(times)
        v = np.ascontiguousarray(values)
        if t.dtype == np.int64 and t.ndim == 1 and v.ndim == 1:
            # ints beyond 2**53 compare exactly in Python but not as doubles
            if v.dtype == np.int64 and not (len(v) and (v.max() > 2 ** 53 or v.min() < -(2 ** 53))):
                v = v.astype(np.float64)
            if v.dtype == np.float64:
                try:
                    return _run(det, times, values, t, v, compiled=True)
                except (ArithmeticError, ValueError):
                    return _step_each(det, times, values)
    try:
        return _run(det, times, values, times, values, compiled=False)
    except Exception:  # whatever the input raises, step raises it the same way, at the same sample
        return _step_each(det, times, values)


def _step_each(det: RobustZScoreDetector, times: Sequence[int], values: Sequence[float]
               ) -> list[tuple[int, Alert]]:
    """The reference: ``step`` per sample."""
    return StreamDetector.step_many(det, times, values)


def _run(det: RobustZScoreDetector, times: Sequence[int], values: Sequence[float], t: Any, v: Any, *,
         compiled: bool) -> list[tuple[int, Alert]]:
    """Pack, run, build the alerts, and only then write the state back (so that a failure changes nothing).

    ``t`` and ``v`` are what the kernel reads: numpy arrays when ``compiled``, else ``times`` and ``values``.
    """
    count = len(t)
    opts, profile, stuck, gate = det.opts, det.profile, det.stuck, det.gate
    th, dr = det.threshold, det.drift_threshold
    last_ms, first_ms = det.last_ms, det.first_ms
    floats: Any = [det.dt_ms, det.offset, det.scale, det.offset_scale, det.run_shift,  # F_*
                   th.u, th.mean_excess, th.cluster_rate, th.cluster_max,
                   dr.u, dr.mean_excess, dr.cluster_rate, dr.cluster_max,
                   stuck.last, stuck.repeat_rate,
                   profile.bin_ms, profile.bin_ms * profile.memory_periods, opts.clip,  # C_*
                   opts.level_alpha, opts.scale_alpha, opts.scale_alpha / 10,
                   th.base_quantile, th.floor, th.rate, th.risk, 1.0 - th.base_quantile,
                   dr.base_quantile, dr.floor, dr.rate, dr.risk, 1.0 - dr.base_quantile,
                   math.log(stuck.improbability), *profile.values]
    ints: Any = [det.n, 0 if last_ms is None else last_ms, last_ms is not None,  # I_*
                 0 if first_ms is None else first_ms, first_ms is not None,
                 th.excesses, th.run, dr.excesses, dr.run,
                 gate.is_open, gate.normal_run, gate.breach_run, stuck.run, stuck.changes, det.stuck_open,
                 -1, -1,
                 opts.warmup, opts.warmup // 2, opts.season_ms, profile.period_ms,  # K_*
                 opts.adapt_after, gate.close_after, stuck.min_samples, *profile.counts]
    if compiled:
        floats, ints = np.array(floats, dtype=np.float64), np.array(ints, dtype=np.int64)
        events: Any = np.empty(EVENTS_PER_SAMPLE * count * E_SIZE, dtype=np.float64)
        written = _compiled_kernel(t, v, floats, ints, events)
        rows = events[:written * E_SIZE].tolist()
        fl, il = floats.tolist(), ints.tolist()
    else:
        rows = [0.0] * (EVENTS_PER_SAMPLE * count * E_SIZE)
        written = step_many_kernel(t, v, floats, ints, rows)
        fl, il = floats, ints

    found: list[tuple[int, Alert]] = []
    levels: list[tuple[float, int]] = []
    for e in range(0, written * E_SIZE, E_SIZE):
        row = rows[e:e + E_SIZE]
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

    (det.dt_ms, det.offset, det.scale, det.offset_scale, det.run_shift,
     th.u, th.mean_excess, th.cluster_rate, th.cluster_max,
     dr.u, dr.mean_excess, dr.cluster_rate, dr.cluster_max, _, stuck.repeat_rate) = fl[:F_SIZE]
    (det.n, _, _, _, _, th.excesses, th.run, dr.excesses, dr.run, g_open, gate.normal_run, gate.breach_run,
     stuck.run, stuck.changes, stuck_open, last_index, first_index) = il[:I_SIZE]
    gate.is_open, det.stuck_open = bool(g_open), bool(stuck_open)
    if last_index >= 0:  # the caller's objects, as step keeps them (an int value stays an int)
        det.last_ms, stuck.last = times[last_index], values[last_index]
    if first_index >= 0:
        det.first_ms = times[first_index]
    profile.values[:] = fl[P0:]
    profile.counts[:] = il[Q0:]
    if levels:
        log = logging.getLogger(type(det).__module__)
        for run_shift, breach_run in levels:
            log.debug("%s/%s: accepting a new level (%+.4g) after %d anomalous samples",
                      det.device, det.metric, run_shift, breach_run)
    return found
