"""Unpacking an agent bundle (tar.gz) so that nothing lands outside its folder.

The archive is signed, but a signing key can leak and a publisher can err, and
a member named ``../../etc/cron.d/x`` or a symlink to ``/`` would turn an
update into a root shell. Every member is checked before anything is written:
regular files, directories and links that stay inside are all that is
allowed. Python's own ``data`` filter (3.11.4+) then applies the same rules
again and drops set-uid bits.
"""

from __future__ import annotations

import posixpath
import shutil
import tarfile
from pathlib import Path

from schemas.errors import UpdateFailed
from schemas.ota import Phase

__all__ = ["check_member", "safe_extract"]

_REASON = "unsafe_archive"


def _inside(name: str) -> bool:
    """``name`` (a POSIX path relative to the extraction root) stays inside it."""
    if not name or name.startswith("/") or "\\" in name:
        return False
    normal = posixpath.normpath(name)
    return normal != ".." and not normal.startswith("../") and not posixpath.isabs(normal)


def check_member(member: tarfile.TarInfo) -> None:
    """Refuse a member that is absolute, climbs out, links out, or is a device or fifo."""
    name = member.name
    if not _inside(name) or ".." in name.split("/"):
        raise UpdateFailed(_REASON, f"archive member {name!r} would land outside the bundle", Phase.REFUSED)
    if member.issym():
        target = posixpath.join(posixpath.dirname(name), member.linkname)
        if posixpath.isabs(member.linkname) or not _inside(target):
            raise UpdateFailed(_REASON, f"archive link {name!r} -> {member.linkname!r} points outside "
                                        "the bundle", Phase.REFUSED)
    elif member.islnk():
        if not _inside(member.linkname) or ".." in member.linkname.split("/"):
            raise UpdateFailed(_REASON, f"archive hard link {name!r} -> {member.linkname!r} points "
                                        "outside the bundle", Phase.REFUSED)
    elif not (member.isfile() or member.isdir()):
        raise UpdateFailed(_REASON, f"archive member {name!r} is a device or fifo", Phase.REFUSED)


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` (replaced if present) after checking every member."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                check_member(member)
            unpacked = sum(m.size for m in members if m.isfile())
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            free = shutil.disk_usage(dest).free
            if unpacked > free:
                raise UpdateFailed("disk_full", f"the bundle unpacks to {unpacked} bytes; {free} are free")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4: the checks above are all there is
                tar.extractall(dest, members=members)
    except UpdateFailed:
        raise
    except tarfile.FilterError as exc:
        raise UpdateFailed(_REASON, f"archive refused by the data filter: {exc}", Phase.REFUSED) from exc
    except (tarfile.TarError, EOFError) as exc:
        raise UpdateFailed("bad_archive", f"not a readable tar archive: {exc}", Phase.REFUSED) from exc
    except OSError as exc:
        raise UpdateFailed("install_failed", f"cannot unpack the bundle: {exc}") from exc
