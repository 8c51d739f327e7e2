"""Plugins chosen by a ``type`` name in the operator's configuration, found in a ``plugins/`` folder.

Detector backends, anomaly detectors, stores and metric collectors are each a
:class:`PluginRegistry`: a plugin is a class that registers itself under its
name (class decorator :meth:`PluginRegistry.register`), and the registry finds
them by importing every module of its plugins package the first time a name is
looked up, so a new backend is one new file. A plugin module whose import
fails (an optional dependency that is not installed) is left out and named in
the error for an unknown type; the other plugins still load. Plugin modules
import heavy libraries lazily, inside the methods that need them, so that
discovery stays cheap on a device that never uses them.

    >>> from broker.plugin_registry import PluginRegistry
    >>> class Codec:
    ...     TYPE = "plain"
    >>> codecs: PluginRegistry[Codec] = PluginRegistry("codec")
    >>> _ = codecs.register(Codec)
    >>> codecs.lookup({"type": "plain"}, "codec")
    <class 'broker.plugin_registry.Codec'>
    >>> codecs.lookup({"type": "zip"}, "codec")
    Traceback (most recent call last):
    ...
    schemas.errors.ConfigError: codec.type: unknown codec type 'zip'; known: plain
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from schemas.errors import ConfigError

__all__ = ["PluginRegistry"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class PluginRegistry(Generic[T]):
    """Classes of one kind by name; ``plugins`` is the package whose modules hold them."""

    def __init__(self, kind: str, plugins: str | None = None, *, name_attr: str = "TYPE",
                 default: str | None = None) -> None:
        self.kind = kind
        self.plugins = plugins
        self.name_attr = name_attr
        self.default = default
        self._classes: dict[str, type[T]] = {}
        #: Plugin modules that could not be imported, and why (shown for an unknown type).
        self._unavailable: dict[str, str] = {}
        self._discovered = plugins is None
        self._lock = threading.RLock()  # a plugin module may look a name up while it loads

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: make ``cls`` selectable by its name; a second class under one name is refused."""
        name = getattr(cls, self.name_attr, None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.kind} plugin {cls.__qualname__} has no {self.name_attr} name")
        known = self._classes.get(name)
        if known is not None and known is not cls:
            raise ConfigError(f"{self.kind} type {name!r} is already registered by {known.__qualname__}")
        self._classes[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests that register a plugin of their own clean up with this)."""
        self._classes.pop(name, None)

    def names(self) -> list[str]:
        """The registered names, sorted (plugins whose module failed to import are not among them)."""
        self.discover()
        return sorted(self._classes)

    def get(self, name: object, where: str) -> type[T]:
        """The class registered as ``name``; ConfigError naming the known ones otherwise."""
        self.discover()
        cls = self._classes.get(name) if isinstance(name, str) else None
        if cls is None:
            missing = "".join(f"; not loaded: {module.rsplit('.', 1)[-1]} ({reason})"
                              for module, reason in sorted(self._unavailable.items()))
            raise ConfigError(f"{where}: unknown {self.kind} type {name!r}; known: "
                              f"{', '.join(sorted(self._classes)) or '(none)'}{missing}")
        return cls

    def lookup(self, config: Mapping[str, Any], where: str) -> type[T]:
        """The class ``config["type"]`` names (``where.type`` in errors); the registry's default if absent."""
        name = config.get("type", self.default)
        if name is None:
            self.discover()
            raise ConfigError(f"{where}: needs a type ({', '.join(sorted(self._classes))})")
        return self.get(name, f"{where}.type")

    def discover(self) -> None:
        """Import every module of the plugins package once, so their decorators register them."""
        if self._discovered or self.plugins is None:
            return
        with self._lock:
            if self._discovered:
                return
            package = importlib.import_module(self.plugins)
            for module in pkgutil.iter_modules(package.__path__, f"{self.plugins}."):
                try:
                    importlib.import_module(module.name)
                except ImportError as exc:  # an optional dependency is missing: the others still load
                    self._unavailable[module.name] = str(exc)
                    logger.debug("%s plugin %s not loaded: %s", self.kind, module.name, exc)
            self._discovered = True
