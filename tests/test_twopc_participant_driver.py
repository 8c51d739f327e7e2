"""The participant driver's failure paths, in one process: a resource that is down at start or fails to
apply a decision. The bus is a recording stand-in here (this is the driver's own logic, not delivery;
tests/test_twopc_mqtt.py runs it on Mosquitto)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from broker.router import ReceivedMessage
from broker.twopc.participant_driver import ParticipantDriver
from broker.twopc.participant_store import ParticipantStore
from broker.twopc.resource import PrepareAnswer
from protocols.twopc import Ack, Decision, Outcome, ParticipantRecord, StatusQuery
from protocols.twopc.topics import TxTopics
from schemas.errors import StoreError
from schemas.messages import decode_record, encode_record
from schemas.topics import TopicTree


class RecordingBus:
    def __init__(self) -> None:
        self.topics = TopicTree("edgebus")
        self.handlers: dict[str, Callable[[ReceivedMessage], None]] = {}
        self.sent: list[object] = []
        self.lock = threading.Lock()

    def subscribe(self, topic_filter: str, handler: Callable[[ReceivedMessage], None], /) -> object:
        self.handlers[topic_filter] = handler
        return None

    def publish(self, topic: str, payload: bytes | str, /, *, qos: int = 0, retain: bool = False) -> bool:
        if isinstance(payload, bytes):
            with self.lock:
                self.sent.append(decode_record(payload))
        return True

    def deliver(self, topic: str, payload: bytes) -> None:
        self.handlers[topic](ReceivedMessage(topic=topic, payload=payload, qos=1, retain=False))


class FlakyResource:
    """Down for the first ``down`` calls of each kind; records what it applied."""

    def __init__(self, down: int) -> None:
        self.down_list = down
        self.down_finish = down
        self.applied: list[tuple[str, Outcome]] = []

    def prepare(self, tx_id: str, payload: bytes, deadline_s: float) -> PrepareAnswer:
        return PrepareAnswer(True)

    def finish(self, tx_id: str, outcome: Outcome) -> None:
        if self.down_finish > 0:
            self.down_finish -= 1
            raise StoreError("database unreachable")
        self.applied.append((tx_id, outcome))

    def prepared_ids(self) -> Iterable[str]:
        if self.down_list > 0:
            self.down_list -= 1
            raise StoreError("database starting")
        return ["t1"]


def _wait(predicate: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_resource_down_at_start_and_at_apply_never_gets_an_ack_ahead_of_the_apply(tmp_path: Path) -> None:
    store = ParticipantStore(tmp_path / "records.db")
    store.put(ParticipantRecord("t1", True, "", None, 1))  # voted yes before a crash: in doubt
    bus, resource = RecordingBus(), FlakyResource(down=1)
    driver = ParticipantDriver(bus, "g", "p1", resource, store, tick_s=0.05)
    topics = TxTopics(bus.topics, "g")
    driver.start()
    try:
        # Down at start: retried, then the in-doubt transaction is asked about.
        assert _wait(lambda: any(isinstance(m, StatusQuery) for m in bus.sent))
        assert driver.failed is None and driver.counters["recover_failed"] == 1
        bus.deliver(topics.to("p1"), encode_record(Decision("t1", Outcome.COMMIT)))
        # The first apply fails: no ack; the driver starts again from disk, asks again, and applies.
        assert _wait(lambda: resource.applied == [("t1", Outcome.COMMIT)]
                     or driver.counters["finish_failed"] >= 1)
        assert not any(isinstance(m, Ack) for m in bus.sent)
        asked = sum(isinstance(m, StatusQuery) for m in bus.sent)
        assert _wait(lambda: sum(isinstance(m, StatusQuery) for m in bus.sent) > asked)
        bus.deliver(topics.to("p1"), encode_record(Decision("t1", Outcome.COMMIT)))
        assert _wait(lambda: any(isinstance(m, Ack) for m in bus.sent))
        assert resource.applied == [("t1", Outcome.COMMIT)]
        assert driver.in_doubt() == () and driver.failed is None
    finally:
        driver.stop()
        store.close()
