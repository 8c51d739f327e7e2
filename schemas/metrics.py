"""Metrics batches: many samples of a device's gauges and counters in one compact record.

Sample ``i`` of a batch has sequence number ``first_seq + i`` within the
device's sequence ``epoch``, so ``(epoch, seq)`` orders all of a device's
samples and a receiver can count loss and duplication without any per-sample
overhead on the wire.

The wire body is columnar (see FORMAT.md): a table of metric names, one name
index, one time delta and one value per sample. Float values of a metric that
are all short decimals travel as integers with a per-metric decimal exponent
(``48.3`` as ``483`` with exponent 1), which is exact; see
:mod:`schemas.float_columns`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, ClassVar

from schemas.errors import CodecError
from schemas.float_columns import MAX_DECIMAL_EXPONENT, MAX_EXACT_INT, decimal_parts
from schemas.record_base import (
    INT64_MAX,
    INT64_MIN,
    TYPE_KEY,
    VERSION_KEY,
    SequencedBatch,
    WireFields,
    check_device,
    check_int,
    check_name,
    empty_map,
    freeze_extra,
    jsonable,
    register_record,
)

__all__ = ["MetricColumns", "MetricSample", "MetricsBatch", "cycle"]


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One reading of one metric.

    ``value`` is an ``int`` (64-bit signed) or a finite ``float``, and keeps its
    type across the wire. Not bool (send 0/1) and not text (put it on a state
    topic): the coordinator scores every sample numerically. Not NaN or
    infinity either: leave the sample out when there is no reading.
    """

    time_ms: int
    name: str
    value: int | float

    def __post_init__(self) -> None:
        # Fast paths first: this runs for every sample decoded.
        if type(self.time_ms) is not int or not 0 <= self.time_ms <= INT64_MAX:
            object.__setattr__(self, "time_ms",
                               check_int(f"metric sample {self.name!r} time_ms", self.time_ms))
        check_name("metric sample name", self.name)
        value = self.value
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                raise CodecError(f"metric sample {self.name!r} value must be finite, not "
                                 f"{value!r}; leave the sample out instead")
        elif kind is int:
            if not INT64_MIN <= value <= INT64_MAX:
                raise CodecError(f"metric sample {self.name!r} value {value} does not fit in "
                                 "a signed 64-bit integer")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise CodecError(f"metric sample {self.name!r} value must be an int or float, not "
                             f"{type(value).__name__} {value!r}")
        else:
            # int and float subclasses (IntEnum, numpy.float64) are stored as the plain type.
            object.__setattr__(self, "value", int(value) if isinstance(value, int) else
                               float(value))
            MetricSample.__post_init__(self)


