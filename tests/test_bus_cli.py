"""`edge-bus sub` and `edge-bus pub` as a user runs them, against real brokers."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.session import BusConfig, BusSession
from broker.telemetry import MetricsPublisher
from schemas.messages import MetricSample
from tests.brokers import RunningBroker
from tests.json_schema import assert_conforms

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def edge_bus(broker: RunningBroker, *args: str) -> list[str]:
    return [sys.executable, "-c", "from broker.bus_cli import main; raise SystemExit(main())",
            *args, "-H", broker.host, "-p", str(broker.port),
            f"--username={broker.username}", f"--password={broker.password}"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def start_sub(broker: RunningBroker, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(edge_bus(broker, "sub", *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())


def keep_sending(proc: subprocess.Popen[str], send: Callable[[], None]) -> None:
    """Send until the subscriber has what it waits for: no guess at when it subscribed."""
    for _ in range(60):
        send()
        try:
            proc.wait(timeout=0.5)
            return
        except subprocess.TimeoutExpired:
            continue


def test_sub_decodes_envelopes_and_shows_plain_payloads(broker: RunningBroker) -> None:
    # The retained plain message arrives first whenever the subscriber joins; metrics
    # batches keep coming until it has one of them too.
    proc = start_sub(broker, "--json", "-C", "2", "-W", "40",
                     "edgebus/gw/state/mode", "edgebus/gw/metrics")
    bus = BusSession(BusConfig(host=broker.host, port=broker.port, username=broker.username,
                               password=broker.password, device="gw", clean_start=True))
    try:
        bus.start()
        assert bus.wait_connected(15)
        bus.publish("edgebus/gw/state/mode", b"night", retain=True)
        publisher = MetricsPublisher(bus)
        keep_sending(proc, lambda: publisher.publish(
            [MetricSample(time_ms=1_700_000_000_000, name="temp_c", value=41.5)]))
        out, err = proc.communicate(timeout=30)
        bus.publish("edgebus/gw/state/mode", b"", retain=True)  # clear the retained message
        bus.flush(5)
    finally:
        bus.stop()
        proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    by_topic = {line["topic"]: line for line in lines}
    metrics = by_topic["edgebus/gw/metrics"]
    assert metrics["kind"] == "envelope"
    assert "temp_c" in json.dumps(metrics["payload"])
    assert "41.5" in json.dumps(metrics["payload"])
    mode = by_topic["edgebus/gw/state/mode"]
    assert (mode["kind"], mode["payload"], mode["qos"]) == ("text", "night", 1)


def test_pub_envelope_round_trips_through_sub(broker: RunningBroker) -> None:
    proc = start_sub(broker, "-v", "-C", "1", "-W", "40", "edgebus/gw/cmd/#")
    results: list[subprocess.CompletedProcess[str]] = []
    keep_sending(proc, lambda: results.append(subprocess.run(
        edge_bus(broker, "pub", "-t", "edgebus/gw/cmd/note", "--envelope",
                 "-m", '{"hello": [1, 2, 3]}'),
        capture_output=True, text=True, env=env(), timeout=30)))
    out, err = proc.communicate(timeout=30)
    assert all(r.returncode == 0 for r in results), results[-1].stderr
    assert proc.returncode == 0, err
    topic, _, payload = out.strip().partition(" ")
    assert topic == "edgebus/gw/cmd/note"
    assert "hello" in payload and "[1,2,3]" in payload


def test_sub_timeout_exit_code(broker: RunningBroker) -> None:
    out = subprocess.run(edge_bus(broker, "sub", "-W", "1", "edgebus/nobody/#"),
                         capture_output=True, text=True, env=env(), timeout=30)
    assert out.returncode == 27


def test_unreachable_broker_is_a_clear_failure() -> None:
    args = [sys.executable, "-c", "from broker.bus_cli import main; raise SystemExit(main())",
            "pub", "-t", "edgebus/x/state/y", "-m", "1", "--connect-timeout", "1",
            "-p", "1", "-u", "u", "-P", "p"]  # nothing listens on port 1
    out = subprocess.run(args, capture_output=True, text=True, env=env(), timeout=30)
    assert out.returncode == 1
    assert "could not connect" in out.stderr


def test_bad_usage_exit_code() -> None:
    out = subprocess.run([sys.executable, "-c",
                          "from broker.bus_cli import main; raise SystemExit(main())",
                          "pub", "-t", "edgebus/x/state/y", "-m", "not json", "--envelope"],
                         capture_output=True, text=True, env=env(), timeout=30)
    assert out.returncode == 2
    assert "JSON" in out.stderr


def test_sub_without_a_topic_is_a_usage_error() -> None:
    out = subprocess.run([sys.executable, "-c",
                          "from broker.bus_cli import main; raise SystemExit(main())", "sub"],
                         capture_output=True, text=True, env=env(), timeout=30)
    assert out.returncode == 2
    assert "topic" in out.stderr


# -- edge-bus cmd, and every example of `edge-bus --help` -------------------------------------


class _Parsed(Exception):
    """Raised instead of running a tool once its own parser accepted the arguments."""


def help_examples() -> list[list[str]]:
    """The command lines under "examples:" in `edge-bus --help` (without their explanations)."""
    from broker.bus_cli import build_parser

    epilog = build_parser().epilog or ""
    lines = epilog.split("examples:", 1)[1].splitlines()
    return [shlex.split(re.split(r"\s{2,}", line.strip())[0]) for line in lines if line.strip()]


def test_help_lists_every_tool_and_examples_for_each() -> None:
    from broker.bus_cli import build_parser

    usage = build_parser().format_usage()
    tools = ("sub", "pub", "cmd", "lock", "raft", "tx")
    assert "{" + ",".join(tools) + "}" in usage
    examples = help_examples()
    assert all(example[0] == "edge-bus" for example in examples)
    assert {example[1] for example in examples} == set(tools)


@pytest.mark.parametrize("example", help_examples(), ids=lambda e: " ".join(e[1:4]))
def test_every_help_example_is_accepted_by_its_parser(example: list[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Each example line goes through the real tool's own parser (lock, raft and tx have theirs)."""
    import argparse

    from broker.bus_cli import main

    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Parsed(original(self, *args, **kwargs))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(_Parsed):
        main(example[1:])


