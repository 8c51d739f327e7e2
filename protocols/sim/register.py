"""An append-only register: the simplest state machine that shows lost or doubled commands."""

from __future__ import annotations


class AppendRegister:
    """Appends each command; the result is the register's new length (so a client learns its slot)."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def apply(self, command: bytes) -> bytes:
        self.items.append(command)
        return str(len(self.items)).encode()

    def snapshot(self) -> bytes:
        return b"".join(len(c).to_bytes(4, "big") + c for c in self.items)

    def restore(self, data: bytes) -> None:
        self.items = []
        i = 0
        while i < len(data):
            n = int.from_bytes(data[i : i + 4], "big")
            self.items.append(data[i + 4 : i + 4 + n])
            i += 4 + n