@register_record
@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsBatch(SequencedBatch[MetricSample]):
    """A batch of one device's samples, numbered ``first_seq``, ``first_seq + 1``, ...

    >>> samples = [MetricSample(1000, "temp_c", 48.3), MetricSample(1000, "load1", 2)]
    >>> b = MetricsBatch(device="gw-1", epoch=3, first_seq=10, samples=samples)
    >>> list(b.numbered())[1]
    (11, MetricSample(time_ms=1000, name='load1', value=2))
    """

    TYPE: ClassVar[str] = "metrics"
    ITEM: ClassVar[str] = "sample"
    VERSION: ClassVar[int] = 1
    WIRE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"device", "epoch", "seq", "t0", "names", "scale", "idx", "dt", "vals"})

    device: str
    epoch: int
    first_seq: int
    samples: tuple[MetricSample, ...]
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_device("metrics device", self.device)
        object.__setattr__(self, "epoch", check_int("metrics epoch", self.epoch))
        object.__setattr__(self, "first_seq", check_int("metrics first_seq", self.first_seq))
        samples = self.samples
        if type(samples) is not tuple:
            if not isinstance(samples, list | tuple):
                raise CodecError(f"metrics samples must be a tuple or list of MetricSample, "
                                 f"not {type(samples).__name__}")
            samples = tuple(samples)
            object.__setattr__(self, "samples", samples)
        for i, sample in enumerate(samples):
            if type(sample) is not MetricSample:
                raise CodecError(f"metrics samples[{i}] must be a MetricSample, not "
                                 f"{type(sample).__name__}")
        if self.first_seq + len(samples) > INT64_MAX:
            raise CodecError("metrics first_seq + len(samples) overflows 64 bits")
        object.__setattr__(self, "extra", freeze_extra(MetricsBatch, self.extra))

    def _items(self) -> tuple[MetricSample, ...]:
        return self.samples

    def to_wire(self) -> dict[str, Any]:
        names: dict[str, int] = {}
        indices: list[int] = []
        deltas: list[int] = []
        values: list[int | float] = []
        previous = t0 = self.samples[0].time_ms if self.samples else 0
        for sample in self.samples:
            index = names.get(sample.name)
            if index is None:
                index = names[sample.name] = len(names)
            indices.append(index)
            deltas.append(sample.time_ms - previous)
            previous = sample.time_ms
            values.append(sample.value)
        scales = _scale_decimal_metrics(len(names), indices, values)
        return {"device": self.device, "epoch": self.epoch, "seq": self.first_seq, "t0": t0,
                "names": list(names), "scale": scales, "idx": indices, "dt": deltas,
                "vals": values}

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> MetricsBatch:
        names = fields.get_str_list("names")
        scales = fields.get_list("scale", len(names))
        divisors: list[int | None] = []
        for scale in scales:
            if scale is not None and (type(scale) is not int
                                      or not 0 <= scale <= MAX_DECIMAL_EXPONENT):
                raise fields.error("scale", f"entries are nil or 0..{MAX_DECIMAL_EXPONENT}, "
                                            f"found {scale!r}")
            divisors.append(None if scale is None else 10**scale)
        indices = fields.get_int_list("idx", None, 0, len(names) - 1)
        deltas = fields.get_int_list("dt", len(indices))
        values = fields.get_list("vals", len(indices))
        time_ms = fields.get_int("t0")
        samples = []
        for index, delta, value in zip(indices, deltas, values, strict=True):
            time_ms += delta
            divisor = divisors[index]
            if divisor is not None:
                if type(value) is not int or not -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
                    raise fields.error("vals", f"must hold integers within +-2**53 for the "
                                               f"scaled metric {names[index]!r}, found {value!r}")
                value = value / divisor
            elif type(value) is not int and type(value) is not float:
                raise fields.error("vals", f"must hold numbers, found {type(value).__name__}")
            samples.append(MetricSample(time_ms, names[index], value))
        return cls(device=fields.get_str("device"), epoch=fields.get_int("epoch"),
                   first_seq=fields.get_int("seq"), samples=tuple(samples), extra=extra)

    def to_json(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "type": self.TYPE, "version": self.VERSION, "device": self.device,
            "epoch": self.epoch, "first_seq": self.first_seq,
            "samples": [{"seq": seq, "time_ms": s.time_ms, "name": s.name, "value": s.value}
                        for seq, s in self.numbered()],
        }
        if self.extra:
            view["extra"] = jsonable(self.extra)
        return view


def _scale_decimal_metrics(name_count: int, indices: list[int],
                           values: list[int | float]) -> list[int | None]:
    """Rewrite, in place, the values of metrics whose floats are all short decimals as integers.

    Returns each metric's decimal exponent, or None for a metric written as is
    (it has an int value, or a float that is not a short decimal).
    """
    exponents: list[int | None] = [0] * name_count
    parts: list[tuple[int, int] | None] = []
    for index, value in zip(indices, values, strict=True):
        part = decimal_parts(value) if type(value) is float else None
        parts.append(part)
        if part is None:
            exponents[index] = None
        else:
            current = exponents[index]
            if current is not None and part[0] > current:
                exponents[index] = part[0]
    for index, exponent in enumerate(exponents):
        if exponent is not None and exponent > MAX_DECIMAL_EXPONENT:
            exponents[index] = None
    scaled: list[int] = []
    for index, part in zip(indices, parts, strict=True):
        exponent = exponents[index]
        if exponent is None or part is None:
            scaled.append(0)
            continue
        mantissa = part[1] * 10 ** (exponent - part[0])
        if not -MAX_EXACT_INT <= mantissa <= MAX_EXACT_INT:
            exponents[index] = None
        scaled.append(mantissa)
    for i, index in enumerate(indices):
        if exponents[index] is not None:
            values[i] = scaled[i]
    return exponents


