"""The coordinator's ingest path (store, ingest, processor, session) in-process, as `edge-coordinator
start` wires it, for tests on a real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from broker.session import BusSession
from coordinator.anomaly.engine import AnomalyEngine
from coordinator.ingest import Ingest
from coordinator.processor import FleetProcessor
from coordinator.store.base import Store, open_store
from tests.brokers import RunningBroker
from tests.bus_helpers import WAIT, config_for

Parts = tuple[BusSession, Ingest, FleetProcessor, Store]


def start_coordinator(broker: RunningBroker, data_dir: Path, *, client_id: str = "coordinator",
                      clean_start: bool = True, store_config: dict[str, Any] | None = None) -> Parts:
    """Connected and restored from ``data_dir`` (the detector warms up after 30 samples);
    ``store_config`` is the ``[store]`` table (default: SQLite in ``data_dir``)."""
    store = open_store(store_config or {}, data_dir=data_dir)
    bus = BusSession(config_for(broker, client_id=client_id, clean_start=clean_start))
    ingest = Ingest(bus, batch_wait=0.01)
    processor = FleetProcessor(bus, ingest, store, AnomalyEngine({"detector": {"warmup": 30}}),
                               data_dir=data_dir)
    processor.restore()
    ingest.sinks.append(processor)
    ingest.start()
    bus.start()
    assert bus.wait_connected(WAIT) and bus.wait_subscribed(WAIT)  # nothing published before SUBACK is lost
    return bus, ingest, processor, store


def stop_coordinator(parts: Parts) -> None:
    """Stop as the CLI does: session, ingest, a last checkpoint, the store."""
    bus, ingest, processor, store = parts
    bus.stop()
    ingest.stop()
    processor.checkpoint()
    store.close()
