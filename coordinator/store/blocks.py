"""Metric samples stored as compressed blocks: one row per run of a device's samples.

A row per sample costs three B-tree inserts (the key and two indexes) and
about 100 bytes; at a few hundred thousand samples a second that, not the
network or the scoring, was what limited one coordinator. A block keeps the
samples of one message (one device, one sequence epoch) as columns
compressed together, the way time-series databases store chunks: one row,
three index entries and about 5 bytes per sample.

Body format, version 1: zstd over a msgpack array
``[1, names, seqs, name_index, times, values]``, where ``names`` is a list
of text, ``seqs`` is nil when the block's sequence numbers are
``first_seq .. first_seq + count - 1`` and otherwise little-endian int64
bytes, ``name_index`` is little-endian uint16 (uint32 when there are more
than 65,535 names) bytes, ``times`` little-endian int64 milliseconds and
``values`` little-endian float64. A reader refuses any other version.

A block never spans more than :data:`MAX_SEQ_SPAN` sequence numbers or
:data:`MAX_TIME_SPAN_MS` of time, so a query for a sequence range or a time
range needs to look only that far back from its start.
"""

from __future__ import annotations

import sys
import threading
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import zstandard

from coordinator.store.records import SampleColumnsLike
from schemas.errors import StoreError

__all__ = ["BLOCK_FORMAT", "BLOCK_SAMPLES", "MAX_SEQ_SPAN", "MAX_TIME_SPAN_MS", "Block", "blocks_of_rows",
           "blocks_of_runs", "decode_block", "split_run"]

BLOCK_FORMAT = 1
BLOCK_SAMPLES = 8192  # runs are merged up to this many samples a block (a read decodes whole blocks)
MAX_SEQ_SPAN = 65_536
MAX_TIME_SPAN_MS = 3_600_000
_LITTLE = sys.byteorder == "little"
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # zstandard's (de)compressor objects are not safe to share between threads.
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=1)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def _pack(typecode: str, items: Sequence[int] | Sequence[float]) -> bytes:
    packed = array(typecode, items)
    if not _LITTLE:
        packed.byteswap()
    return packed.tobytes()


def _unpack(typecode: str, data: bytes, count: int | None, what: str) -> array[Any]:
    unpacked = array(typecode)
    try:
        unpacked.frombytes(data)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"stored metric block: its {what} column is not {typecode} data") from exc
    if count is not None and len(unpacked) != count:
        raise StoreError(f"stored metric block: its {what} column holds {len(unpacked)} entries, not {count}")
    if not _LITTLE:
        unpacked.byteswap()
    return unpacked


@dataclass(frozen=True, slots=True)
class Block:
    """Samples of one device and sequence epoch; sample ``i`` is sequence number ``seqs[i]``.

    ``seqs`` is None for a run numbered ``first_seq, first_seq + 1, ...`` (the
    usual case: one message), which is also how it is stored.
    """

    device: str
    epoch: int
    first_seq: int
    seqs: Sequence[int] | None
    names: Sequence[str]
    name_index: Sequence[int]
    times: Sequence[int]
    values: Sequence[float]

    @classmethod
    def numbered(cls, device: str, epoch: int, seqs: list[int], names: Sequence[str],
                 name_index: Sequence[int], times: Sequence[int], values: Sequence[float]) -> Block:
        """The block of samples numbered ``seqs`` (ascending), stored as a run when they are one."""
        contiguous = seqs[-1] - seqs[0] == len(seqs) - 1
        return cls(device, epoch, seqs[0], None if contiguous else seqs, names, name_index, times, values)

    @property
    def count(self) -> int:
        return len(self.times)

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs is not None else self.first_seq + len(self.times) - 1

    def seq_list(self) -> Sequence[int]:
        return self.seqs if self.seqs is not None else range(self.first_seq, self.first_seq + len(self.times))

    def row(self) -> tuple[str, int, int, int, int, int, int, bytes]:
        """(device, epoch, first_seq, last_seq, count, first_ms, last_ms, body), as stored."""
        times = self.times
        return (self.device, self.epoch, self.first_seq, self.last_seq, len(times), min(times), max(times),
                self.body())

    def body(self) -> bytes:
        index_code = "H" if len(self.names) <= 0xFFFF else "I"
        packed = msgpack.packb([
            BLOCK_FORMAT, list(self.names), None if self.seqs is None else _pack("q", self.seqs),
            [index_code, _pack(index_code, self.name_index)], _pack("q", self.times), _pack("d", self.values),
        ], use_bin_type=True)
        return _compressor().compress(packed)

    def samples(self) -> Iterator[tuple[int, int, str, float]]:
        """(seq, time_ms, name, value) of each sample, in stored order."""
        names = self.names
        return zip(self.seq_list(), self.times, map(names.__getitem__, self.name_index), self.values,
                   strict=True)

    def without(self, keep: Sequence[bool]) -> Block | None:
        """The block holding only the samples where ``keep`` is true (None if there are none)."""
        positions = [i for i, k in enumerate(keep) if k]
        if not positions:
            return None
        if len(positions) == len(self.times):
            return self
        seqs = self.seq_list()
        return Block.numbered(self.device, self.epoch, [seqs[i] for i in positions], self.names,
                              [self.name_index[i] for i in positions], [self.times[i] for i in positions],
                              [self.values[i] for i in positions])


