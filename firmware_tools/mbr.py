"""Find the FAT boot partition of a disk image from its MBR partition table."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import ConfigError

__all__ = ["FAT_TYPES", "Partition", "find_boot_partition", "read_partitions"]

SECTOR = 512
#: MBR partition type bytes of FAT12/16/32 file systems (CHS and LBA variants).
FAT_TYPES = frozenset({0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E})
_GPT_PROTECTIVE = 0xEE


@dataclass(frozen=True, slots=True)
class Partition:
    index: int  # 1-4
    type: int
    offset: int  # bytes from the start of the image
    size: int  # bytes


def read_partitions(image: Path) -> list[Partition]:
    """The used primary partitions of ``image``."""
    try:
        with image.open("rb") as f:
            mbr = f.read(SECTOR)
    except OSError as exc:
        raise ConfigError(f"cannot read image {image}: {exc}") from exc
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise ConfigError(f"{image} has no MBR partition table (no 0x55AA signature)")
    parts = []
    for i in range(4):
        entry = mbr[446 + 16 * i: 446 + 16 * (i + 1)]
        ptype = entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if ptype and count:
            parts.append(Partition(i + 1, ptype, start * SECTOR, count * SECTOR))
    return parts


def find_boot_partition(image: Path) -> Partition:
    """The first FAT partition; GPT images (Jetson) are refused with a clear message."""
    parts = read_partitions(image)
    if any(p.type == _GPT_PROTECTIVE for p in parts):
        raise ConfigError(f"{image} uses GPT (a Jetson image?); only MBR images like Raspberry Pi OS "
                          "can be seeded; see firmware_tools.image for the Jetson path")
    size = image.stat().st_size
    for part in parts:
        if part.type in FAT_TYPES:
            if part.offset + part.size > size:
                raise ConfigError(f"{image}: partition {part.index} runs past the end of the image")
            return part
    raise ConfigError(f"{image}: no FAT partition in the MBR (types found: "
                      f"{', '.join(hex(p.type) for p in parts) or 'none'})")
