"""A camera moves between two agent processes by two-phase commit while kill -9 hits the Raft leader.

Real everything: Mosquitto on a free port, three ``edge-bus raft serve``
processes, two ``edge-agent`` processes with ``[transactions]``; the move is
:func:`coordinator.camera_moves.move_camera`. After each move exactly one
agent runs the camera and the agents' retained ``state/cameras`` say so, and
the ownership survives a kill -9 of the agent that took it.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from broker.coordination.local_cluster import GroupWatcher, LocalCluster
from broker.session import BusSession
from broker.twopc.client import TxClient, TxOutcome
from coordinator.camera_moves import move_camera
from schemas.birth import Capacity
from schemas.errors import CoordinationTimeout, TxAborted
from schemas.messages import Birth, decode_record
from tests.agent_helpers import agent_toml, reap_agent, spawn_agent, stop_agent
from tests.brokers import MosquittoUnderTest
from tests.bus_helpers import Inbox, observer
from tests.twopc_helpers import bus_config

pytestmark = pytest.mark.integration

NODES = ["n1", "n2", "n3"]
GROUP = "moves"
PHOTOS = Path(__file__).resolve().parent / "data" / "photos"


def _frames(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(4):
        shutil.copy(PHOTOS / "coffee.jpg", folder / f"{i:03d}.jpg")
    return folder


def _camera_table(frames: Path) -> dict[str, object]:
    return {"source": str(frames), "fps": 2, "queue_size": 4, "batch_interval": 1.0, "loop": True,
            "detector": {"type": "ssdlite", "threshold": 0.5}}


def _cameras(inbox: Inbox, device: str) -> list[str] | None:
    payloads = inbox.payloads(f"edgebus/{device}/state/cameras")
    return list(json.loads(payloads[-1])["cameras"]) if payloads else None


@pytest.fixture
def fleet(mosquitto_broker: MosquittoUnderTest, tmp_path: Path) -> Iterator[dict[str, object]]:
    frames = _frames(tmp_path / "frames")
    table = _camera_table(frames)
    camera_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items() if k != "detector")
    configs = {}
    for device, owns in (("gw-a", True), ("gw-b", False)):
        folder = tmp_path / device
        folder.mkdir()
        extra = f'\n[transactions]\ngroup = "{GROUP}"\n\n[commands]\ncamera_folders = ["{frames}"]\n'
        if owns:
            extra += f'\n[[cameras]]\nname = "door"\n{camera_lines}\n[cameras.detector]\ntype = "ssdlite"\n'
        configs[device] = agent_toml(mosquitto_broker, folder, device, interval=1.0, collectors=["agent"],
                                     extra=extra)
    cluster = LocalCluster(bus_config(mosquitto_broker, "unused"), GROUP, tmp_path / "raft")
    session = BusSession(bus_config(mosquitto_broker, "mover"))
    watcher = GroupWatcher(session, GROUP)
    client = TxClient(session, GROUP, "mover", retry_s=0.3)
    session.start()
    assert session.wait_connected(10) and session.wait_subscribed(10)
    obs, inbox = observer(mosquitto_broker, "edgebus/#")
    cluster.start()
    agents = {d: spawn_agent(c) for d, c in configs.items()}
    try:
        assert watcher.leader(NODES, timeout=20) is not None
        assert inbox.wait_for(lambda _: _cameras(inbox, "gw-a") == ["door"]
                              and _cameras(inbox, "gw-b") == [], timeout=60)
        yield {"cluster": cluster, "watcher": watcher, "client": client, "inbox": inbox, "agents": agents,
               "configs": configs, "table": table}
    finally:
        for proc in agents.values():
            reap_agent(proc)
        cluster.stop()
        obs.stop()
        session.stop(flush_timeout=0)


def _move_while_killing_the_leader(fleet: dict[str, object], src: str, dst: str) -> TxOutcome:
    cluster = fleet["cluster"]
    watcher = fleet["watcher"]
    assert isinstance(cluster, LocalCluster) and isinstance(watcher, GroupWatcher)
    leader = watcher.leader(NODES, timeout=20)
    assert leader is not None
    result: list[TxOutcome | BaseException] = []

    def run() -> None:
        client = fleet["client"]
        assert isinstance(client, TxClient)
        try:
            result.append(move_camera(client, "door", src, dst, dict(fleet["table"]),  # type: ignore[arg-type]
                                      timeout_s=20))
        except (TxAborted, CoordinationTimeout) as exc:
            result.append(exc)

    mover = threading.Thread(target=run)
    mover.start()
    cluster.kill(leader)  # somewhere in the transaction: before, during or after the decision
    mover.join(60)
    cluster.start(leader)  # back as a follower, catching up from its log
    assert result, "the move never finished"
    outcome = result[0]
    assert isinstance(outcome, TxOutcome), f"the move failed: {outcome}"
    return outcome


def test_a_camera_moves_atomically_while_the_leader_is_killed(fleet: dict[str, object]) -> None:
    inbox = fleet["inbox"]
    assert isinstance(inbox, Inbox)
    src, dst = "gw-a", "gw-b"
    for _ in range(3):
        outcome = _move_while_killing_the_leader(fleet, src, dst)
        assert outcome.committed
        assert inbox.wait_for(lambda _, s=src, d=dst: _cameras(inbox, d) == ["door"]
                              and _cameras(inbox, s) == [], timeout=60), \
            (_cameras(inbox, src), _cameras(inbox, dst))
        src, dst = dst, src

    # src owns the camera now. A move the wrong way round is refused by both agents (the releaser
    # does not run it, the taker already does) and changes nothing anywhere.
    client = fleet["client"]
    assert isinstance(client, TxClient)
    with pytest.raises(TxAborted) as refused:
        move_camera(client, "door", dst, src, dict(fleet["table"]), timeout_s=20)  # type: ignore[arg-type]
    assert refused.value.reason in (f"{dst} voted no: camera door is not running on this agent",
                                    f"{src} voted no: camera door already runs on this agent")
    assert _cameras(inbox, src) == ["door"] and _cameras(inbox, dst) == []

    # The ownership is durable: kill -9 the owner and start it again; it comes back with the camera,
    # and the other agent, restarted too, without it (agent.toml still lists it there).
    agents = fleet["agents"]
    configs = fleet["configs"]
    assert isinstance(agents, dict) and isinstance(configs, dict)
    for device in (src, dst):
        agents[device].kill()
        agents[device].wait(10)
    seen = {d: len(inbox.payloads(f"edgebus/{d}/state/cameras")) for d in (src, dst)}
    for device in (src, dst):
        agents[device] = spawn_agent(configs[device])

    def republished() -> bool:
        fresh = all(len(inbox.payloads(f"edgebus/{d}/state/cameras")) > seen[d] for d in (src, dst))
        return fresh and _cameras(inbox, src) == ["door"] and _cameras(inbox, dst) == []

    assert inbox.wait_for(lambda _: republished(), timeout=60), (_cameras(inbox, src), _cameras(inbox, dst))
    # The births carry the measured capacity the balancer places by: the camera's owner timed its
    # detector on the shipped benchmark image.
    def capacity(device: str) -> Capacity | None:
        births = [decode_record(p) for p in inbox.payloads(f"edgebus/{device}/birth")]
        return births[-1].capacity if births and isinstance(births[-1], Birth) else None

    assert inbox.wait_for(lambda _: (c := capacity(src)) is not None and c.detector_fps.get("ssdlite", 0) > 0,
                          timeout=60)
    other = capacity(dst)
    assert other is not None and other.cores >= 1 and other.memory_mb > 0 and not other.detector_fps
    for device in (src, dst):
        assert stop_agent(agents[device]) == 0
