"""Which detector settings a stream gets: the default table, its metric's table and a device rule.

Configuration (the ``[anomaly]`` table; every part optional)::

    [anomaly.detector]                  # every stream (robust_zscore unless it names another type)
    warmup = 120

    [anomaly.metrics."disk_*_bytes"]    # a metric name or glob (fnmatch): what such metrics are
    series = "sparse"

    [[anomaly.overrides]]               # device rules, in order
    group = "lab"                       # a group the device's birth names (optional)
    device = "gw-1*"                    # a glob on the device name (optional)
    metric = "temp_*"                   # a glob on the metric name (optional)
    drift = false                       # ...and any detector keys

A stream's settings are the default table, then the first ``[anomaly.metrics]``
table that matches its metric (an exact name before any glob, globs in the
order written) over it, then the first ``[[anomaly.overrides]]`` rule that
matches its device and metric over that. A table that names another ``type``
than the one so far starts afresh from that type's defaults. Every table, and
every metric table with every rule, is checked when the engine is built, so a
typo fails at start-up, naming the table.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.anomaly.base import DEFAULT_TYPE, StreamDetector, create_factory
from schemas.errors import ConfigError

__all__ = ["DetectorChoice", "DeviceRule"]

#: The keys of an ``[[anomaly.overrides]]`` rule that say which streams it applies to.
SELECTORS = ("group", "device", "metric")
#: (index of the metric table, index of the device rule), -1 for none: the settings a stream gets.
ChoiceKey = tuple[int, int]


def _table(where: str, value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table ([{where}])")
    return value


@dataclass(frozen=True, slots=True)
class DeviceRule:
    """One ``[[anomaly.overrides]]`` entry: which streams it matches, and its detector keys."""

    where: str
    keys: Mapping[str, Any]
    group: str | None = None
    device: str = "*"
    metric: str = "*"

    @classmethod
    def from_mapping(cls, where: str, table: Mapping[str, Any]) -> DeviceRule:
        selectors: dict[str, str] = {}
        for name in SELECTORS:
            value = table.get(name)
            if value is None:
                continue
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: {name} must be a non-empty string, not {value!r}")
            selectors[name] = value
        return cls(where=where, keys={k: v for k, v in table.items() if k not in SELECTORS}, **selectors)

    def matches(self, device: str, groups: Sequence[str], metric: str) -> bool:
        return ((self.group is None or self.group in groups) and fnmatch.fnmatchcase(device, self.device)
                and fnmatch.fnmatchcase(metric, self.metric))


def merged(tables: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The tables' keys, later over earlier; a table naming another ``type`` drops what came before."""
    result: dict[str, Any] = {}
    kind = DEFAULT_TYPE
    for table in tables:
        named = table.get("type")
        if named is not None and named != kind:
            result = {}
            kind = named
        result.update(table)
    return result


class DetectorChoice:
    """The operator's layered settings, checked, and a detector builder per combination that applies.

    >>> choice = DetectorChoice({"metrics": {"disk_*_bytes": {"series": "sparse"}},
    ...                          "overrides": [{"group": "lab", "drift": False}]})
    >>> choice.key("gw-1", ("lab",), "disk_write_bytes"), choice.key("gw-2", (), "cpu")
    ((0, 0), (-1, -1))
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        base = _table("anomaly.detector", config.get("detector"))
        self._exact: dict[str, int] = {}
        self._globs: list[tuple[str, int]] = []
        metric_tables: list[tuple[str, Mapping[str, Any]]] = []
        for metric, value in _table("anomaly.metrics", config.get("metrics")).items():
            where = f"anomaly.metrics.{metric}"
            metric_tables.append((where, _table(where, value)))
            index = len(metric_tables) - 1
            if any(c in metric for c in "*?["):
                self._globs.append((metric, index))
            else:
                self._exact[metric] = index
        rules = config.get("overrides", [])
        if not isinstance(rules, Sequence) or isinstance(rules, str):
            raise ConfigError("anomaly.overrides must be a list of tables ([[anomaly.overrides]])")
        self._rules = [DeviceRule.from_mapping(where, _table(where, rule))
                       for where, rule in ((f"anomaly.overrides[{i}]", r) for i, r in enumerate(rules))]
        self._factories: dict[ChoiceKey, Callable[[str, str], StreamDetector]] = {}
        # Each table on its own first, so that an error names the table the operator wrote it in.
        layers: list[tuple[str, Mapping[str, Any]]] = [*metric_tables,
                                                       *((r.where, r.keys) for r in self._rules)]
        self._factories[(-1, -1)] = create_factory(base, "anomaly.detector")
        for where, table in layers:
            create_factory(merged([base, table]), where)
        for m in range(-1, len(metric_tables)):
            for r in range(-1, len(self._rules)):
                tables = [base]
                names = []
                if m >= 0:
                    tables.append(metric_tables[m][1])
                    names.append(metric_tables[m][0])
                if r >= 0:
                    tables.append(self._rules[r].keys)
                    names.append(self._rules[r].where)
                if (m, r) not in self._factories:
                    self._factories[(m, r)] = create_factory(merged(tables), " with ".join(names))

    def key(self, device: str, groups: Sequence[str], metric: str) -> ChoiceKey:
        """Which combination of tables a stream gets."""
        m = self._exact.get(metric, -1)
        if m < 0:
            m = next((i for pattern, i in self._globs if fnmatch.fnmatchcase(metric, pattern)), -1)
        r = next((i for i, rule in enumerate(self._rules) if rule.matches(device, groups, metric)), -1)
        return m, r

    def factory(self, key: ChoiceKey) -> Callable[[str, str], StreamDetector]:
        """The builder of a stream's detector for a :meth:`key`."""
        return self._factories[key]
