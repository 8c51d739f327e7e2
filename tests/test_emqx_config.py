"""config/emqx/acl.conf carries every rule of broker/acl.py (EMQX itself is not run here)."""

from __future__ import annotations

from pathlib import Path

from broker.acl import AclRule, BusAcl

ACL_FILE = Path(__file__).resolve().parents[1] / "config" / "emqx" / "acl.conf"
ACTIONS = {"write": "publish", "read": "subscribe", "readwrite": "all"}


def emqx_line(who: str, rule: AclRule) -> str:
    return f'{{allow, {who}, {ACTIONS[rule.access]}, ["{rule.pattern.replace("%u", "${username}")}"]}}.'


def test_every_device_rule_is_in_the_emqx_acl() -> None:
    lines = set(ACL_FILE.read_text().splitlines())
    acl = BusAcl(devices=("gw-1",), coordinators=("coordinator",))
    rules = (*acl.device_rules(), *acl.device_shared_rules("gw-1"))
    missing = [emqx_line("all", r) for r in rules if emqx_line("all", r) not in lines]
    assert not missing, missing


def test_coordinator_rules_are_in_the_emqx_acl_and_nothing_else_is_allowed() -> None:
    text = ACL_FILE.read_text()
    acl = BusAcl(coordinators=("coordinator",))
    for rule in acl.coordinator_rules():
        assert f'"{rule.pattern}"' in text, rule
    assert [ln for ln in text.splitlines() if ln and not ln.startswith("%%")][-1] == "{deny, all}."