def test_cmd_builds_the_command_record() -> None:
    from broker.bus_cli import build_command, build_parser

    args = build_parser().parse_args(["cmd", "cam-1", "assign", "camera=door", "fps=5",
                                      "source=rtsp://10.0.0.7/stream", "labels=[\"person\"]",
                                      "--args", '{"loop": false, "fps": 2}'])
    topic, command = build_command(args, "cli-1", 1_700_000_000_000)
    assert topic == "edgebus/cam-1/cmd/assign"
    assert (command.device, command.name, command.command_id, command.reply_to) == (
        "cam-1", "assign", "cli-1", None)
    assert dict(command.args) == {"camera": "door", "fps": 5, "loop": False, "labels": ("person",),
                                  "source": "rtsp://10.0.0.7/stream"}


@pytest.mark.parametrize(("args", "problem"), [
    (["cmd", "cam-1", "assign", "camera"], "KEY=VALUE"),
    (["cmd", "cam-1", "assign", "--args", "[1]"], "JSON object"),
    (["cmd", "cam/1", "rebirth"], "cam/1"),
    (["cmd", "cam-1", "no#such"], "no#such"),
])
def test_cmd_usage_errors(args: list[str], problem: str) -> None:
    out = subprocess.run([sys.executable, "-c",
                          "from broker.bus_cli import main; raise SystemExit(main())", *args],
                         capture_output=True, text=True, env=env(), timeout=30)
    assert out.returncode == 2, out.stderr
    assert problem in out.stderr


def run_example(broker: RunningBroker, example: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(edge_bus(broker, *example[1:], *extra), capture_output=True, text=True,
                          env=env(), timeout=60)


def test_the_help_examples_of_sub_pub_and_cmd_work_on_a_running_agent(
        mosquitto_broker: RunningBroker, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    from tests.agent_helpers import agent_toml, reap_agent, spawn_agent, stop_agent
    from tests.bus_helpers import observer

    broker = mosquitto_broker
    examples = {" ".join(e): e for e in help_examples() if e[1] in ("sub", "pub", "cmd")}
    obs, inbox = observer(broker, "edgebus/cam-1/#")
    proc = spawn_agent(agent_toml(broker, tmp_path, "cam-1", interval=0.3, collectors=["agent"]))
    try:
        assert inbox.wait_last("edgebus/cam-1/status", b"online", timeout=30)
        ran = set()
        for line, example in examples.items():
            if example[1] != "cmd":
                continue
            out = run_example(broker, example, "-W", "20")
            assert out.returncode == 0, (line, out.stdout, out.stderr)
            reply = json.loads(out.stdout)
            assert reply["ok"] is True and reply["device"] == "cam-1" and reply["name"] == example[3]
            assert_conforms(reply, "command-reply")
            ran.add(line)
        # assign started camera door: its health is retained for the sub example that shows it.
        assert inbox.wait_for(lambda ms: bool(inbox.payloads("edgebus/cam-1/state/door_health")))
        for line, example in examples.items():
            if example[1] == "pub":
                out = run_example(broker, example)
                assert out.returncode == 0, (line, out.stderr)
                ran.add(line)
        for line, example in examples.items():
            if example[1] != "sub":
                continue
            limits = [] if "-C" in example else ["-C", "1"]
            out = run_example(broker, example, *limits, "-W", "30")
            assert out.returncode == 0, (line, out.stderr)
            assert out.stdout.strip(), line
            ran.add(line)
        assert ran == set(examples)
        assert json.loads(inbox.payloads("edgebus/cam-1/state/door_health")[-1])["camera"] == "door"
        assert stop_agent(proc) == 0
    finally:
        reap_agent(proc)
        obs.stop()


def test_cmd_reports_a_refusal_and_a_silent_device(mosquitto_broker: RunningBroker,
                                                    tmp_path: Path) -> None:
    from tests.agent_helpers import agent_toml, reap_agent, spawn_agent, stop_agent
    from tests.bus_helpers import observer

    broker = mosquitto_broker
    obs, inbox = observer(broker, "edgebus/gw-c/status")
    proc = spawn_agent(agent_toml(broker, tmp_path, "gw-c", interval=0.3, collectors=["agent"]))
    try:
        assert inbox.wait_last("edgebus/gw-c/status", b"online", timeout=30)
        refused = run_example(broker, ["edge-bus", "cmd", "gw-c", "config", "metrics={\"intervall\": 1}"])
        assert refused.returncode == 1, refused.stderr
        reply = json.loads(refused.stdout)
        assert reply["ok"] is False and "intervall" in reply["error"]
        assert_conforms(reply, "command-reply")
        silent = run_example(broker, ["edge-bus", "cmd", "nobody-here", "rebirth", "-W", "1"])
        assert silent.returncode == 27 and "no reply" in silent.stderr
        assert stop_agent(proc) == 0
    finally:
        reap_agent(proc)
        obs.stop()
