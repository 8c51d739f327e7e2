"""Build tool: train the shipped zstd dictionary from synthetic, realistic record bodies.

    python -m schemas.dictionaries.train            # writes schemas/dictionaries/1.zdict
    python -m schemas.dictionaries.train --check    # fails if 1.zdict is not what this makes

NOT imported by the library: it is the only place under ``schemas/`` that uses
randomness, from a fixed seed through its own ``random.Random`` instance, so the
same script always writes the same dictionary. ``bench/codec.py`` borrows
:class:`SyntheticFleet` (with a different seed) for its inputs.

The samples are uncompressed msgpack record bodies, exactly what the envelope
codec hands to zstd: metrics batches of many shapes (the bulk of the traffic),
detection batches, births and commands.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

from schemas.birth import Birth
from schemas.command import Command
from schemas.detections import Detection, DetectionsBatch, FrameDetections
from schemas.envelope import pack_body
from schemas.metrics import MetricSample, MetricsBatch
from schemas.record_base import Record, record_to_body

__all__ = ["GATEWAY_METRICS", "SyntheticFleet", "main", "train_dictionary",
           "training_samples"]

DICTIONARY_ID = 1
DICTIONARY_BYTES = 4096
SEED = 20261123
SAMPLE_COUNT = 2400
# The codec's default level; the dictionary's entropy tables are tuned for it.
LEVEL = 3


@dataclass(frozen=True, slots=True)
class MetricShape:
    """How one metric behaves: a random walk, a counter or a slow integer gauge."""

    name: str
    start: float
    step: float
    low: float
    high: float
    digits: int | None  # decimals a real agent keeps; None: a raw float; -1: an integer
    counter: bool = False


# Sources: psutil (cpu_percent to 1 decimal), /proc/loadavg (2 decimals),
# thermal zones (millidegrees: 3 decimals), byte counters and gauges as ints.
GATEWAY_METRICS: tuple[MetricShape, ...] = (
    MetricShape("cpu_percent", 20, 6, 0, 100, 1),
    MetricShape("load1", 0.6, 0.15, 0, 8, 2),
    MetricShape("load5", 0.5, 0.05, 0, 8, 2),
    MetricShape("mem_used_bytes", 1.2e9, 2e7, 2e8, 3.8e9, -1),
    MetricShape("mem_percent", 31, 0.4, 5, 99, 1),
    MetricShape("disk_free_bytes", 2.1e10, 1e6, 1e9, 6e10, -1),
    MetricShape("temp_c", 48, 0.8, 30, 85, 3),
    MetricShape("net_rx_bytes", 3.1e9, 1.5e5, 0, 1e15, -1, counter=True),
    MetricShape("net_tx_bytes", 9.7e8, 8e4, 0, 1e15, -1, counter=True),
    MetricShape("wifi_rssi_dbm", -61, 2, -90, -30, -1),
    MetricShape("procs", 154, 2, 80, 400, -1),
    MetricShape("uptime_s", 86400 * 3, 1, 0, 1e9, -1, counter=True),
)
_EXTRA_METRICS: tuple[MetricShape, ...] = (
    MetricShape("load15", 0.45, 0.02, 0, 8, 2),
    MetricShape("swap_used_bytes", 5e7, 1e5, 0, 2e9, -1),
    MetricShape("disk_used_percent", 62, 0.01, 0, 100, 1),
    MetricShape("cpu_freq_mhz", 1500, 200, 600, 2400, -1),
    MetricShape("throttled", 0, 0.3, 0, 1, -1),
    MetricShape("power_w", 4.2, 0.3, 1, 15, 2),
    MetricShape("fps", 15, 0.5, 0, 30, 1),
    MetricShape("inference_ms", 11.5, 1.5, 3, 80, None),
    MetricShape("dropped_frames", 0, 1, 0, 1e9, -1, counter=True),
    MetricShape("gpu_percent", 40, 8, 0, 100, 1),
    MetricShape("outbox_messages", 0, 3, 0, 100_000, -1),
    MetricShape("mqtt_rtt_ms", 3.2, 0.9, 0.2, 500, None),
)
_LABELS = ("person", "car", "truck", "bicycle", "dog", "cat", "bus", "motorcycle", "bird",
           "backpack", "handbag", "suitcase")
_CAMERAS = ("front", "yard", "gate", "cam0", "cam1", "driveway", "dock-2")
_DEVICE_PREFIXES = ("gw", "cam", "pi", "jetson", "edge")


@dataclass(slots=True)
class _TrackedObject:
    """Something in a camera's view that drifts a little every frame."""

    label: str
    x: float
    y: float
    width: float
    height: float
    track_id: int


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32, as a detector's output would be."""
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