def decode_block(device: str, epoch: int, first_seq: int, body: bytes) -> Block:
    """A stored row back to its :class:`Block`; StoreError if the body is not a version-1 block."""
    try:
        fields = msgpack.unpackb(_decompressor().decompress(body), raw=False, use_list=True)
    except (zstandard.ZstdError, ValueError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as exc:
        raise StoreError(f"stored metric block {device}/{epoch}/{first_seq} cannot be read: {exc}") from exc
    if not isinstance(fields, list) or not fields or fields[0] != BLOCK_FORMAT:
        version = fields[0] if isinstance(fields, list) and fields else None
        raise StoreError(f"stored metric block {device}/{epoch}/{first_seq} has format {version!r}; this "
                         f"version of edgebus reads format {BLOCK_FORMAT} (upgrade edgebus to read it)")
    try:
        _, names, seq_bytes, (index_code, index_bytes), time_bytes, value_bytes = fields
    except (TypeError, ValueError) as exc:
        raise StoreError(f"stored metric block {device}/{epoch}/{first_seq} is not a block") from exc
    where = f"{device}/{epoch}/{first_seq}"
    times: list[int] = _unpack("q", time_bytes, None, f"{where} times").tolist()
    count = len(times)
    seqs: list[int] | None = None
    if seq_bytes is not None:
        seqs = _unpack("q", seq_bytes, count, f"{where} seqs").tolist()
    if index_code not in ("H", "I"):
        raise StoreError(f"stored metric block {where}: name index type {index_code!r}")
    index: list[int] = _unpack(index_code, index_bytes, count, f"{where} name index").tolist()
    values: list[float] = _unpack("d", value_bytes, count, f"{where} values").tolist()
    return Block(device, epoch, first_seq, seqs, list(names), index, times, values)


def split_run(block: Block) -> list[Block]:
    """``block`` cut where needed so that none spans more than the sequence and time limits."""
    times = block.times
    if not times:
        return []
    if block.last_seq - block.first_seq < MAX_SEQ_SPAN and max(times) - min(times) <= MAX_TIME_SPAN_MS:
        return [block]
    parts: list[Block] = []
    seqs = block.seq_list()
    start, low, high = 0, times[0], times[0]
    for i in range(1, len(times) + 1):
        if i < len(times):
            t = times[i]
            nlow, nhigh = min(low, t), max(high, t)
            if seqs[i] - seqs[start] < MAX_SEQ_SPAN and nhigh - nlow <= MAX_TIME_SPAN_MS:
                low, high = nlow, nhigh
                continue
        parts.append(Block.numbered(block.device, block.epoch, list(seqs[start:i]), block.names,
                                    block.name_index[start:i], times[start:i], block.values[start:i]))
        if i < len(times):
            start, low, high = i, times[i], times[i]
    return parts


class _Merge:
    """Consecutive runs of one device and epoch being joined into one block."""

    __slots__ = ("epoch", "first_seq", "index", "names", "next_seq", "positions", "times", "values")

    def __init__(self, run: SampleColumnsLike) -> None:
        self.epoch, self.first_seq = run.epoch, run.first_seq
        self.names = list(run.names)
        self.positions = {name: k for k, name in enumerate(self.names)}
        self.index, self.times, self.values = list(run.name_index), list(run.times), list(run.values)
        self.next_seq = run.first_seq + len(run.times)

    def add(self, run: SampleColumnsLike) -> None:
        names = run.names
        if names == self.names:
            self.index += run.name_index
        else:
            positions = self.positions
            remap = [positions.setdefault(name, len(positions)) for name in names]
            self.names = list(positions)
            self.index += map(remap.__getitem__, run.name_index)
        self.times += run.times
        self.values += run.values
        self.next_seq += len(run.times)


def blocks_of_runs(runs: Sequence[SampleColumnsLike]) -> list[Block]:
    """Runs as blocks, joining each device's consecutive runs (one message each) up to BLOCK_SAMPLES.

    Fewer, larger blocks: one row, one compression and one index entry for
    many messages, and better compression.
    """
    blocks: list[Block] = []
    open_runs: dict[str, _Merge] = {}

    def close(device: str, merge: _Merge) -> None:
        blocks.extend(split_run(Block(device, merge.epoch, merge.first_seq, None, merge.names, merge.index,
                                      merge.times, merge.values)))

    for run in runs:
        count = len(run.times)
        if not count:
            continue
        merge = open_runs.get(run.device)
        if (merge is not None and merge.epoch == run.epoch and merge.next_seq == run.first_seq
                and len(merge.times) + count <= BLOCK_SAMPLES):
            merge.add(run)
            continue
        if merge is not None:
            close(run.device, merge)
        open_runs[run.device] = _Merge(run)
    for device, merge in open_runs.items():
        close(device, merge)
    return blocks


def blocks_of_rows(rows: Sequence[tuple[str, int, int, int, str, float]]) -> tuple[list[Block], int]:
    """(device, epoch, seq, time_ms, name, value) rows as blocks ordered by sequence number.

    A sequence number repeated within ``rows`` is kept once; the second value
    returned counts the repeats (they are duplicates, as a redelivery is).
    """
    groups: dict[tuple[str, int], dict[int, tuple[int, str, float]]] = {}
    repeats = 0
    for device, epoch, seq, time_ms, name, value in rows:
        group = groups.setdefault((device, epoch), {})
        if seq in group:
            repeats += 1
            continue
        group[seq] = (time_ms, name, float(value))
    blocks: list[Block] = []
    for (device, epoch), by_seq in groups.items():
        seqs = sorted(by_seq)
        names: dict[str, int] = {}
        index = [names.setdefault(by_seq[s][1], len(names)) for s in seqs]
        blocks += split_run(Block.numbered(device, epoch, seqs, list(names), index,
                                           [by_seq[s][0] for s in seqs], [by_seq[s][2] for s in seqs]))
    return blocks, repeats
