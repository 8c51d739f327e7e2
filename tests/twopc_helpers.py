"""Shared pieces of the two-phase commit integration tests: a small durable resource and the wiring."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from broker.session import BusConfig, BusSession
from broker.twopc.participant_driver import ParticipantDriver
from broker.twopc.participant_store import ParticipantStore
from broker.twopc.resource import PrepareAnswer
from protocols.twopc import Outcome
from tests.brokers import MosquittoUnderTest


def bus_config(broker: MosquittoUnderTest, client_id: str) -> BusConfig:
    return BusConfig(host=broker.host, port=broker.port, username=broker.username, password=broker.password,
                     client_id=client_id, clean_start=True)


class FileResource:
    """Keys in a JSON file. The payload is ``{"set": {k: v}}``; ``{"refuse": reason}`` votes no;
    ``{"delay": seconds}`` holds the prepare that long (a transaction in flight, for fault tests).

    Prepared work lives in ``prepared/{tx}.json`` (written and fsync'd before
    prepare returns), committed values in ``state.json``.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        (directory / "prepared").mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.finished: list[tuple[str, Outcome]] = []

    def prepare(self, tx_id: str, payload: bytes, deadline_s: float) -> PrepareAnswer:
        work = json.loads(payload or b"{}")
        if "refuse" in work:
            return PrepareAnswer(False, str(work["refuse"]))
        if "delay" in work:
            time.sleep(min(float(work["delay"]), max(0.0, deadline_s - time.monotonic())))
        _write(self.dir / "prepared" / f"{tx_id}.json", json.dumps(work.get("set", {})))
        return PrepareAnswer(True)

    def finish(self, tx_id: str, outcome: Outcome) -> None:
        with self.lock:
            path = self.dir / "prepared" / f"{tx_id}.json"
            if path.exists():
                if outcome is Outcome.COMMIT:
                    state = self.state()
                    state.update(json.loads(path.read_text()))
                    _write(self.dir / "state.json", json.dumps(state))
                path.unlink()
            self.finished.append((tx_id, outcome))

    def prepared_ids(self) -> Iterable[str]:
        return [p.stem for p in (self.dir / "prepared").glob("*.json")]

    def state(self) -> dict[str, object]:
        path = self.dir / "state.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class RunningParticipant:
    driver: ParticipantDriver
    session: BusSession
    resource: FileResource
    store: ParticipantStore
    extra: list[object] = field(default_factory=list)

    def stop(self) -> None:
        self.driver.stop()
        self.session.stop(flush_timeout=1)
        self.store.close()


def start_participant(broker: MosquittoUnderTest, group: str, pid: str,
                      directory: Path) -> RunningParticipant:
    session = BusSession(bus_config(broker, f"p-{pid}"))
    resource = FileResource(directory / pid)
    store = ParticipantStore(directory / pid / "records.db")
    driver = ParticipantDriver(session, group, pid, resource, store)
    session.start()
    assert session.wait_connected(10)
    driver.start()
    assert session.wait_subscribed(10)
    return RunningParticipant(driver, session, resource, store)


def wait_until(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False
