"""protocols/ota/trust.py (key ring, signature check on OTA offers) and broker/trust.py (reading it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import broker.trust
import firmware_tools.keys
import protocols.ota.trust
from broker.trust import load_trusted
from firmware_tools.keys import init_keys, load_signing_key, rotate_keys
from protocols.ota.trust import parse_trusted, verify_offer
from schemas.errors import ConfigError, EdgebusError, UpdateRefused
from schemas.ota import SignedManifest, UpdateManifest


def manifest(update_id: str = "u-1") -> UpdateManifest:
    return UpdateManifest.for_artifact(b"artifact" * 300, update_id=update_id, kind="agent",
                                       name="edgebus-agent", version="0.3.0", created="2025-11-23T12:00:00Z")


def sign(keys: Path, m: UpdateManifest) -> SignedManifest:
    key = load_signing_key(keys)
    data = m.to_bytes()
    return SignedManifest(data, protocols.ota.trust.key_id(key.public_key()), key.sign(data))


def test_a_good_signature_yields_the_manifest(tmp_path: Path) -> None:
    init_keys(tmp_path)
    m = manifest()
    assert verify_offer(load_trusted(tmp_path), sign(tmp_path, m)) == m


def test_a_bad_signature_is_refused(tmp_path: Path) -> None:
    init_keys(tmp_path)
    signed = sign(tmp_path, manifest())
    forged = SignedManifest(manifest("u-2").to_bytes(), signed.key_id, signed.signature)
    with pytest.raises(UpdateRefused, match="does not verify") as refused:
        verify_offer(load_trusted(tmp_path), forged)
    assert refused.value.reason == "bad_signature"
    assert isinstance(refused.value, EdgebusError)
    flipped = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    with pytest.raises(UpdateRefused) as refused:
        verify_offer(load_trusted(tmp_path), SignedManifest(signed.manifest_bytes, signed.key_id, flipped))
    assert refused.value.reason == "bad_signature"


def test_an_unknown_key_is_refused(tmp_path: Path) -> None:
    init_keys(tmp_path / "ours")
    init_keys(tmp_path / "theirs")
    with pytest.raises(UpdateRefused, match="not trusted here") as refused:
        verify_offer(load_trusted(tmp_path / "ours"), sign(tmp_path / "theirs", manifest()))
    assert refused.value.reason == "unknown_key"


def test_an_update_signed_before_a_rotation_still_verifies(tmp_path: Path) -> None:
    init_keys(tmp_path)
    before = sign(tmp_path, manifest())
    old_id, new_id = rotate_keys(tmp_path)
    ring = load_trusted(tmp_path)
    assert ring.find(old_id) is not None and ring.find(old_id).status == "superseded"  # type: ignore[union-attr]
    assert verify_offer(ring, before) == manifest()
    after = sign(tmp_path, manifest("u-2"))
    assert after.key_id == new_id and verify_offer(ring, after) == manifest("u-2")


def test_parse_trusted_reads_what_a_keys_update_delivers(tmp_path: Path) -> None:
    init_keys(tmp_path)
    rotate_keys(tmp_path)
    data = (tmp_path / "trusted_keys.json").read_bytes()
    assert parse_trusted(data, "keys update u-9") == load_trusted(tmp_path)
    assert parse_trusted(load_trusted(tmp_path).to_bytes(), "x") == load_trusted(tmp_path)


@pytest.mark.parametrize(("data", "message"), [
    (b"{", "keys update u-9 is not valid JSON"),
    (b"\xff", "not valid JSON"),
    (b"[]", "expected"),
    (b'{"format": 2, "keys": []}', "expected"),
    (b'{"format": 1, "keys": []}', "lists no keys"),
    (b'{"format": 1, "keys": [5]}', r"keys\[0\]: each key must be an object"),
    (b'{"format": 1, "keys": [{"id": "x", "public_key": "!!"}]}', "bad or missing public_key"),
])
def test_parse_trusted_refuses_bad_lists(data: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_trusted(data, "keys update u-9")


def test_a_tampered_key_id_is_refused(tmp_path: Path) -> None:
    init_keys(tmp_path)
    doc = json.loads((tmp_path / "trusted_keys.json").read_text())
    doc["keys"][0]["id"] = "0" * 16
    with pytest.raises(ConfigError, match="does not match its public key"):
        parse_trusted(json.dumps(doc).encode(), "list")


def test_firmware_tools_reexports_the_moved_names() -> None:
    for name in ("TRUSTED_KEYS", "load_trusted"):
        assert getattr(firmware_tools.keys, name) is getattr(broker.trust, name)
    for name in ("KeyRing", "TrustedKey", "key_id"):
        assert getattr(firmware_tools.keys, name) is getattr(protocols.ota.trust, name)


def test_a_revoked_key_is_refused_although_its_signature_is_valid(tmp_path: Path) -> None:
    from firmware_tools.keys import revoke_key

    init_keys(tmp_path)
    by_old = sign(tmp_path, manifest())
    old_id, _new_id = rotate_keys(tmp_path)
    with pytest.raises(ConfigError, match="active signing key"):
        revoke_key(tmp_path, _new_id, "compromised")
    revoke_key(tmp_path, old_id, "compromised")
    ring = load_trusted(tmp_path)
    old = ring.find(old_id)
    assert old is not None and old.status == "revoked" and old.reason == "compromised"
    old.public_key.verify(by_old.signature, by_old.manifest_bytes)  # the signature itself is fine
    with pytest.raises(UpdateRefused, match="revoked") as refused:
        verify_offer(ring, by_old)
    assert refused.value.reason == "revoked_key"
    assert not ring.verify(old_id, by_old.signature, by_old.manifest_bytes)
    assert verify_offer(ring, sign(tmp_path, manifest("u-2"))) == manifest("u-2")


def test_a_later_list_must_keep_every_revocation(tmp_path: Path) -> None:
    from firmware_tools.keys import revoke_key
    from protocols.ota.trust import KeyRing, TrustedKey, check_revocations_kept

    init_keys(tmp_path)
    before = load_trusted(tmp_path)
    old_id, _ = rotate_keys(tmp_path)
    revoked = revoke_key(tmp_path, old_id, "compromised")
    check_revocations_kept(before, revoked, "new")  # revoking is always fine
    check_revocations_kept(revoked, revoked, "same")
    undone = KeyRing(tuple(TrustedKey(k.id, k.public_key, "superseded", k.created) if k.id == old_id else k
                           for k in revoked.keys))
    with pytest.raises(ConfigError, match="must stay listed as revoked"):
        check_revocations_kept(revoked, undone, "delivered")
    with pytest.raises(ConfigError, match="must stay listed as revoked"):
        dropped = KeyRing(tuple(k for k in revoked.keys if k.id != old_id))
        check_revocations_kept(revoked, dropped, "delivered")
    assert parse_trusted(revoked.to_bytes(), "x") == revoked
