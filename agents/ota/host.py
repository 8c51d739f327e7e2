"""Over-the-air updates in the agent: the part that ties the OTA modules to the bus.

Three threads meet here: the command worker answers offers
(:mod:`agents.ota.offer`), the network thread queues chunk frames, and the OTA
worker (:mod:`agents.ota.download_worker`) pulls chunks, installs complete
downloads (:mod:`agents.ota.installer`) and judges a new agent's trial
(:mod:`agents.ota.trial_watch`). :mod:`agents.ota.current` is what they share;
progress goes to the retained ``state/ota`` (:mod:`agents.ota.progress`).
See :mod:`agents.ota.files` for the files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path

from agents.commands.dispatcher import CommandDispatcher
from agents.config import OtaConfig
from agents.extension import AgentExtension
from agents.ota.current import CurrentUpdate
from agents.ota.download_worker import DownloadWorker
from agents.ota.files import OtaPaths
from agents.ota.installer import Installer
from agents.ota.offer import OfferHandler
from agents.ota.progress import ProgressReport
from agents.ota.slots import SlotLayout
from agents.ota.trial_watch import TrialWatch
from agents.runtime import Agent
from schemas.messages import MetricSample

__all__ = ["OtaHost"]

logger = logging.getLogger(__name__)


class OtaHost(AgentExtension):
    """The ``ota`` command, the chunk pull, the installs and the trial of a new agent."""

    name = "ota"

    def __init__(self, agent: Agent, config: OtaConfig, dispatcher: CommandDispatcher, *,
                 capabilities: Collection[str] | None = None, clock: Callable[[], float] = time.monotonic,
                 machine: str | None = None, python: str | None = None,
                 on_model: Callable[[Path], list[str]] | None = None) -> None:
        self.agent = agent
        self.device = agent.device
        self.config = config
        self.paths = OtaPaths(agent.config.device.data_dir)
        self.slots = SlotLayout(config.prefix)
        slot = self.slots.active()
        if slot is not None:
            # Which slot runs, and the bundle version it holds: what an operator checks after a rollout.
            agent.versions["slot"] = slot
            bundle = self.slots.version(slot)
            if bundle:
                agent.versions["bundle"] = bundle
        session = agent.session
        current = CurrentUpdate()
        report = ProgressReport(session, self.device, self.paths, clock=clock)
        self.trial = TrialWatch(agent, self.paths, self.slots, report, current, clock=clock)
        self.installer = Installer(agent, config, self.paths, self.slots, report, current, on_model=on_model)
        self.worker = DownloadWorker(session, self.device, config, self.paths, report, current,
                                     on_complete=self.installer.complete, on_tick=self.trial.tick,
                                     clock=clock)
        offers = OfferHandler(config, self.paths, self.slots, report, current, self.worker,
                              capabilities=capabilities if capabilities is not None else agent.capabilities,
                              machine=machine, python=python)
        dispatcher.register("ota", offers)
        dispatcher.register_raw("ota/chunk", self.worker.on_chunk_message)
        session.on_connect(self.trial.on_connected)

    def start(self) -> None:
        """Settle a trial or a rollback left by the previous agent, then start the worker."""
        try:
            self.trial.settle_previous_run()
        except Exception:
            logger.exception("could not settle the previous update's trial")
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    def collect(self, time_ms: int) -> list[MetricSample]:
        worker = self.worker
        return [MetricSample(time_ms, "agent_ota_chunks_total", worker.chunks_total),
                MetricSample(time_ms, "agent_ota_bytes_total", worker.bytes_total),
                MetricSample(time_ms, "agent_ota_corrupt_chunks_total", worker.corrupt_total),
                # Frames that found the queue full (the device asks for them again after request_timeout).
                MetricSample(time_ms, "agent_ota_dropped_chunks_total", worker.dropped_total)]
