"""Fixes for amqtt 0.12.1, the embedded broker, where it breaks MQTT 3.1.1 and edgebus's promises.

:func:`apply` installs them once per process; :class:`broker.embedded.EmbeddedBroker`
calls it before it starts amqtt. Each fix is a module of its own that says
which amqtt fault it mends, which section of MQTT 3.1.1 asks for the
behaviour, and which conformance case (``tests/conformance``) proves it:

* :mod:`.keepalive` - a silent client is cut off after 1.5 x its keepalive and
  its will published (§3.1.2.10);
* :mod:`.redelivery` - unacknowledged QoS 1 and QoS 2 deliveries and PUBREL
  are resent, DUP set, when a persistent session reconnects (§4.4);
* :mod:`.authenticate_first` - a CONNECT with a wrong password is refused
  before it can touch the session of the client whose id it names (§3.1.4);
* :mod:`.takeover` - a second connection with the same client id takes the
  session over and gets its messages live; the old one goes without its will
  (§3.1.4);
* :mod:`.delivery_qos` - a message goes out at min(publish QoS, subscription
  QoS) (§3.8.4), which also makes overlapping subscriptions right (§3.3.5);
* :mod:`.queued_retain` - messages queued for an offline session go out with
  RETAIN 0 (§3.3.1.3);
* :mod:`.retained_on_subscribe` - retained messages go to a new subscription
  that matches them, not to every client that connects (§3.3.1.3);
* :mod:`.broadcast_snapshot` - a message is delivered to every matching
  subscriber even when a subscription changes while a topic check (the
  ACL, :mod:`broker.amqtt_acl`) is awaited.

amqtt's plugin API cannot carry any of these: plugins only see events
(connected, subscribed, message received, ...) and the authentication and
topic hooks; no event fires for a PINGREQ and no hook can change a
delivery's QoS, flags or in-flight bookkeeping. So each fix replaces or
wraps a private amqtt method, the smallest one that does the job. Private
names move between releases, hence the pin: :func:`apply` refuses to run on
any amqtt but :data:`AMQTT_VERSION` (``pyproject.toml`` pins the same), and
checks that every method it replaces is still amqtt's own before it touches
any. Persistence across a broker restart goes through the plugin API
(:mod:`broker.amqtt_session_store`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from schemas.errors import BrokerError

__all__ = ["AMQTT_VERSION", "FIXES", "apply", "applied", "check_version", "installed_version"]

logger = logging.getLogger(__name__)

#: The one amqtt release these fixes are written for and tested against.
AMQTT_VERSION = "0.12.1"
#: Set on every function a fix installs, so a second look can tell it from amqtt's own.
MARK = "__edgebus_fix__"

_F = TypeVar("_F", bound=Callable[..., Any])

_lock = threading.Lock()
_applied = False


def installed_version() -> str | None:
    """The installed amqtt's version, or None when amqtt is not installed."""
    try:
        return importlib.metadata.version("amqtt")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_version(version: str | None) -> None:
    """Raise :class:`BrokerError` (saying what to do) unless ``version`` is :data:`AMQTT_VERSION`."""
    if version is None:
        raise BrokerError("the embedded broker needs amqtt: pip install 'edgebus[broker]'")
    if version != AMQTT_VERSION:
        raise BrokerError(
            f"the embedded broker's fixes are written for amqtt {AMQTT_VERSION} and found amqtt "
            f"{version}; they replace private amqtt methods, so they are not applied to another "
            f"release. Install amqtt=={AMQTT_VERSION} (pip install 'edgebus[broker]'), or run "
            "Mosquitto instead: edge-broker run --mosquitto")


def _fix_modules() -> tuple[ModuleType, ...]:
    from broker.amqtt_fixes import (
        authenticate_first,
        broadcast_snapshot,
        delivery_qos,
        keepalive,
        queued_retain,
        redelivery,
        retained_on_subscribe,
        takeover,
    )

    return (keepalive, redelivery, authenticate_first, takeover, delivery_qos, queued_retain,
            retained_on_subscribe, broadcast_snapshot)


#: The fix modules' names, in the order :func:`apply` installs them.
FIXES = ("keepalive", "redelivery", "authenticate_first", "takeover", "delivery_qos",
         "queued_retain", "retained_on_subscribe", "broadcast_snapshot")


def _check_targets(modules: tuple[ModuleType, ...]) -> None:
    """Every method a fix replaces must exist and still be amqtt's own function."""
    for module in modules:
        for owner, name in module.TARGETS:
            current = getattr(owner, name, None)
            where = f"{owner.__module__}.{owner.__qualname__}.{name}"
            if not callable(current):
                raise BrokerError(f"amqtt {installed_version()} has no {where}, which the "
                                  f"{module.__name__} fix replaces; reinstall "
                                  f"amqtt=={AMQTT_VERSION}")
            if not str(getattr(current, "__module__", "")).startswith("amqtt"):
                raise BrokerError(f"{where} has already been replaced by "
                                  f"{getattr(current, '__module__', '?')}; the {module.__name__} "
                                  "fix will not wrap someone else's patch")


def mark(fix: str) -> Callable[[_F], _F]:
    """Decorator for the functions a fix installs: names the fix on them (see :data:`MARK`)."""
    def decorate(function: _F) -> _F:
        setattr(function, MARK, fix)
        return function
    return decorate


def apply() -> None:
    """Install every fix, once per process; :class:`BrokerError` if this amqtt is not the pinned one.

    Nothing is installed unless everything can be: the version and every
    target are checked first.
    """
    global _applied
    with _lock:
        if _applied:
            return
        check_version(installed_version())
        modules = _fix_modules()
        _check_targets(modules)
        for module in modules:
            module.install()
        _applied = True
    logger.debug("amqtt %s fixes installed: %s", AMQTT_VERSION, ", ".join(FIXES))


def applied() -> bool:
    """Whether :func:`apply` has installed the fixes in this process."""
    return _applied
