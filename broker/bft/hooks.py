"""Quarantine hooks: what the broker side does when a replica is proven a liar.

A hook is ``hook(replica_id, evidence)``; ``edge-bus bft serve --on-quarantine
MODULE:FUNCTION`` loads one by name so a deployment can plug in its response
(revoking the liar's broker credentials, paging someone) without the replica
knowing about it. The replica also logs a warning and publishes a JSON event
on ``{root}/_sys/bft/{group}/quarantined/{replica}`` whatever the hooks do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from protocols.pbft import Evidence
from schemas.errors import ConfigError

__all__ = ["QuarantineHook", "load_hook"]

QuarantineHook = Callable[[str, Evidence], None]


def load_hook(spec: str) -> QuarantineHook:
    """``"package.module:function"`` -> that callable; ConfigError naming what is missing."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--on-quarantine {spec!r}: expected MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--on-quarantine {spec!r}: cannot import {module_name}: {exc}") from exc
    hook = getattr(module, attr, None)
    if not callable(hook):
        raise ConfigError(f"--on-quarantine {spec!r}: {module_name} has no function {attr!r}")
    return hook  # type: ignore[no-any-return]
