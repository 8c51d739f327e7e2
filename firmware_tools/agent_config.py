"""The ``agent.toml`` a bundle carries: device identity, broker and credentials.

``firmware_tools`` may not import ``agents`` (independent layers), so the file is
checked twice: in-process with the broker's own :class:`~broker.session.BusConfig`
and device-id rules, and then by the agent itself (``python -m agents.cli
check-config``) when the agent package is installed next to this tool.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from broker.session import BusConfig
from schemas.errors import ConfigError, TopicError
from schemas.topics import validate_device_id

__all__ = ["BrokerTarget", "check_with_agent", "parse_broker_url", "render_agent_toml"]

logger = logging.getLogger(__name__)

SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_broker_url(url: str, username: str | None = None, password: str | None = None) -> BrokerTarget:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` (credentials may also sit in the URL)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"--broker must look like mqtt://host[:port] or mqtts://host[:port], not {url!r}")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError as exc:
        raise ConfigError(f"--broker {url!r}: {exc}") from exc
    user = username if username is not None else (unquote(parts.username) if parts.username else None)
    pw = password if password is not None else (unquote(parts.password) if parts.password else None)
    if pw is not None and user is None:
        raise ConfigError("--password needs --username")
    return BrokerTarget(host=parts.hostname, port=port, tls=parts.scheme == "mqtts",
                        username=user, password=pw)


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_agent_toml(device: str, broker: BrokerTarget, data_dir: str) -> str:
    """The configuration text, checked against the broker's rules before it is returned."""
    try:
        validate_device_id(device)
    except TopicError as exc:
        raise ConfigError(f"--device: {exc}") from exc
    lines = ["# edgebus agent configuration written by `edge-flash bundle`.", "[device]",
             f"id = {_q(device)}", f"data_dir = {_q(data_dir)}", "", "[broker]",
             f"host = {_q(broker.host)}", f"port = {broker.port}"]
    if broker.username is not None:
        lines.append(f"username = {_q(broker.username)}")
    if broker.password is not None:
        lines.append(f"password = {_q(broker.password)}")
    if broker.tls:
        lines.append(f"tls_ca = {_q(SYSTEM_CA)}")
    text = "\n".join(lines) + "\n"
    data = tomllib.loads(text)
    BusConfig.from_mapping({**data["broker"], "device": device})
    return text


def check_with_agent(path: Path) -> bool:
    """Run the agent's own ``check-config`` on ``path``; False when the agent is not installed."""
    if importlib.util.find_spec("agents") is None:
        logger.warning("agent package not installed here; %s checked with the broker rules only", path)
        return False
    proc = subprocess.run([sys.executable, "-m", "agents.cli", "check-config", "--config", str(path)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConfigError(f"the agent refuses {path}: {(proc.stderr or proc.stdout).strip()}")
    return True
