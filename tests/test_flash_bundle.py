"""edge-flash bundle and verify: manifest, signatures, install.sh, the systemd unit."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from agents.config import AgentConfig
from firmware_tools.bundle import download_wheels
from firmware_tools.cli import main
from firmware_tools.keys import init_keys, load_trusted, rotate_keys
from firmware_tools.manifest import verify_bundle
from firmware_tools.seed import SeedOptions, firstboot_script, firstrun_script
from firmware_tools.units import slot_script
from schemas.errors import BundleInvalid
from tests.test_flash_support import dummy_wheel, make_bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path)


def test_bundle_layout_and_manifest(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    assert listed == {"BUNDLE_ID", "agent.toml", "edgebus-agent.service", "install.sh",
                      "keys/trusted_keys.json", "requirements.txt", "wheels/edgebus-0.1.0-py3-none-any.whl"}
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in manifest["files"])
    assert manifest["device"] == "cam-1" and manifest["target"] == "pi-arm64"
    assert (bundle / "requirements.txt").read_text() == "edgebus==0.1.0\n"
    assert os.access(bundle / "install.sh", os.X_OK)


def test_agent_toml_loads_like_the_agent_does(bundle: Path) -> None:
    config = AgentConfig.load(bundle / "agent.toml")
    assert config.device.id == "cam-1"
    assert (config.broker.host, config.broker.port) == ("broker.local", 1883)
    assert (config.broker.username, config.broker.password) == ("cam-1", "s3cret")
    assert str(config.device.data_dir) == "/var/lib/edgebus"


def test_verify_good_bundle(bundle: Path, tmp_path: Path) -> None:
    assert verify_bundle(bundle, load_trusted(tmp_path / "keys"))["device"] == "cam-1"
    assert main(["verify", str(bundle), "--keys", str(tmp_path / "keys")]) == 0


def test_tampered_file_is_named(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (bundle / "agent.toml").read_text().replace("broker.local", "brokex.local")
    (bundle / "agent.toml").write_text(text)
    with pytest.raises(BundleInvalid, match=r"agent\.toml SHA-256 mismatch"):
        verify_bundle(bundle, load_trusted(tmp_path / "keys"))
    assert main(["verify", str(bundle), "--keys", str(tmp_path / "keys")]) == 1
    assert "agent.toml" in capsys.readouterr().err


def test_changed_size_missing_and_extra_files(bundle: Path, tmp_path: Path) -> None:
    ring = load_trusted(tmp_path / "keys")
    (bundle / "wheels" / "extra-1.0-py3-none-any.whl").write_bytes(b"x")
    with pytest.raises(BundleInvalid, match=r"extra-1\.0-py3-none-any\.whl is not listed"):
        verify_bundle(bundle, ring)
    (bundle / "wheels" / "extra-1.0-py3-none-any.whl").unlink()
    (bundle / "install.sh").write_text("#!/bin/sh\n")
    with pytest.raises(BundleInvalid, match=r"install\.sh has 10 bytes"):
        verify_bundle(bundle, ring)
    (bundle / "install.sh").unlink()
    with pytest.raises(BundleInvalid, match=r"install\.sh is listed but missing"):
        verify_bundle(bundle, ring)


def test_tampered_manifest_fails_signature(bundle: Path, tmp_path: Path) -> None:
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["device"] = "cam-2"
    (bundle / "manifest.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    with pytest.raises(BundleInvalid, match="signature does not match"):
        verify_bundle(bundle, load_trusted(tmp_path / "keys"))


def test_wrong_key_is_refused(bundle: Path, tmp_path: Path) -> None:
    init_keys(tmp_path / "other")
    with pytest.raises(BundleInvalid, match="not in the trusted keys"):
        verify_bundle(bundle, load_trusted(tmp_path / "other"))
    assert main(["verify", str(bundle), "--keys", str(tmp_path / "other" / "trusted_keys.json")]) == 1


def test_rotation_old_and_new_signatures_accepted(tmp_path: Path) -> None:
    old_bundle = make_bundle(tmp_path, "cam-1")
    old_ring = load_trusted(tmp_path / "keys")
    rotate_keys(tmp_path / "keys")
    new_bundle = make_bundle(tmp_path, "cam-2")
    ring = load_trusted(tmp_path / "keys")
    verify_bundle(old_bundle, ring)  # signed before the rotation: superseded key still trusted
    verify_bundle(new_bundle, ring)
    assert json.loads((new_bundle / "keys" / "trusted_keys.json").read_text())["keys"][1]["status"] == \
        "superseded"
    with pytest.raises(BundleInvalid, match="not in the trusted keys"):
        verify_bundle(new_bundle, old_ring)  # a device that never got the new list


def test_unit_file_is_hardened(bundle: Path, tmp_path: Path) -> None:
    unit = (bundle / "edgebus-agent.service").read_text()
    for directive in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "StartLimitIntervalSec=",
                      "StartLimitBurst=", "After=network-online.target", "Wants=network-online.target",
                      "NoNewPrivileges=yes", "ProtectSystem=strict",
                      "ReadWritePaths=/var/lib/edgebus /opt/edgebus", "RestartForceExitStatus=75",
                      "ExecStartPre=/opt/edgebus/bin/edgebus-slot prestart",
                      "User=edgebus", "ExecStart=/opt/edgebus/current/bin/edge-agent run --config "
                      "/etc/edgebus/agent.toml"):
        assert directive in unit, directive
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    # The programs only exist on the device: point them at /bin/true for the check.
    copy = tmp_path / "edgebus-agent.service"
    copy.write_text(unit.replace("/opt/edgebus/current/bin/edge-agent", "/bin/true")
                    .replace("/opt/edgebus/bin/edgebus-slot", "/bin/true"))
    proc = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True,
                          check=False)
    problems = [line for line in proc.stderr.splitlines() if "edgebus-agent" in line]
    assert proc.returncode == 0 and not problems, proc.stderr  # also catches unknown directives


def test_scripts_parse(bundle: Path) -> None:
    opts = SeedOptions(device="cam-1", user="ops", password_hash="$6$x$y", ssh_keys=("ssh-ed25519 A b",),
                       wifi_ssid="it's \"wifi\"", wifi_psk="pass word 1")
    for shell, text in (("sh", (bundle / "install.sh").read_text()), ("sh", firstboot_script()),
                        ("bash", firstrun_script(opts)), ("sh", slot_script())):
        proc = subprocess.run([shell, "-n"], input=text, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr


def _installer_env(root: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "EDGEBUS_PREFIX": str(root / "opt"), "EDGEBUS_ETC": str(root / "etc"),
            "EDGEBUS_DATA": str(root / "data"), "EDGEBUS_UNIT_DIR": str(root / "units"),
            "EDGEBUS_PYTHON": sys.executable, "EDGEBUS_SKIP_SYSTEM": "1", "PIP_NO_INDEX": "1", **extra}


def _run_install(path: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(["sh", str(path / "install.sh")], env=env, capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_install_script_is_idempotent_and_switches_slots(bundle: Path, tmp_path: Path) -> None:
    script = (bundle / "install.sh").read_text()
    assert "--no-index" in script and "--find-links" in script and "slot-a" in script
    root = tmp_path / "root"
    env = _installer_env(root)

    def install(path: Path) -> str:
        return _run_install(path, env)

    install(bundle)
    assert os.readlink(root / "opt" / "current") == "slot-a"
    assert (root / "opt" / "slot-a" / "BUNDLE_ID").read_text() == (bundle / "BUNDLE_ID").read_text()
    assert (root / "etc" / "agent.toml").read_text() == (bundle / "agent.toml").read_text()
    assert (root / "units" / "edgebus-agent.service").is_file()
    assert list((root / "opt" / "slot-a" / "lib").glob("python*/site-packages/edgebus_dummy"))
    assert "already installed in" in install(bundle)
    assert os.readlink(root / "opt" / "current") == "slot-a"
    second = make_bundle(tmp_path / "again", keys=tmp_path / "keys")
    install(second)
    assert os.readlink(root / "opt" / "current") == "slot-b"
    assert (root / "opt" / "slot-a" / "BUNDLE_ID").is_file()  # the old slot stays for a roll-back
    slot_tool = root / "opt" / "bin" / "edgebus-slot"
    assert os.access(slot_tool, os.X_OK) and slot_tool.read_text() == slot_script()


def test_ota_install_fills_the_inactive_slot_only(bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "opt" / "slot-a").mkdir(parents=True)  # as a normal install of this bundle left it
    (root / "opt" / "slot-a" / "BUNDLE_ID").write_text((bundle / "BUNDLE_ID").read_text())
    (root / "opt" / "current").symlink_to("slot-a")
    ota_env = _installer_env(root, EDGEBUS_OTA="1")
    out = _run_install(bundle, ota_env)  # the same bundle: OTA installs it again, into slot-b
    assert out.splitlines()[-1] == "edgebus: installed into slot-b"
    assert os.readlink(root / "opt" / "current") == "slot-a"  # the agent switches, not install.sh
    assert (root / "opt" / "slot-b" / "BUNDLE_ID").read_text() == (bundle / "BUNDLE_ID").read_text()
    assert list((root / "opt" / "slot-b" / "lib").glob("python*/site-packages/edgebus_dummy"))
    assert not (root / "opt" / "slot-b" / "VERSION").exists()  # this bundle has no VERSION file
    assert not (root / "etc").exists() and not (root / "units").exists() and not (root / "data").exists()
    assert os.access(root / "opt" / "bin" / "edgebus-slot", os.X_OK)  # a device from before OTA gets it
    (root / "opt" / "current").unlink()
    (root / "opt" / "current").symlink_to("slot-b")
    (bundle / "VERSION").write_text("2.0\n")
    assert _run_install(bundle, ota_env).splitlines()[-1] == "edgebus: installed into slot-a"
    assert (root / "opt" / "slot-a" / "VERSION").read_text() == "2.0\n"
    assert os.readlink(root / "opt" / "current") == "slot-b"


def _prestart(prefix: Path, data: Path) -> subprocess.CompletedProcess[str]:
    script = prefix / "edgebus-slot"
    script.write_text(slot_script())
    return subprocess.run(["sh", str(script), "prestart"], capture_output=True, text=True, check=False,
                          timeout=30, env={**os.environ, "EDGEBUS_PREFIX": str(prefix),
                                           "EDGEBUS_DATA": str(data)})


def _trial_prefix(tmp_path: Path) -> tuple[Path, Path]:
    prefix, data = tmp_path / "opt", tmp_path / "data"
    for slot in ("slot-a", "slot-b"):
        (prefix / slot).mkdir(parents=True)
    (prefix / "current").symlink_to("slot-b")
    (data / "ota").mkdir(parents=True)
    return prefix, data


def test_slot_guard_rolls_back_a_crash_loop(tmp_path: Path) -> None:
    prefix, data = _trial_prefix(tmp_path)
    ota = data / "ota"
    assert _prestart(prefix, data).returncode == 0  # no trial: nothing to do
    assert not (ota / "trial_attempts").exists()
    (ota / "trial.json").write_text(json.dumps({"update_id": "u-7", "previous_slot": "slot-a"}))
    (ota / "trial_previous_slot").write_text("slot-a\n")
    (ota / "trial_update_id").write_text("agent-2.0-u7\n")
    for start in (1, 2):
        assert _prestart(prefix, data).returncode == 0
        assert (ota / "trial_attempts").read_text().strip() == str(start)
        assert os.readlink(prefix / "current") == "slot-b"
    proc = _prestart(prefix, data)
    assert proc.returncode == 0 and "rolled back to slot-a" in proc.stderr
    assert os.readlink(prefix / "current") == "slot-a"
    result = json.loads((ota / "last_result.json").read_text())
    assert result["update_id"] == "agent-2.0-u7"
    assert (result["outcome"], result["reason"]) == ("rolled_back", "crash_loop")
    assert not (ota / "trial.json").exists() and not (ota / "trial_attempts").exists()
    assert _prestart(prefix, data).returncode == 0  # and the old agent starts normally
    assert os.readlink(prefix / "current") == "slot-a"


def test_slot_guard_falls_back_to_trial_json_and_never_blocks_the_start(tmp_path: Path) -> None:
    prefix, data = _trial_prefix(tmp_path)
    ota = data / "ota"
    (ota / "trial.json").write_text(json.dumps({"update_id": "u-8", "version": "2.0",
                                                "previous_slot": "slot-a", "new_slot": "slot-b"}, indent=1))
    (ota / "trial_attempts").write_text("2\n")
    assert _prestart(prefix, data).returncode == 0
    assert os.readlink(prefix / "current") == "slot-a"
    assert json.loads((ota / "last_result.json").read_text())["update_id"] == "u-8"
    # A trial with no way back recorded (or a garbage counter) must not keep the agent from starting.
    (prefix / "current").unlink()
    (prefix / "current").symlink_to("slot-b")
    (ota / "trial.json").write_text("{}")
    (ota / "trial_attempts").write_text("garbage")
    for _ in range(4):
        assert _prestart(prefix, data).returncode == 0
    assert os.readlink(prefix / "current") == "slot-b"


def test_download_uses_target_platform_tags(tmp_path: Path) -> None:
    calls: list[Sequence[str]] = []
    source = tmp_path / "src"
    (source / "schemas").mkdir(parents=True)
    (source / "pyproject.toml").write_text("[project]\nname = 'edgebus'\n")
    (source / "build").mkdir()
    built: list[set[str]] = []

    def runner(cmd: Sequence[str]) -> None:
        calls.append(cmd)
        if cmd[3] == "wheel":  # the source is a clean copy, not the operator's tree
            built.append({p.name for p in Path(cmd[-1]).iterdir()})

    download_wheels("jetson-arm64", tmp_path, source, runner, "3.10")
    pip_download, pip_wheel = calls
    assert pip_download[3] == "download" and "--only-binary=:all:" in pip_download
    assert ("--platform", "manylinux2014_aarch64") in itertools.pairwise(pip_download)
    assert ("--python-version", "3.10") in itertools.pairwise(pip_download)
    assert any(arg.startswith("paho-mqtt") for arg in pip_download)
    assert pip_wheel[3:6] == ["wheel", "--no-deps", "--wheel-dir"] and pip_wheel[-1] != str(source)
    assert built == [{"pyproject.toml", "schemas"}]


def test_cli_bundle_and_bad_input(tmp_path: Path) -> None:
    init_keys(tmp_path / "keys")
    dummy_wheel(tmp_path / "wheels")
    common = ["bundle", "--target", "x86_64", "--device", "gw-1", "--keys", str(tmp_path / "keys"),
              "--wheels", str(tmp_path / "wheels")]
    assert main([*common, "--broker", "mqtts://b.example", "--out", str(tmp_path / "b1")]) == 0
    assert AgentConfig.load(tmp_path / "b1" / "agent.toml").broker.port == 8883
    assert main([*common, "--broker", "http://b.example", "--out", str(tmp_path / "b2")]) == 2
    assert main([*common, "--broker", "mqtt://b", "--out", str(tmp_path / "b1")]) == 2  # not empty
    assert main([*common[:-4], "--broker", "mqtt://b", "--out", str(tmp_path / "b3")]) == 2  # no source
    bad = [*common[:4], "_bad", *common[5:]]
    assert main([*bad, "--broker", "mqtt://b", "--out", str(tmp_path / "b4")]) == 2
    (tmp_path / "nowheel").mkdir()
    dummy_wheel(tmp_path / "nowheel", name="paho_mqtt", version="2.1.0")
    assert main([*common[:-1], str(tmp_path / "nowheel"), "--broker", "mqtt://b",
                 "--out", str(tmp_path / "b5")]) == 2
