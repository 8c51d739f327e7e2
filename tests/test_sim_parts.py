"""The simulator's own parts: PRNG, durable store, network fault model, register."""

from __future__ import annotations

from protocols.raft import Entry, HardState, Ready, Snapshot
from protocols.sim import AppendRegister, DurableStore, SplitMix64
from protocols.sim.network import CALM, Network, NetworkProfile


def test_prng_is_deterministic_and_forks_independently() -> None:
    a, b = SplitMix64(7), SplitMix64(7)
    assert [a.below(1000) for _ in range(20)] == [b.below(1000) for _ in range(20)]
    fa, fb = a.fork(), b.fork()
    fa.below(10)  # drawing from one fork does not shift the parent
    assert a.below(10**9) == b.below(10**9)
    assert fb.below(10**9) != SplitMix64(8).below(10**9)
    assert all(3 <= a.between(3, 5) <= 5 for _ in range(100))
    assert sorted(a.shuffled(range(10))) == list(range(10))


def test_store_replaces_the_log_tail_and_a_snapshot_replaces_the_log() -> None:
    s = DurableStore()
    s.persist(Ready(hard_state=HardState(1, "a", 0), entries=tuple(Entry(1, i) for i in range(1, 6))))
    s.persist(Ready(entries=(Entry(2, 4), Entry(2, 5), Entry(2, 6))))
    assert [(e.term, e.index) for e in s.load().entries] == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]
    snap = Snapshot(5, 2, ("a",), b"state")
    s.persist(Ready(snapshot=snap, entries=(Entry(2, 6),)))
    loaded = s.load()
    assert loaded.snapshot == snap and [e.index for e in loaded.entries] == [6]
    assert loaded.hard_state == HardState(1, "a", 0)
    s.persist(Ready(entries=(Entry(3, 7),)))
    assert [e.index for e in s.load().entries] == [6, 7]


def test_a_crash_loses_what_was_written_without_a_sync_until_a_synced_write_carries_it() -> None:
    s = DurableStore()
    s.persist(Ready(hard_state=HardState(1, "a", 0), entries=(Entry(1, 1), Entry(1, 2))))
    s.persist(Ready(hard_state=HardState(1, "a", 1), must_sync=False))
    s.crash()
    assert s.load().hard_state == HardState(1, "a", 0)  # the commit index is relearned, not needed
    s.persist(Ready(hard_state=HardState(1, "a", 2), must_sync=False))
    s.persist(Ready(entries=(Entry(1, 3),)))  # a synced write carries the earlier one (WAL order)
    s.crash()
    loaded = s.load()
    assert loaded.hard_state == HardState(1, "a", 2) and len(loaded.entries) == 3
    s.persist(Ready(hard_state=HardState(1, "a", 3), must_sync=False))
    assert s.load().hard_state == HardState(1, "a", 3)  # no crash: the page cache holds it


def test_network_partitions_and_calm_profile() -> None:
    net = Network(SplitMix64(1), CALM)
    assert all(len(net.delays("a", "b")) == 1 for _ in range(100))
    net.partition([["a"], ["b", "c"]])
    assert net.delays("a", "b") == [] and net.delays("b", "c") != []
    assert net.delays("x", "a") != [] and net.delays("x", "b") == []  # unnamed endpoints sit with group 0
    net.heal()
    assert net.connected("a", "b")
    lossy = Network(SplitMix64(2), NetworkProfile(loss=1.0))
    assert lossy.delays("a", "b") == []


def test_register_snapshot_roundtrip() -> None:
    r = AppendRegister()
    assert [r.apply(c) for c in (b"x", b"", b"yz")] == [b"1", b"2", b"3"]
    r2 = AppendRegister()
    r2.restore(r.snapshot())
    assert r2.items == [b"x", b"", b"yz"]
