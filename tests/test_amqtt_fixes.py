"""The fix layer over amqtt (broker/amqtt_fixes): pinned, checked before it patches, installed once.

What the fixes do on the wire is proved by the conformance battery
(tests/conformance) and tests/test_presence.py; these tests cover the layer.
"""

from __future__ import annotations

import types

import pytest

from broker import amqtt_fixes
from schemas.errors import BrokerError


def test_the_pinned_release_is_the_installed_one() -> None:
    assert amqtt_fixes.installed_version() == amqtt_fixes.AMQTT_VERSION
    amqtt_fixes.check_version(amqtt_fixes.AMQTT_VERSION)


def test_another_amqtt_release_is_refused_with_what_to_do() -> None:
    with pytest.raises(BrokerError, match=r"written for amqtt 0\.12\.1 and found amqtt 0\.13\.0") \
            as refused:
        amqtt_fixes.check_version("0.13.0")
    assert "amqtt==0.12.1" in str(refused.value)
    assert "edge-broker run --mosquitto" in str(refused.value)
    with pytest.raises(BrokerError, match=r"needs amqtt: pip install 'edgebus\[broker\]'"):
        amqtt_fixes.check_version(None)


class _Foreign:
    def patched(self) -> None: ...


def test_a_missing_or_foreign_target_is_refused_before_anything_is_patched() -> None:
    from amqtt.broker import Broker

    missing = types.ModuleType("missing_fix")
    missing.TARGETS = ((Broker, "_no_such_method"),)  # type: ignore[attr-defined]
    with pytest.raises(BrokerError, match=r"has no amqtt\.broker\.Broker\._no_such_method"):
        amqtt_fixes._check_targets((missing,))
    foreign = types.ModuleType("foreign_fix")
    foreign.TARGETS = ((_Foreign, "patched"),)  # type: ignore[attr-defined]
    with pytest.raises(BrokerError, match=r"already been replaced by tests\.test_amqtt_fixes"):
        amqtt_fixes._check_targets((foreign,))


def test_apply_installs_every_fix_once() -> None:
    amqtt_fixes.apply()
    assert amqtt_fixes.applied()
    modules = amqtt_fixes._fix_modules()
    assert tuple(m.__name__.rsplit(".", 1)[1] for m in modules) == amqtt_fixes.FIXES
    installed = {(owner, name): getattr(owner, name) for m in modules for owner, name in m.TARGETS}
    last_installer = {(owner, name): m.__name__.rsplit(".", 1)[1]
                      for m in modules for owner, name in m.TARGETS}
    for (owner, name), fix in last_installer.items():
        found = getattr(getattr(owner, name), amqtt_fixes.MARK, None)
        assert found == fix, f"{owner.__name__}.{name}: {found}, not {fix}"
    amqtt_fixes.apply()  # a second start in the same process wraps nothing twice
    assert {key: getattr(*key) for key in installed} == installed

