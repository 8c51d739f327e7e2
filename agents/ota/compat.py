"""Whether an update fits this device, judged from its manifest before any byte is fetched.

A requirement this agent does not know is a refusal, not a pass: an older
agent cannot tell whether it meets a condition a newer publisher added, and
installing on a guess is how a fleet gets bricked.
"""

from __future__ import annotations

import platform
from collections.abc import Collection, Mapping
from typing import Any

from schemas.listing import few
from schemas.ota import UpdateManifest

__all__ = ["KNOWN_REQUIREMENTS", "incompatibility", "machine_matches"]

KNOWN_REQUIREMENTS = frozenset({"capabilities", "target", "python"})
#: Spellings of one architecture (``uname -m`` differs from Debian and Docker names).
_ALIASES = ({"aarch64", "arm64"}, {"x86_64", "amd64"}, {"armv7l", "armhf", "armv7"})


def machine_matches(target: str, machine: str) -> bool:
    """``target`` names ``machine``: exactly, by alias, or as the last part of a ``board-arch`` name."""
    names = {machine.lower()}
    for group in _ALIASES:
        if machine.lower() in group:
            names |= group
    target = target.lower()
    return target in names or target.rsplit("-", 1)[-1] in names


def _python_matches(wanted: str, version: str) -> bool:
    """``wanted`` is a dotted prefix of ``version`` ("3.11" matches "3.11.7", not "3.1")."""
    return version.split(".")[: len(wanted.split("."))] == wanted.split(".")


def incompatibility(manifest: UpdateManifest, capabilities: Collection[str], *,
                    machine: str | None = None, python: str | None = None) -> str | None:
    """Why ``manifest`` cannot go on this device (None: it can)."""
    requires: Mapping[str, Any] = manifest.requires
    unknown = sorted(set(requires) - KNOWN_REQUIREMENTS)
    if unknown:
        known = ", ".join(sorted(KNOWN_REQUIREMENTS))
        return f"unknown requirements {few(unknown, 'keys')} (this agent knows {known})"
    needed = set(requires.get("capabilities") or ())
    if manifest.kind == "model":
        needed.add("cameras")
    missing = sorted(needed - set(capabilities))
    if missing:
        return (f"needs capabilities {few(missing, 'capabilities')}; this agent has "
                f"{few(sorted(capabilities), 'capabilities')}")
    machine = machine or platform.machine()
    target = requires.get("target")
    if target is not None and not machine_matches(str(target), machine):
        return f"built for target {target}; this device is {machine}"
    python = python or platform.python_version()
    wanted = requires.get("python")
    if wanted is not None and not _python_matches(str(wanted), python):
        return f"needs Python {wanted}; this device runs {python}"
    return None
