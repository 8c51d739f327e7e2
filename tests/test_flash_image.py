"""edge-flash image: first-boot seeds written into a FAT boot partition inside an MBR image."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from pyfatfs.PyFat import PyFat

from firmware_tools.cli import main
from firmware_tools.image import seed_image
from firmware_tools.keys import load_trusted
from firmware_tools.manifest import verify_bundle
from firmware_tools.seed import CMDLINE_PATCH, SeedOptions, patch_cmdline
from schemas.errors import ConfigError
from tests.test_flash_support import make_bundle, make_image, read_image

CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=abcd-02 rootfstype=ext4 fsck.repair=yes "
           "rootwait\n")
HASH = "$6$salt$" + "x" * 86
OPTS = SeedOptions(device="cam-1", hostname="cam-one", user="ops", password_hash=HASH,
                   ssh_keys=("ssh-ed25519 AAAAC3Nza ops@laptop",), wifi_ssid="Site WiFi",
                   wifi_psk="pass phrase 1")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path)


def _bundle_in_image(files: dict[str, bytes], tmp_path: Path, bundle: Path, out_name: str = "x") -> None:
    """The bundle copied into the image verifies against the original keys."""
    out = tmp_path / out_name
    for name, data in files.items():
        if name.startswith("edgebus/bundle/"):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
    verify_bundle(out / "edgebus" / "bundle", load_trusted(tmp_path / "keys"))
    assert (out / "edgebus/bundle/BUNDLE_ID").read_text() == (bundle / "BUNDLE_ID").read_text()


def test_cloud_init_image_gets_cloud_init_seed(tmp_path: Path, bundle: Path) -> None:
    yaml = pytest.importorskip("yaml")
    image = make_image(tmp_path / "pi.img", {"cmdline.txt": CMDLINE, "config.txt": "arm_64bit=1\n",
                                             "user-data": "#cloud-config\n", "meta-data": "instance-id: x\n"})
    result = seed_image(image, bundle, OPTS)
    assert result.mode == "cloud-init"
    files = read_image(image)
    assert files["cmdline.txt"].decode() == CMDLINE  # untouched on the cloud-init path
    assert "firstrun.sh" not in files
    user = files["user-data"].decode()
    assert user.startswith("#cloud-config\n")
    doc = yaml.safe_load(user)
    assert doc["hostname"] == "cam-one"
    assert doc["users"][0]["name"] == "ops" and doc["users"][0]["passwd"] == HASH
    assert doc["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAAC3Nza ops@laptop"]
    assert "edgebus/firstboot.sh" in json.dumps(doc["runcmd"])
    net = yaml.safe_load(files["network-config"])
    assert net["network"]["wifis"]["wlan0"]["access-points"]["Site WiFi"]["password"] == "pass phrase 1"
    meta = yaml.safe_load(files["meta-data"])
    assert meta["instance-id"].startswith("edgebus-cam-1-")
    assert b"install.sh" in files["edgebus/firstboot.sh"]
    _bundle_in_image(files, tmp_path, bundle)
    seed_image(image, bundle, OPTS)  # re-run: same files, a fresh instance-id
    again = read_image(image)
    assert set(again) == set(files)
    _bundle_in_image(again, tmp_path, bundle, "again")
    assert yaml.safe_load(again["meta-data"])["instance-id"] != meta["instance-id"]


def test_older_image_gets_firstrun_and_one_cmdline_patch(tmp_path: Path, bundle: Path) -> None:
    image = make_image(tmp_path / "old.img", {"cmdline.txt": CMDLINE, "config.txt": ""},
                       fat=PyFat.FAT_TYPE_FAT16)
    assert seed_image(image, bundle, OPTS).mode == "firstrun"
    files = read_image(image)
    cmdline = files["cmdline.txt"].decode()
    assert cmdline == CMDLINE.strip() + " " + CMDLINE_PATCH + "\n"
    assert cmdline.count("\n") == 1
    script = files["firstrun.sh"].decode()
    assert script.startswith("#!/bin/bash") and "cam-one" in script and HASH in script
    assert "firstboot.sh" in script and "rm -f \"$BOOT/firstrun.sh\"" in script
    assert "user-data" not in files
    _bundle_in_image(files, tmp_path, bundle)
    seed_image(image, bundle, OPTS)  # idempotent: the patch is not appended twice
    again = read_image(image)
    assert again["cmdline.txt"].decode() == cmdline
    _bundle_in_image(again, tmp_path, bundle, "again")


def test_patch_cmdline_refuses_a_foreign_systemd_run() -> None:
    assert patch_cmdline(patch_cmdline("a b")) == patch_cmdline("a b")
    with pytest.raises(ConfigError, match=r"systemd\.run="):
        patch_cmdline("a systemd.run=/boot/other.sh")


def test_not_a_pi_image_and_gpt_are_refused(tmp_path: Path, bundle: Path) -> None:
    image = make_image(tmp_path / "x.img", {"readme.txt": "hi"})
    with pytest.raises(ConfigError, match=r"no cmdline\.txt"):
        seed_image(image, bundle, OPTS)
    gpt = bytearray(image.read_bytes()[:512])
    gpt[446:462] = bytes([0, 0, 0, 0, 0xEE, 0, 0, 0]) + struct.pack("<II", 1, 1000)
    (tmp_path / "gpt.img").write_bytes(bytes(gpt) + b"\0" * 4096)
    with pytest.raises(ConfigError, match="GPT"):
        seed_image(tmp_path / "gpt.img", bundle, OPTS)
    (tmp_path / "blank.img").write_bytes(b"\0" * 1024)
    with pytest.raises(ConfigError, match="no MBR"):
        seed_image(tmp_path / "blank.img", bundle, OPTS)


def test_bad_options_and_wrong_device(tmp_path: Path, bundle: Path) -> None:
    image = make_image(tmp_path / "pi.img", {"cmdline.txt": CMDLINE})
    with pytest.raises(ConfigError, match="password-hash"):
        seed_image(image, bundle, SeedOptions(device="cam-1", user="ops", password_hash="hunter2"))
    with pytest.raises(ConfigError, match="not 'cam-9'"):
        seed_image(image, bundle, SeedOptions(device="cam-9"))


def test_device_list_makes_one_image_per_device(tmp_path: Path) -> None:
    for device in ("cam-1", "cam-2"):
        make_bundle(tmp_path, device)
    base = make_image(tmp_path / "base.img", {"cmdline.txt": CMDLINE})
    (tmp_path / "devices.csv").write_text("device,hostname,wifi_ssid,wifi_psk\ncam-1,,,\n"
                                          "cam-2,yard,Yard AP,yardpass123\n")
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAA ops\n")
    rc = main(["image", "--image", str(base), "--device-list", str(tmp_path / "devices.csv"),
               "--bundle", str(tmp_path / "bundles" / "{device}"), "--out", str(tmp_path / "out"),
               "--user", "ops", "--ssh-key", str(key), "--mode", "firstrun"])
    assert rc == 0
    one, two = read_image(tmp_path / "out" / "cam-1.img"), read_image(tmp_path / "out" / "cam-2.img")
    assert b"NEW_HOSTNAME=cam-1" in one["firstrun.sh"] and b"NEW_HOSTNAME=yard" in two["firstrun.sh"]
    assert b"Yard AP" in two["firstrun.sh"] and b"ssh-ed25519 AAAA ops" in one["firstrun.sh"]
    assert b"cam-2" in two["edgebus/bundle/BUNDLE_ID"]
    assert read_image(base)["cmdline.txt"].decode() == CMDLINE  # the base image is untouched


def test_cli_image_exit_codes(tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(tmp_path / "pi.img", {"cmdline.txt": CMDLINE, "network-config": ""})
    assert main(["image", "--image", str(image), "--bundle", str(bundle), "--device", "cam-1"]) == 0
    assert "cloud-init seed" in capsys.readouterr().out
    assert main(["image", "--image", str(tmp_path / "missing.img"), "--bundle", str(bundle),
                 "--device", "cam-1"]) == 2
    assert main(["image", "--image", str(image), "--bundle", str(bundle)]) == 2  # no --device
    (bundle / "agent.toml").write_text("tampered")
    assert main(["image", "--image", str(image), "--bundle", str(bundle), "--device", "cam-1"]) == 1
