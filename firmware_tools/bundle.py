"""``edge-flash bundle``: an offline, signed agent bundle for one device.

Bundle layout::

    BUNDLE_ID                  a unique id; install.sh skips a slot that already holds it
    agent.toml                 device identity, broker, credentials
    keys/trusted_keys.json     the keys the device accepts updates from
    wheels/*.whl               every wheel the agent needs, for the target platform
    requirements.txt           those wheels pinned (name==version)
    install.sh                 idempotent A/B installer (no network)
    edgebus-agent.service      the hardened systemd unit
    manifest.json, manifest.sig   every file's SHA-256 and size, signed (Ed25519)
"""

from __future__ import annotations

import datetime
import importlib.metadata
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from firmware_tools.agent_config import BrokerTarget, check_with_agent, render_agent_toml
from firmware_tools.keys import TRUSTED_KEYS, load_signing_key, load_trusted
from firmware_tools.manifest import write_manifest
from firmware_tools.units import DATA_DIR, SERVICE, install_script, systemd_unit
from schemas.errors import ConfigError

__all__ = ["TARGETS", "BundleRequest", "build_bundle", "download_wheels"]

logger = logging.getLogger(__name__)

#: pip ``--platform`` tags per target. Raspberry Pi OS bookworm has glibc 2.36, Jetson
#: L4T r36 (Ubuntu 22.04) glibc 2.35, so manylinux_2_28 wheels fit both.
TARGETS: dict[str, tuple[str, ...]] = {
    "pi-arm64": ("manylinux_2_28_aarch64", "manylinux2014_aarch64", "linux_aarch64"),
    "jetson-arm64": ("manylinux_2_28_aarch64", "manylinux2014_aarch64", "linux_aarch64"),
    "x86_64": ("manylinux_2_28_x86_64", "manylinux2014_x86_64", "linux_x86_64"),
}
#: Raspberry Pi OS bookworm ships 3.11; trixie ships 3.13 and Jetson L4T r36 3.10: use --python-version.
PYTHON_VERSION = "3.11"

Runner = Callable[[Sequence[str]], None]


def _run(cmd: Sequence[str]) -> None:
    logger.info("running %s", " ".join(cmd))
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OSError(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} failed: {proc.stderr.strip()[-2000:]}")


@dataclass(frozen=True, slots=True)
class BundleRequest:
    target: str
    device: str
    broker: BrokerTarget
    keys_dir: Path
    out: Path
    wheels: Path | None = None
    download: bool = False
    source: Path | None = None  # the edgebus source tree, built into a wheel when downloading
    python_version: str = PYTHON_VERSION  # the device's Python: wheels must match it


def _agent_requirements() -> list[str]:
    """edgebus's own run-time requirements (no extras)."""
    reqs = importlib.metadata.requires("edgebus") or []
    return [r.split(";")[0].strip() for r in reqs if "extra ==" not in r]


def _source_tree() -> Path:
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise ConfigError("--download needs the edgebus source tree (--source DIR)")
    return root


def download_wheels(target: str, dest: Path, source: Path | None, runner: Runner = _run,
                    python_version: str = PYTHON_VERSION) -> None:
    """Fetch the agent's wheels for ``target`` with pip (network), and build edgebus's own wheel."""
    pip = [sys.executable, "-m", "pip"]
    platforms = [arg for tag in TARGETS[target] for arg in ("--platform", tag)]
    runner([*pip, "download", "--dest", str(dest), *platforms, "--python-version", python_version,
            "--implementation", "cp", "--only-binary=:all:", *_agent_requirements()])
    # pip builds a local project in place (build/, *.egg-info): build a copy, not the operator's tree.
    with tempfile.TemporaryDirectory(prefix="edgebus-src-") as tmp:
        copy = Path(tmp) / "edgebus"
        shutil.copytree(source or _source_tree(), copy, ignore=_NOT_SOURCE)
        runner([*pip, "wheel", "--no-deps", "--wheel-dir", str(dest), str(copy)])


_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "data",
                                     "tests", ".mypy_cache", ".ruff_cache", ".pytest_cache")

_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def pinned_requirements(wheels: Path) -> str:
    """``name==version`` for every wheel in ``wheels``; an edgebus wheel must be among them."""
    pins: dict[str, str] = {}
    for whl in sorted(wheels.glob("*.whl")):
        match = _WHEEL.match(whl.name)
        if not match:
            raise ConfigError(f"{whl} is not a wheel file name")
        name = match["name"].lower().replace("_", "-")
        if pins.get(name, match["version"]) != match["version"]:
            raise ConfigError(f"{wheels} holds two versions of {name}: {pins[name]} and {match['version']}")
        pins[name] = match["version"]
    if "edgebus" not in pins:
        raise ConfigError(f"{wheels} holds no edgebus wheel (build one: pip wheel --no-deps . -w {wheels})")
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def build_bundle(req: BundleRequest, runner: Runner = _run) -> Path:
    """Write the bundle into ``req.out`` (which must be empty or absent); returns it."""
    if req.target not in TARGETS:
        raise ConfigError(f"--target must be one of {', '.join(TARGETS)}, not {req.target!r}")
    if (req.wheels is None) == (not req.download):
        raise ConfigError("give exactly one of --wheels DIR or --download")
    if req.out.exists() and any(req.out.iterdir()):
        raise ConfigError(f"--out {req.out} is not empty")
    signing = load_signing_key(req.keys_dir)
    load_trusted(req.keys_dir)  # refuse a broken rotation list before shipping it
    text = render_agent_toml(req.device, req.broker, DATA_DIR)
    wheels = req.out / "wheels"
    wheels.mkdir(parents=True)
    if req.wheels is not None:
        found = sorted(req.wheels.glob("*.whl"))
        if not found:
            raise ConfigError(f"--wheels {req.wheels} holds no .whl files")
        for whl in found:
            shutil.copy2(whl, wheels / whl.name)
    else:
        download_wheels(req.target, wheels, req.source, runner, req.python_version)
    (req.out / "requirements.txt").write_text(pinned_requirements(wheels))
    (req.out / "agent.toml").write_text(text)
    (req.out / "agent.toml").chmod(0o600)
    check_with_agent(req.out / "agent.toml")
    (req.out / "keys").mkdir()
    shutil.copy2(req.keys_dir / TRUSTED_KEYS, req.out / "keys" / TRUSTED_KEYS)
    bundle_id = f"{req.device}-{uuid.uuid4().hex[:12]}"
    (req.out / "BUNDLE_ID").write_text(bundle_id + "\n")
    (req.out / "install.sh").write_text(install_script(req.device))
    (req.out / "install.sh").chmod(0o755)
    (req.out / SERVICE).write_text(systemd_unit(req.device))
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    write_manifest(req.out, signing, {"bundle_id": bundle_id, "device": req.device, "target": req.target,
                                      "python": req.python_version, "created": created})
    logger.info("bundle %s for %s (%s) written to %s", bundle_id, req.device, req.target, req.out)
    return req.out
