"""PBFT as real processes on a test Mosquitto: four `edge-bus bft serve` replicas and a BftClient.

kill -9 of the primary under a steady stream of requests: a new view forms and every acknowledged
request was executed exactly once (one client, so the decision log's positions are 1, 2, 3, ...
with no gap and no repeat). A replica started with the test-only --test-equivocate flag: its proof
appears on the evidence topic, every other replica quarantines it, requests keep committing.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.bft import BftClient, BftTopics, load_group
from broker.coordination.transport import PeerTransport
from protocols.pbft import Evidence, decode_frame, offender
from schemas.errors import ConfigError
from tests import pbft_groups
from tests.brokers import MosquittoUnderTest
from tests.pbft_groups import DEADLINE, REPLICAS, Group, trust_root, wait_for

pytestmark = pytest.mark.integration


def make_group(tmp: Path, **extra: object) -> Path:
    return pbft_groups.make_group(tmp, REPLICAS, ("coord",), extra=extra)


@pytest.fixture
def group(mosquitto_broker: MosquittoUnderTest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Group]:
    monkeypatch.setenv("EDGEBUS_BROKER_PASSWORD", mosquitto_broker.password)
    g = Group(mosquitto_broker, tmp_path, make_group(tmp_path), {})
    yield g
    g.stop_all()


def submit_until(client: BftClient, done: threading.Event, results: list[dict[str, object]]) -> None:
    i = 0
    while not done.is_set():
        i += 1
        op = json.dumps({"key": f"k{i}", "value": "v"}).encode()
        results.append(json.loads(client.submit(op, DEADLINE)))


def test_kill_9_of_the_primary_under_load_forms_a_new_view_and_loses_nothing(
        group: Group, capsys: pytest.CaptureFixture[str]) -> None:
    for r in REPLICAS:
        group.start(r)
    group.wait_up(capsys)
    client = group.client()
    results: list[dict[str, object]] = []
    done = threading.Event()
    writer = threading.Thread(target=submit_until, args=(client, done, results), daemon=True)
    try:
        writer.start()
        wait_for(lambda: len(results) >= 5, "five decisions before the kill")
        group.procs["r0"].send_signal(signal.SIGKILL)  # r0 leads view 0
        at_kill = len(results)
        wait_for(lambda: len(results) >= at_kill + 10, "ten decisions after the primary's kill -9")
        done.set()
        writer.join(DEADLINE)
        assert not writer.is_alive()
    finally:
        done.set()
        client.stop()
    # one client, so executed exactly once means positions 1..N with no gap and no repeat
    assert [r["index"] for r in results] == list(range(1, len(results) + 1))
    assert all(r["decided"] == "v" for r in results)

    def moved_on() -> bool:  # r0's last (retained) status stays behind; the live ones report a new view
        docs = group.statuses(capsys)
        return all(int(docs[r]["view"]) >= 1 and docs[r]["primary"] != "r0" for r in REPLICAS[1:])  # type: ignore[call-overload]

    wait_for(moved_on, "the live replicas to report the new view", timeout=20)

    # the old primary comes back with its vote journal: it rejoins without contradicting itself
    restarted = time.time()
    group.start("r0")
    wait_for(lambda: float(group.statuses(capsys).get("r0", {}).get("time", 0)) > restarted,  # type: ignore[arg-type]
             "r0 to come back")
    client = group.client()
    try:
        for i in range(3):
            assert json.loads(client.submit(json.dumps({"key": f"back{i}", "value": "v"}).encode(), DEADLINE))

        def rejoined() -> bool:
            docs = group.statuses(capsys)
            r0 = docs["r0"]
            return int(r0["view"]) >= 1 and not r0["in_view_change"]  # type: ignore[call-overload]

        wait_for(rejoined, "r0 to rejoin the current view")
    finally:
        client.stop()
    docs = group.statuses(capsys)
    assert not any(d["quarantined"] for d in docs.values()), "an honest restarted replica was accused"


def test_an_equivocating_replica_is_proven_quarantined_and_the_group_keeps_deciding(
        group: Group, capsys: pytest.CaptureFixture[str]) -> None:
    group.start("r0", "--test-equivocate")
    for r in REPLICAS[1:]:
        group.start(r)
    group.wait_up(capsys)
    evidence: list[bytes] = []
    dead: list[dict[str, object]] = []
    topics = BftTopics("edgebus", "fleet")
    watcher = PeerTransport(group.bus("watcher"), "watcher")
    watcher.subscribe(topics.evidence, lambda m: evidence.append(m.payload))
    watcher.subscribe(topics.dead_letter("r1"), lambda m: dead.append(json.loads(m.payload)))
    watcher.start()
    assert watcher.wait_connected(10)
    time.sleep(0.2)  # the SUBSCRIBEs are processed
    watcher.publish(topics.inbox("r1"), b"\x00 not a frame")
    wait_for(lambda: dead, "a dead-letter record for the garbage frame")
    assert dead[0]["reason"] == "malformed"
    client = group.client()
    try:
        first = json.loads(client.submit(b'{"key": "quarantine/cam-7", "value": "yes"}', DEADLINE))
        assert first["decided"] == "yes"
        wait_for(lambda: evidence, "evidence on the topic")
        for i in range(5):
            op = json.dumps({"key": f"after{i}", "value": "x"}).encode()
            assert json.loads(client.submit(op, DEADLINE))["decided"] == "x"
    finally:
        client.stop()
        watcher.stop()
    ev = decode_frame(evidence[0])
    verifier = load_group(group.path, trust_root(group.tmp)).verifier
    assert isinstance(ev, Evidence) and offender(ev, verifier) == "r0"

    def all_quarantined() -> bool:
        docs = group.statuses(capsys)
        return all("r0" in docs.get(r, {}).get("quarantined", {}) for r in REPLICAS[1:])  # type: ignore[operator]

    wait_for(all_quarantined, "every honest replica to report r0 quarantined", timeout=20)


def test_the_group_file_is_strict(tmp_path: Path) -> None:
    path = make_group(tmp_path, windw=64)
    with pytest.raises(ConfigError, match="windw"):
        load_group(path, trust_root(tmp_path))
