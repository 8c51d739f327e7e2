"""Raw samples out of the store as CSV, for tools that cannot read the compressed blocks.

Samples are stored as compressed blocks (coordinator/store/blocks.py), so a SQL
query over the database no longer yields rows; this is the way out, shared by
``GET /api/v1/export.csv`` and ``edge-coordinator export``. Columns::

    time_ms,time,device,metric,value,epoch,seq

``time`` is ISO 8601 UTC with milliseconds; ``epoch`` and ``seq`` identify the
sample (a device's sequence numbers restart in a new epoch). Rows come an hour
of stored blocks at a time, each hour sorted by time, so an export of any
length streams in constant memory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime

from coordinator.store.base import Store

__all__ = ["CSV_HEADER", "csv_chunks"]

CSV_HEADER = ("time_ms", "time", "device", "metric", "value", "epoch", "seq")
_ROWS_PER_CHUNK = 5000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def csv_chunks(store: Store, device: str, since_ms: int | None = None, until_ms: int | None = None,
               metric: str | None = None) -> Iterator[str]:
    """The CSV text (header first) in chunks of a few thousand rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for rows, s in enumerate(store.iter_samples(device, since_ms, until_ms, metric), 1):
        writer.writerow((s.time_ms, _iso(s.time_ms), s.device, s.name, repr(float(s.value))
                         if isinstance(s.value, float) else s.value, s.epoch, s.seq))
        if rows % _ROWS_PER_CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
