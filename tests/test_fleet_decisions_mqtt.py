"""The coordinator consults the fleet decision log: real replica processes on a test Mosquitto.

Four `edge-bus bft serve` replicas run the fleet_log state machine (decision_quorum 2); r0, the
primary of view 0, is started with the test-only --test-equivocate flag and every replica with
--on-quarantine tests.pbft_hook:record. The coordinator's ingest and FleetDecisions run in this
process as `edge-coordinator start` wires them. One proposal (the coordinator's own vote) changes
nothing; a second proposer's vote decides (a BftClient, then `edge-bus bft propose`), the
coordinator follows the decision (status topic, ingest refuses the device's messages), the liar is
proven and quarantined by every honest replica, and the hook ran in each of them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.bft import BftTopics
from broker.bft.cli import bft_main
from broker.coordination.transport import PeerTransport
from broker.router import ReceivedMessage
from coordinator.fleet_decisions import DecisionsConfig, FleetDecisions
from tests import pbft_groups
from tests.brokers import MosquittoUnderTest
from tests.coordinator_helpers import start_coordinator, stop_coordinator
from tests.pbft_groups import DEADLINE, REPLICAS, Group, trust_root, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def group(mosquitto_broker: MosquittoUnderTest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Group]:
    monkeypatch.setenv("EDGEBUS_BROKER_PASSWORD", mosquitto_broker.password)
    monkeypatch.setenv("EDGEBUS_TEST_QUARANTINE_LOG", str(tmp_path / "hook.jsonl"))
    path = pbft_groups.make_group(tmp_path, REPLICAS, ("coord", "gw-a", "gw-b"),
                                  extra={"state_machine": "fleet_log", "decision_quorum": 2})
    g = Group(mosquitto_broker, tmp_path, path, {})
    yield g
    g.stop_all()


def hook_calls(tmp: Path) -> list[dict[str, object]]:
    log = tmp / "hook.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_a_quarantine_takes_effect_only_once_the_group_decided_it_despite_a_lying_replica(
        group: Group, mosquitto_broker: MosquittoUnderTest, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    hook = ["--on-quarantine", "tests.pbft_hook:record"]
    group.start("r0", "--test-equivocate", *hook)
    for r in REPLICAS[1:]:
        group.start(r, *hook)
    group.wait_up(capsys)

    parts = start_coordinator(mosquitto_broker, tmp_path / "coord-data")
    bus, ingest = parts[0], parts[1]
    config = DecisionsConfig(group.path, trust_root(tmp_path), "coord", tmp_path / "keys" / "coord",
                             poll_s=0.1, timeout_s=DEADLINE)
    decisions = FleetDecisions(config, group.bus("coord-follow"))
    decisions.refuse_in(ingest)
    decided: list[dict[str, object]] = []
    seen = threading.Event()

    def on_decided(msg: ReceivedMessage) -> None:
        decided.append(json.loads(msg.payload))
        seen.set()

    watcher = PeerTransport(group.bus("watcher"), "watcher")
    watcher.subscribe(BftTopics("edgebus", "fleet").decided, on_decided)
    watcher.start()
    device = group.client("gw-a")
    try:
        decisions.start()
        # the coordinator's own vote is one vote: nothing takes effect
        assert decisions.propose("quarantine", device="cam-7") == {"status": "pending", "votes": 1,
                                                                    "needed": 2}
        assert decisions.poll() == 0 and decisions.quarantined == frozenset()
        bus.publish("edgebus/cam-7/metrics", b"\x00not a batch", qos=1)
        wait_for(lambda: ingest.stats().dead_letters["malformed"] == 1, "cam-7's message read (not refused)")
        # a second proposer decides; the coordinator follows the decided log
        assert json.loads(device.submit(b'{"op": "quarantine", "device": "cam-7"}', DEADLINE)) == {
            "status": "decided", "index": 1}
        wait_for(lambda: decisions.quarantined == {"cam-7"}, "the coordinator to follow the decision")
        assert decisions.decisions[0].proposers == ("coord", "gw-a")
        bus.publish("edgebus/cam-7/metrics", b"\x00not a batch", qos=1)
        wait_for(lambda: ingest.stats().dead_letters["quarantined"] == 1, "cam-7's message refused")
        wait_for(lambda: any(d["quarantined"] == ["cam-7"] for d in decided), "the decided status topic")
        # a model version for a group, decided the same way
        assert decisions.propose("accept_model", group="lobby", version="2026-11")["status"] == "pending"
        capsys.readouterr()
        assert bft_main(["propose", *group.args(), "--id", "gw-b", "--key", str(tmp_path / "keys" / "gw-b"),
                         "accept-model", "lobby", "2026-11"]) == 0  # the second vote, from the command line
        assert json.loads(capsys.readouterr().out)["status"] == "decided"
        wait_for(lambda: decisions.models == {"lobby": "2026-11"}, "the model acceptance")
    finally:
        device.stop()
        decisions.stop()
        watcher.stop()
        stop_coordinator(parts)

    # the equivocating primary was proven and quarantined by every honest replica, each calling the hook
    def all_quarantined() -> bool:
        docs = group.statuses(capsys)
        return all("r0" in docs.get(r, {}).get("quarantined", {}) for r in REPLICAS[1:])  # type: ignore[operator]

    wait_for(all_quarantined, "every honest replica to report r0 quarantined", timeout=20)
    wait_for(lambda: {c["offender"] for c in hook_calls(tmp_path)} == {"r0"}
             and len({c["pid"] for c in hook_calls(tmp_path)}) >= 3, "the hook in the three honest replicas")
