"""Running ``edge-agent`` as a real process against a test broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.brokers import RunningBroker
from tests.bus_helpers import WAIT

REPO = Path(__file__).resolve().parents[1]


def agent_toml(broker: RunningBroker, tmp_path: Path, device: str, *, home_assistant: bool = False,
               groups: Sequence[str] = (), extra: str = "",
               broker_options: Mapping[str, object] | None = None, **metrics: object) -> Path:
    """An agent.toml for ``device`` on ``broker``; ``metrics`` keys go into ``[metrics]``,
    ``broker_options`` into ``[broker]``."""
    metric_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in metrics.items())
    broker_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in (broker_options or {}).items())
    path = tmp_path / "agent.toml"
    path.write_text(f"""
[device]
id = "{device}"
data_dir = "{tmp_path / 'agent-data'}"
groups = {json.dumps(list(groups))}

[broker]
host = "{broker.host}"
port = {broker.port}
username = "{broker.username}"
password = "{broker.password}"
reconnect_min_delay = 0.05
reconnect_max_delay = 0.5
{broker_lines}

[metrics]
{metric_lines}

[home_assistant]
enabled = {str(home_assistant).lower()}

[shedding]
enabled = false   # a busy test machine must not pause the cameras under test
{extra}
""")
    return path


def spawn_agent(config: Path, *args: str) -> subprocess.Popen[str]:
    """``edge-agent run --config CONFIG`` in the config's folder, its log in ``agent.log`` there.

    A file, not a pipe: an unread pipe fills up and blocks the agent's logging.
    """
    with (config.parent / "agent.log").open("a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "run", "--config", str(config), *args],
            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=config.parent,
            stdout=log, stderr=subprocess.STDOUT, text=True)


def stop_agent(proc: subprocess.Popen[str]) -> int:
    """SIGTERM, as systemd stops the agent; its exit code (0: it flushed and went offline cleanly)."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=WAIT)


def reap_agent(proc: subprocess.Popen[str]) -> None:
    """Kill the agent if a failing test left it running, and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=WAIT)
