"""``edge-flash image``: seed a Raspberry Pi OS image for first boot, without root or mounting.

The boot partition is found in the MBR and edited in place with pyfatfs; see
:mod:`firmware_tools.seed` for what is written and how the cloud-init or
firstrun path is chosen (and for the Jetson path). ``--device-list`` copies the
image once per device and seeds each copy.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_tools.bootfs import BootFS
from firmware_tools.keys import load_trusted
from firmware_tools.manifest import verify_bundle
from firmware_tools.mbr import find_boot_partition
from firmware_tools.seed import (
    CLOUD_INIT_FILES,
    SEED_DIR,
    SeedOptions,
    choose_mode,
    cloud_init_files,
    firstboot_script,
    firstrun_script,
    patch_cmdline,
)
from schemas.errors import ConfigError

__all__ = ["DEVICE_COLUMNS", "SeedResult", "seed_device_list", "seed_image"]

logger = logging.getLogger(__name__)

DEVICE_COLUMNS = ("device", "hostname", "user", "password_hash", "ssh_key", "wifi_ssid", "wifi_psk",
                  "wifi_country", "bundle")


@dataclass(frozen=True, slots=True)
class SeedResult:
    image: Path
    mode: str
    files: tuple[str, ...]


def seed_image(image: Path, bundle: Path, opts: SeedOptions, mode: str = "auto") -> SeedResult:
    """Write the first-boot seed and the (verified) bundle into ``image``'s boot partition."""
    opts.check()
    ring = load_trusted(bundle / "keys")
    manifest = verify_bundle(bundle, ring)  # the bundle's own keys: catches a damaged copy
    if manifest.get("device") != opts.device:
        raise ConfigError(f"bundle {bundle} is for device {manifest.get('device')!r}, not {opts.device!r}")
    part = find_boot_partition(image)
    with BootFS(image, part) as fs:
        present = {name for name in (*CLOUD_INIT_FILES, "firstrun.sh") if fs.exists(name)}
        detected = choose_mode(present, fs.read_text("cmdline.txt"))
        chosen = detected if mode == "auto" else mode
        if chosen not in ("cloud-init", "firstrun"):
            raise ConfigError(f"--mode must be auto, cloud-init or firstrun, not {mode!r}")
        written = [f"{SEED_DIR}/bundle/", f"{SEED_DIR}/firstboot.sh"]
        fs.copy_tree(bundle, f"{SEED_DIR}/bundle")
        fs.write_text(f"{SEED_DIR}/firstboot.sh", firstboot_script())
        if chosen == "cloud-init":
            for name, text in cloud_init_files(opts).items():
                fs.write_text(name, text)
                written.append(name)
        else:
            fs.write_text("firstrun.sh", firstrun_script(opts))
            fs.write_text("cmdline.txt", patch_cmdline(fs.read_text("cmdline.txt") or ""))
            written += ["firstrun.sh", "cmdline.txt"]
    logger.info("seeded %s (%s, partition %d at %d) for %s", image, chosen, part.index, part.offset,
                opts.device)
    return SeedResult(image=image, mode=chosen, files=tuple(written))


def _row_options(row: dict[str, str], base: SeedOptions, where: str) -> SeedOptions:
    unknown = set(row) - set(DEVICE_COLUMNS)
    if unknown:
        raise ConfigError(f"{where}: unknown column(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(DEVICE_COLUMNS)}")
    values: dict[str, Any] = {k: v.strip() for k, v in row.items()
                              if v and v.strip() and k not in ("bundle", "ssh_key")}
    if not values.get("device"):
        raise ConfigError(f"{where}: device is empty")
    opts = dataclasses.replace(base, **values)
    if row.get("ssh_key", "").strip():
        opts = dataclasses.replace(opts, ssh_keys=(row["ssh_key"].strip(),))
    return opts


def seed_device_list(device_list: Path, image: Path, bundle_pattern: str, base: SeedOptions, out: Path,
                     mode: str = "auto") -> list[SeedResult]:
    """One seeded copy of ``image`` per CSV row, named ``OUT/<device>.img``.

    ``bundle_pattern`` may contain ``{device}``; a ``bundle`` column overrides it.
    """
    try:
        with device_list.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ConfigError(f"cannot read --device-list {device_list}: {exc}") from exc
    if not rows:
        raise ConfigError(f"{device_list} lists no devices (header: {','.join(DEVICE_COLUMNS)})")
    plans = []
    for n, row in enumerate(rows, start=2):
        opts = _row_options(row, base, f"{device_list} line {n}")
        bundle = Path((row.get("bundle") or "").strip() or bundle_pattern.format(device=opts.device))
        plans.append((opts, bundle))
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for opts, bundle in plans:
        target = out / f"{opts.device}.img"
        shutil.copyfile(image, target)
        results.append(seed_image(target, bundle, opts, mode))
    return results
