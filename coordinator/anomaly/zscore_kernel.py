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

import hashlib
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coordinator.anomaly.alert import Alert
from coordinator.anomaly.base import StreamDetector
from coordinator.anomaly.bursts import MIN_LOG_SCALE, RATE_ALPHA
from coordinator.anomaly.episode import SETTLED as SETTLED_NOISE
from coordinator.anomaly.episode import SETTLED_DRIFT
from coordinator.anomaly.plugins.robust_zscore import (  # it imports us lazily
    _GAUSS_MAD,
    _KIND_NAMES,
    BY_BURSTS,
    BY_LEVELS,
    BY_PROFILE,
    BY_TREND,
    SMOOTH_RATIO,
    RobustZScoreDetector,
)
from coordinator.anomaly.series_shape import (
    _LATTICE_PER_SD,
    _STEPS_PER_SD,
    CONTINUOUS,
    LEVELS,
    SETTLED,
    SPARSE,
    SPARSE_ZEROS,
)
from coordinator.anomaly.stuck import MIN_RUNS
from coordinator.anomaly.threshold import (
    BODY_MEMORY,
    BODY_QUANTILE,
    BODY_RATE,
    FIRST_RUN,
    MAX_SHAPE,
    MIN_BODY,
    SETTLING_FLOOR,
    SHAPE_DOUBT,
)

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
# profile's values and after them (from P0 + nbins) the series' levels.
F_DT, F_OFFSET, F_SCALE, F_OFFSET_SCALE, F_RUN_SHIFT, F_CALM_SCALE, F_SCALE2, F_X1, F_X2 = range(9)
F_TH_U, F_TH_ME, F_TH_CR, F_TH_CMAX = 9, 10, 11, 12
F_DR_U, F_DR_ME, F_DR_CR, F_DR_CMAX = 13, 14, 15, 16
F_S_LAST, F_S_RR, F_S_SHARE = 17, 18, 19
F_SH_ZERO, F_SH_RES, F_SH_LARGEST, F_SH_LAST = 20, 21, 22, 23
F_B_RECENT, F_B_RATE, F_B_LOG_MEAN, F_B_LOG_SCALE = 24, 25, 26, 27
F_TH_BU, F_TH_BM, F_TH_BS = 28, 29, 30  # the deviation threshold's body quantile and excess moments
F_SIZE = 31
C_BIN_MS, C_RATE_DIV, C_CLIP, C_LEVEL_ALPHA, C_SCALE_ALPHA, C_OFF_SCALE_ALPHA = 31, 32, 33, 34, 35, 36
C_TH_BQ, C_TH_FLOOR, C_TH_RATE, C_TH_RISK, C_TH_DOWN = 37, 38, 39, 40, 41
C_DR_BQ, C_DR_FLOOR, C_DR_RATE, C_DR_RISK, C_DR_DOWN = 42, 43, 44, 45, 46
C_S_LOG_IMPROBABILITY, C_S_PRONE, C_S_RATIO = 47, 48, 49
C_RES_FLOOR, C_DRIFT_MIN_SHIFT, C_CLOSE_SPAN, C_B_ALPHA, C_B_SIZE_ALPHA = 50, 51, 52, 53, 54
P0 = 55
# The int buffer: the state (I_*: every int and bool, None as a has-flag, and where the last/first times
# came from), the constants (K_*), then from Q0 the profile's counts.
I_N, I_LAST_MS, I_HAS_LAST, I_FIRST_MS, I_HAS_FIRST = 0, 1, 2, 3, 4
I_TH_EXC, I_TH_RUN, I_TH_LEARNED, I_DR_EXC, I_DR_RUN, I_DR_LEARNED = 5, 6, 7, 8, 9, 10
I_G_OPEN, I_G_NORMAL, I_G_BREACH, I_G_AGE, I_G_SPAN = 11, 12, 13, 14, 15
I_S_RUN, I_S_CHANGES, I_S_RUNS, I_S_LONGEST, I_S_SAMPLES, I_STUCK_OPEN = 16, 17, 18, 19, 20, 21
I_SH_COUNT, I_SH_NLEVELS, I_SH_MANY = 22, 23, 24
I_B_SEEN, I_B_SIZES, I_SMOOTH_N, I_KIND = 25, 26, 27, 28
I_LAST_INDEX, I_FIRST_INDEX = 29, 30  # sample index that set last_ms (and stuck.last) / first_ms, or -1
I_TH_BCOUNT, I_TH_SHAPED = 31, 32  # the deviation threshold's body excesses; whether it fits a shape
I_G_SETTLED = 33  # the episode gate's settled run
I_SIZE = 34
K_WARMUP, K_HALF_WARMUP, K_SEASON_MS, K_PERIOD = 34, 35, 36, 37
K_ADAPT_AFTER, K_CLOSE_AFTER, K_S_MIN = 38, 39, 40
K_TH_SETTLE, K_DR_SETTLE, K_SERIES, K_MAX_LEVELS, K_DRIFT, K_SMOOTH, K_NBINS = 41, 42, 43, 44, 45, 46, 47
K_MIN_CALM, K_TAIL_SHAPE = 48, 49
Q0 = 50
# Event rows: (index, kind, then the numbers the alert builder or the log line needs).
EV_STUCK, EV_VALUE, EV_LEVEL, EV_KIND = 0.0, 1.0, 2.0, 3.0
E_INDEX, E_KIND, E_DEVIATION, E_DRIFT, E_EXPECTED, E_BASE, E_OFFSET, E_SCALE = 0, 1, 2, 3, 4, 5, 6, 7
E_THRESHOLD, E_DRIFT_THRESHOLD, E_RUN, E_REQUIRED = 8, 9, 10, 11
E_REASON, E_CENTRE, E_SPREAD, E_RECENT, E_RATE = 12, 13, 14, 15, 16
E_TH_U, E_TH_ME, E_TH_CR, E_DR_U, E_DR_ME, E_DR_CR, E_TH_XI = 17, 18, 19, 20, 21, 22, 23
E_RUN_SHIFT, E_BREACH_RUN = 2, 3  # the level event's columns
E_NEW_KIND = 2  # the kind event's column
E_SIZE = 24
EVENTS_PER_SAMPLE = 3  # an alert, a new kind and a level acceptance (adapt_after == 1) can share a sample


