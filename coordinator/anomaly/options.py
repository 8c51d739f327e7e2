"""Typed reads of an anomaly detector's table (the shared readers in :mod:`broker.config_values`)."""

from __future__ import annotations

from broker.config_values import check_keys, float_option, int_option, str_option

__all__ = ["check_keys", "float_option", "int_option", "str_option"]
