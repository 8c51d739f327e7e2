"""Fuzz targets for the agent's command handlers: arbitrary args, answered and never a crash.

One target per command (``cmd_config``, ``cmd_assign``, ``cmd_unassign``,
``cmd_rebirth``, ``cmd_ota``): the input bytes are a msgpack body for the
command's ``args`` (not a map: wrapped as ``{"value": ...}``). The command goes
through the real dispatcher's worker pass (decode, bounds, handler, reply) on
this thread, with the agent's real handlers: ``Agent.apply_config``, a
``CameraHost`` with the default ``[commands]`` allow-list (its detector factory
refuses, so nothing is ever launched), the rebirth handler, and the OTA part
(a forged signature at best). The session is a real, never-connected
:class:`BusSession` (replies go to its on-disk outbox).

A defect is an exception escaping the dispatcher, or a handler that raised
something other than an edgebus error (counted ``handler_error`` or
``internal``): every refusal must be a reason. Shared by the hypothesis tests
(tests/test_fuzz_commands.py) and the atheris runs (tests/fuzz_atheris.py).
"""

from __future__ import annotations

import itertools
import logging
import socket
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgpack

from schemas.command import Command
from schemas.envelope import unpack_body
from schemas.errors import CodecError, ConfigError
from schemas.messages import encode_record

__all__ = ["COMMAND_SEEDS", "COMMAND_TARGETS", "CommandBench"]

DEVICE = "gw-fuzz"
NAMES = ("config", "assign", "unassign", "rebirth", "ota")
_ids = itertools.count()


def _no_detector(options: Mapping[str, Any]) -> Any:
    raise ConfigError("fuzz: cameras are not launched")


def _no_dns(host: str, port: int, **_: Any) -> Any:
    raise socket.gaierror(f"fuzz: {host!r} not looked up")


class CommandBench:
    """A never-started agent with the real command handlers, driven one message at a time."""

    def __init__(self, root: Path) -> None:
        from agents.camera.host import CameraHost
        from agents.camera.source_policy import SourcePolicy
        from agents.commands.dispatcher import CommandDispatcher
        from agents.commands.handlers import camera_handler, rebirth_handler
        from agents.config import AgentConfig
        from agents.ota.host import OtaHost
        from agents.runtime import Agent

        logging.disable(logging.CRITICAL)  # every refusal logs a warning; a million of them help no one
        config = AgentConfig.from_mapping({
            "device": {"id": DEVICE, "data_dir": str(root / "data")},
            "broker": {"host": "127.0.0.1", "port": 1, "outbox_max_messages": 1000},
            "metrics": {"collectors": ["agent"]},
            "ota": {"prefix": str(root / "opt"), "trusted_keys": str(root / "trusted_keys.json")}})
        self.agent = Agent(config)
        session = self.agent.session
        self.dispatcher = CommandDispatcher(session, DEVICE, limits=config.commands)
        # Host names are not looked up: a fuzzer's made-up names must not hammer the resolver.
        policy = SourcePolicy(config.commands, resolve=_no_dns)
        self.cameras = CameraHost(session, [], detector_factory=_no_detector, limits=config.commands,
                                  source_policy=policy)
        self.dispatcher.register("config", lambda c: self.agent.apply_config(dict(c.args)))
        self.dispatcher.register("assign", camera_handler("assign", self.cameras.assign))
        self.dispatcher.register("unassign", camera_handler("unassign", self.cameras.unassign))
        self.dispatcher.register("rebirth", rebirth_handler(session, self.agent.birth))
        self.ota = OtaHost(self.agent, config.ota, self.dispatcher)

    def run(self, name: str, args: Mapping[str, Any]) -> None:
        """One command through the dispatcher's worker pass; AssertionError on a defect."""
        from broker.router import ReceivedMessage

        try:
            command = Command(device=DEVICE, name=name, command_id=f"f-{next(_ids)}", time_ms=1, args=args)
            payload = encode_record(command)
        except CodecError:
            return  # the record refuses these args before any handler could see them
        before = self.dispatcher.stats().errors
        topic = self.agent.session.topics.cmd(DEVICE, name)
        self.dispatcher._process(ReceivedMessage(topic, payload, 1, False))
        after = self.dispatcher.stats().errors
        for bug in ("handler_error", "internal"):
            assert after[bug] == before[bug], f"{name} {dict(args)!r}: the handler raised ({bug})"


_bench: CommandBench | None = None


def bench() -> CommandBench:
    global _bench
    if _bench is None:
        _bench = CommandBench(Path(tempfile.mkdtemp(prefix="edgebus-fuzz-commands-")))
    return _bench


def args_of(data: bytes) -> Mapping[str, Any] | None:
    """The command args the bytes encode (a msgpack map, or any value wrapped); None if not msgpack."""
    try:
        value = unpack_body(data, max_objects=10_000)
    except CodecError:
        return None
    return value if isinstance(value, dict) else {"value": value}


def _target(name: str) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        args = args_of(data)
        if args is not None:
            bench().run(name, args)

    target.__name__ = f"cmd_{name}"
    target.__doc__ = f"The {name!r} command handler on arbitrary args: answered, never a crash."
    return target


COMMAND_TARGETS: dict[str, Callable[[bytes], None]] = {f"cmd_{n}": _target(n) for n in NAMES}


def _seeds() -> dict[str, list[bytes]]:
    from schemas.ota import SignedManifest, UpdateManifest

    pack = msgpack.packb
    manifest = UpdateManifest.for_artifact(b"x" * 3000, update_id="u-1", kind="model", name="m.onnx",
                                           version="2.0", chunk_size=1024, created="2026-01-01T00:00:00Z",
                                           requires={"capabilities": ["cameras"]}, health_window_s=60.0)
    forged = SignedManifest(manifest.to_bytes(), "k-1", bytes(64)).to_offer(rollout="r")
    return {
        "cmd_config": [pack({"metrics": {"interval": 2.0}}), pack({"metrics": {"interval": 0.001}}),
                       pack({"metrics": {"deadband": 5.0, "report_by_exception": True}}),
                       pack({"metrics": {"deadbands": {"cpu_percent": 1.0}, "heartbeat": 30}})],
        "cmd_assign": [pack({"camera": "door", "source": "rtsp://10.0.0.5/stream", "fps": 5}),
                       pack({"camera": "c", "source": "file:///etc/shadow"}),
                       pack({"camera": "c", "source": 0, "queue_size": 4, "motion": {"width": 160},
                             "detector": {"type": "ssdlite", "threads": 1}}),
                       pack({"camera": "c", "source": "http://169.254.169.254/latest/meta-data"})],
        "cmd_unassign": [pack({"camera": "door"}), pack({"camera": "door", "extra": 1})],
        "cmd_rebirth": [pack({}), pack({"why": "operator"})],
        "cmd_ota": [pack(forged),
                    pack({"manifest": b"\x81\xa1k\x01", "key_id": "k1", "signature": bytes(64)}),
                    pack({"manifest": b"", "key_id": "", "signature": b""})],
    }


COMMAND_SEEDS = _seeds()