def step_many_kernel(times: Any, values: Any, floats: Any, ints: Any, events: Any) -> int:
    """:meth:`RobustZScoreDetector.step` over a run, in one loop: state in place, alerts as event rows.

    ``floats`` holds the float state (``F_*``), the float constants (``C_*``)
    and from ``P0`` the profile's values and then the series' levels;
    ``ints`` the int state (``I_*``), the int constants (``K_*``) and from
    ``Q0`` the profile's counts (two buffers, not six arrays: each argument
    costs the compiled call more than a short run takes). ``events`` is
    flat, ``E_SIZE`` numbers per event. The same function runs compiled
    (numpy arrays) and as plain Python (lists); it indexes, never slices, so
    both change the caller's buffers.

    It is ``step`` with its helpers (profile, series shape, bursts,
    thresholds, stuck run, episode gate) inlined over local variables: the
    same IEEE double operations in the same order, ``max``/``min`` written as
    comparisons that return the operand the builtins would, ties included.
    Bit-identity with ``step`` rests on that (``tests/test_zscore_kernel.py``).
    """
    warmup, half_warmup, season_ms = ints[K_WARMUP], ints[K_HALF_WARMUP], ints[K_SEASON_MS]
    period, adapt_after = ints[K_PERIOD], ints[K_ADAPT_AFTER]
    close_after, s_min, min_calm = ints[K_CLOSE_AFTER], ints[K_S_MIN], ints[K_MIN_CALM]
    tail_shape = ints[K_TAIL_SHAPE] != 0
    th_settle, dr_settle, series = ints[K_TH_SETTLE], ints[K_DR_SETTLE], ints[K_SERIES]
    max_levels, drift_on, smooth_on, nbins = ints[K_MAX_LEVELS], ints[K_DRIFT] != 0, ints[K_SMOOTH] != 0, \
        ints[K_NBINS]
    bin_ms, rate_div, clip = floats[C_BIN_MS], floats[C_RATE_DIV], floats[C_CLIP]
    level_alpha, scale_alpha, off_scale_alpha = floats[C_LEVEL_ALPHA], floats[C_SCALE_ALPHA], \
        floats[C_OFF_SCALE_ALPHA]
    th_bq, th_floor, th_rate = floats[C_TH_BQ], floats[C_TH_FLOOR], floats[C_TH_RATE]
    th_risk, th_down = floats[C_TH_RISK], floats[C_TH_DOWN]
    dr_bq, dr_floor, dr_rate = floats[C_DR_BQ], floats[C_DR_FLOOR], floats[C_DR_RATE]
    dr_risk, dr_down = floats[C_DR_RISK], floats[C_DR_DOWN]
    s_log_improbability = floats[C_S_LOG_IMPROBABILITY]
    s_prone, s_ratio = floats[C_S_PRONE], floats[C_S_RATIO]
    res_floor, drift_min_shift = floats[C_RES_FLOOR], floats[C_DRIFT_MIN_SHIFT]
    close_span = floats[C_CLOSE_SPAN]
    b_alpha, b_size_alpha = floats[C_B_ALPHA], floats[C_B_SIZE_ALPHA]
    L0 = P0 + nbins
    b_root = math.sqrt(2.0 - b_alpha)

    dt_ms, offset, scale = floats[F_DT], floats[F_OFFSET], floats[F_SCALE]
    offset_scale, run_shift, calm_scale = floats[F_OFFSET_SCALE], floats[F_RUN_SHIFT], floats[F_CALM_SCALE]
    scale2, x1, x2 = floats[F_SCALE2], floats[F_X1], floats[F_X2]
    th_u, th_me, th_cr, th_cmax = floats[F_TH_U], floats[F_TH_ME], floats[F_TH_CR], floats[F_TH_CMAX]
    dr_u, dr_me, dr_cr, dr_cmax = floats[F_DR_U], floats[F_DR_ME], floats[F_DR_CR], floats[F_DR_CMAX]
    s_last, s_rr, s_share = floats[F_S_LAST], floats[F_S_RR], floats[F_S_SHARE]
    sh_zero, sh_res, sh_largest, sh_last = floats[F_SH_ZERO], floats[F_SH_RES], floats[F_SH_LARGEST], \
        floats[F_SH_LAST]
    b_recent, b_rate, b_log_mean, b_log_scale = floats[F_B_RECENT], floats[F_B_RATE], floats[F_B_LOG_MEAN], \
        floats[F_B_LOG_SCALE]
    th_bu, th_bm, th_bs = floats[F_TH_BU], floats[F_TH_BM], floats[F_TH_BS]
    n, last_ms, has_last, first_ms, has_first = ints[I_N], ints[I_LAST_MS], ints[I_HAS_LAST] != 0, \
        ints[I_FIRST_MS], ints[I_HAS_FIRST] != 0
    th_exc, th_run, th_learned = ints[I_TH_EXC], ints[I_TH_RUN], ints[I_TH_LEARNED]
    dr_exc, dr_run, dr_learned = ints[I_DR_EXC], ints[I_DR_RUN], ints[I_DR_LEARNED]
    g_open, g_normal, g_breach = ints[I_G_OPEN] != 0, ints[I_G_NORMAL], ints[I_G_BREACH]
    g_age, g_span, g_settled = ints[I_G_AGE], ints[I_G_SPAN], ints[I_G_SETTLED]
    s_run, s_changes, s_runs, s_longest = ints[I_S_RUN], ints[I_S_CHANGES], ints[I_S_RUNS], ints[I_S_LONGEST]
    s_samples, stuck_open = ints[I_S_SAMPLES], ints[I_STUCK_OPEN] != 0
    sh_count, sh_nlevels, sh_many = ints[I_SH_COUNT], ints[I_SH_NLEVELS], ints[I_SH_MANY] != 0
    b_seen, b_sizes, smooth_n, kind = ints[I_B_SEEN], ints[I_B_SIZES], ints[I_SMOOTH_N], ints[I_KIND]
    last_index, first_index = ints[I_LAST_INDEX], ints[I_FIRST_INDEX]
    th_bc, th_shaped = ints[I_TH_BCOUNT], ints[I_TH_SHAPED] != 0
    inf = math.inf
    sparse_stay = SPARSE_ZEROS - 0.1
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

        # _judge, with SeasonalProfile.value / _neighbours and the detector's _floor
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
        res_part = res_floor * sh_res if sh_res < inf else 0.0  # SeriesShape.floor
        x = 1e-9 + 1e-6 * abs(expected)
        floor = res_part if res_part > x else x
        sc = floor if floor > scale else scale
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
        y = 1e-9 + 1e-6 * abs(base)
        x = res_part if res_part > y else y
        if x > m:
            m = x
        drift = abs(new_offset) / m
        drifting = drift_on and abs(new_offset) >= drift_min_shift * sc
        reason = BY_PROFILE
        centre = expected
        spread = sc
        # SeriesShape.kind
        few = not sh_many and sh_nlevels >= 2 and sh_count >= SETTLED
        if series == LEVELS:
            judged = LEVELS if few else CONTINUOUS
        elif series:
            judged = series
        elif sh_zero >= (sparse_stay if kind == SPARSE else SPARSE_ZEROS):
            judged = SPARSE
        else:
            judged = LEVELS if few else CONTINUOUS
        recent = b_recent
        if res_floor > 0.0 and not sh_res < inf:
            deviation = 0.0
            drifting = False
        elif judged == SPARSE:  # BurstRate.judge
            burst = value != 0.0
            recent = b_recent + b_alpha * ((1.0 if burst else 0.0) - b_recent)
            size_score = 0.0
            if burst and b_sizes > 0:
                x = math.log(abs(value)) - b_log_mean
                y = b_log_scale if b_log_scale > MIN_LOG_SCALE else MIN_LOG_SCALE
                size_score = (x if x > 0.0 else 0.0) / y
            x = 2.0 * b_root * (math.sqrt(recent / b_alpha + 0.375) - math.sqrt(b_rate / b_alpha + 0.375))
            drift = x if x > 0.0 else 0.0
            deviation = size_score
            reason = BY_BURSTS
            centre = b_log_mean
            spread = b_log_scale if b_log_scale > MIN_LOG_SCALE else MIN_LOG_SCALE
            drifting = True
        elif judged == LEVELS:
            # SeriesShape.nearest and .novelty
            nearest = value
            gap = inf
            for j in range(sh_nlevels):
                x = abs(value - floats[L0 + j])
                if x < gap:
                    nearest = floats[L0 + j]
                    gap = x
            novelty = 0.0
            if not (sh_many or sh_nlevels < 2 or sh_count < SETTLED or not sh_res < inf):
                x = abs(value - sh_last) - sh_largest
                novelty = (x if x > 0.0 else 0.0) / sh_res / _STEPS_PER_SD
                if value != nearest:
                    u = (value - nearest) / sh_res
                    off = abs((u + 0.5) % 1.0 - 0.5)
                    m = abs(u) / _STEPS_PER_SD
                    x = off / _LATTICE_PER_SD
                    if x > m:
                        m = x
                    if novelty > m:
                        m = novelty
                    novelty = m
            deviation = novelty
            reason = BY_LEVELS
            centre = nearest
            spread = sh_res
            drifting = False
        elif smooth_on and smooth_n >= half_warmup and scale2 < SMOOTH_RATIO * scale:
            centre = 2.0 * x1 - x2
            spread = floor if floor > scale2 else scale2
            deviation = abs(value - centre) / spread
            reason = BY_TREND

        # StuckRun.update
        same = value == s_last
        if not same and not math.isnan(s_last):
            s_changes = 1_000_000 if s_changes + 1 > 1_000_000 else s_changes + 1
            if not stuck_open:
                s_runs = 1_000_000 if s_runs + 1 > 1_000_000 else s_runs + 1
                s_longest = s_run if s_run > s_longest else s_longest
        s_run = s_run + 1 if same else 1
        s_last = value
        if s_run <= 3:
            s_rr += 0.02 * ((1.0 if same else 0.0) - s_rr)

        th_shaped = tail_shape and judged == CONTINUOUS and reason == BY_PROFILE  # the detector's _shaped
        # PeaksOverThreshold.value, for both thresholds: what the breach test and the alerts read
        # PeaksOverThreshold.shape and tail_reach
        th_xi = 0.0
        if th_shaped and th_bc < MIN_BODY:
            th_xi = MAX_SHAPE
        elif th_shaped and th_bm > 0.0:
            x = th_bs / (th_bm * th_bm)
            if x > 1.0:
                xi = 0.5 * (x - 2.0) / (x - 1.0)
                # shape_variance
                if not xi > 0.0:
                    y = 1.0
                elif xi >= 0.25:
                    y = math.inf
                else:
                    y = (1.0 - xi) * (1.0 - 2.0 * xi)
                    y = y * y * (1.0 - xi + 6.0 * xi * xi) / ((1.0 - 3.0 * xi) * (1.0 - 4.0 * xi))
                if not y < math.inf:
                    th_xi = MAX_SHAPE
                else:
                    xi += SHAPE_DOUBT * math.sqrt(y / (th_bc if th_bc < BODY_MEMORY else BODY_MEMORY))
                    if xi > 0.0:
                        th_xi = xi if xi < MAX_SHAPE else MAX_SHAPE
        x = math.log((th_risk if th_risk > th_cr else th_cr) / th_risk)
        if th_xi != 0.0:
            x = (1.0 - th_xi) * math.expm1(th_xi * x) / th_xi
        x = th_u + th_me * x
        y = SETTLING_FLOOR * th_floor if th_learned < th_settle else th_floor
        dev_threshold = x if x > y else y
        x = dr_u + dr_me * math.log((dr_risk if dr_risk > dr_cr else dr_cr) / dr_risk)
        y = SETTLING_FLOOR * dr_floor if dr_learned < dr_settle else dr_floor
        drift_threshold = x if x > y else y

        # StuckRun.required
        required = -1
        if s_prone < 1.0 and (judged == SPARSE or s_share >= s_prone):
            if s_runs >= MIN_RUNS and seasoned:
                c = math.ceil(s_ratio * s_longest)
                required = c if c > s_min else s_min
        elif s_changes >= 10 and s_rr < 0.99:
            if s_rr <= 0.0:
                required = s_min
            else:
                c = math.ceil(s_log_improbability / math.log(s_rr))
                required = c if c > s_min else s_min

        alerted = False
        if stuck_open and s_run == 1:
            stuck_open = False
        if warm and required >= 0 and s_run >= required and not stuck_open:
            stuck_open = alerted = True
            events[k * E_SIZE + E_INDEX] = i
            events[k * E_SIZE + E_KIND] = EV_STUCK
            events[k * E_SIZE + E_EXPECTED] = expected
            events[k * E_SIZE + E_SCALE] = sc
            events[k * E_SIZE + E_THRESHOLD] = dev_threshold
            events[k * E_SIZE + E_RUN] = s_run
            events[k * E_SIZE + E_REQUIRED] = required
            k += 1

        breach = warm and not stuck_open and (deviation > dev_threshold
                                              or (seasoned and drifting and drift > drift_threshold))
        if judged == CONTINUOUS:
            x = 1e-9 + 1e-6 * abs(expected)  # the detector's _floor(expected), as above
            y = res_part if res_part > x else x
            noise = sc / (y if y > calm_scale else calm_scale)
        else:
            noise = 1.0
        moving = drift / drift_threshold if judged == CONTINUOUS and seasoned and drifting else 0.0

        # EpisodeGate.update
        opened = False
        if breach:
            g_normal = 0
            g_settled = 0
            g_breach += 1
            if not g_open:
                g_open = opened = True
                g_age = g_span = 1
            else:
                g_age += 1
                g_span = g_age
        else:
            g_breach = 0
            if g_open:
                g_age += 1
                g_normal += 1
                x = close_span * g_span
                needed = x if x > close_after else close_after
                calm = noise <= SETTLED_NOISE and moving <= SETTLED_DRIFT
                g_settled = g_settled + 1 if calm else 0
                settled = calm and (g_span <= close_after or g_settled >= min_calm)
                if g_normal >= needed and (close_span == 0.0 or settled or g_normal >= 100.0 * needed):
                    g_open = False
        if opened and not alerted:
            e = k * E_SIZE
            events[e + E_INDEX] = i
            events[e + E_KIND] = EV_VALUE
            events[e + E_DEVIATION] = deviation
            events[e + E_DRIFT] = drift
            events[e + E_EXPECTED] = expected
            events[e + E_BASE] = base
            events[e + E_OFFSET] = new_offset
            events[e + E_SCALE] = sc
            events[e + E_THRESHOLD] = dev_threshold
            events[e + E_DRIFT_THRESHOLD] = drift_threshold
            events[e + E_REASON] = reason
            events[e + E_CENTRE] = centre
            events[e + E_SPREAD] = spread
            events[e + E_RECENT] = recent
            events[e + E_RATE] = b_rate
            events[e + E_TH_U] = th_u
            events[e + E_TH_ME] = th_me
            events[e + E_TH_CR] = th_cr
            events[e + E_DR_U] = dr_u
            events[e + E_DR_ME] = dr_me
            events[e + E_DR_CR] = dr_cr
            events[e + E_TH_XI] = th_xi
            k += 1

        # _learn
        if judged != kind:
            if kind:  # a new threshold for scores of another kind
                events[k * E_SIZE + E_INDEX] = i
                events[k * E_SIZE + E_KIND] = EV_KIND
                events[k * E_SIZE + E_NEW_KIND] = judged
                k += 1
                th_u = 0.0
                th_me = 0.0
                th_cr = 1.0 - th_bq
                th_cmax = 0.0
                th_exc = th_run = th_learned = 0
                th_bu = th_bm = th_bs = 0.0
                th_bc = 0
            kind = judged
        offset = new_offset
        b_recent = recent
        p1, p2 = x1, x2  # the trend predictor's past before this sample
        x2 = x1
        x1 = float(value)
        if stuck_open:
            continue
        # BurstRate.learn_rate
        b_seen = 1_000_000 if b_seen + 1 > 1_000_000 else b_seen + 1
        x = 1.0 / b_seen
        alpha = x if x > RATE_ALPHA else RATE_ALPHA
        x = 2.0 * b_root * (math.sqrt(recent / b_alpha + 0.375) - math.sqrt(b_rate / b_alpha + 0.375))
        if (x if x > 0.0 else 0.0) > clip:
            alpha /= 10.0
        b_rate += alpha * ((0.0 if value == 0.0 else 1.0) - b_rate)
        if breach:
            learn_shape = 1 if judged == LEVELS and s_run > 1 else 0  # a new level that holds
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
                learn_shape += 1
        else:
            run_shift = 0.0
            limit = cs if n > 2 else inf
            x = 1.0 / n
            alpha = scale_alpha if scale_alpha > x else x
            y = abs(residual)
            z = limit if limit < y else y
            scale += alpha * (_GAUSS_MAD * z - scale)
            if not g_open:
                alpha = off_scale_alpha if off_scale_alpha > x else x
                calm_scale += alpha * (_GAUSS_MAD * z - calm_scale)
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
            # the trend predictor's residual scale
            if not math.isnan(p2):
                y = abs(value - (2.0 * p1 - p2))
                if smooth_n > 2:
                    x = floor if floor > scale2 else scale2
                    limit = clip * x
                else:
                    limit = inf
                smooth_n = 1_000_000 if smooth_n + 1 > 1_000_000 else smooth_n + 1
                x = 1.0 / smooth_n
                alpha = scale_alpha if scale_alpha > x else x
                scale2 += alpha * (_GAUSS_MAD * (limit if limit < y else y) - scale2)
            # BurstRate.learn_size
            if value != 0.0:
                b_sizes = 1_000_000 if b_sizes + 1 > 1_000_000 else b_sizes + 1
                z = math.log(abs(value))
                y = abs(z - b_log_mean) if b_sizes > 1 else 0.0
                if b_sizes > 2:
                    x = b_log_scale if b_log_scale > MIN_LOG_SCALE else MIN_LOG_SCALE
                    limit = clip * x
                else:
                    limit = inf
                x = 1.0 / b_sizes
                alpha = b_size_alpha if b_size_alpha > x else x
                b_log_scale += alpha * (_GAUSS_MAD * (limit if limit < y else y) - b_log_scale)
                b_log_mean += alpha * (z - b_log_mean)
            # StuckRun.learn
            s_samples = 1_000_000 if s_samples + 1 > 1_000_000 else s_samples + 1
            x = 1.0 / s_samples
            alpha = x if x > 0.005 else 0.005
            s_share += alpha * ((1.0 if s_run > 1 else 0.0) - s_share)
            learn_shape = 1
        fv = float(value)
        for _ in range(learn_shape):  # SeriesShape.learn
            sh_count = 1_000_000 if sh_count + 1 > 1_000_000 else sh_count + 1
            x = 1.0 / sh_count
            alpha = x if x > 0.002 else 0.002
            sh_zero += alpha * ((1.0 if fv == 0.0 else 0.0) - sh_zero)
            if fv != sh_last and not math.isnan(sh_last):
                y = abs(fv - sh_last)
                sh_res = y if y < sh_res else sh_res
                sh_largest = y if y > sh_largest else sh_largest
            sh_last = fv
            if not sh_many:
                known = False
                for j in range(sh_nlevels):
                    if floats[L0 + j] == fv:
                        known = True
                        break
                if not known:
                    if sh_nlevels < max_levels:
                        floats[L0 + sh_nlevels] = fv
                        sh_nlevels += 1
                    else:
                        sh_many = True
        if breach:
            continue

        # PeaksOverThreshold.learn, deviation then drift: written out twice on purpose. The two
        # thresholds live in local scalars so numba keeps them in registers; a shared helper would
        # pass and return eight values per sample in the hot loop (tests/test_zscore_kernel.py
        # holds both copies bit-identical to PeaksOverThreshold.learn). Nothing is learned inside an
        # episode that follows the anomaly (close_span).
        if close_span > 0.0 and g_open:
            continue
        if n > half_warmup:
            if th_shaped:  # PeaksOverThreshold._learn_body
                m = th_bm
                x = 0.02 * th_bu
                if x > m:
                    m = x
                if m < 1e-3:
                    m = 1e-3
                step = th_rate * m
                if deviation > th_bu:
                    th_bc = 1_000_000 if th_bc + 1 > 1_000_000 else th_bc + 1
                    x = 1.0 / th_bc
                    weight = BODY_RATE if x < BODY_RATE else x
                    y = deviation - th_bu
                    th_bm += weight * (y - th_bm)
                    th_bs += weight * (y * y - th_bs)
                    th_bu += step * BODY_QUANTILE
                else:
                    th_bu -= step * (1.0 - BODY_QUANTILE)
            m = th_me
            x = 0.02 * th_u
            if x > m:
                m = x
            if m < 1e-3:
                m = 1e-3
            step = th_rate * m
            settling = th_learned < th_settle if th_settle else th_exc < 20
            th_learned = 1_000_000 if th_learned + 1 > 1_000_000 else th_learned + 1
            first = th_settle > 0 and th_exc == 0 and th_run >= FIRST_RUN
            if deviation > th_u and not first:
                th_cr *= 0.999
                th_run += 1
                x = deviation - th_u
                if x > th_cmax:
                    th_cmax = x
                if th_run <= 3 or settling:
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
            settling = dr_learned < dr_settle if dr_settle else dr_exc < 20
            dr_learned = 1_000_000 if dr_learned + 1 > 1_000_000 else dr_learned + 1
            first = dr_settle > 0 and dr_exc == 0 and dr_run >= FIRST_RUN
            if drift > dr_u and not first:
                dr_cr *= 0.999
                dr_run += 1
                x = drift - dr_u
                if x > dr_cmax:
                    dr_cmax = x
                if dr_run <= 3 or settling:
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
    floats[F_CALM_SCALE], floats[F_SCALE2], floats[F_X1], floats[F_X2] = calm_scale, scale2, x1, x2
    floats[F_TH_U], floats[F_TH_ME], floats[F_TH_CR], floats[F_TH_CMAX] = th_u, th_me, th_cr, th_cmax
    floats[F_DR_U], floats[F_DR_ME], floats[F_DR_CR], floats[F_DR_CMAX] = dr_u, dr_me, dr_cr, dr_cmax
    floats[F_S_LAST], floats[F_S_RR], floats[F_S_SHARE] = s_last, s_rr, s_share
    floats[F_SH_ZERO], floats[F_SH_RES], floats[F_SH_LARGEST], floats[F_SH_LAST] = \
        sh_zero, sh_res, sh_largest, sh_last
    floats[F_B_RECENT], floats[F_B_RATE], floats[F_B_LOG_MEAN], floats[F_B_LOG_SCALE] = \
        b_recent, b_rate, b_log_mean, b_log_scale
    floats[F_TH_BU], floats[F_TH_BM], floats[F_TH_BS] = th_bu, th_bm, th_bs
    ints[I_N], ints[I_LAST_MS], ints[I_HAS_LAST], ints[I_FIRST_MS], ints[I_HAS_FIRST] = \
        n, last_ms, has_last, first_ms, has_first
    ints[I_TH_EXC], ints[I_TH_RUN], ints[I_TH_LEARNED] = th_exc, th_run, th_learned
    ints[I_DR_EXC], ints[I_DR_RUN], ints[I_DR_LEARNED] = dr_exc, dr_run, dr_learned
    ints[I_G_OPEN], ints[I_G_NORMAL], ints[I_G_BREACH], ints[I_G_AGE], ints[I_G_SPAN] = \
        g_open, g_normal, g_breach, g_age, g_span
    ints[I_S_RUN], ints[I_S_CHANGES], ints[I_S_RUNS], ints[I_S_LONGEST] = s_run, s_changes, s_runs, s_longest
    ints[I_S_SAMPLES], ints[I_STUCK_OPEN] = s_samples, stuck_open
    ints[I_SH_COUNT], ints[I_SH_NLEVELS], ints[I_SH_MANY] = sh_count, sh_nlevels, sh_many
    ints[I_B_SEEN], ints[I_B_SIZES], ints[I_SMOOTH_N], ints[I_KIND] = b_seen, b_sizes, smooth_n, kind
    ints[I_LAST_INDEX], ints[I_FIRST_INDEX] = last_index, first_index
    ints[I_TH_BCOUNT], ints[I_TH_SHAPED] = th_bc, th_shaped
    ints[I_G_SETTLED] = g_settled
    return k


