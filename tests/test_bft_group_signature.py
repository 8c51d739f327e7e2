"""The BFT group file is trusted configuration: refused unless signed by a key of the trust root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.bft import load_group, load_hook, sign_group
from broker.bft.cli import bft_main
from broker.bft.group import load_private_key
from coordinator.config import CoordinatorConfig
from coordinator.fleet_decisions import DecisionsConfig
from firmware_tools.keys import init_keys
from schemas.errors import ConfigError
from tests.pbft_groups import make_group, trust_root

REPLICAS = ("r0", "r1", "r2", "r3")


@pytest.fixture
def signed(tmp_path: Path) -> Path:
    return make_group(tmp_path, REPLICAS, ("coord", "gw-a"), extra={"state_machine": "fleet_log"})


def test_a_signed_group_file_loads(signed: Path, tmp_path: Path) -> None:
    group = load_group(signed, trust_root(tmp_path))
    assert group.state_machine == "fleet_log" and group.clients == ("coord", "gw-a")


def test_an_unsigned_group_file_is_refused(signed: Path, tmp_path: Path) -> None:
    signed.with_name(signed.name + ".sig").unlink()
    with pytest.raises(ConfigError, match=r"is not signed.*edge-bus bft sign"):
        load_group(signed, trust_root(tmp_path))


def test_a_group_file_signed_by_an_untrusted_key_is_refused(signed: Path, tmp_path: Path) -> None:
    init_keys(tmp_path / "intruder")
    sign_group(signed, load_private_key(tmp_path / "intruder"))
    with pytest.raises(ConfigError, match="not in the trust root"):
        load_group(signed, trust_root(tmp_path))


def test_a_group_file_changed_after_signing_is_refused(signed: Path, tmp_path: Path) -> None:
    doc = json.loads(signed.read_text())
    doc["replicas"][3] = "coord"  # an attacker swaps a replica for an identity it holds
    signed.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="does not match the group file"):
        load_group(signed, trust_root(tmp_path))


def test_swapping_the_replicas_public_keys_is_refused(signed: Path, tmp_path: Path) -> None:
    keys = tmp_path / "trusted_keys.json"
    keys.write_text(keys.read_text().replace('"status": "active"', '"status": "superseded"', 1))
    with pytest.raises(ConfigError, match="does not match"):
        load_group(signed, trust_root(tmp_path))


def test_a_forged_signature_is_refused(signed: Path, tmp_path: Path) -> None:
    sig = signed.with_name(signed.name + ".sig")
    doc = json.loads(sig.read_text())
    doc["signature"] = "A" * 86 + "=="
    sig.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="signature refused"):
        load_group(signed, trust_root(tmp_path))


def test_the_cli_signs_and_refuses_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_group(tmp_path, REPLICAS, ("coord",))
    path.with_name(path.name + ".sig").unlink()
    args = ["status", "--group", str(path), "--trust", str(trust_root(tmp_path)), "--timeout", "0.1"]
    assert bft_main(args) == 1
    assert "is not signed" in capsys.readouterr().err
    assert bft_main(["sign", "--group", str(path), "--keys", str(trust_root(tmp_path))]) == 0
    load_group(path, trust_root(tmp_path))


def test_state_machine_and_quorum_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="state_machine"):
        load_group(make_group(tmp_path, REPLICAS, ("coord",), extra={"state_machine": "kv"}),
                   trust_root(tmp_path))
    bad = make_group(tmp_path, REPLICAS, ("coord",),
                     extra={"state_machine": "fleet_log", "decision_quorum": 2})
    with pytest.raises(ConfigError, match="decision_quorum"):
        load_group(bad, trust_root(tmp_path))


def test_quarantine_hooks_are_named_module_function() -> None:
    assert load_hook("tests.pbft_hook:record").__name__ == "record"
    for spec, why in (("tests.pbft_hook", "MODULE:FUNCTION"), ("no.such.module:f", "cannot import"),
                      ("tests.pbft_hook:nothing", "no function")):
        with pytest.raises(ConfigError, match=why):
            load_hook(spec)


def test_the_coordinators_decisions_table_is_strict_and_off_by_default(signed: Path, tmp_path: Path) -> None:
    assert CoordinatorConfig.from_mapping({}).decisions is None
    table = {"group": str(signed), "trust": str(trust_root(tmp_path)), "identity": "coord",
             "key": str(tmp_path / "keys" / "coord")}
    config = CoordinatorConfig.from_mapping({"decisions": table}).decisions
    assert config is not None and config.poll_s == 1.0
    assert config.load().name == "fleet"
    with pytest.raises(ConfigError, match=r"decisions\.pol_s"):
        DecisionsConfig.from_mapping({**table, "pol_s": 1})
    with pytest.raises(ConfigError, match=r"decisions\.trust is required"):
        DecisionsConfig.from_mapping({k: v for k, v in table.items() if k != "trust"})
    with pytest.raises(ConfigError, match="not a client of group fleet"):
        DecisionsConfig.from_mapping({**table, "identity": "r1"}).load()  # type: ignore[union-attr]
    plain = make_group(tmp_path / "plain", REPLICAS, ("coord",))
    with pytest.raises(ConfigError, match="not 'fleet_log'"):
        DecisionsConfig.from_mapping({**table, "group": str(plain),  # type: ignore[union-attr]
                                      "trust": str(trust_root(tmp_path / "plain"))}).load()
