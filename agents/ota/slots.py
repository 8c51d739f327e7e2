"""The A/B slots under the prefix, and the single atomic step that picks the live one.

``{prefix}/current`` is a symlink to ``slot-a`` or ``slot-b`` (relative, as
install.sh makes it). Switching writes the new link beside it and renames it
over the old one: a power cut leaves either the old or the new link, never
none, so systemd always finds an agent to start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agents.ota.files import fsync_dir, remove_quietly
from schemas.errors import ConfigError

__all__ = ["CURRENT", "SLOTS", "SlotLayout"]

logger = logging.getLogger(__name__)

SLOTS = ("slot-a", "slot-b")
CURRENT = "current"


class SlotLayout:
    """The slots of one installation prefix (``[ota] prefix``)."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix

    @property
    def current_link(self) -> Path:
        return self.prefix / CURRENT

    def active(self) -> str | None:
        """The live slot's name; None when ``current`` is missing or points elsewhere."""
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        name = Path(target).name
        return name if name in SLOTS else None

    def inactive(self) -> str:
        """The slot an update installs into: the one not live (slot-a on a fresh prefix)."""
        active = self.active()
        return SLOTS[1] if active == SLOTS[0] else SLOTS[0]

    def switch(self, slot: str) -> None:
        """Point ``current`` at ``slot`` atomically (symlink beside it, then rename over it)."""
        if slot not in SLOTS:
            raise ConfigError(f"not a slot: {slot!r} (expected one of {', '.join(SLOTS)})")
        tmp = self.prefix / f".{CURRENT}.tmp-{os.getpid()}"
        remove_quietly(tmp)
        os.symlink(slot, tmp)
        try:
            os.replace(tmp, self.current_link)
        except BaseException:
            remove_quietly(tmp)
            raise
        fsync_dir(self.prefix)
        logger.info("%s -> %s", self.current_link, slot)

    def version(self, slot: str) -> str | None:
        """The bundle version installed in ``slot`` (its ``VERSION`` file), or None."""
        try:
            text = (self.prefix / slot / "VERSION").read_text(errors="replace").strip()
        except OSError:
            return None
        return text[:128] or None

    def healthcheck(self) -> Path:
        """The live slot's own health probe (optional; run when executable)."""
        return self.current_link / "healthcheck"
