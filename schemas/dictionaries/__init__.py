"""The zstd dictionaries shipped with edgebus, by id.

Dictionary ``N`` is the file ``N.zdict`` next to this module. An envelope names
the dictionary its body was compressed with, so ids are never reused: a device
that only knows dictionary 1 can always read what was written with it. How the
files are made, and how to add one, is in ``README.md`` here.
"""

from __future__ import annotations

import functools
import importlib.resources
import struct

from schemas.errors import CodecError, UnsupportedVersion

__all__ = ["DEFAULT_DICTIONARY_ID", "load_dictionary", "shipped_dictionary_ids"]

# The dictionary new envelopes are compressed with unless a codec is told otherwise.
DEFAULT_DICTIONARY_ID = 1

_SUFFIX = ".zdict"
# A zstd dictionary starts with this magic and its id (both little-endian uint32).
_ZDICT_MAGIC = 0xEC30A437
_ZDICT_HEAD = struct.Struct("<II")


@functools.cache
def shipped_dictionary_ids() -> frozenset[int]:
    """The ids of every dictionary file shipped in this package."""
    ids = set()
    for entry in importlib.resources.files(__name__).iterdir():
        stem = entry.name.removesuffix(_SUFFIX)
        if entry.name.endswith(_SUFFIX) and stem.isdigit():
            ids.add(int(stem))
    return frozenset(ids)


@functools.cache
def load_dictionary(dict_id: int) -> bytes:
    """The raw bytes of shipped dictionary ``dict_id``.

    Raises :class:`UnsupportedVersion` for an id this build does not ship (a
    newer device may use a newer dictionary).
    """
    if dict_id not in shipped_dictionary_ids():
        known = ", ".join(str(i) for i in sorted(shipped_dictionary_ids())) or "none"
        raise UnsupportedVersion(f"zstd dictionary {dict_id} is not shipped with this edgebus "
                                 f"(it has: {known}); upgrade the receiving side")
    data = importlib.resources.files(__name__).joinpath(f"{dict_id}{_SUFFIX}").read_bytes()
    magic, embedded_id = _ZDICT_HEAD.unpack_from(data) if len(data) >= 8 else (0, 0)
    if magic != _ZDICT_MAGIC or embedded_id != dict_id:
        # The file name is what envelopes refer to; the id inside is what zstd checks.
        raise CodecError(f"{dict_id}{_SUFFIX} is not a zstd dictionary with id {dict_id}; "
                         "this edgebus installation is damaged")
    return data
