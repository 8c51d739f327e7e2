"""Bytes and time per sample: compact JSON vs plain msgpack vs the edgebus envelope.

    python bench/codec.py            # from the repository root

Inputs are deterministic synthetic gateway metrics and camera detections
(``SyntheticFleet`` from the dictionary build tool, with a seed the dictionary
was *not* trained on). For each batch:

* JSON: ``json.dumps`` / ``json.loads`` of one object per sample
  (``{"seq", "ts", "metric", "value"}``), compact separators: the baseline;
* msgpack: ``msgpack.packb`` / ``unpackb`` of the same row objects, uncompressed;
* envelope: ``encode_record`` / ``decode_record``: the full path, record
  object to bytes and back to validated record objects (the other two stop at
  plain dicts, so they are the cheaper side of the comparison).

Times are the best of several runs of enough repetitions to last ~40 ms each.
Targets: at 60 samples the envelope is >= 70% smaller than compact JSON, and
encode+decode costs <= 10 µs per sample.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgpack

from bench.results import record
from schemas.dictionaries.train import GATEWAY_METRICS, SyntheticFleet
from schemas.messages import (
    DetectionsBatch,
    MetricsBatch,
    Record,
    decode_record,
    encode_record,
    record_body_bytes,
)

SEED = 2026
TARGET_REDUCTION = 0.70
TARGET_US_PER_SAMPLE = 10.0
RUNS = 5
RUN_SECONDS = 0.04


def rows(record: Record) -> dict[str, Any]:
    """The same facts as one JSON object per sample (per detection for cameras)."""
    if isinstance(record, MetricsBatch):
        return {"device": record.device, "epoch": record.epoch,
                "samples": [{"seq": seq, "ts": s.time_ms, "metric": s.name, "value": s.value}
                            for seq, s in record.numbered()]}
    assert isinstance(record, DetectionsBatch)
    return {"device": record.device, "camera": record.camera, "epoch": record.epoch,
            "frames": [{"seq": seq, "ts": f.time_ms,
                        "detections": [{"label": d.label, "confidence": d.confidence,
                                        "box": list(d.box), "track_id": d.track_id}
                                       for d in f.detections]}
                       for seq, f in record.numbered()]}


def best_seconds(round_trip: Callable[[], object]) -> float:
    """Best per-call time over ``RUNS`` runs."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            round_trip()
        if time.perf_counter() - start >= RUN_SECONDS / 4:
            break
        loops *= 2
    loops = max(1, int(loops * RUN_SECONDS / max(time.perf_counter() - start, 1e-9)))
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        for _ in range(loops):
            round_trip()
        best = min(best, (time.perf_counter() - start) / loops)
    return best


def measure(name: str, record: Record, units: int) -> dict[str, Any]:
    plain = rows(record)
    as_json = json.dumps(plain, separators=(",", ":")).encode()
    as_msgpack = msgpack.packb(plain, use_bin_type=True)
    envelope = encode_record(record)
    assert decode_record(envelope) == record
    return {
        "case": name, "units": units,
        "json_b": len(as_json) / units, "msgpack_b": len(as_msgpack) / units,
        "body_b": len(record_body_bytes(record)) / units, "env_b": len(envelope) / units,
        "reduction": 1 - len(envelope) / len(as_json),
        "json_us": best_seconds(lambda: json.loads(json.dumps(plain, separators=(",", ":"))))
        / units * 1e6,
        "msgpack_us": best_seconds(lambda: msgpack.unpackb(msgpack.packb(plain)))
        / units * 1e6,
        "env_us": best_seconds(lambda: decode_record(encode_record(record))) / units * 1e6,
    }


def main() -> int:
    fleet = SyntheticFleet(SEED)
    cases: list[tuple[str, Record, int]] = []
    for metrics, ticks in ((1, 1), (10, 1), (12, 5), (12, 25)):
        batch = fleet.metrics_batch(device="gw-017", metrics=GATEWAY_METRICS[:metrics],
                                    ticks=ticks, interval_ms=1000)
        cases.append((f"metrics x{len(batch.samples)}", batch, len(batch.samples)))
    cameras = fleet.detections_batch(device="cam-003", camera="front", frames=15, fps=15,
                                     objects=3)
    detections = sum(len(f.detections) for f in cameras.frames)
    cases.append((f"detections {len(cameras.frames)} frames", cameras, max(detections, 1)))

    results = [measure(*case) for case in cases]
    print(f"edgebus codec bench (python {sys.version.split()[0]}; bytes and µs per sample, "
          "per detection for cameras; best of {RUNS})".replace("{RUNS}", str(RUNS)))
    header = (f"{'case':<22} {'n':>4} | {'json B':>7} {'msgpack B':>9} {'body B':>7} "
              f"{'env B':>6} {'vs json':>8} | {'json µs':>7} {'msgpack µs':>10} {'env µs':>7}")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['case']:<22} {r['units']:>4} | {r['json_b']:>7.1f} {r['msgpack_b']:>9.1f} "
              f"{r['body_b']:>7.1f} {r['env_b']:>6.1f} {-r['reduction']:>+8.1%} | "
              f"{r['json_us']:>7.2f} {r['msgpack_us']:>10.2f} {r['env_us']:>7.2f}")
    print("body B: the columnar msgpack record body before zstd; env B: the whole envelope")

    typical = next(r for r in results if r["units"] == 60)
    size_ok = typical["reduction"] >= TARGET_REDUCTION
    speed_ok = typical["env_us"] <= TARGET_US_PER_SAMPLE
    print(f"{'PASS' if size_ok else 'MISS'}  size at 60 samples: envelope "
          f"{typical['reduction']:.1%} smaller than compact JSON (target >= "
          f"{TARGET_REDUCTION:.0%})")
    print(f"{'PASS' if speed_ok else 'MISS'}  speed at 60 samples: encode+decode "
          f"{typical['env_us']:.2f} µs per sample (target <= {TARGET_US_PER_SAMPLE:.0f} µs)")
    record("envelope size at 60 samples", typical["env_b"], "B/sample", baseline="compact JSON",
           baseline_value=typical["json_b"], target=f"<= {1 - TARGET_REDUCTION:.0%} of JSON", ok=size_ok)
    record("encode+decode at 60 samples", typical["env_us"], "µs/sample", baseline="json dumps+loads",
           baseline_value=typical["json_us"], target=f"<= {TARGET_US_PER_SAMPLE:.0f} µs", ok=speed_ok)
    slowest = max(results, key=lambda r: r["env_us"])
    if slowest["env_us"] > TARGET_US_PER_SAMPLE:
        print(f"note  {slowest['case']}: {slowest['env_us']:.2f} µs per sample (fixed per-message "
              "cost spread over few samples)")
    return 0 if size_ok and speed_ok else 1


if __name__ == "__main__":
    sys.exit(main())
