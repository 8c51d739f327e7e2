"""`edge-coordinator start --demo` (what `make demo` runs), end to end, without a terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.bus_helpers import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_agents_through_the_embedded_broker(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", "from coordinator.cli import main; raise SystemExit(main())",
         "--log-level", "WARNING", "start", "--demo", "--agents", "3", "--port", "0", "--http-port", "0",
         "--data-dir", str(tmp_path), "--duration", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the demo says where its dashboard is before the agents start
            lines.append(line)
            if line.startswith("dashboard: "):
                break
        url = re.match(r"dashboard: (http://127\.0\.0\.1:\d+/) ", lines[-1])
        assert url, lines
        assert wait_until(lambda: _fleet(url.group(1)).get("online") == 3, timeout=60)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stdout = "".join(lines) + out
    assert proc.returncode == 0, err
    assert "embedded broker listening on 127.0.0.1:" in stdout
    assert "mosquitto_sub -h 127.0.0.1 -p " in stdout
    assert "guarantees on the embedded broker" in stdout
    assert "need Mosquitto: MQTT 5, $share" in stdout
    final = stdout.strip().splitlines()[-1]
    fields = dict(re.findall(r"(\w[\w/]*)=(\d+)", final))
    assert fields["devices"] == "3", final
    assert int(fields["received"]) >= 3 * 8 * 5, final  # 3 agents x 8 metrics x >=5 ticks
    assert fields["missing"] == "0" and fields["duplicates"] == "0" and fields["invalid"] == "0"
    assert (tmp_path / "broker" / "credentials.json").exists()


def _fleet(url: str) -> dict[str, object]:
    try:
        body = httpx.get(url + "api/v1/fleet", timeout=5).json()
    except httpx.HTTPError:
        return {}
    return body if isinstance(body, dict) else {}


def test_start_refuses_a_taken_port_clearly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-c", "from coordinator.cli import main; raise SystemExit(main())",
             "start", "--port", str(port), "--data-dir", str(tmp_path), "--duration", "1"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    assert out.returncode == 1
    assert f"port {port}" in out.stderr and "already in use" in out.stderr


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text('[broker]\nhost = "127.0.0.1"\nprot = 1883\n')
    out = subprocess.run(
        [sys.executable, "-c", "from coordinator.cli import main; raise SystemExit(main())",
         "start", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 2
    assert "broker.prot" in out.stderr


def test_readme_coordinator_configuration_is_valid() -> None:
    """The coordinator.toml README shows parses as the coordinator parses it, every table strict."""
    import re
    import tomllib

    from coordinator.anomaly.engine import AnomalyEngine
    from coordinator.config import CoordinatorConfig

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```toml\n(embedded_broker = false.*?)```", readme, re.S)
    assert block, "README lost its coordinator.toml example"
    config = CoordinatorConfig.from_mapping(tomllib.loads(block.group(1)))
    assert config.cluster is not None and config.cluster.group == "coordinators"
    assert not config.embedded_broker
    assert config.services.actions and config.services.batch.interval_s == 300
    AnomalyEngine({k: v for k, v in config.anomaly.items() if k != "batch"})
