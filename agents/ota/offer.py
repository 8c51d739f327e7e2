"""The ``ota`` command: check an offered update and answer at once (on the command worker).

An offer is checked (signature against the key ring, ``requires`` against this
device, a recorded outcome for an update seen before) and answered; the slow
part, the download, is handed to the OTA worker.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from agents.config import OtaConfig
from agents.ota.compat import incompatibility
from agents.ota.current import CurrentUpdate
from agents.ota.download_worker import DownloadWorker
from agents.ota.files import OtaPaths
from agents.ota.outcome import read_outcome
from agents.ota.progress import ProgressReport
from agents.ota.slots import SlotLayout
from broker.trust import load_trusted
from protocols.ota.trust import KeyRing, verify_offer
from schemas.command import Command
from schemas.errors import ConfigError, UpdateRefused
from schemas.ota import OtaProgress, Phase, SignedManifest

__all__ = ["OfferHandler"]

logger = logging.getLogger(__name__)


class OfferHandler:
    """Answers ``ota`` commands: refused, already ended, being worked on, or downloading now."""

    def __init__(self, config: OtaConfig, paths: OtaPaths, slots: SlotLayout, report: ProgressReport,
                 current: CurrentUpdate, worker: DownloadWorker, *, capabilities: Collection[str],
                 machine: str | None = None, python: str | None = None) -> None:
        self.config = config
        self.paths = paths
        self.slots = slots
        self.report = report
        self.current = current
        self.worker = worker
        self._capabilities = capabilities
        self._machine = machine
        self._python = python

    def __call__(self, command: Command) -> dict[str, Any]:
        signed = SignedManifest.from_offer(command.args)  # CodecError: answered as bad_args
        m = signed.manifest
        try:
            verify_offer(self._key_ring(), signed)
        except UpdateRefused as exc:
            # Not recorded: an unverified update id is nobody's to claim. Nor is its version shown:
            # the retained state carries a version only once a trusted key signed it.
            self.report.publish(self.report.unverified(m.update_id, exc.reason, str(exc)))
            raise
        recorded = read_outcome(self.paths.update_dir(m.update_id))
        if recorded is not None:
            logger.info("update %s offered again; it already ended %s", m.update_id, recorded.phase.value)
            self.report.publish(recorded)
            return _result(recorded)
        phase = self.current.admit(m.update_id)  # UpdateRefused("busy") while another one is on
        if phase is not None:
            self.worker.kick()
            return {"update_id": m.update_id, "phase": phase.value, "total": m.chunk_count}
        problem = incompatibility(m, self._capabilities, machine=self._machine, python=self._python)
        if problem is None and m.kind == "agent" and self.slots.active() is None:
            problem = (f"{self.slots.current_link} is not a symlink to slot-a or slot-b: this agent was "
                       "not installed by install.sh, so there is no slot to fall back to")
        if problem is not None:
            self.report.conclude(m, Phase.REFUSED, "incompatible", problem)
            raise UpdateRefused("incompatible", problem)
        self.current.claim(m.update_id)
        logger.info("update %s (%s %s, %d bytes in %d chunks) offered: downloading", m.update_id, m.kind,
                    m.version, m.size, m.chunk_count)
        self.worker.offer(signed)
        return {"update_id": m.update_id, "phase": Phase.DOWNLOADING.value, "total": m.chunk_count}

    def _key_ring(self) -> KeyRing:
        """The delivered list when there is one, else the configured file; read per offer."""
        delivered = self.paths.trusted_keys
        path = delivered if delivered.exists() else self.config.trusted_keys
        try:
            return load_trusted(path)
        except ConfigError as exc:
            raise UpdateRefused("unknown_key", f"no usable trusted keys: {exc}") from exc


def _result(progress: OtaProgress) -> dict[str, Any]:
    """The offer's reply for an update that already ended here."""
    result: dict[str, Any] = {"update_id": progress.update_id, "phase": progress.phase.value,
                              "recorded": True}
    for key in ("reason", "detail", "slot"):
        value = getattr(progress, key)
        if value is not None:
            result[key] = value
    return result
