"""The in-memory Raft log: a compacted prefix (snapshot index/term) and the entries after it."""

from __future__ import annotations

from collections.abc import Iterable

from protocols.raft.messages import Entry


class RaftLog:
    """Entries ``snapshot_index + 1 .. last_index``; earlier ones live only in the snapshot."""

    def __init__(
        self, snapshot_index: int = 0, snapshot_term: int = 0, entries: Iterable[Entry] = ()
    ) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self._entries: list[Entry] = []
        for e in entries:
            if e.index == self.last_index + 1:
                self._entries.append(e)
            elif e.index > self.last_index + 1:
                raise ValueError(f"gap in log: entry {e.index} after {self.last_index}")

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """The term of ``index``, or None when it is compacted away or beyond the end."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index:
            return None
        return self._entries[index - self.snapshot_index - 1].term

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.snapshot_index - 1]

    def entries(self, lo: int, hi: int | None = None) -> tuple[Entry, ...]:
        """Entries ``lo..hi`` inclusive (``hi`` defaults to the last); ``lo`` must not be compacted."""
        if lo <= self.snapshot_index:
            raise IndexError(f"entry {lo} is compacted (snapshot at {self.snapshot_index})")
        end = self.last_index if hi is None else min(hi, self.last_index)
        return tuple(self._entries[lo - self.snapshot_index - 1 : end - self.snapshot_index])

    def append(self, entry: Entry) -> None:
        if entry.index != self.last_index + 1:
            raise ValueError(f"append at {entry.index}, expected {self.last_index + 1}")
        self._entries.append(entry)

    def merge(self, entries: Iterable[Entry]) -> int | None:
        """Append a leader's entries, truncating at the first conflict; return the first changed index."""
        changed: int | None = None
        for e in entries:
            if e.index <= self.snapshot_index:
                continue
            existing = self.term_at(e.index)
            if existing == e.term:
                continue
            if existing is not None:
                del self._entries[e.index - self.snapshot_index - 1 :]
            self.append(e)
            if changed is None:
                changed = e.index
        return changed

    def compact(self, index: int) -> None:
        """Drop entries up to ``index`` (which must be in the log) after a snapshot covers them."""
        term = self.term_at(index)
        if term is None:
            raise IndexError(f"cannot compact to {index}: not in the log")
        del self._entries[: index - self.snapshot_index]
        self.snapshot_index, self.snapshot_term = index, term

    def restore(self, index: int, term: int) -> None:
        """Install a snapshot: keep the suffix only if the log agrees with it at ``index``."""
        if self.term_at(index) == term:
            self.compact(index)
            return
        self._entries.clear()
        self.snapshot_index, self.snapshot_term = index, term

    def is_up_to_date(self, last_term: int, last_index: int) -> bool:
        """Election restriction: a candidate's log at least as up to date as ours."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of equal terms ending at ``index`` (not below the snapshot)."""
        term = self.term_at(index)
        while index - 1 > self.snapshot_index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int, upto: int) -> int | None:
        """The highest index <= ``upto`` holding ``term``, if the uncompacted log has one."""
        i = min(upto, self.last_index)
        while i > self.snapshot_index:
            t = self.term_at(i)
            assert t is not None
            if t == term:
                return i
            if t < term:
                return None
            i -= 1
        return None
