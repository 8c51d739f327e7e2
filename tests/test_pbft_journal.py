"""The replica process's vote journal: what it signed survives a restart, a torn tail is tolerated."""

from __future__ import annotations

from pathlib import Path

from broker.bft.journal import VoteJournal
from protocols.pbft import DecisionLog, Replica
from protocols.pbft.messages import Commit, Evidence
from tests.pbft_harness import Harness
from tests.test_pbft_unit import KEYS, op, signed


def test_votes_view_and_evidence_come_back(tmp_path: Path) -> None:
    path = tmp_path / "g-r1.votes"
    j = VoteJournal(path)
    ev = Evidence(signed(Commit(0, 1, b"\x01" * 32), "r2"), signed(Commit(0, 1, b"\x02" * 32), "r2"))
    j.record({("prepare", 0, 1): b"\x07" * 32}, 3, {"r2": ev})
    j.record({("prepare", 0, 1): b"\x07" * 32, ("commit", 0, 1): b"\x07" * 32}, 3, {"r2": ev})
    j.close()
    with path.open("ab") as f:
        f.write(b"\x95\xa4vote")  # a record torn by a crash
    back = VoteJournal(path)
    assert back.votes == {("prepare", 0, 1): b"\x07" * 32, ("commit", 0, 1): b"\x07" * 32}
    d = back.durable()
    assert d.view == 3 and d.in_view_change and [e.first.signer for e in d.evidence] == ["r2"]
    back.compact({("commit", 0, 1): b"\x07" * 32})
    back.close()
    assert VoteJournal(path).votes == {("commit", 0, 1): b"\x07" * 32}


def test_a_restarted_replica_finds_the_later_view_the_group_works_in() -> None:
    h = Harness(view_change_ticks=4, checkpoint_interval=2, window=4, clients=1)
    h.down.add("r0")
    h.submit("c0", op("k", "a"))
    h.tick(8)
    assert all(h.replicas[r].view == 1 for r in ("r1", "r2", "r3"))
    # r0 comes back knowing nothing: the first prepares and commits of view 1 it sees from f+1
    # replicas make it ask to join (well before its own request timer of 4 ticks would)
    h.replicas["r0"] = Replica(h.cfg, DecisionLog(), KEYS.signer("r0"), KEYS)
    h.down.clear()
    h.submit("c0", op("k", "b"))
    h.tick(1)
    r0 = h.replicas["r0"]
    assert r0.view == 1 and not r0.in_view_change
    # what it missed before coming back arrives with the next stable checkpoint (state transfer)
    for i in range(4):
        h.submit("c0", op("k", f"c{i}"))
        h.tick(3)
    assert r0.last_exec >= h.replicas["r1"].low > 0


def test_a_restarted_replica_resumes_from_the_stable_checkpoint_on_its_disk(tmp_path: Path) -> None:
    h = Harness(checkpoint_interval=2, window=4, clients=1)
    for i in range(5):
        h.submit("c0", op(f"k{i}", "v"))
        h.tick(3)
    r1 = h.replicas["r1"]
    seq, snapshot, proof = r1.stable_checkpoint()
    assert seq >= 2 and len(proof) >= h.cfg.quorum
    path = tmp_path / "g-r1.votes"
    j = VoteJournal(path)
    j.record(r1.votes(), r1.view, r1.quarantined)
    j.record_stable(seq, snapshot, proof)
    j.record_stable(seq - 1, b"older", ())  # never replaces a newer one
    j.close()
    sm = DecisionLog()
    back = Replica(h.cfg, sm, KEYS.signer("r1"), KEYS, VoteJournal(path).durable())
    # before hearing from anyone: the state up to the checkpoint is there, from disk
    assert back.last_exec == seq and back.stable_checkpoint() == (seq, snapshot, proof)
    assert sm.decisions and set(sm.decisions) <= set(r1.sm.decisions)  # type: ignore[attr-defined]
    h.replicas["r1"] = back
    for i in range(4):
        h.submit("c0", op(f"after{i}", "v"))
        h.tick(3)
    assert back.last_exec > seq and "after3" in sm.decisions


def test_an_unreadable_stable_checkpoint_falls_back_to_state_transfer(tmp_path: Path) -> None:
    path = tmp_path / "g-r1.votes"
    VoteJournal(path).close()
    path.with_name(path.name + ".stable").write_bytes(b"\x93garbage")
    assert VoteJournal(path).durable().stable_seq == 0
