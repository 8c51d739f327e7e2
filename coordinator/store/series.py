"""One metric's stored samples as two numpy columns (times, values), read straight from the blocks.

A history query for a chart reads a day of one metric: 86,400 samples at
one a second, inside blocks that hold every metric of the device. Decoding
those blocks into a :class:`~coordinator.store.records.SampleRecord` per
sample (what :meth:`Store.samples` returns) costs an object for every
sample of every metric; here the block's columns stay arrays from the
decompressed bytes to the selection, so only the wanted samples are copied.
The body format is the one :mod:`coordinator.store.blocks` documents.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import msgpack
import numpy as np
import numpy.typing as npt
import zstandard

from coordinator.store.blocks import BLOCK_FORMAT
from schemas.errors import StoreError

__all__ = ["Series", "series_of_blocks"]

#: (times in ms as int64, values as float64), sorted by time.
Series = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]

_local = threading.local()
_INDEX_TYPES: dict[str, str] = {"H": "<u2", "I": "<u4"}


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def _block_part(where: str, body: bytes, name: str) -> Series | None:
    """The samples of metric ``name`` in one stored block body (None when it holds none)."""
    try:
        fields = msgpack.unpackb(_decompressor().decompress(body), raw=False, use_list=True)
        version, names, _seqs, (index_code, index_bytes), time_bytes, value_bytes = fields
    except (zstandard.ZstdError, ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as exc:
        raise StoreError(f"stored metric block {where} cannot be read: {exc}") from exc
    if version != BLOCK_FORMAT or index_code not in _INDEX_TYPES:
        raise StoreError(f"stored metric block {where} has format {version!r}; this version of edgebus "
                         f"reads format {BLOCK_FORMAT}")
    try:
        k = names.index(name)
    except ValueError:
        return None
    times = np.frombuffer(time_bytes, dtype="<i8")
    values = np.frombuffer(value_bytes, dtype="<f8")
    if len(names) == 1:
        return times.astype(np.int64), values.astype(np.float64)
    index = np.frombuffer(index_bytes, dtype=_INDEX_TYPES[index_code])
    if not len(times) == len(values) == len(index):
        raise StoreError(f"stored metric block {where}: its columns differ in length")
    mask = index == k
    return times[mask].astype(np.int64), values[mask].astype(np.float64)


def series_of_blocks(blocks: Iterable[tuple[str, bytes]], name: str, since_ms: int | None,
                     until_ms: int | None) -> Series:
    """Metric ``name`` from ``(where, body)`` blocks, within ``[since_ms, until_ms)``, sorted by time."""
    parts_t: list[npt.NDArray[np.int64]] = []
    parts_v: list[npt.NDArray[np.float64]] = []
    for where, body in blocks:
        part = _block_part(where, body, name)
        if part is not None and len(part[0]):
            parts_t.append(part[0])
            parts_v.append(part[1])
    if not parts_t:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    times = np.concatenate(parts_t)
    values = np.concatenate(parts_v)
    keep = np.ones(len(times), dtype=bool)
    if since_ms is not None:
        keep &= times >= since_ms
    if until_ms is not None:
        keep &= times < until_ms
    times, values = times[keep], values[keep]
    order = np.argsort(times, kind="stable")
    return times[order], values[order]
