"""Hosts the command dispatcher in the agent and gives it the agent's handlers.

``config`` changes ``[metrics]`` settings live, ``assign`` / ``unassign`` start
and stop cameras (when the camera extra is installed; otherwise they are
refused with the reason), ``rebirth`` re-publishes birth and discovery.
Command counts join the device's metrics so a stream of malformed commands
is visible on a dashboard, not only in a log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.commands.dispatcher import CommandDispatcher
from agents.commands.handlers import camera_handler, rebirth_handler
from agents.extension import AgentExtension
from agents.runtime import Agent
from schemas.messages import MetricSample

__all__ = ["CommandHost"]


class CommandHost(AgentExtension):
    name = "commands"

    def __init__(self, agent: Agent, *, assign: Callable[[dict[str, Any]], Any] | None = None,
                 unassign: Callable[[dict[str, Any]], Any] | None = None,
                 on_rebirth: tuple[Callable[[], object], ...] = ()) -> None:
        self.dispatcher = CommandDispatcher(agent.session, agent.device, limits=agent.config.commands)
        self.dispatcher.register("config", lambda c: agent.apply_config(dict(c.args)))
        self.dispatcher.register("assign", camera_handler("assign", assign))
        self.dispatcher.register("unassign", camera_handler("unassign", unassign))
        self.dispatcher.register("rebirth", rebirth_handler(agent.session, agent.birth, *on_rebirth))

    def start(self) -> None:
        self.dispatcher.start()

    def stop(self) -> None:
        self.dispatcher.stop()

    def collect(self, time_ms: int) -> list[MetricSample]:
        stats = self.dispatcher.stats()
        return [MetricSample(time_ms, "agent_commands_total", stats.received),
                MetricSample(time_ms, "agent_commands_failed_total", stats.failed)]
