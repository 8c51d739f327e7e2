"""The outbox: durable, bounded, ordered, counted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from broker.outbox import Outbox, OutboxMessage
from schemas.errors import OutboxError


def msg(i: int, size: int = 10) -> OutboxMessage:
    return OutboxMessage("edgebus/dev/metrics", bytes([i % 256]) * size)


def test_fifo_order_and_ack(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    ids = [box.put(msg(i)) for i in range(5)]
    assert ids == sorted(ids) and None not in ids
    rows = box.peek(limit=3)
    assert [r.message.payload[0] for r in rows] == [0, 1, 2]
    assert [r.message.payload[0] for r in box.peek(after_id=rows[-1].id)] == [3, 4]
    box.ack([rows[0].id, rows[1].id])
    assert len(box) == 3
    box.ack([rows[0].id])  # an ack can arrive twice: ignored
    assert len(box) == 3
    assert [r.message.payload[0] for r in box.peek()] == [2, 3, 4]


def test_survives_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    for i in range(3):
        box.put(msg(i))
    box.close()
    again = Outbox(tmp_path / "o.db")
    assert len(again) == 3
    assert again.size_bytes == 3 * (10 + len("edgebus/dev/metrics"))


def test_survives_kill_9(tmp_path: Path) -> None:
    """Rows committed before the process is killed are there afterwards."""
    db = tmp_path / "o.db"
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from broker.outbox import Outbox, OutboxMessage
        box = Outbox({str(db)!r})
        for i in range(50):
            box.put(OutboxMessage("t/x", str(i).encode()))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -9
    box = Outbox(db)
    assert [r.message.payload for r in box.peek(limit=100)] == [str(i).encode() for i in range(50)]


def test_bounds_refuse_and_count(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_messages=3)
    assert all(box.put(msg(i)) for i in range(3))
    assert box.put(msg(9)) is None
    assert box.dropped == 1 and len(box) == 3
    box.ack([box.peek(limit=1)[0].id])
    assert box.put(msg(10)) is not None

    by_bytes = Outbox(None, max_bytes=100)
    big = OutboxMessage("t", b"x" * 60)
    assert by_bytes.put(big) is not None
    assert by_bytes.put(big) is None
    assert by_bytes.dropped == 1


def test_sequence_reservation_is_atomic_with_put(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    with box.transaction() as tx:
        assert tx.reserve_sequence(10) == 0
        tx.put(msg(0))
    with pytest.raises(RuntimeError), box.transaction() as tx:
        assert tx.reserve_sequence(5) == 10
        tx.put(msg(1))
        raise RuntimeError("crash before commit")
    assert len(box) == 1
    with box.transaction() as tx:
        assert tx.reserve_sequence(1) == 10  # the rolled-back reservation is reused
    box.close()
    with Outbox(tmp_path / "o.db").transaction() as tx:
        assert tx.reserve_sequence(1) == 11


def test_meta_default_is_sticky(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    assert box.set_meta_default("epoch", 5) == 5
    assert box.set_meta_default("epoch", 9) == 5
    assert box.meta("epoch") == 5
    assert box.meta("missing") is None


def test_unopenable_path_is_an_outbox_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutboxError, match="cannot open outbox"):
        Outbox(blocker / "o.db")


def test_message_validates_itself() -> None:
    with pytest.raises(ValueError, match="qos"):
        OutboxMessage("t", b"", qos=3)
    with pytest.raises(TypeError, match="bytes"):
        OutboxMessage("t", "text")  # type: ignore[arg-type]
