"""Which camera sources a command may name: the device's own allow-list, nothing else.

An ``assign`` (or a camera moved here by two-phase commit) comes over the bus;
without a check it could point OpenCV at ``/etc/shadow``, ``/root`` or
``http://169.254.169.254/latest/meta-data`` and the agent would read or fetch it.
The operator's ``[commands]`` table (:class:`~agents.config.CommandsConfig`)
allows:

* ``camera_devices``: glob patterns of device paths (default ``["/dev/video*"]``);
  a device index ``N`` counts as ``/dev/videoN``;
* ``camera_folders``: folders whose files and subfolders may be sources (default
  none); a path is resolved first (a symlink out of the folder is refused),
  ``file://`` URLs are paths, and ``/etc``, ``/root``, ``/proc``, ``/sys`` and
  ``/boot`` are refused even inside an allowed folder;
* ``camera_urls``: URL prefixes (default ``["rtsp://", "rtsps://"]``), matched
  against the URL without its credentials (``rtsp://user:pw@10.0.0.5/s`` as
  ``rtsp://10.0.0.5/s``); a prefix cut inside an address (``rtsp://10.0.0.``)
  fits addresses only, not a name such as ``10.0.0.5.evil.example``. A host
  that is link-local (169.254.0.0/16, fe80::/10) or a cloud metadata address
  is refused unless the prefix that allows the URL names that very host; a
  host name is resolved once and its addresses checked the same way (a name
  that resolves differently when OpenCV opens it is not caught: allow only
  prefixes you trust).

Cameras in the operator's own ``[[cameras]]`` are not checked: the file is the
operator's word. The detector's ``model`` path of an assigned camera must lie
in an allowed folder or in the models shipped with the agent.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from agents.config import CommandsConfig
from schemas.errors import CommandRefused

__all__ = ["DENIED_FOLDERS", "SourcePolicy"]

#: Refused even inside an allowed folder: secrets and kernel interfaces, never camera footage.
DENIED_FOLDERS: Final = (Path("/etc"), Path("/root"), Path("/proc"), Path("/sys"), Path("/boot"))
_METADATA_HOSTS: Final = frozenset({"metadata", "metadata.google.internal", "instance-data",
                                    "instance-data.ec2.internal", "metadata.azure.internal"})
_METADATA_ADDRESSES: Final = frozenset({ipaddress.ip_address("169.254.169.254"),
                                        ipaddress.ip_address("fd00:ec2::254"),
                                        ipaddress.ip_address("100.100.100.200"),
                                        ipaddress.ip_address("169.254.170.2")})
_SHIPPED_MODELS: Final = Path(__file__).resolve().parent.parent / "models"
_REFUSED: Final = "source_not_allowed"


def _sensitive(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return ip.is_link_local or ip in _METADATA_ADDRESSES


class SourcePolicy:
    """Checks a camera table from the bus against ``[commands]``; raises CommandRefused."""

    def __init__(self, limits: CommandsConfig, *,
                 resolve: Any = socket.getaddrinfo) -> None:
        self.limits = limits
        self.folders = tuple(Path(f).expanduser().resolve() for f in limits.camera_folders)
        self._resolve = resolve

    def check_table(self, table: Mapping[str, Any]) -> None:
        """Refuse a table whose source or detector model the allow-list does not cover."""
        source = table.get("source")
        if isinstance(source, bool) or not isinstance(source, int | str):
            return  # the camera's strict reader says what is wrong with it
        self.check_source(source)
        detector = table.get("detector")
        model = detector.get("model") if isinstance(detector, Mapping) else None
        if isinstance(model, str) and not self._in_folders(model, (*self.folders, _SHIPPED_MODELS)):
            raise CommandRefused(_REFUSED, f"detector model {model!r} is not in [commands] camera_folders "
                                           "or the agent's own models")

    def check_source(self, source: int | str) -> None:
        if isinstance(source, int) or source.isdigit():
            self._device(f"/dev/video{int(source)}", source)
        elif "://" in source:
            self._url(source)
        elif source.startswith("/dev/"):
            self._device(source, source)
        elif not self._in_folders(source, self.folders):
            raise CommandRefused(_REFUSED, f"camera source {source!r} is not in [commands] camera_folders "
                                           f"({', '.join(map(str, self.folders)) or 'none allowed'})")

    def _device(self, path: str, shown: int | str) -> None:
        normal = os.path.normpath(path)
        if normal != path.rstrip("/") or not any(fnmatch.fnmatchcase(normal, p)
                                                 for p in self.limits.camera_devices):
            raise CommandRefused(_REFUSED, f"camera device {shown!r} is not in [commands] camera_devices "
                                           f"({', '.join(self.limits.camera_devices) or 'none allowed'})")

    def _in_folders(self, source: str, folders: tuple[Path, ...]) -> bool:
        try:
            path = Path(source).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            return False
        if any(path == d or d in path.parents for d in DENIED_FOLDERS):
            return False
        return any(path == f or f in path.parents for f in folders)

    def _url(self, source: str) -> None:
        try:
            parts = urlsplit(source)
            host = (parts.hostname or "").lower()
            port = parts.port
        except ValueError:
            raise CommandRefused(_REFUSED, "camera source URL does not parse") from None
        scheme = parts.scheme.lower()
        if scheme == "file":
            path = unquote(parts.path)
            if parts.netloc not in ("", "localhost") or not self._in_folders(path, self.folders):
                raise CommandRefused(_REFUSED, f"camera source file URL {path!r} is not in [commands] "
                                               "camera_folders")
            return
        hostport = host if port is None else f"{host}:{port}"
        if ":" in host:
            hostport = f"[{host}]" if port is None else f"[{host}]:{port}"
        bare = f"{scheme}://{hostport}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        allowing = [p for p in self.limits.camera_urls if _fits(p, bare, host)]
        if not allowing:
            allowed = ", ".join(self.limits.camera_urls) or "none allowed"
            raise CommandRefused(_REFUSED, f"camera source URL {scheme}://{hostport}/... is not under a "
                                           f"[commands] camera_urls prefix ({allowed})")
        if any(_names_host(p, host) for p in allowing):
            return  # the operator named this very host
        if host in _METADATA_HOSTS or _sensitive(host):
            raise CommandRefused(_REFUSED, f"camera source host {host} is link-local or a metadata service; "
                                           "allow it only with a camera_urls prefix that names it")
        try:
            infos = self._resolve(host, port or 0, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return  # does not resolve now: OpenCV's open fails the same way
        if any(_sensitive(str(info[4][0])) for info in infos):
            raise CommandRefused(_REFUSED, f"camera source host {host} resolves to a link-local or metadata "
                                           "address; allow it only with a camera_urls prefix that names it")


def _fits(prefix: str, url: str, host: str) -> bool:
    """``url`` starts with ``prefix``; a prefix cut inside an address (``rtsp://10.0.0.``) fits
    only an address, not the name ``10.0.0.5.evil.example``."""
    if not url.startswith(_lower_head(prefix)):
        return False
    authority = prefix.partition("://")[2]
    if "/" in authority or ":" in authority:
        return True  # the prefix's host is whole
    if authority and all(c.isdigit() or c == "." for c in authority):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
    return True


def _lower_head(prefix: str) -> str:
    """The prefix with scheme and host lower-cased, as :meth:`SourcePolicy._url` writes URLs."""
    head, sep, rest = prefix.partition("://")
    if not sep:
        return prefix.lower()
    host, slash, path = rest.partition("/")
    return f"{head.lower()}://{host.lower()}{slash}{path}"


def _names_host(prefix: str, host: str) -> bool:
    """Whether ``prefix`` names ``host`` whole (``http://169.254.10.5/``), not a part (``http://169.254.``)."""
    try:
        return (urlsplit(prefix).hostname or "").lower() == host != ""
    except ValueError:
        return False