_COLUMN_KEYS = MetricsBatch.WIRE_KEYS | {TYPE_KEY, VERSION_KEY}


@dataclass(frozen=True, slots=True)
class MetricColumns:
    """The samples of a metrics batch as columns, for a receiver that handles many per second.

    Sample ``i`` is ``MetricSample(times[i], names[name_index[i]], v)`` with
    ``v = (wire_values or values)[i]``, numbered ``first_seq + i``; ``values``
    holds every value as a float (``wire_values`` is None when they all are on
    the wire, else it keeps the ints as ints, as :class:`MetricSample` does).
    Built by :meth:`from_body` without an object per sample; the lists are
    shared, not copied, so nobody changes them. ``time_range`` is the
    earliest and latest time, when :meth:`from_body` knew them at no cost.
    """

    device: str
    epoch: int
    first_seq: int
    names: list[str]
    name_index: list[int]
    times: list[int]
    values: list[float]
    wire_values: list[int | float] | None = None
    time_range: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.times)

    def slice(self, start: int, stop: int) -> MetricColumns:
        """Samples ``start`` to ``stop`` (exclusive), keeping their sequence numbers."""
        wire = None if self.wire_values is None else self.wire_values[start:stop]
        return MetricColumns(self.device, self.epoch, self.first_seq + start, self.names,
                             self.name_index[start:stop], self.times[start:stop],
                             self.values[start:stop], wire)

    def samples(self) -> list[MetricSample]:
        """The samples as :class:`MetricSample` objects (what the batch record holds)."""
        names, wire = self.names, self.wire_values or self.values
        return [MetricSample(t, names[k], v)
                for t, k, v in zip(self.times, self.name_index, wire, strict=True)]

    @classmethod
    def from_body(cls, body: Any) -> MetricColumns | None:
        """The columns of a decoded metrics record body, or None to use the record path instead.

        Only a body that ``record_from_body`` turns into a :class:`MetricsBatch`
        without an ``extra`` is accepted, with the same checks and the same
        values; anything else (another type or version, extra keys, anything
        malformed) returns None, and ``record_from_body`` gives the record or
        the exact error.
        """
        if type(body) is not dict or body.get(TYPE_KEY) != MetricsBatch.TYPE:
            return None
        if not body.keys() <= _COLUMN_KEYS:
            return None
        version = body.get(VERSION_KEY)
        if type(version) is not int or not 1 <= version <= MetricsBatch.VERSION:
            return None
        device, epoch, first_seq, t0 = body.get("device"), body.get("epoch"), body.get("seq"), body.get("t0")
        names, scales, index = body.get("names"), body.get("scale"), body.get("idx")
        deltas, wire = body.get("dt"), body.get("vals")
        if (type(device) is not str or type(epoch) is not int or type(first_seq) is not int
                or type(t0) is not int or type(names) is not list or type(scales) is not list
                or type(index) is not list or type(deltas) is not list or type(wire) is not list):
            return None
        count, width = len(index), len(names)
        if (len(scales) != width or len(deltas) != count or len(wire) != count
                or not 0 <= epoch <= INT64_MAX or not 0 <= first_seq <= INT64_MAX - count
                or not 0 <= t0 <= INT64_MAX):
            return None
        # The usual table order (0, 1, .., width-1, 0, 1, ..) is checked by one comparison, once its
        # entries are known to be ints (== alone would also take 1.0 or True for 1).
        cyclic = False
        if count:
            if not set(map(type, index)) <= _INT or not set(map(type, deltas)) <= _INT:
                return None
            cyclic = bool(width) and index == cycle(width, count)
            if not cyclic and (min(index) < 0 or max(index) >= width):
                return None
            low_delta = min(deltas)
            if low_delta < INT64_MIN or max(deltas) > INT64_MAX:
                return None
        if not set(map(type, names)) <= _STR or not set(map(type, scales)) <= _INT_OR_NONE:
            return None
        divisors: list[int | None] = []
        for scale in scales:
            if scale is not None and not 0 <= scale <= MAX_DECIMAL_EXPONENT:
                return None
            divisors.append(None if scale is None else 10**scale)
        times = list(accumulate(deltas, initial=t0))
        del times[0]
        time_range: tuple[int, int] | None = None
        if count:
            # Times that never go back start at their minimum and end at their maximum.
            time_range = (times[0], times[-1]) if low_delta >= 0 else (min(times), max(times))
            if time_range[0] < 0 or time_range[1] > INT64_MAX:
                return None
        used: list[int] | None = None  # None: every name of the table is used
        if not (cyclic and count >= width):
            used = sorted(set(index)) if count else []
            if len(used) == width:
                used = None
        try:
            check_device("metrics device", device)
            # Only names that samples use are checked, as the record path checks them.
            for name in names if used is None else map(names.__getitem__, used):
                check_name("metric sample name", name)
        except CodecError:
            return None
        values = _column_values(divisors, index, wire)
        if values is None:
            return None
        if used is not None:
            # Names no sample uses are left out: they would only be stored (the record path drops them too).
            remap = dict(zip(used, range(len(used)), strict=True))
            names = [names[k] for k in used]
            if not cyclic:  # a cyclic index with unused names is 0 .. count-1 already
                index = [remap[k] for k in index]
        return cls(device, epoch, first_seq, names, index, times, values[0], values[1], time_range)


