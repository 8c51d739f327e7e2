"""The one plugin registry: names, duplicates, lookup errors and discovery that survives a missing extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from broker.plugin_registry import PluginRegistry
from schemas.errors import ConfigError, EdgebusError


class Base:
    TYPE = ""


class Plain(Base):
    TYPE = "plain"


def test_register_lookup_and_duplicates() -> None:
    registry: PluginRegistry[Base] = PluginRegistry("codec", default="plain")
    registry.register(Plain)
    registry.register(Plain)  # the same class again (a module imported twice) is harmless
    assert registry.names() == ["plain"]
    assert registry.lookup({}, "codec") is Plain
    assert registry.lookup({"type": "plain"}, "codec") is Plain
    with pytest.raises(ConfigError, match="'plain' is already registered by Plain"):
        registry.register(type("Other", (Base,), {"TYPE": "plain"}))
    with pytest.raises(ConfigError, match=r"codec\.type: unknown codec type 'zip'; known: plain"):
        registry.lookup({"type": "zip"}, "codec")
    with pytest.raises(EdgebusError, match="has no TYPE name"):
        registry.register(type("Nameless", (), {}))
    registry.unregister("plain")
    assert registry.names() == []


def test_a_type_is_required_without_a_default() -> None:
    registry: PluginRegistry[Base] = PluginRegistry("codec")
    registry.register(Plain)
    with pytest.raises(ConfigError, match=r"codec: needs a type \(plain\)"):
        registry.lookup({}, "codec")


def test_discovery_imports_every_plugin_module_and_skips_one_whose_dependency_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "fake_plugins_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text(
        "from tests.test_plugin_registry import Base, REGISTRY\n"
        "@REGISTRY.register\nclass Good(Base):\n    TYPE = 'good'\n")
    (package / "needs_extra.py").write_text("import not_installed_anywhere_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: PluginRegistry[Base] = PluginRegistry("codec", "fake_plugins_pkg")
    monkeypatch.setattr(sys.modules[__name__], "REGISTRY", registry, raising=False)
    assert registry.names() == ["good"]
    with pytest.raises(ConfigError, match=r"not loaded: needs_extra \(No module named 'not_installed_any"):
        registry.get("needs_extra", "codec.type")


def test_anomaly_registry_loads_without_river() -> None:
    # As on a Pi without the [river] extra: river cannot be imported, the default detector still loads.
    code = ("import sys; sys.modules['river'] = None\n"
            "from coordinator.anomaly.base import create_factory, detector_types\n"
            "print(detector_types())\n"
            "try:\n    create_factory({'type': 'river_holt'}, 'anomaly.detector')\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent)
    lines = out.stdout.splitlines()
    assert lines[0] == "['robust_zscore']"
    assert lines[1].startswith("ConfigError anomaly.detector.type: unknown anomaly detector type "
                               "'river_holt'")
    assert "not loaded: river_holt" in lines[1]
