"""PostgreSQL global transaction ids (gids) for one participant's prepared transactions.

A gid reads ``edgebus-tx:{participant}:{tx id}``, each part percent-encoded
(only ``A-Z a-z 0-9 _ . - ~`` stay as they are), so ``:`` separates the parts
without ambiguity and the gid is safe to write as a SQL string literal
(``PREPARE TRANSACTION`` takes no bind parameters). PostgreSQL allows 199
bytes; ids may be 128 characters of any script, so a part that would not fit
is replaced by ``#`` and its SHA-256: a participant part always the same way
(the prefix stays fixed, so ``prepared_ids`` filters by it), a transaction part
only when the whole gid would be too long. A hashed transaction part cannot be
read back; :mod:`broker.twopc.sql_prepared` keeps it in a mapping table.

>>> gids = GidCodec("db-1")
>>> gids.encode("t-42")
'edgebus-tx:db-1:t-42'
>>> gids.encode("a:b c")
'edgebus-tx:db-1:a%3Ab%20c'
>>> gids.decode(gids.encode("a:b c"))
'a:b c'
>>> long_gid = gids.encode("ü" * 128)
>>> long_gid.startswith("edgebus-tx:db-1:#"), gids.decode(long_gid), gids.is_hashed(long_gid)
(True, None, True)
>>> GidCodec("db-1:x").prefix, gids.owns("edgebus-tx:db-1%3Ax:t-42")
('edgebus-tx:db-1%3Ax:', False)
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote, unquote

__all__ = ["GID_NAMESPACE", "MAX_GID_BYTES", "GidCodec"]

GID_NAMESPACE = "edgebus-tx"
#: PostgreSQL's GIDSIZE is 200 bytes including the terminating NUL.
MAX_GID_BYTES = 199
#: A participant part longer than this (encoded) is hashed, leaving room for the transaction part.
MAX_PARTICIPANT_PART = 64
_HASHED = "#"
# Every character quote(safe="") can produce, plus the separators; nothing that needs SQL quoting.
_GID_CHARS = re.compile(r"^[A-Za-z0-9_.~%:#-]+$")


def _part(text: str) -> str:
    return quote(text, safe="")


def _digest(text: str) -> str:
    return _HASHED + hashlib.sha256(text.encode()).hexdigest()


class GidCodec:
    """The gids of participant ``participant_id``: encode, decode, and the prefix they all share."""

    def __init__(self, participant_id: str) -> None:
        part = _part(participant_id)
        if len(part) > MAX_PARTICIPANT_PART:
            part = _digest(participant_id)[:33]
        self.prefix = f"{GID_NAMESPACE}:{part}:"

    def encode(self, tx_id: str) -> str:
        """The gid of ``tx_id``: readable when it fits, else with the transaction part hashed."""
        gid = self.prefix + _part(tx_id)
        if len(gid) > MAX_GID_BYTES:
            gid = self.prefix + _digest(tx_id)
        if not _GID_CHARS.match(gid):  # cannot happen: quote() escapes everything else
            raise AssertionError(f"gid {gid!r} has characters that need quoting")
        return gid

    def owns(self, gid: str) -> bool:
        """Whether ``gid`` is one of this participant's."""
        return gid.startswith(self.prefix)

    def is_hashed(self, gid: str) -> bool:
        return gid.startswith(self.prefix + _HASHED)

    def decode(self, gid: str) -> str | None:
        """The transaction id in ``gid``; None when the part is hashed (look it up) or not a gid we make."""
        if not self.owns(gid) or self.is_hashed(gid):
            return None
        try:
            tx_id = unquote(gid[len(self.prefix):], errors="strict")
        except UnicodeDecodeError:
            return None
        return tx_id if tx_id and self.encode(tx_id) == gid else None