#: Name indexes cached by (width, count): at most this many, of at most CYCLE_CACHE_COUNT entries
#: each, so a stream of bodies declaring ever other sizes cannot grow the cache (about 8 MB at most).
CYCLE_CACHE_ENTRIES = 64
CYCLE_CACHE_COUNT = 16_384
_CYCLES: dict[tuple[int, int], list[int]] = {}


def cycle(width: int, count: int) -> list[int]:
    """``[0, 1, .., width-1, 0, 1, ..]`` of length ``count``: the usual name index of a batch.

    Shared and cached (up to a bound): compare with it, never change it.
    """
    key = (width, count)
    found = _CYCLES.get(key)
    if found is None:
        found = (list(range(width)) * (count // width + 1))[:count]
        if count <= CYCLE_CACHE_COUNT:
            if len(_CYCLES) >= CYCLE_CACHE_ENTRIES:
                _CYCLES.clear()
            _CYCLES[key] = found
    return found


_INT = frozenset({int})
_STR = frozenset({str})
_INT_OR_NONE = frozenset({int, type(None)})
_NUMBER = frozenset({int, float})


def _column_values(divisors: list[int | None], index: list[int],
                   wire: list[Any]) -> tuple[list[float], list[int | float] | None] | None:
    """``(floats, typed)``: each value as :meth:`MetricsBatch.from_wire` and :class:`MetricSample`
    check and compute it, as a float, and with its type (None when all are floats); None if any fails."""
    if not wire:
        return [], None
    kinds = set(map(type, wire))
    if None not in divisors:  # every metric a decimal: integer mantissas within +-2**53
        if kinds != _INT or min(wire) < -MAX_EXACT_INT or max(wire) > MAX_EXACT_INT:
            return None
        if len(set(divisors)) == 1:
            divisor = divisors[0]
            return [m / divisor for m in wire], None
        return [m / d for m, d in zip(wire, map(divisors.__getitem__, index), strict=True)], None
    if divisors.count(None) == len(divisors):  # no decimal metric: 64-bit ints and finite floats as they are
        if not kinds <= _NUMBER:
            return None
        if int in kinds:
            ints = [v for v in wire if type(v) is int]
            if min(ints) < INT64_MIN or max(ints) > INT64_MAX:
                return None
        if float in kinds and not all(map(math.isfinite, wire)):
            return None
        return (wire, None) if int not in kinds else ([float(v) for v in wire], wire)
    typed: list[int | float] = []
    for k, value in zip(index, wire, strict=True):
        divisor = divisors[k]
        kind = type(value)
        if divisor is not None:
            if kind is not int or not -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
                return None
            typed.append(value / divisor)
        elif (kind is float and math.isfinite(value)) or (kind is int and INT64_MIN <= value <= INT64_MAX):
            typed.append(value)
        else:
            return None
    if any(type(v) is int for v in typed):
        return [float(v) for v in typed], typed
    return typed, None  # all floats
