"""Raft paper, Figure 8: a leader must not commit an entry of an earlier term by counting replicas.

Scripted step by step (max one entry per append, so the old entry and the new
leader's no-op travel separately). The correct node keeps the old entry
uncommitted; a variant that commits it by counting loses a committed entry.
"""

from __future__ import annotations

from collections.abc import Callable

from protocols.raft import AppendRequest, Message, RaftConfig, RaftNode, Role, TimeoutNow
from protocols.sim import AppendRegister, DurableStore, SplitMix64

IDS = ["a", "b", "c", "d", "e"]
CFG = RaftConfig(election_ticks=10, heartbeat_ticks=2, max_entries_per_append=1)


class CountsOldTerms(RaftNode):
    def _commit_allowed(self, index: int) -> bool:
        return True


class Script:
    def __init__(self, cls: type[RaftNode]) -> None:
        self.cls = cls
        self.stores = {i: DurableStore() for i in IDS}
        self.sms: dict[str, AppendRegister] = {}
        self.nodes: dict[str, RaftNode] = {}
        self.queue: list[Message] = []
        for n, i in enumerate(IDS):
            self.sms[i] = AppendRegister()
            self.nodes[i] = cls(i, IDS, self.sms[i], SplitMix64(n), CFG)

    def flush(self, i: str) -> None:
        while not (rd := self.nodes[i].ready()).empty:
            self.queue.extend(rd.early_messages)
            self.stores[i].persist(rd)
            self.nodes[i].advance(rd)
            self.queue.extend(rd.messages)

    def run(self, allow: Callable[[Message], bool], rounds: int = 50) -> None:
        """Deliver allowed messages until quiet; others are dropped."""
        for _ in range(rounds):
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for m in batch:
                if allow(m):
                    self.nodes[m.dst].step(m)
                    self.flush(m.dst)

    def elect(self, i: str, voters: set[str]) -> None:
        for _ in range(3):  # a stale node's first campaign may only catch up on the term
            self.nodes[i].step(TimeoutNow("script", i, self.nodes[i].term))
            self.flush(i)
            self.run(lambda m: {m.src, m.dst} <= voters and not isinstance(m, AppendRequest), rounds=4)
            if self.nodes[i].role is Role.LEADER:
                break
        assert self.nodes[i].role is Role.LEADER
        self.queue.clear()  # the new leader's first appends are dropped

    def restart(self, i: str) -> None:
        self.sms[i] = AppendRegister()
        self.nodes[i] = self.cls(i, IDS, self.sms[i], SplitMix64(99), CFG, self.stores[i].load())

    def play(self) -> list[bytes]:
        """Run the scenario; return what ``a`` had applied when it crashed the second time."""
        every = set(IDS)
        self.elect("a", every)
        self.nodes["a"].propose(b"base", "c", 1)
        self.flush("a")
        self.run(lambda m: True)
        self.nodes["a"].tick(), self.nodes["a"].tick()  # heartbeat spreads the commit index
        self.flush("a")
        self.run(lambda m: True)
        # (a) a appends X in its term and it reaches only b
        self.nodes["a"].propose(b"X", "c", 2)
        self.flush("a")
        self.run(lambda m: {m.src, m.dst} == {"a", "b"})
        self.queue.clear()
        # (b) a crashes; e wins with c, d and appends its no-op nobody else sees
        self.restart("a")
        self.elect("e", {"c", "d", "e"})
        # (c) e crashes; a restarts and wins with b, c; it sends X (alone) to c: now on a majority
        self.restart("e")
        self.elect("a", {"a", "b", "c"})
        a = self.nodes["a"]
        x_index = next(i for i in range(1, a.log.last_index + 1) if a.log.entry(i).command == b"X")
        for peer in ("b", "c"):  # replicate from X on, one entry per message
            a._progress[peer].next = x_index
            a._send_append(peer)
        self.flush("a")
        pair = {"a", "b", "c"}
        self.run(lambda m: {m.src, m.dst} <= pair and m.src == "a", rounds=1)  # X reaches b and c
        self.run(lambda m: {m.src, m.dst} <= pair and m.dst == "a", rounds=1)  # their acks reach a
        self.queue.clear()
        # (d) a crashes before its own no-op spreads; e wins with c, d and overwrites X
        applied_by_a = list(self.sms["a"].items)
        self.restart("a")
        self.elect("e", {"c", "d", "e"})
        self.run(lambda m: True)
        for _ in range(6):
            for n in IDS:
                self.nodes[n].tick()
                self.flush(n)
            self.run(lambda m: True)
        return applied_by_a


def test_correct_node_does_not_commit_the_old_entry_by_counting() -> None:
    script = Script(RaftNode)
    applied_by_a = script.play()
    assert b"X" not in applied_by_a
    final = {i: s.items for i, s in script.sms.items()}
    assert all(items == final["e"] for items in final.values()), final
    assert b"X" not in final["e"]  # overwritten, which is fine: it was never committed


def test_counting_old_terms_loses_a_committed_entry() -> None:
    script = Script(CountsOldTerms)
    applied_by_a = script.play()
    assert b"X" in applied_by_a  # the broken leader committed and applied X ...
    assert b"X" not in script.sms["e"].items  # ... and the next leader erased it
