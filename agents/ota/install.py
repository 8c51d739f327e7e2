"""What each kind of update does once its artifact is downloaded and verified.

* ``agent``: the bundle's own ``install.sh`` (run with ``EDGEBUS_OTA=1``)
  builds the new virtual environment in the inactive slot; it neither switches
  ``current`` nor touches /etc or systemd - the trial does the switch;
* ``model``: the file must load (ONNX, when onnxruntime is installed), then
  replaces ``{data_dir}/models/{name}``, the old one kept as ``{name}.previous``;
* ``keys``: the list must parse like ``trusted_keys.json``; it then lives at
  ``{data_dir}/ota/trusted_keys.json`` and wins over the one in /etc.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from agents.ota.files import atomic_write, fsync_dir
from protocols.ota.trust import KeyRing, check_revocations_kept, parse_trusted
from schemas.errors import ConfigError, UpdateFailed
from schemas.ota import Phase

__all__ = ["INSTALL_TIMEOUT", "bundle_root", "install_keys", "install_model", "restore_model",
           "run_install_script"]

logger = logging.getLogger(__name__)

#: pip installing a venv from wheels on a Raspberry Pi takes minutes, not hours.
INSTALL_TIMEOUT = 1800.0
_LOG_TAIL_CHARS = 1500


def bundle_root(extracted: Path) -> Path:
    """The folder holding ``install.sh``: the archive's root, or its single top-level folder."""
    if (extracted / "install.sh").is_file():
        return extracted
    entries = [p for p in extracted.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and (entries[0] / "install.sh").is_file():
        return entries[0]
    raise UpdateFailed("install_failed", "the agent bundle has no install.sh")


def _tail(log: Path) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return text[-_LOG_TAIL_CHARS:].strip()


def run_install_script(bundle: Path, *, prefix: Path, data_dir: Path, log: Path,
                       timeout: float = INSTALL_TIMEOUT) -> None:
    """``sh install.sh`` in OTA mode; its output goes to ``log``. UpdateFailed unless it exits 0."""
    env = {**os.environ, "EDGEBUS_OTA": "1", "EDGEBUS_PREFIX": str(prefix), "EDGEBUS_DATA": str(data_dir)}
    logger.info("running %s (EDGEBUS_OTA=1 EDGEBUS_PREFIX=%s)", bundle / "install.sh", prefix)
    try:
        with log.open("wb") as out:
            proc = subprocess.run(["sh", str(bundle / "install.sh")], cwd=bundle, env=env,
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise UpdateFailed("install_failed", f"install.sh did not finish within {timeout:g} s; "
                                             f"{_tail(log)}") from exc
    except OSError as exc:
        raise UpdateFailed("install_failed", f"cannot run install.sh: {exc}") from exc
    if proc.returncode != 0:
        raise UpdateFailed("install_failed", f"install.sh exited with {proc.returncode}: {_tail(log)}")


def check_model(path: Path, name: str) -> None:
    """An ONNX model must load in onnxruntime (when installed); other formats are taken as they are."""
    if not name.lower().endswith(".onnx"):
        return
    try:
        import onnxruntime
    except ImportError:
        logger.info("onnxruntime is not installed: model %s is installed unchecked", name)
        return
    try:
        onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unrelated types for a bad file
        raise UpdateFailed("install_failed", f"model {name} does not load: {exc}") from exc


def install_model(artifact: Path, models: Path, name: str) -> Path:
    """Put the model in place atomically, the one it replaces kept as ``{name}.previous``."""
    check_model(artifact, name)
    try:
        models.mkdir(parents=True, exist_ok=True)
        dest = models / name
        tmp = models / f".{name}.new"
        shutil.copyfile(artifact, tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        if dest.exists():
            previous = models / f"{name}.previous"
            previous.unlink(missing_ok=True)
            os.link(dest, previous)
        os.replace(tmp, dest)
        fsync_dir(models)
    except OSError as exc:
        raise UpdateFailed("install_failed", f"cannot install model {name} in {models}: {exc}") from exc
    logger.info("model %s installed in %s", name, models)
    return dest


def restore_model(models: Path, name: str) -> None:
    """Undo :func:`install_model`: ``{name}.previous`` back in place, or no model when there was none."""
    dest, previous = models / name, models / f"{name}.previous"
    try:
        if previous.exists():
            os.replace(previous, dest)
        else:
            dest.unlink(missing_ok=True)
        fsync_dir(models)
    except OSError as exc:
        raise UpdateFailed("install_failed", f"cannot restore the previous model {name}: {exc}") from exc
    logger.warning("model %s rolled back to the previous file", name)


def install_keys(artifact: Path, dest: Path) -> KeyRing:
    """Adopt a delivered key list; it must parse exactly like ``trusted_keys.json`` and keep every
    revocation of the list it replaces (a list signed by a stolen key must not un-revoke it)."""
    data = artifact.read_bytes()
    try:
        ring = parse_trusted(data, "the delivered trusted_keys.json")
        if dest.exists():
            check_revocations_kept(parse_trusted(dest.read_bytes(), str(dest)), ring,
                                   "the delivered trusted_keys.json")
    except ConfigError as exc:
        raise UpdateFailed("bad_keys", str(exc), Phase.REFUSED) from exc
    try:
        atomic_write(dest, data)
    except OSError as exc:
        raise UpdateFailed("install_failed", f"cannot write {dest}: {exc}") from exc
    logger.info("trusted keys replaced: %s", ", ".join(k.id for k in ring.keys))
    return ring
