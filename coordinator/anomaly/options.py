"""Typed reads of an anomaly detector's table (the shared readers in :mod:`broker.config_values`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.config_values import check_keys, float_option, int_option, str_option
from coordinator.anomaly.episode import EpisodeGate
from coordinator.anomaly.stuck import StuckRun
from coordinator.anomaly.threshold import PeaksOverThreshold
from schemas.errors import ConfigError

__all__ = ["AlertingOptions", "alerting_options", "bool_option", "check_keys", "float_option", "int_option",
           "str_option"]


def bool_option(where: str, options: Mapping[str, Any], key: str, default: bool) -> bool:
    """``options[key]`` as ``true`` or ``false`` (not 0 or 1, nor a string)."""
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class AlertingOptions:
    """The keys every online detector shares: the adaptive threshold (risk, base_quantile,
    threshold_rate, min_threshold, threshold_settle, tail_shape), episodes (close_after, close_span,
    adapt_after), the stuck check (stuck_samples, stuck_improbability, constant_prone,
    stuck_run_ratio), severity (critical_ratio) and forecasts (forecast_z). A detector's options
    extend it.
    """

    risk: float = 1e-4
    base_quantile: float = 0.98
    threshold_rate: float = 0.05
    min_threshold: float = 4.0
    threshold_settle: int = 200
    tail_shape: bool = True
    close_after: int = 10
    close_span: float = 0.5
    adapt_after: int = 20
    stuck_samples: int = 30
    stuck_improbability: float = 1e-6
    constant_prone: float = 0.5
    stuck_run_ratio: float = 3.0
    critical_ratio: float = 2.0
    forecast_z: float = 2.0

    def new_threshold(self, *, shaped: bool = True) -> PeaksOverThreshold:
        """A fresh adaptive threshold with these settings (``shaped``: it may fit the tail's shape, when
        ``tail_shape`` is on; a smooth control chart's tail is not a residual's)."""
        return PeaksOverThreshold(base_quantile=self.base_quantile, risk=self.risk, floor=self.min_threshold,
                                  rate=self.threshold_rate, settle=self.threshold_settle,
                                  shape=shaped and self.tail_shape)

    def new_gate(self, min_calm: int = 0) -> EpisodeGate:
        """A fresh episode gate with these settings (``min_calm``: see :class:`EpisodeGate`)."""
        return EpisodeGate(self.close_after, self.close_span, min_calm)

    def new_stuck(self) -> StuckRun:
        """A fresh stuck check with these settings."""
        return StuckRun(min_samples=self.stuck_samples, improbability=self.stuck_improbability,
                        prone_share=self.constant_prone, run_ratio=self.stuck_run_ratio)


def alerting_options(where: str, options: Mapping[str, Any], defaults: AlertingOptions) -> dict[str, Any]:
    """The :class:`AlertingOptions` keys read from an operator's table, checked the same way for
    every detector; ``defaults`` is the detector's options object with its defaults.
    """
    d = defaults
    return {
        "risk": float_option(where, options, "risk", d.risk, low=0, high=0.1, low_open=True),
        "base_quantile": float_option(where, options, "base_quantile", d.base_quantile, low=0.5, high=0.999),
        "threshold_rate": float_option(where, options, "threshold_rate", d.threshold_rate, low=0, high=1,
                                       low_open=True),
        # A threshold of 0 would divide by zero.
        "min_threshold": float_option(where, options, "min_threshold", d.min_threshold, low=0, high=1e6,
                                      low_open=True),
        # 0: the threshold settles until it has seen 20 excess runs (how long depends on the stream).
        "threshold_settle": int_option(where, options, "threshold_settle", d.threshold_settle, low=0,
                                       high=1_000_000),
        # false: the exponential tail whatever the scores' shape (heavy-tailed noise then alerts more often).
        "tail_shape": bool_option(where, options, "tail_shape", d.tail_shape),
        "close_after": int_option(where, options, "close_after", d.close_after, low=1, high=1_000_000),
        # 0: a fixed count of calm samples closes an episode.
        "close_span": float_option(where, options, "close_span", d.close_span, low=0, high=100),
        "adapt_after": int_option(where, options, "adapt_after", d.adapt_after, low=1, high=1_000_000),
        "stuck_samples": int_option(where, options, "stuck_samples", d.stuck_samples, low=2, high=10_000_000),
        "stuck_improbability": float_option(where, options, "stuck_improbability", d.stuck_improbability,
                                            low=0, high=0.5, low_open=True),
        # 1: runs are always judged by how often the series repeats a value (the constant-prone rule is off).
        "constant_prone": float_option(where, options, "constant_prone", d.constant_prone, low=0, high=1,
                                       low_open=True),
        "stuck_run_ratio": float_option(where, options, "stuck_run_ratio", d.stuck_run_ratio, low=1,
                                        high=1000),
        "critical_ratio": float_option(where, options, "critical_ratio", d.critical_ratio, low=1, high=1e6),
        "forecast_z": float_option(where, options, "forecast_z", d.forecast_z, low=0, high=100),
    }
