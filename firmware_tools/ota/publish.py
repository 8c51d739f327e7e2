"""``edge-flash ota publish``: push a signed update to devices over MQTT, in stages.

The server does not push the artifact: each device pulls it. :func:`publish`
signs the artifact, finds the devices (:mod:`firmware_tools.ota.discovery`, or
an explicit ``--devices`` list), runs the rollout
(:mod:`firmware_tools.ota.rollout`) and prints the summary
(:mod:`firmware_tools.ota.report`).
"""

from __future__ import annotations

import math
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from broker.session import BusConfig, BusSession
from firmware_tools.agent_config import SYSTEM_CA, BrokerTarget
from firmware_tools.ota.discovery import discover_devices
from firmware_tools.ota.report import PublishReport, print_report
from firmware_tools.ota.rollout import FrameHook, OtaPublisher
from firmware_tools.ota_artifact import build_artifact
from protocols.ota.rollout import RolloutPolicy
from schemas.errors import ConfigError, TopicError
from schemas.ota import DEFAULT_CHUNK_SIZE
from schemas.topics import validate_device_id

__all__ = ["PublishRequest", "parse_fraction", "publish", "publisher_session"]


def parse_fraction(text: str, what: str, *, zero_ok: bool) -> float:
    """``"10%"`` or ``"0.1"`` -> 0.1; ConfigError outside (0, 1] (or [0, 1] when ``zero_ok``)."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"{what} must be a percentage (10%) or a fraction (0.1), not {text!r}") from None
    low_ok = value >= 0 if zero_ok else value > 0
    if not (math.isfinite(value) and low_ok and value <= 1):
        raise ConfigError(f"{what} must be {'between 0%' if zero_ok else 'more than 0%'} and 100%, "
                          f"not {text!r}")
    return value


def publisher_session(broker: BrokerTarget, *, root: str = "edgebus", client_id: str | None = None,
                      tls_ca: Path | None = None) -> BusSession:
    """A clean, in-memory session with a unique client id (two publishers never kick each other off)."""
    cid = client_id or f"edge-flash-ota-{uuid.uuid4().hex[:12]}"
    ca = tls_ca if tls_ca is not None else (Path(SYSTEM_CA) if broker.tls else None)
    config = BusConfig(host=broker.host, port=broker.port, username=broker.username,
                       password=broker.password, client_id=cid, root=root, clean_start=True,
                       tls_ca=ca, reconnect_max_delay=5.0)
    return BusSession(config)


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishRequest:
    """Everything ``edge-flash ota publish`` was asked to do."""

    artifact: Path
    kind: str
    version: str
    keys_dir: Path
    broker: BrokerTarget
    group: str | None = None
    devices: tuple[str, ...] = ()
    policy: RolloutPolicy = field(default_factory=RolloutPolicy)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    timeout: float = 900.0
    health_window: float = 60.0
    root: str = "edgebus"
    settle: float = 3.0
    tls_ca: Path | None = None
    client_id: str | None = None


def _requires(kind: str) -> dict[str, Any]:
    # A model is only useful to a device that runs cameras (the agent checks this too).
    return {"capabilities": ["cameras"]} if kind == "model" else {}


def publish(req: PublishRequest, *, out: TextIO | None = None, frame_hook: FrameHook | None = None,
            stop: threading.Event | None = None) -> tuple[int, PublishReport | None]:
    """Sign, discover, roll out, print the summary; ``(exit code, report)``.

    Exit 0 only when every targeted device committed, 1 otherwise; configuration
    errors (no devices found, a bad artifact) raise ConfigError (exit 2).
    """
    out = out if out is not None else sys.stdout
    if (req.group is None) == (not req.devices):
        raise ConfigError("give exactly one of --to GROUP or --devices a,b")
    for device in req.devices:
        try:
            validate_device_id(device)
        except TopicError as exc:
            raise ConfigError(f"--devices: {exc}") from None
    artifact = build_artifact(req.artifact, kind=req.kind, version=req.version, keys_dir=req.keys_dir,
                              chunk_size=req.chunk_size, health_window_s=req.health_window,
                              requires=_requires(req.kind))
    session = publisher_session(req.broker, root=req.root, client_id=req.client_id, tls_ca=req.tls_ca)
    session.start()
    try:
        if req.group is not None:
            devices, skipped = discover_devices(session, req.group, settle=req.settle)
            for device, why in skipped.items():
                print(f"skipping {device}: {why}", file=out)
            if not devices:
                raise ConfigError(f"no device in group {req.group!r} announces the ota capability "
                                  f"(retained births under {req.root}/+/birth)")
        else:
            devices = list(req.devices)
        print(f"rolling out {artifact.manifest.update_id} to {len(devices)} device(s): {', '.join(devices)}",
              file=out)
        publisher = OtaPublisher(session, artifact, req.policy, timeout=req.timeout, out=out,
                                 frame_hook=frame_hook)
        try:
            report = publisher.run(devices, stop=stop)
        finally:
            publisher.close()
    finally:
        session.stop(flush_timeout=2.0)
    print_report(report, out)
    return (0 if report.ok else 1), report
