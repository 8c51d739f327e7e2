"""Work functions: what a SQL participant does with its part of a transaction's payload.

A work function ``work(connection, payload)`` makes the transaction's writes
on ``connection`` (a SQLAlchemy ``Connection`` inside a transaction the
resource opened) and raises to refuse: the message becomes the no vote's
reason. It must not commit, roll back or end the transaction itself, and it
may run more than once for one transaction (SQLite runs it as a dry run at
prepare and again at commit), so it must depend only on the payload and the
database.

:func:`statements_work` is the general one that ``edge-bus tx`` and the tests
use: the payload is a msgpack list of ``[sql_text, params_map]`` pairs, each
run as one bound statement (``sa.text``: ``:name`` placeholders; write a
PostgreSQL cast ``::int`` as ``\\:\\:int``).

Trust: the payload is SQL run with the participant's database role. Whoever
can make the participant prepare can run it: the group, which relays the
parts that clients put in their ``BeginRequest``. So the broker's ACL must
let only the group's nodes write the participant's topic
(``{root}/_sys/tx/{group}/to/{participant}``) and only trusted clients write
the group's topic (``{root}/_sys/tx/{group}/group``); give the participant a
database role that can do no more than the transactions need, or write a
narrower work function (one that takes a record and writes it) where clients
are less trusted.

>>> payload = encode_statements([("UPDATE stock SET n = n - :k WHERE item = :item", {"k": 1, "item": "a"})])
>>> decode_statements(payload)
[('UPDATE stock SET n = n - :k WHERE item = :item', {'k': 1, 'item': 'a'})]
>>> decode_statements(encode_statements([("COMMIT", {})]))
Traceback (most recent call last):
...
schemas.errors.TxError: statement 0 is COMMIT: transaction control belongs to the resource
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgpack

from schemas.errors import TxError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["Work", "decode_statements", "encode_statements", "statements_work"]

#: ``work(connection, payload)``: the transaction's writes; raise to refuse.
Work = Callable[["Connection", bytes], None]

MAX_STATEMENTS = 1000
# Statements that would end, nest or reconfigure the transaction the resource holds open
# (a COMMIT in the work would make it permanent before the vote; SET could lift lock_timeout).
_CONTROL = frozenset({
    "ABORT", "ATTACH", "BEGIN", "COMMIT", "DETACH", "DISCARD", "END", "PRAGMA", "PREPARE", "RELEASE",
    "RESET", "ROLLBACK", "SAVEPOINT", "SET", "START", "VACUUM",
})
_LEADING = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_KEYWORD = re.compile(r"[A-Za-z]+")


def encode_statements(statements: Iterable[tuple[str, Mapping[str, Any]]]) -> bytes:
    """The payload of ``statements`` (``(sql_text, params)`` pairs), checked as the participant checks it."""
    payload: bytes = msgpack.packb([[sql, dict(params)] for sql, params in statements], use_bin_type=True)
    decode_statements(payload)
    return payload


def _check_statement(index: int, sql: str) -> None:
    body = sql.strip().removesuffix(";")
    if not body.strip():
        raise TxError(f"statement {index} is empty")
    if ";" in body:
        raise TxError(f"statement {index} holds a ';' before its end: one statement per entry "
                      "(pass values that contain ';' as parameters)")
    leading = _LEADING.match(body)
    keyword = _KEYWORD.match(body[leading.end() if leading else 0:])
    if keyword is not None and keyword.group().upper() in _CONTROL:
        raise TxError(f"statement {index} is {keyword.group().upper()}: "
                      "transaction control belongs to the resource")


def decode_statements(payload: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The ``(sql_text, params)`` pairs in ``payload``; TxError when it is not such a list."""
    try:
        items = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise TxError(f"the payload is not msgpack: {exc}") from None
    if not isinstance(items, list):
        raise TxError(f"the payload must be a list of [sql, params] pairs, not {type(items).__name__}")
    if len(items) > MAX_STATEMENTS:
        raise TxError(f"the payload holds {len(items)} statements; the limit is {MAX_STATEMENTS}")
    statements: list[tuple[str, dict[str, Any]]] = []
    for index, item in enumerate(items):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], dict)):
            raise TxError(f"statement {index} must be [sql_text, params_map]")
        sql, params = item
        if not all(isinstance(key, str) for key in params):
            raise TxError(f"statement {index}: parameter names must be strings")
        _check_statement(index, sql)
        statements.append((sql, params))
    return statements


def statements_work(connection: Connection, payload: bytes) -> None:
    """Run the statements of ``payload`` in order on ``connection``; the first failure refuses."""
    import sqlalchemy as sa  # here, so that a client that only encodes payloads needs no SQLAlchemy

    for sql, params in decode_statements(payload):
        connection.execute(sa.text(sql), params)
