"""A balanced fleet of real processes on a test Mosquitto, for the placement tests and bench/balance.py.

Three ``edge-agent`` camera agents (``[transactions]`` with the placement
fence, load reported through the ``injected_load`` collector from a file the
caller rewrites), a Raft group of three ``edge-bus raft serve`` nodes (locks
and two-phase commit), and ``edge-coordinator start`` processes with
``[placement]``. :meth:`Fleet.owners` reads the agents' retained
``state/cameras``: the agents' own account of who runs what.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.coordination.local_cluster import GroupWatcher, LocalCluster
from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from tests.agent_helpers import REPO, agent_toml, reap_agent, spawn_agent
from tests.brokers import MosquittoUnderTest

GROUP = "bal"
NODES = ["n1", "n2", "n3"]
PHOTOS = Path(__file__).resolve().parent / "data" / "photos"
ROOT = "edgebus"


def camera_table(frames: Path, fps: float = 1.0) -> dict[str, Any]:
    return {"source": str(frames), "fps": fps, "queue_size": 4, "batch_interval": 1.0, "loop": True,
            "detector": {"type": "ssdlite", "threshold": 0.5}}


class Watch:
    """The latest retained state of every agent, the placement table, and every decision, as they come."""

    def __init__(self) -> None:
        self.cameras: dict[str, list[str]] = {}
        self.table: dict[str, Any] | None = None
        self.decisions: list[dict[str, Any]] = []
        self.cond = threading.Condition()

    def __call__(self, msg: ReceivedMessage) -> None:
        with self.cond:
            if msg.topic.endswith("/state/cameras"):
                self.cameras[msg.topic.split("/")[-3]] = list(json.loads(msg.payload)["cameras"]) \
                    if msg.payload else []
            elif msg.topic.endswith("/table") and msg.payload:
                self.table = json.loads(msg.payload)
            elif msg.topic.endswith("/decisions"):
                self.decisions.append(json.loads(msg.payload))
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


@dataclass
class Fleet:
    broker: MosquittoUnderTest
    root_dir: Path
    cameras: Mapping[str, dict[str, Any]]
    agent_cameras: Mapping[str, list[str]]
    placement: Mapping[str, Any]
    watch: Watch = field(default_factory=Watch)
    agents: dict[str, subprocess.Popen[str]] = field(default_factory=dict)  # by device
    agent_configs: dict[str, Path] = field(default_factory=dict)
    coordinators: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    coordinator_configs: dict[str, Path] = field(default_factory=dict)
    cluster: LocalCluster | None = None
    session: BusSession | None = None

    def bus(self, client_id: str) -> BusConfig:
        return BusConfig(host=self.broker.host, port=self.broker.port, username=self.broker.username,
                         password=self.broker.password, client_id=client_id, clean_start=True,
                         reconnect_min_delay=0.05, reconnect_max_delay=0.5)

    # -- load -------------------------------------------------------------------------------

    def set_load(self, device: str, cpu_percent: float, mem_percent: float = 40.0) -> None:
        path = self.root_dir / device / "load.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cpu_percent": cpu_percent, "mem_used_percent": mem_percent}))
        os.replace(tmp, path)

    # -- processes --------------------------------------------------------------------------

    def start(self, coordinators: tuple[str, ...] = ()) -> None:
        """The watch, the Raft group, the agents (each running its agent.toml cameras), the coordinators."""
        session = BusSession(self.bus("placement-watch"))
        session.subscribe(f"{ROOT}/+/state/cameras", self.watch)
        session.subscribe(f"{ROOT}/_sys/placement/{GROUP}/#", self.watch)
        session.start()
        assert session.wait_connected(10) and session.wait_subscribed(10)
        self.session = session
        self.cluster = LocalCluster(self.bus("unused"), GROUP, self.root_dir / "raft")
        self.cluster.start()
        assert GroupWatcher(session, GROUP).leader(NODES, timeout=30) is not None
        for device, owns in self.agent_cameras.items():
            self.start_agent(device, owns)
        if coordinators:
            # The agents first: a placer that saw the fleet half up would rightly place the cameras of an
            # agent not yet started elsewhere (they run nowhere), and the scenario would not be the one given.
            expected = {c: [a] for a, cams in self.agent_cameras.items() for c in cams}
            assert self.wait(lambda: self.owners() == expected, 120), self.owners()
        for name in coordinators:
            self.start_coordinator(name)

    def start_agent(self, device: str, owns: list[str] | None = None) -> None:
        folder = self.root_dir / device
        if device not in self.agent_configs:
            folder.mkdir(parents=True)
            self.set_load(device, 30.0)
            extra = (f'\n[transactions]\ngroup = "{GROUP}"\nplacement_lease_s = 3.0\n'
                     f'\n[metrics.injected_load]\nfile = "{folder / "load.json"}"\n')
            # Cameras moved here over the bus must be in its allow-list (agents/camera/source_policy.py).
            folders = sorted({str(t["source"]) for t in self.cameras.values()})
            extra += f'\n[commands]\ncamera_folders = {json.dumps(folders)}\n'
            for name in owns or []:
                table = self.cameras[name]
                lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items()
                                   if k not in ("detector", "cpu_cores"))
                extra += f'\n[[cameras]]\nname = "{name}"\n{lines}\n[cameras.detector]\ntype = "ssdlite"\n'
            self.agent_configs[device] = agent_toml(self.broker, folder, device, interval=1.0,
                                                    batch_interval=1.0,
                                                    collectors=["agent", "injected_load"], extra=extra)
        self.agents[device] = spawn_agent(self.agent_configs[device])

    def coordinator_toml(self, name: str) -> Path:
        folder = self.root_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f'data_dir = "{folder / "data"}"', "embedded_broker = false", "", "[broker]",
                 f'host = "{self.broker.host}"', f"port = {self.broker.port}",
                 f'username = "{self.broker.username}"', f'password = "{self.broker.password}"',
                 f'client_id = "{name}"', "reconnect_min_delay = 0.05", "reconnect_max_delay = 0.5", "",
                 "[placement]", f'group = "{GROUP}"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in self.placement.items()]
        for cam, table in self.cameras.items():
            lines += ["", f"[placement.cameras.{cam}]"]
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items() if k != "detector"]
            lines += [f"[placement.cameras.{cam}.detector]", 'type = "ssdlite"', "threshold = 0.5"]
        path = folder / "coordinator.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_coordinator(self, name: str) -> None:
        config = self.coordinator_configs.setdefault(name, self.coordinator_toml(name))
        with (config.parent / "coordinator.log").open("a") as log:
            self.coordinators[name] = subprocess.Popen(
                [sys.executable, "-m", "coordinator.cli", "start", "--config", str(config), "--no-http"],
                env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=config.parent, stdout=log,
                stderr=subprocess.STDOUT)

    def cli(self, *args: str) -> tuple[int, str]:
        """``edge-coordinator placement ARGS --config``, in this process (imports are slow): exit, stdout."""
        from coordinator.cli import main

        config = next(iter(self.coordinator_configs.values()))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["placement", *args, "--config", str(config)])
        return code, out.getvalue()

    def stop(self) -> None:
        for coordinator in self.coordinators.values():
            if coordinator.poll() is None:
                coordinator.kill()
            coordinator.wait(10)
        for agent in self.agents.values():
            reap_agent(agent)
        if self.cluster is not None:
            self.cluster.stop()
        if self.session is not None:
            self.session.stop(flush_timeout=0)

    # -- what the agents say ----------------------------------------------------------------

    def owners(self) -> dict[str, list[str]]:
        """camera -> the agents whose retained state/cameras lists it (the agents' own account)."""
        with self.watch.cond:
            out: dict[str, list[str]] = {c: [] for c in self.cameras}
            for device, cams in self.watch.cameras.items():
                for c in cams:
                    out.setdefault(c, []).append(device)
            return out

    def placer(self) -> tuple[str | None, int]:
        with self.watch.cond:
            table = self.watch.table
            return (table.get("placer"), int(table.get("token", 0))) if table else (None, 0)

    def settled(self) -> bool:
        """No move in flight in the placer's table."""
        with self.watch.cond:
            table = self.watch.table
            return table is not None and not any(m["state"] == "in_flight" for m in table.get("moves", []))

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        return self.watch.wait(predicate, timeout)


def make_fleet(broker: MosquittoUnderTest, tmp_path: Path, *, cameras: int = 4,
               placement: Mapping[str, Any] | None = None, cpu_cores: float | None = None) -> Fleet:
    """The fleet; ``cpu_cores``: each camera's declared CPU (the placement hint; default 0.25)."""
    frames = tmp_path / "frames"
    frames.mkdir(parents=True)
    for i in range(4):
        shutil.copy(PHOTOS / "coffee.jpg", frames / f"{i:03d}.jpg")
    hint = {} if cpu_cores is None else {"cpu_cores": cpu_cores}
    tables = {f"cam{i + 1}": {**camera_table(frames), **hint} for i in range(cameras)}
    names = list(tables)
    own = {"gw-a": names[:2], "gw-b": names[2:3], "gw-c": names[3:]}
    knobs = {"interval_s": 1.0, "min_dwell_ms": 0, "settle_ms": 1500, "evacuate_after_ms": 8000,
             "move_timeout_s": 8.0, **(placement or {})}
    return Fleet(broker, tmp_path, tables, own, knobs)


def until(deadline_s: float) -> float:
    return time.monotonic() + deadline_s
