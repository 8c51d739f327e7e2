"""edge-flash keys: init, rotate, the rotation list."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from firmware_tools.cli import main
from firmware_tools.keys import init_keys, load_signing_key, load_trusted, rotate_keys
from schemas.errors import ConfigError


def test_init_writes_private_key_0600_and_one_active_key(tmp_path: Path) -> None:
    kid = init_keys(tmp_path / "keys")
    assert stat.S_IMODE((tmp_path / "keys" / "signing.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    ring = load_trusted(tmp_path / "keys")
    assert [(k.id, k.status) for k in ring.keys] == [(kid, "active")]
    assert ring.verify(kid, load_signing_key(tmp_path / "keys").sign(b"x"), b"x")


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    init_keys(tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        init_keys(tmp_path)
    assert main(["keys", "init", "--dir", str(tmp_path)]) == 2


def test_rotate_keeps_old_key_as_superseded(tmp_path: Path) -> None:
    first = init_keys(tmp_path)
    old_id, new_id = rotate_keys(tmp_path)
    assert old_id == first and new_id != first
    doc = json.loads((tmp_path / "trusted_keys.json").read_text())
    assert [(k["id"], k["status"]) for k in doc["keys"]] == [(new_id, "active"), (first, "superseded")]
    assert "superseded" in doc["keys"][1]
    assert stat.S_IMODE((tmp_path / "signing.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "retired" / f"{first}.key").stat().st_mode) == 0o600
    third = rotate_keys(tmp_path)[1]
    assert [k.status for k in load_trusted(tmp_path).keys] == ["active", "superseded", "superseded"]
    assert load_trusted(tmp_path).keys[0].id == third


def test_tampered_rotation_list_is_refused(tmp_path: Path) -> None:
    init_keys(tmp_path)
    doc = json.loads((tmp_path / "trusted_keys.json").read_text())
    doc["keys"][0]["id"] = "0" * 16
    (tmp_path / "trusted_keys.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="does not match its public key"):
        load_trusted(tmp_path)


def test_cli_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "init", "--dir", str(tmp_path / "k")]) == 0
    assert main(["keys", "rotate", "--dir", str(tmp_path / "k")]) == 0
    assert "rotated" in capsys.readouterr().out
    assert main(["keys", "rotate", "--dir", str(tmp_path / "missing")]) == 2
    assert main(["keys"]) == 2
