"""Typed reads of an anomaly detector's table (the shared readers in :mod:`broker.config_values`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.config_values import check_keys, float_option, int_option, str_option

__all__ = ["alerting_options", "check_keys", "float_option", "int_option", "str_option"]


def alerting_options(where: str, options: Mapping[str, Any], defaults: Any) -> dict[str, Any]:
    """The keys every online detector shares, checked the same way for each: the adaptive
    threshold (risk, base_quantile, threshold_rate, min_threshold), episodes (close_after,
    adapt_after), the stuck check, severity (critical_ratio) and forecasts (forecast_z).

    ``defaults`` is the detector's options object with its defaults (it declares these fields).
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
        "close_after": int_option(where, options, "close_after", d.close_after, low=1, high=1_000_000),
        "adapt_after": int_option(where, options, "adapt_after", d.adapt_after, low=1, high=1_000_000),
        "stuck_samples": int_option(where, options, "stuck_samples", d.stuck_samples, low=2, high=10_000_000),
        "stuck_improbability": float_option(where, options, "stuck_improbability", d.stuck_improbability,
                                            low=0, high=0.5, low_open=True),
        "critical_ratio": float_option(where, options, "critical_ratio", d.critical_ratio, low=1, high=1e6),
        "forecast_z": float_option(where, options, "forecast_z", d.forecast_z, low=0, high=100),
    }