def _stamp_with_constants(dispatcher: Any) -> None:
    """Key the on-disk kernel cache on the modules whose constants it froze, not on this file alone.

    numba checks a cached kernel against this file's mtime and size only, yet
    the machine code holds the thresholds and shapes imported from the other
    anomaly modules: after an upgrade that changed only ``threshold.py`` it
    would load the old kernel, no longer bit-identical to ``step``. Folding
    those modules' sources into the cache's stamp makes such a cache stale.
    """
    digest = hashlib.sha256()
    for name in _CONSTANT_MODULES:
        source = getattr(sys.modules.get(name), "__file__", None)
        if source is not None:
            digest.update(Path(source).read_bytes())
    try:
        cache_file = dispatcher._cache._cache_file  # numba internals: the index file of this kernel
        cache_file._source_stamp = (cache_file._source_stamp, digest.hexdigest())
    except AttributeError:  # another numba layout: compile in every process rather than risk a stale kernel
        from numba.core.caching import NullCache

        logger.warning("cannot key the anomaly kernel's cache on its constants: it is compiled, not cached")
        dispatcher._cache = NullCache()


#: The modules whose constants :func:`step_many_kernel` compiles in (see the imports above).
_CONSTANT_MODULES = ("coordinator.anomaly.alert", "coordinator.anomaly.bursts", "coordinator.anomaly.episode",
                     "coordinator.anomaly.plugins.robust_zscore", "coordinator.anomaly.series_shape",
                     "coordinator.anomaly.stuck", "coordinator.anomaly.threshold", __name__)