class SyntheticFleet:
    """Deterministic made-up devices that publish realistic records (for training and benches)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.clock_ms = 1_763_900_000_000 + self.rng.randrange(86_400_000)
        self._next_seq: dict[str, int] = {}
        self._track = 1

    def device(self) -> str:
        return f"{self.rng.choice(_DEVICE_PREFIXES)}-{self.rng.randrange(1, 400):03d}"

    def _reserve(self, key: str, count: int) -> int:
        first = self._next_seq.get(key, self.rng.randrange(0, 5_000_000))
        self._next_seq[key] = first + count
        return first

    def metrics_batch(self, *, device: str | None = None,
                      metrics: Sequence[MetricShape] | None = None, ticks: int | None = None,
                      interval_ms: int | None = None) -> MetricsBatch:
        """A batch of ``ticks`` readings of every metric, tick by tick, with timing jitter."""
        rng = self.rng
        device = device or self.device()
        if metrics is None:
            pool = GATEWAY_METRICS + _EXTRA_METRICS
            metrics = rng.sample(pool, rng.randrange(4, len(pool) + 1))
        if ticks is None:
            ticks = rng.choice((1, 1, 2, 5, 5, 10, 30))
        if interval_ms is None:
            interval_ms = rng.choice((1000, 1000, 1000, 5000, 10_000, 60_000))
        values = {m.name: m.start * (0.8 + 0.4 * rng.random()) for m in metrics}
        samples = []
        self.clock_ms += rng.randrange(1000, 120_000)
        tick_ms = self.clock_ms
        for _ in range(ticks):
            tick_ms += interval_ms + rng.randrange(-15, 16)
            for m in metrics:
                if m.counter:
                    values[m.name] += abs(rng.gauss(m.step, m.step / 2)) * interval_ms / 1000
                else:
                    values[m.name] = min(m.high, max(m.low, values[m.name]
                                                     + rng.gauss(0, m.step)))
                raw = values[m.name]
                value: int | float = (int(raw) if m.digits == -1 else
                                      raw if m.digits is None else round(raw, m.digits))
                samples.append(MetricSample(tick_ms, m.name, value))
        self.clock_ms = tick_ms
        first = self._reserve(device, len(samples))
        return MetricsBatch(device=device, epoch=self.clock_ms - rng.randrange(10**9),
                            first_seq=first, samples=tuple(samples))

    def detections_batch(self, *, device: str | None = None, camera: str | None = None,
                         frames: int | None = None, fps: int | None = None,
                         objects: int | None = None) -> DetectionsBatch:
        """A batch of frames from a tracking detector: float32 scores and boxes.

        ``objects`` is how many things are in view at the start (random if None).
        """
        rng = self.rng
        device = device or self.device()
        camera = camera or rng.choice(_CAMERAS)
        frames = frames or rng.choice((1, 5, 10, 15, 30))
        fps = fps or rng.choice((5, 10, 15, 30))
        tracked = rng.random() < 0.8
        in_view = [self._new_object(tracked)
                   for _ in range(rng.randrange(0, 5) if objects is None else objects)]
        out = []
        time_ms = self.clock_ms + rng.randrange(1000, 60_000)
        for _ in range(frames):
            time_ms += 1000 // fps + rng.randrange(-2, 3)
            if rng.random() < 0.1:
                in_view.append(self._new_object(tracked))
            if in_view and rng.random() < 0.08:
                in_view.pop(rng.randrange(len(in_view)))
            detections = []
            for obj in in_view:
                obj.x = min(1.0 - obj.width, max(0.0, obj.x + rng.gauss(0, 0.01)))
                obj.y = min(1.0 - obj.height, max(0.0, obj.y + rng.gauss(0, 0.01)))
                box = (_float32(obj.x), _float32(obj.y), _float32(obj.x + obj.width),
                       _float32(obj.y + obj.height))
                confidence = _float32(min(0.99, max(0.25, rng.gauss(0.75, 0.12))))
                detections.append(Detection(obj.label, confidence, box,
                                            obj.track_id if tracked else None))
            out.append(FrameDetections(time_ms, tuple(detections)))
        self.clock_ms = time_ms
        first = self._reserve(f"{device}/{camera}", len(out))
        return DetectionsBatch(device=device, camera=camera, epoch=self.clock_ms // 7,
                               first_seq=first, frames=tuple(out))

    def _new_object(self, tracked: bool) -> _TrackedObject:
        rng = self.rng
        self._track += 1 if tracked else 0
        width, height = rng.uniform(0.03, 0.4), rng.uniform(0.05, 0.6)
        return _TrackedObject(rng.choice(_LABELS), rng.uniform(0, 1 - width),
                              rng.uniform(0, 1 - height), width, height, self._track)

    def birth(self) -> Birth:
        rng = self.rng
        capabilities = ("metrics", "camera", "detections", "ota", "locks", "raft", "gpio")
        return Birth(
            device=self.device(), epoch=self.clock_ms - rng.randrange(10**9),
            agent_version=f"0.{rng.randrange(1, 4)}.{rng.randrange(10)}",
            time_ms=self.clock_ms,
            capabilities=tuple(rng.sample(capabilities, rng.randrange(1, len(capabilities)))),
            versions={"python": rng.choice(("3.11.2", "3.11.7", "3.12.3")),
                      "os": rng.choice(("Debian GNU/Linux 12 (bookworm)", "Ubuntu 22.04.4 LTS",
                                        "Raspbian GNU/Linux 11 (bullseye)")),
                      "kernel": rng.choice(("6.1.0-rpi7-rpi-v8", "5.15.136-tegra",
                                            "6.8.0-45-generic")),
                      "edgebus": "0.1.0"})

    def command(self) -> Command:
        rng = self.rng
        device = self.device()
        kind = rng.choice(("assign", "rebirth", "config", "ota/chunk"))
        args: dict[str, object] = {}
        if kind == "assign":
            args = {"camera": rng.choice(_CAMERAS), "fps": rng.choice((5, 10, 15)),
                    "url": f"rtsp://10.0.{rng.randrange(256)}.{rng.randrange(256)}/stream1",
                    "model": rng.choice(("ssdlite-mobilenetv2", "yolov8n"))}
        elif kind == "config":
            args = {"interval_s": rng.choice((1, 5, 10)), "metrics": ["cpu_percent", "temp_c"]}
        elif kind == "ota/chunk":
            args = {"image": "agent-0.2.0", "index": rng.randrange(100),
                    "data": rng.randbytes(rng.randrange(16, 200))}
        self.clock_ms += rng.randrange(10, 10_000)
        return Command(device=device, name=kind, command_id=f"{rng.getrandbits(64):016x}",
                       time_ms=self.clock_ms, args=args,
                       reply_to=(f"edgebus/_sys/cmd/{device}/ack" if rng.random() < 0.5
                                 else None))


def training_samples(seed: int = SEED,
                     count: int = SAMPLE_COUNT) -> list[bytes | bytearray | memoryview]:
    """``count`` uncompressed record bodies in the mix the bus carries."""
    fleet = SyntheticFleet(seed)
    makers: tuple[tuple[Callable[[], Record], float], ...] = (
        (fleet.metrics_batch, 0.6), (fleet.detections_batch, 0.25), (fleet.birth, 0.075),
        (fleet.command, 0.075))
    samples: list[bytes | bytearray | memoryview] = []
    for _ in range(count):
        roll = fleet.rng.random()
        chosen = makers[-1][0]
        for make, weight in makers:
            if roll < weight:
                chosen = make
                break
            roll -= weight
        samples.append(pack_body(record_to_body(chosen())))
    return samples


def train_dictionary(samples: list[bytes | bytearray | memoryview],
                     dict_id: int = DICTIONARY_ID) -> bytes:
    """A ``DICTIONARY_BYTES`` zstd dictionary with ``dict_id`` embedded in its header."""
    trained = zstandard.train_dictionary(DICTIONARY_BYTES, samples, dict_id=dict_id,
                                         level=LEVEL, threads=1)
    # Envelopes name the dictionary by the file's id and zstd checks the embedded one.
    if trained.dict_id() != dict_id:
        raise SystemExit(f"zstd wrote dictionary id {trained.dict_id()}, not {dict_id}")
    data: bytes = trained.as_bytes()
    return data


def _ratio(dictionary: bytes,
           samples: list[bytes | bytearray | memoryview]) -> tuple[float, float]:
    zdict = zstandard.ZstdCompressionDict(dictionary)
    with_dict = zstandard.ZstdCompressor(level=LEVEL, dict_data=zdict, write_checksum=False)
    plain = zstandard.ZstdCompressor(level=LEVEL, write_checksum=False)
    raw = sum(len(s) for s in samples)
    return (sum(len(with_dict.compress(s)) for s in samples) / raw,
            sum(len(plain.compress(s)) for s in samples) / raw)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.dictionaries.train",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dict-id", type=int, default=DICTIONARY_ID,
                        help="id to embed and file name to write (default %(default)s); "
                             "never reuse a shipped id, see README.md")
    parser.add_argument("--seed", type=int, default=SEED, help="default %(default)s")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write (default: <id>.zdict next to this script)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the file differs from what this makes")
    args = parser.parse_args(argv)
    if not 1 <= args.dict_id <= 2**31 - 1:
        parser.error("--dict-id must be 1..2147483647 (zstd reserves larger ids)")
    out: Path = args.out or Path(__file__).with_name(f"{args.dict_id}.zdict")
    dictionary = train_dictionary(training_samples(args.seed), args.dict_id)
    held_out = training_samples(args.seed + 1, 400)
    with_dict, plain = _ratio(dictionary, held_out)
    print(f"dictionary {args.dict_id}: {len(dictionary)} bytes from {SAMPLE_COUNT} samples; "
          f"held-out bodies compress to {with_dict:.1%} with it, {plain:.1%} without")
    if args.check:
        same = out.exists() and out.read_bytes() == dictionary
        print(f"{out}: {'up to date' if same else 'DIFFERS from what this script makes'}")
        return 0 if same else 1
    out.write_bytes(dictionary)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
