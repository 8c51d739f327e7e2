"""Routes samples to one online detector per (device, metric) and collects their alerts.

Configuration (the ``[anomaly]`` table; every key optional)::

    [anomaly.detector]                  # the default for every metric
    type = "robust_zscore"              # see detector_types()
    warmup = 120

    [anomaly.metrics.battery]           # a metric (or a glob of them) that needs other settings
    season_ms = 0
    [anomaly.metrics."disk_*_bytes"]
    series = "sparse"

    [[anomaly.overrides]]               # by device group (from the birth), device glob, metric glob
    group = "lab"
    drift = false

How the tables combine is :mod:`coordinator.anomaly.overrides`. The engine
does no I/O: the caller publishes and stores the alerts, tells it each
device's groups (:meth:`AnomalyEngine.set_device_groups`, from births) and
writes :meth:`AnomalyEngine.checkpoint` wherever it keeps state.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from coordinator.anomaly.alert import Alert
from coordinator.anomaly.base import DEFAULT_TYPE, ForecastPoint, StreamDetector
from coordinator.anomaly.checkpoint import decode_checkpoint, encode_checkpoint
from coordinator.anomaly.options import check_keys
from coordinator.anomaly.overrides import ChoiceKey, DetectorChoice
from schemas.errors import CodecError, ConfigError
from schemas.metrics import cycle

__all__ = ["AnomalyEngine", "SampleColumns", "StreamSample"]

logger = logging.getLogger(__name__)

#: ``(device, metric, time_ms, value)``
StreamSample = tuple[str, str, int, float]

_KNOWN = {"detector", "metrics", "overrides"}


class SampleColumns(Protocol):
    """One device's samples as columns (ingest's decoded metrics): sample ``i`` is metric
    ``names[name_index[i]]`` at ``times[i]`` with ``values[i]``."""

    # Only what the engine reads; coordinator/store/records.py's SampleColumnsLike asks the same
    # runs for more (epoch, first_seq). Kept apart so that anomaly/ and store/ need not import each other.

    @property
    def device(self) -> str: ...
    @property
    def names(self) -> Sequence[str]: ...
    @property
    def name_index(self) -> Sequence[int]: ...
    @property
    def times(self) -> Sequence[int]: ...
    @property
    def values(self) -> Sequence[float]: ...


class _PartSlice:
    """Samples taken from one part: the stream's ``i``-th of them is at ``positions[i]`` in part ``part``."""

    __slots__ = ("part", "positions")

    def __init__(self, part: int, positions: Sequence[int]) -> None:
        self.part, self.positions = part, positions

    def where(self, i: int) -> tuple[int, int]:
        return self.part, self.positions[i]


class _DeviceRun:
    """A device's parts that all list the same distinct names in cyclic order, joined end to end.

    Metric ``k``'s samples are then ``times[k::width]`` of the joined columns:
    one slice per metric per batch instead of one per metric per part.
    """

    __slots__ = ("names", "parts", "starts", "times", "values")

    def __init__(self, names: Sequence[str]) -> None:
        self.names = names
        self.parts: list[int] = []
        self.starts: list[int] = []  # where each part begins in the joined columns
        self.times: list[int] = []
        self.values: list[float] = []

    def add(self, part: int, times: Sequence[int], values: Sequence[float]) -> None:
        self.parts.append(part)
        self.starts.append(len(self.times))
        self.times += times
        self.values += values

    def where(self, metric: int, i: int) -> tuple[int, int]:
        """(part, position in the part) of metric ``metric``'s ``i``-th sample."""
        joined = metric + i * len(self.names)
        p = bisect.bisect_right(self.starts, joined) - 1
        return self.parts[p], joined - self.starts[p]


class _JoinedSlice:
    __slots__ = ("metric", "run")

    def __init__(self, run: _DeviceRun, metric: int) -> None:
        self.run, self.metric = run, metric

    def where(self, i: int) -> tuple[int, int]:
        return self.run.where(self.metric, i)


class _StreamRun:
    """A stream's samples gathered from a batch, and where each came from (to order the alerts)."""

    __slots__ = ("origins", "starts", "times", "values")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.values: list[float] = []
        self.starts: list[int] = []  # index in times where each origin's samples begin
        self.origins: list[_PartSlice | _JoinedSlice] = []

    def add(self, origin: _PartSlice | _JoinedSlice, times: Sequence[int], values: Sequence[float]) -> None:
        self.starts.append(len(self.times))
        self.origins.append(origin)
        self.times += times
        self.values += values

    def origin(self, index: int) -> tuple[int, int]:
        """(part, position in the part) of the stream's ``index``-th sample."""
        k = bisect.bisect_right(self.starts, index) - 1
        return self.origins[k].where(index - self.starts[k])