# Python's error model: a division by zero raises (as in plain Python) instead of giving inf.
_compiled_kernel: Any = (numba.njit(cache=True, error_model="python")(step_many_kernel) if AVAILABLE
                         else None)
if _compiled_kernel is not None:
    _stamp_with_constants(_compiled_kernel)
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
        ints = np.zeros(Q0 + 1, np.int64)
        ints[K_NBINS] = 1
        _compiled_kernel(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(P0 + 1, np.float64), ints,
                         np.zeros(0, np.float64))
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
    shape, bursts = det.shape, det.bursts
    th, dr = det.threshold, det.drift_threshold
    last_ms, first_ms = det.last_ms, det.first_ms
    nbins, nlevels = len(profile.values), len(shape.levels)
    floats: Any = [det.dt_ms, det.offset, det.scale, det.offset_scale, det.run_shift,  # F_*
                   det.calm_scale, det.scale2, det.x1, det.x2,
                   th.u, th.mean_excess, th.cluster_rate, th.cluster_max,
                   dr.u, dr.mean_excess, dr.cluster_rate, dr.cluster_max,
                   stuck.last, stuck.repeat_rate, stuck.repeat_share,
                   shape.zero_rate, shape.resolution, shape.largest, shape.last,
                   bursts.recent, bursts.rate, bursts.log_mean, bursts.log_scale,
                   th.body_u, th.body_mean, th.body_sq,
                   profile.bin_ms, profile.bin_ms * profile.memory_periods, opts.clip,  # C_*
                   opts.level_alpha, opts.scale_alpha, opts.scale_alpha / 10,
                   th.base_quantile, th.floor, th.rate, th.risk, 1.0 - th.base_quantile,
                   dr.base_quantile, dr.floor, dr.rate, dr.risk, 1.0 - dr.base_quantile,
                   math.log(stuck.improbability), stuck.prone_share, stuck.run_ratio,
                   opts.resolution_floor, opts.drift_min_shift, gate.close_span,
                   bursts.alpha, bursts.size_alpha,
                   *profile.values, *shape.levels, *[0.0] * (shape.max_levels - nlevels)]
    ints: Any = [det.n, 0 if last_ms is None else last_ms, last_ms is not None,  # I_*
                 0 if first_ms is None else first_ms, first_ms is not None,
                 th.excesses, th.run, th.learned, dr.excesses, dr.run, dr.learned,
                 gate.is_open, gate.normal_run, gate.breach_run, gate.age, gate.span,
                 stuck.run, stuck.changes, stuck.runs, stuck.longest, stuck.samples, det.stuck_open,
                 shape.count, nlevels, shape.many, bursts.seen, bursts.sizes, det.smooth_n, det.kind,
                 -1, -1, th.body_count, th.shaped, gate.settled_run,
                 opts.warmup, opts.warmup // 2, opts.season_ms, profile.period_ms,  # K_*
                 opts.adapt_after, gate.close_after, stuck.min_samples, th.settle, dr.settle, det.series,
                 shape.max_levels, opts.drift, opts.smooth, nbins, gate.min_calm, opts.tail_shape,
                 *profile.counts]
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
    logs: list[tuple[float, float, float]] = []  # the level and kind events, for the detector's log lines
    for e in range(0, written * E_SIZE, E_SIZE):
        row = rows[e:e + E_SIZE]
        i, kind = int(row[E_INDEX]), row[E_KIND]
        if kind == EV_VALUE:
            found.append((i, det._value_alert(
                times[i], values[i], row[E_DEVIATION], row[E_DRIFT], row[E_EXPECTED], row[E_BASE],
                row[E_OFFSET], scale=row[E_SCALE], threshold=row[E_THRESHOLD],
                drift_threshold=row[E_DRIFT_THRESHOLD], reason=int(row[E_REASON]), centre=row[E_CENTRE],
                spread=row[E_SPREAD], recent=row[E_RECENT], rate=row[E_RATE],
                tails=(row[E_TH_U], row[E_TH_ME], row[E_TH_CR], row[E_TH_XI], row[E_DR_U], row[E_DR_ME],
                       row[E_DR_CR], 0.0))))
        elif kind == EV_STUCK:
            found.append((i, det._stuck_alert(times[i], values[i], int(row[E_RUN]), int(row[E_REQUIRED]),
                                              row[E_EXPECTED], scale=row[E_SCALE],
                                              threshold=row[E_THRESHOLD])))
        else:
            logs.append((kind, row[E_RUN_SHIFT], row[E_BREACH_RUN]))

    (det.dt_ms, det.offset, det.scale, det.offset_scale, det.run_shift,
     det.calm_scale, det.scale2, det.x1, det.x2,
     th.u, th.mean_excess, th.cluster_rate, th.cluster_max,
     dr.u, dr.mean_excess, dr.cluster_rate, dr.cluster_max, _, stuck.repeat_rate, stuck.repeat_share,
     shape.zero_rate, shape.resolution, shape.largest, shape.last,
     bursts.recent, bursts.rate, bursts.log_mean, bursts.log_scale,
     th.body_u, th.body_mean, th.body_sq) = fl[:F_SIZE]
    (det.n, _, _, _, _, th.excesses, th.run, th.learned, dr.excesses, dr.run, dr.learned,
     g_open, gate.normal_run, gate.breach_run, gate.age, gate.span,
     stuck.run, stuck.changes, stuck.runs, stuck.longest, stuck.samples, stuck_open,
     shape.count, nlevels, many, bursts.seen, bursts.sizes, det.smooth_n, det.kind,
     last_index, first_index, th.body_count, th_shaped, gate.settled_run) = il[:I_SIZE]
    gate.is_open, det.stuck_open, shape.many = bool(g_open), bool(stuck_open), bool(many)
    th.shaped = bool(th_shaped)
    if last_index >= 0:  # the caller's objects, as step keeps them (an int value stays an int)
        det.last_ms, stuck.last = times[last_index], values[last_index]
    if first_index >= 0:
        det.first_ms = times[first_index]
    profile.values[:] = fl[P0:P0 + nbins]
    profile.counts[:] = il[Q0:]
    shape.levels[:] = fl[P0 + nbins:P0 + nbins + nlevels]
    if logs:
        log = logging.getLogger(type(det).__module__)
        for kind, first, second in logs:
            if kind == EV_LEVEL:
                log.debug("%s/%s: accepting a new level (%+.4g) after %d anomalous samples",
                          det.device, det.metric, first, int(second))
            else:
                log.debug("%s/%s: judged as a %s series from now on", det.device, det.metric,
                          _KIND_NAMES[int(first)])
    return found
