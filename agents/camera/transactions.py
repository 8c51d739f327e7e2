"""The agent's part in two-phase commit: its cameras as a resource of the group's transactions.

With ``[transactions] group = "G"`` in agent.toml the agent is participant
``{device id}`` of group G: it answers prepares for camera moves on
``{root}/_sys/tx/G/to/{device id}``, keeps its votes in
``{data_dir}/tx-participant.db`` and its intents in ``{data_dir}/tx-prepared/``,
and after a restart asks the group about whatever it had prepared.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agents.camera.assignments import CameraAssignments
from agents.camera.host import CameraHost
from agents.camera.move_resource import CameraMoveResource
from agents.extension import AgentExtension
from broker.session import BusSession
from broker.twopc.participant_driver import ParticipantDriver
from broker.twopc.participant_store import ParticipantStore

__all__ = ["TransactionsHost"]

logger = logging.getLogger(__name__)


class TransactionsHost(AgentExtension):
    name = "transactions"

    def __init__(self, session: BusSession, group: str, participant_id: str, host: CameraHost,
                 assignments: CameraAssignments, data_dir: Path) -> None:
        base = data_dir
        self.resource = CameraMoveResource(host, assignments, base / "tx-prepared")
        self.store = ParticipantStore(base / "tx-participant.db")
        self.driver = ParticipantDriver(session, group, participant_id, self.resource, self.store)
        self.group = group

    def start(self) -> None:
        self.driver.start()
        logger.info("taking part in transactions of group %s as %s", self.group, self.driver.id)

    def stop(self) -> None:
        self.driver.stop()
        self.store.close()
