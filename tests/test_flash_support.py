"""Helpers for the edge-flash tests (no tests here): a dummy wheel, a bundle, a boot image."""

from __future__ import annotations

import base64
import hashlib
import struct
import zipfile
from pathlib import Path

from pyfatfs.PyFat import PyFat
from pyfatfs.PyFatFS import PyFatFS

from firmware_tools.agent_config import parse_broker_url
from firmware_tools.bundle import BundleRequest, build_bundle
from firmware_tools.keys import init_keys

PART_START = 2048  # sectors: where Raspberry Pi OS puts its boot partition too
PART_SIZE = 40 * 1024 * 1024


def dummy_wheel(dest: Path, name: str = "edgebus", version: str = "0.1.0") -> Path:
    """A valid, dependency-free wheel (pip installs it) that stands in for the real one."""
    dest.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}_dummy/__init__.py": b"VERSION = '%s'\n" % version.encode(),
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n"}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    whl = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return whl


def make_bundle(tmp: Path, device: str = "cam-1", keys: Path | None = None) -> Path:
    keys = keys or tmp / "keys"
    if not (keys / "signing.key").exists():
        init_keys(keys)
    wheels = tmp / "wheels"
    if not wheels.exists():
        dummy_wheel(wheels)
    req = BundleRequest(target="pi-arm64", device=device, keys_dir=keys, out=tmp / "bundles" / device,
                        broker=parse_broker_url("mqtt://broker.local", "cam-1", "s3cret"), wheels=wheels)
    return build_bundle(req)


def make_image(path: Path, files: dict[str, str], fat: int = PyFat.FAT_TYPE_FAT32) -> Path:
    """An MBR disk image with one FAT partition at 1 MiB holding ``files``."""
    offset = PART_START * 512
    with path.open("wb") as f:
        f.truncate(offset)
    pf = PyFat(offset=offset)
    pf.mkfs(str(path), fat, size=PART_SIZE, label="bootfs")
    pf.close()
    mbr = bytearray(512)
    mbr[446:462] = bytes([0, 0, 0, 0, 0x0C if fat == PyFat.FAT_TYPE_FAT32 else 0x0E, 0, 0, 0]) + \
        struct.pack("<II", PART_START, PART_SIZE // 512)
    mbr[510:512] = b"\x55\xaa"
    with path.open("r+b") as f:
        f.write(mbr)
    fs = PyFatFS(str(path), offset=offset)
    for name, text in files.items():
        fs.writetext("/" + name, text)
    fs.close()
    return path


def read_image(path: Path) -> dict[str, bytes]:
    """Every file of the image's FAT partition."""
    fs = PyFatFS(str(path), offset=PART_START * 512, read_only=True)
    try:
        return {p.lstrip("/"): fs.readbytes(p) for p in fs.walk.files("/")}
    finally:
        fs.close()
