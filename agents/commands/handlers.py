"""The built-in commands: their names, the argument shapes the dispatcher checks, their handlers.

Built-in names, whose handlers the agent registers (:mod:`agents.commands.host`):

* ``config`` - apply settings in ``args``; the handler returns what changed or
  raises :class:`~schemas.errors.ConfigError`;
* ``assign`` / ``unassign`` - start / stop a camera: ``args`` = ``{"camera":
  name, "source": ..., ...}``; assign's other args are the camera's
  ``[[cameras]]`` keys (fps, detector, motion, ...);
* ``rebirth`` - re-publish birth and discovery (see :func:`rebirth_handler`).

The runtime may register more names (``ota``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from broker.session import ENVELOPE_CONTENT_TYPE, BusSession
from schemas.command import Command
from schemas.errors import ConfigError, TopicError
from schemas.topics import validate_name

__all__ = ["BUILTIN_COMMANDS", "CommandHandler", "builtin_args_problem", "camera_handler", "rebirth_handler"]

#: A command handler gets the :class:`Command` and returns a JSON-able result.
CommandHandler = Callable[[Command], Any]
BUILTIN_COMMANDS: Final = ("config", "assign", "unassign", "rebirth")


def builtin_args_problem(command: Command) -> str | None:
    """What is wrong with a built-in command's argument shapes (None: nothing), so handlers get
    what they expect."""
    args = command.args
    if command.name in ("assign", "unassign"):
        camera = args.get("camera")
        if not isinstance(camera, str):
            return f"{command.name} needs args.camera (a camera name)"
        try:
            validate_name(camera, "camera")
        except TopicError as exc:
            return str(exc)
        source = args.get("source")
        if command.name == "assign" and source is not None and not isinstance(source, str | int):
            return "assign args.source must be a path, URL or device index"
        # assign's other args are the camera's [[cameras]] keys, checked strictly by its handler.
        extra = set(args) - {"camera"}
        if command.name == "unassign" and extra:
            return f"{command.name}: unknown args {sorted(extra)}"
    elif command.name == "config" and not args:
        return "config needs the settings to apply in args"
    return None


def camera_handler(name: str, handler: Callable[[dict[str, Any]], Any] | None) -> CommandHandler:
    """``assign`` / ``unassign``: ``handler`` gets the args; without one, refused with the reason."""
    def handle(command: Command) -> Any:
        if handler is None:
            raise ConfigError(f"{name}: this agent runs no cameras (install edgebus[camera] "
                              "and configure [[cameras]] or assign one)")
        return handler(dict(command.args))
    return handle


def rebirth_handler(session: BusSession, birth: Callable[[], bytes],
                    *also: Callable[[], object]) -> CommandHandler:
    """A ``rebirth`` handler: publish a fresh birth (retained), then call each of ``also``.

    Pass e.g. ``HomeAssistantPublisher.publish_discovery`` in ``also``; the
    reply's result holds whether the birth was accepted and what each returned.
    """
    device = session.config.device
    if device is None:
        raise ConfigError("rebirth needs a device session (set broker.device)")
    topic = session.topics.birth(device)

    def handle(command: Command) -> dict[str, Any]:
        accepted = session.publish(topic, birth(), qos=1, retain=True,
                                   content_type=ENVELOPE_CONTENT_TYPE)
        return {"birth": accepted, "also": [fn() for fn in also]}

    return handle
