"""Simulated gateway agents for the demo: real device sessions, made-up readings.

Each simulated agent is a full device :class:`~broker.session.BusSession`
(will, birth, outbox, sequence numbers) publishing one metrics batch a second,
so the demo exercises the same path a real agent does. Only the readings are
synthetic: slow random walks with a daily-looking drift.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from broker.credentials import Credentials
from broker.session import BusConfig, BusSession
from broker.telemetry import MetricsPublisher, birth_payload
from schemas.messages import MetricSample

__all__ = ["SimulatedAgent", "SimulatedFleet"]

logger = logging.getLogger(__name__)

AGENT_VERSION = "demo-0.1.0"


@dataclass(frozen=True, slots=True)
class _Metric:
    name: str
    start: float
    step: float
    low: float
    high: float
    integer: bool = False


_METRICS = (
    _Metric("cpu_percent", 20, 3, 0, 100),
    _Metric("load1", 0.6, 0.15, 0, 8),
    _Metric("mem_used_bytes", 1.2e9, 2e7, 2e8, 3.8e9, integer=True),
    _Metric("disk_free_bytes", 2.1e10, 1e6, 1e9, 6e10, integer=True),
    _Metric("temp_c", 48, 0.8, 30, 85),
    _Metric("net_rx_bytes_s", 1.5e5, 4e4, 0, 5e6, integer=True),
    _Metric("net_tx_bytes_s", 8e4, 2e4, 0, 5e6, integer=True),
    _Metric("fps", 15, 0.5, 0, 30),
)


class SimulatedAgent:
    """One fake gateway: a device session and a thread that samples every ``interval``."""

    def __init__(self, device: str, base: BusConfig, *, interval: float = 1.0,
                 seed: int = 0, incident_every: int = 0) -> None:
        self.device = device
        self.interval = interval
        #: Every this many samples (0: never) a short CPU spike, so the demo shows anomalies.
        self.incident_every = incident_every
        self._tick = 0
        self._rng = random.Random(seed)
        self._levels = {m.name: m.start * (0.8 + 0.4 * self._rng.random()) for m in _METRICS}
        self._values = dict(self._levels)
        config = replace(base, device=device, client_id=f"edgebus-demo-{device}",
                         clean_start=True, outbox_path=None)
        self.session = BusSession(config, rng=random.Random(seed + 1))
        self.publisher = MetricsPublisher(self.session)
        self.session.set_birth(birth_payload(device, self.publisher.epoch,
                                             agent_version=AGENT_VERSION,
                                             capabilities=("metrics",)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"demo-{device}", daemon=True)

    def start(self) -> None:
        self.session.start()
        self._thread.start()

    def stop_sampling(self) -> None:
        """Publish no more samples; the session stays up, so what is queued still goes (tests wait for it)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def stop(self) -> None:
        self.stop_sampling()
        self.session.stop(flush_timeout=2)

    def sample(self, time_ms: int) -> list[MetricSample]:
        self._tick += 1
        spike = bool(self.incident_every) and self._tick % self.incident_every in (0, 1, 2) \
            and self._tick > self.incident_every // 2
        out = []
        for m in _METRICS:
            if spike and m.name == "cpu_percent":
                out.append(MetricSample(time_ms=time_ms, name=m.name, value=97.0 + self._rng.random()))
                continue
            # Mean-reverting noise around the starting level, so a real incident stands out.
            v = self._values[m.name]
            v += 0.2 * (self._levels[m.name] - v) + self._rng.gauss(0, m.step)
            v = min(m.high, max(m.low, v))
            self._values[m.name] = v
            out.append(MetricSample(time_ms=time_ms, name=m.name,
                                    value=int(v) if m.integer else round(v, 2)))
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.publisher.publish(self.sample(time.time_ns() // 1_000_000))


class SimulatedFleet:
    """A handful of simulated agents started and stopped together."""

    def __init__(self, base: BusConfig, count: int = 4, *, interval: float = 1.0,
                 credentials: Mapping[str, Credentials] | None = None) -> None:
        """``credentials``: each device's own broker user (device id -> credentials), else ``base``'s."""
        def login(device: str) -> BusConfig:
            creds = (credentials or {}).get(device)
            return base if creds is None else replace(base, username=creds.username,
                                                      password=creds.password)

        # The second agent has a CPU spike now and then, for the anomaly detector to find.
        self.agents = [SimulatedAgent(device, login(device), interval=interval, seed=i,
                                      incident_every=60 if i == 1 else 0)
                       for i, device in enumerate(self.device_ids(count))]

    @staticmethod
    def device_ids(count: int) -> list[str]:
        return [f"demo-gw-{i + 1:02d}" for i in range(count)]

    def start(self) -> None:
        for agent in self.agents:
            agent.start()

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
