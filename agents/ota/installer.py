"""What happens to a complete download: verify it, install it by kind, report how it ended.

Keys and models are installed in place and committed at once. An agent update
ends this process: its bundle's ``install.sh`` fills the inactive slot,
``trial.json`` is written, ``current`` switches, and the agent stops gracefully
asking to exit with :data:`~agents.runtime.EXIT_RESTART` (75), for systemd to
start the new slot (whose trial :mod:`agents.ota.trial_watch` runs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from agents.config import OtaConfig
from agents.ota.current import CurrentUpdate
from agents.ota.download_worker import ActiveDownload
from agents.ota.extract import safe_extract
from agents.ota.files import OtaPaths, atomic_write, remove_quietly
from agents.ota.install import bundle_root, install_keys, install_model, restore_model, run_install_script
from agents.ota.progress import ProgressReport
from agents.ota.slots import SlotLayout
from agents.ota.trial import Trial
from agents.runtime import EXIT_RESTART, Agent
from schemas.errors import EdgebusError, UpdateFailed
from schemas.ota import Phase, UpdateManifest

__all__ = ["Installer"]

logger = logging.getLogger(__name__)


class Installer:
    """Installs complete downloads (on the OTA worker thread).

    ``on_model`` restarts what uses a newly installed model (the cameras);
    raising refuses the model and puts the previous one back.
    """

    def __init__(self, agent: Agent, config: OtaConfig, paths: OtaPaths, slots: SlotLayout,
                 report: ProgressReport, current: CurrentUpdate, *,
                 on_model: Callable[[Path], list[str]] | None = None) -> None:
        self.agent = agent
        self.config = config
        self.paths = paths
        self.slots = slots
        self.report = report
        self.current = current
        self._on_model = on_model

    def complete(self, active: ActiveDownload) -> None:
        """Verify and install ``active``; every ending is recorded and reported."""
        m = active.manifest
        self.current.installing(m.update_id)
        active.phase = Phase.VERIFYING
        self._publish(active)
        restarting = False
        try:
            artifact = active.store.finish()
            active.phase = Phase.INSTALLING
            self._publish(active)
            if m.kind == "keys":
                install_keys(artifact, self.paths.trusted_keys)
            elif m.kind == "model":
                users = self._install_model(m, artifact)
            else:
                restarting = self._install_agent(active, artifact)
            if not restarting:
                active.store.discard()
                detail = f"{m.kind} {m.name} {m.version} installed"
                if m.kind == "model":
                    detail += f"; cameras restarted on it: {', '.join(users) or 'none'}"
                self.report.conclude(m, Phase.COMMITTED, None, detail)
        except (UpdateFailed, OSError, EdgebusError) as exc:
            active.store.discard()
            self._fail(m, exc)
        except Exception as exc:  # a bug must still end the update visibly, not leave it hanging
            logger.exception("installing update %s failed", m.update_id)
            active.store.discard()
            self._fail(m, exc)
        finally:
            self.current.settle("restarting into the new agent" if restarting else None)

    def _publish(self, active: ActiveDownload) -> None:
        self.report.download(active.manifest, active.phase, active.download.received, force=True)

    def _fail(self, m: UpdateManifest, exc: BaseException) -> None:
        self.current.forget(m.update_id)
        self.report.fail(m, exc)

    def _install_model(self, m: UpdateManifest, artifact: Path) -> list[str]:
        """Install the model, restart the cameras that use it; on failure put the old one back."""
        dest = install_model(artifact, self.paths.models, m.name)
        if self._on_model is None:
            return []
        try:
            return self._on_model(dest)
        except Exception as exc:
            restore_model(self.paths.models, m.name)
            try:
                self._on_model(dest)
            except Exception:
                logger.exception("cameras on %s did not come back on the previous model", m.name)
            raise UpdateFailed("model_check_failed", f"{exc}; the previous model is back in place",
                               Phase.ROLLED_BACK) from exc

    def _install_agent(self, active: ActiveDownload, artifact: Path) -> bool:
        """Fill the inactive slot, write trial.json, switch, ask for the restart; True when switched."""
        m = active.manifest
        previous = self.slots.active()
        if previous is None:
            raise UpdateFailed("incompatible", f"{self.slots.current_link} is no longer a slot symlink",
                               Phase.REFUSED)
        target = self.slots.inactive()
        store = active.store
        safe_extract(artifact, store.bundle)
        run_install_script(bundle_root(store.bundle), prefix=self.config.prefix,
                           data_dir=self.paths.data_dir, log=store.dir / "install.log")
        if not (self.config.prefix / target).is_dir():
            raise UpdateFailed("install_failed",
                               f"install.sh exited 0 but left no {self.config.prefix / target}")
        # The slot reports the version the update was published as (the birth's versions.bundle).
        atomic_write(self.config.prefix / target / "VERSION", (m.version + "\n").encode())
        store.discard()  # the slot holds its own copy now
        window = self.config.health_window or m.health_window_s
        trial = Trial(update_id=m.update_id, version=m.version, previous_slot=previous, new_slot=target,
                      health_window_s=window, total=m.chunk_count)
        atomic_write(self.paths.trial, trial.to_bytes())
        remove_quietly(self.paths.trial_attempts)
        try:
            self.slots.switch(target)
        except OSError:
            remove_quietly(self.paths.trial)
            raise
        self.report.publish(self.report.progress(
            m, Phase.TRIAL, received=m.chunk_count, slot=target,
            detail=f"{previous} -> {target}; restarting into the new agent (health window {window:g} s)"))
        logger.warning("update %s installed in %s and switched to; exiting with %d to restart into it",
                       m.update_id, target, EXIT_RESTART)
        self.agent.request_stop(EXIT_RESTART)
        return True