def _table(where: str, value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table ([{where}])")
    return value


class AnomalyEngine:
    """Online anomaly detection and forecasts for every metric stream of a fleet.

    >>> engine = AnomalyEngine()
    >>> [engine.observe("gw-1", "cpu", i * 1000, 40.0 + i % 5) for i in range(3)]
    [[], [], []]
    >>> engine.stream_count
    1
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = _table("anomaly", config)
        check_keys("anomaly", config, _KNOWN)
        self._choice = DetectorChoice(config)
        self._streams: dict[tuple[str, str], StreamDetector] = {}
        self._groups: dict[str, tuple[str, ...]] = {}
        # Which settings each stream's detector was built with (unknown for restored ones).
        self._chosen: dict[tuple[str, str], ChoiceKey] = {}

    @property
    def stream_count(self) -> int:
        """How many (device, metric) streams have a detector."""
        return len(self._streams)

    def detector(self, device: str, metric: str) -> StreamDetector:
        """The stream's detector, created on its first sample with the settings that apply to it."""
        key = (device, metric)
        detector = self._streams.get(key)
        if detector is None:
            chosen = self._choice.key(device, self._groups.get(device, ()), metric)
            detector = self._choice.factory(chosen)(device, metric)
            self._streams[key] = detector
            self._chosen[key] = chosen
        return detector

    def set_device_groups(self, device: str, groups: Sequence[str]) -> int:
        """Record the groups a device's birth names (``[[anomaly.overrides]]`` match on them).

        Streams of the device whose settings change with them start afresh
        (their detectors were built before the birth said where the device
        belongs); how many did is returned.
        """
        groups = tuple(groups)
        if self._groups.get(device, ()) == groups:
            return 0
        self._groups[device] = groups
        stale = [key for key, chosen in self._chosen.items()
                 if key[0] == device and self._choice.key(device, groups, key[1]) != chosen]
        for key in stale:
            del self._streams[key], self._chosen[key]
        if stale:
            logger.info("%s is in groups %s: %d of its streams start afresh with their settings", device,
                        ", ".join(groups) or "(none)", len(stale))
        return len(stale)

    def observe(self, device: str, metric: str, time_ms: int, value: float) -> list[Alert]:
        """Score one sample (then learn from it); the alerts it opens, usually none."""
        alert = self.detector(device, metric).step(time_ms, value)
        if alert is None:
            return []
        logger.info("anomaly %s/%s: %s", device, metric, alert.explanation)
        return [alert]

    def observe_many(self, samples: Iterable[StreamSample]) -> list[Alert]:
        """Score a batch of samples in order; the alerts they open, in sample order.

        Streams are independent, so the batch is scored stream by stream (each
        in its own order) through :meth:`StreamDetector.step_many`.
        """
        streams: dict[tuple[str, str], tuple[list[int], list[float], list[int]]] = {}
        for position, (device, metric, time_ms, value) in enumerate(samples):
            run = streams.get((device, metric))
            if run is None:
                run = streams[(device, metric)] = ([], [], [])
            run[0].append(time_ms)
            run[1].append(value)
            run[2].append(position)
        found: list[tuple[int, Alert]] = []
        for key, (times, values, positions) in streams.items():
            detector = self._streams.get(key) or self.detector(*key)
            found += [(positions[i], alert) for i, alert in detector.step_many(times, values)]
        return self._ordered(found)

    def observe_columns(self, parts: Sequence[SampleColumns]) -> list[Alert]:
        """Score ``parts`` (in order, each in sample order); the alerts, in sample order.

        The same as :meth:`observe_many` over every part's samples, without a
        tuple per sample: each stream's samples are sliced out of the columns
        and scored in one :meth:`StreamDetector.step_many`. In the usual layout
        (a device's names repeating in a fixed order, message after message)
        the device's parts are joined and each metric is sliced once.
        """
        streams: dict[tuple[str, str], _StreamRun] = {}

        def stream(device: str, name: str) -> _StreamRun:
            run = streams.get((device, name))
            if run is None:
                run = streams[(device, name)] = _StreamRun()
            return run

        def flush(device: str, joined: _DeviceRun) -> None:
            width = len(joined.names)
            for k, name in enumerate(joined.names):
                stream(device, name).add(_JoinedSlice(joined, k), joined.times[k::width],
                                         joined.values[k::width])

        joining: dict[str, _DeviceRun] = {}
        for part_no, part in enumerate(parts):
            device, names, index = part.device, part.names, part.name_index
            times, values = part.times, part.values
            count, width = len(times), len(names)
            joined = joining.get(device)
            if width and count and not count % width and index == cycle(width, count):
                if joined is not None and joined.names == names:
                    joined.add(part_no, times, values)
                    continue
                if joined is not None:
                    flush(device, joining.pop(device))
                if len(set(names)) == width:  # distinct names: one stream per position
                    joining[device] = _DeviceRun(names)
                    joining[device].add(part_no, times, values)
                    continue
            elif joined is not None:  # keep each stream's samples in part order
                flush(device, joining.pop(device))
            where: dict[str, list[int]] = {}  # by name: a table may list a name twice
            for i, k in enumerate(index):
                found_at = where.get(names[k])
                if found_at is None:
                    where[names[k]] = [i]
                else:
                    found_at.append(i)
            for name, positions in where.items():
                stream(device, name).add(_PartSlice(part_no, positions), [times[i] for i in positions],
                                         [values[i] for i in positions])
        for device, joined in joining.items():
            flush(device, joined)
        found: list[tuple[tuple[int, int], Alert]] = []
        for key, run in streams.items():
            detector = self._streams.get(key) or self.detector(*key)
            found += [(run.origin(i), alert) for i, alert in detector.step_many(run.times, run.values)]
        return self._ordered(found)

    def _ordered(self, found: Sequence[tuple[Any, Alert]]) -> list[Alert]:
        alerts = [alert for _, alert in sorted(found, key=lambda item: item[0])]
        for alert in alerts:
            logger.info("anomaly %s/%s: %s", alert.device, alert.metric, alert.explanation)
        return alerts

    def forecast(self, device: str, metric: str, horizon: int) -> list[ForecastPoint]:
        """The stream's next ``horizon`` samples as (time_ms, mean, low, high); empty if unseen."""
        detector = self._streams.get((device, metric))
        return [] if detector is None else detector.forecast(horizon)

    def forget(self, device: str) -> int:
        """Drop every detector of a decommissioned device; how many were dropped."""
        keys = [key for key in self._streams if key[0] == device]
        for key in keys:
            del self._streams[key]
            self._chosen.pop(key, None)
        self._groups.pop(device, None)
        return len(keys)

    def checkpoint(self) -> bytes:
        """All detector state, to be handed back to :meth:`restore` after a restart."""
        return encode_checkpoint({"streams": self._streams})

    def checkpoint_devices(self, devices: Iterable[str]) -> dict[str, bytes]:
        """Each of these devices' detectors as its own checkpoint blob (devices without detectors left out).

        A device that moves to another coordinator ([cluster]) takes these along
        through the store, so its detectors go on where they were.
        """
        wanted = set(devices)
        by_device: dict[str, dict[tuple[str, str], StreamDetector]] = {}
        for key, detector in self._streams.items():
            if key[0] in wanted:
                by_device.setdefault(key[0], {})[key] = detector
        return {device: encode_checkpoint({"streams": streams}) for device, streams in by_device.items()}

    def restore_devices(self, blobs: Mapping[str, bytes]) -> int:
        """Replace these devices' detectors with their blobs (from :meth:`checkpoint_devices`); how many
        detectors were restored. A blob that is unreadable or names another device is skipped with a
        warning: that device's detectors then start afresh."""
        restored = 0
        for device, blob in blobs.items():
            try:
                state = decode_checkpoint(blob)
            except CodecError as exc:  # UnsupportedVersion too
                logger.warning("detector state of %s not restored (%s): its detectors start afresh",
                               device, exc)
                continue
            streams = state.get("streams") if isinstance(state, dict) else None
            if not isinstance(streams, dict) or not all(
                    isinstance(k, tuple) and len(k) == 2 and k[0] == device and isinstance(d, StreamDetector)
                    for k, d in streams.items()):
                logger.warning("detector state of %s does not hold that device's detectors: not restored",
                               device)
                continue
            self.forget(device)
            self._streams.update(streams)
            restored += len(streams)
        return restored

    def restore(self, blob: bytes) -> None:
        """Replace detector state with a checkpoint's; CodecError/UnsupportedVersion if unreadable.

        Detectors keep the options they were created with; streams first seen
        after the restore use the current configuration.
        """
        state = decode_checkpoint(blob)
        streams = state.get("streams") if isinstance(state, dict) else None
        if not isinstance(streams, dict) or not all(isinstance(d, StreamDetector) for d in streams.values()):
            raise CodecError("anomaly checkpoint does not hold detector state")
        self._streams = streams
        self._chosen = {}
        logger.info("restored %d anomaly detectors (default type %s)", len(streams), DEFAULT_TYPE)
