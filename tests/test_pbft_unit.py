"""PBFT scripted tests: records and their reader, signatures, evidence, bad input, view change, state
transfer, restart, and the n >= 3f+1 bound shown by a schedule where two liars of four break safety."""

from __future__ import annotations

import itertools
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.pbft import (
    DecisionLog,
    Ed25519Signer,
    Ed25519Verifier,
    Evidence,
    Executed,
    PbftConfig,
    Quarantined,
    Replica,
    StateInstalled,
    ViewEntered,
    decode_frame,
    encode_frame,
    offender,
)
from protocols.pbft.messages import (
    Checkpoint,
    Commit,
    Header,
    NewView,
    Prepare,
    PreparedProof,
    PrePrepare,
    Reply,
    Request,
    Signed,
    StateReply,
    StateRequest,
    ViewChange,
    batch_digest,
    encode_body,
)
from protocols.pbft.signing import SimKeys
from protocols.pbft.sim.checkers import agreement
from protocols.pbft.sim.cluster import Execution, PbftHistory
from schemas.errors import CodecError, PayloadTooLarge, UnsupportedVersion
from tests.pbft_harness import Harness

KEYS = SimKeys(["r0", "r1", "r2", "r3", "c0", "c1"], seed=1)


def signed(body: object, who: str, keys: SimKeys = KEYS) -> Signed:
    raw = encode_body(body)  # type: ignore[arg-type]
    return Signed(raw, who, keys.signer(who).sign(raw), body)  # type: ignore[arg-type]


def op(key: str, value: str) -> bytes:
    return json.dumps({"key": key, "value": value}).encode()


def executed(h: Harness, r: str) -> list[Executed]:
    return [e for e in h.events[r] if isinstance(e, Executed)]


# ------------------------------------------------------------------ records


def test_every_record_round_trips_through_the_one_reader() -> None:
    req = signed(Request("c0", 1, b"x"), "c0")
    hdr = signed(Header(0, 1, batch_digest((req,))), "r0")
    pp = PrePrepare(hdr, (req,))
    prep = signed(Prepare(0, 1, hdr.msg.digest, hdr), "r1")  # type: ignore[union-attr]
    ck = signed(Checkpoint(8, bytes(32)), "r2")
    vc = signed(ViewChange(1, 0, (), (PreparedProof(pp, (prep,)),)), "r1")
    frames: list[Signed | PrePrepare | Evidence] = [
        req, hdr, pp, prep, ck, vc,
        signed(Commit(0, 1, bytes(32)), "r2"), signed(Reply(0, "c0", 1, b"ok"), "r3"),
        signed(NewView(1, (vc,), (pp,)), "r1"), signed(StateRequest(8), "r3"),
        signed(StateReply(8, b"snap", (ck,)), "r2"),
        Evidence(ck, signed(Checkpoint(8, b"\x01" * 32), "r2")),
    ]
    for f in frames:
        assert decode_frame(encode_frame(f)) == f


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"\xff" * 10, encode_frame(signed(Commit(0, 1, bytes(32)), "r1"))[:-3],
    b"\x93\x01\xa1s\x93\xc4\x01x\xa2r1\xc4\x00",  # a body that is not a record
    b"\x93\x01\xa2zz\x90",  # unknown frame kind
])
def test_malformed_frames_raise_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_frame(data)


def test_unknown_versions_and_oversized_frames_are_refused_clearly() -> None:
    good = encode_frame(signed(Commit(0, 1, bytes(32)), "r1"))
    with pytest.raises(UnsupportedVersion):
        decode_frame(b"\x93\x02" + good[2:])
    with pytest.raises(PayloadTooLarge):
        decode_frame(good, max_bytes=10)


def test_records_validate_themselves() -> None:
    with pytest.raises(ValueError):
        Header(0, 1, b"short")
    with pytest.raises(ValueError):
        Request("", 1, b"")


def test_config_refuses_too_few_replicas() -> None:
    with pytest.raises(ValueError, match="3f\\+1"):
        PbftConfig(("a", "b", "c"))
    with pytest.raises(ValueError, match="3f\\+1"):
        PbftConfig(("a", "b", "c", "d"), f=2)
    assert PbftConfig(tuple("abcdefg")).f == 2


# ------------------------------------------------------------------ normal case, Ed25519


def test_four_replicas_with_ed25519_commit_and_the_client_accepts() -> None:
    ids = ["r0", "r1", "r2", "r3", "c0", "c1"]
    priv = {i: Ed25519PrivateKey.generate() for i in ids}
    verifier = Ed25519Verifier({i: k.public_key() for i, k in priv.items()})
    h = Harness(verifier=verifier)
    for i in ids:  # swap in real signers
        signer = Ed25519Signer(i, priv[i])
        if i in h.replicas:
            h.replicas[i] = Replica(h.cfg, DecisionLog(), signer, verifier)
        else:
            h.clients[i] = type(h.clients[i])(h.cfg, signer, verifier)
    h.submit("c0", op("model/g1", "v7"))
    h.pump()
    assert [json.loads(a.result)["decided"] for a in h.accepted["c0"]] == ["v7"]
    assert all(len(executed(h, r)) == 1 for r in h.ids)
    assert not verifier.verify("r0", b"x", b"\x00" * 64) and not verifier.knows("mallory")


def test_batching_puts_waiting_requests_in_one_pre_prepare() -> None:
    h = Harness(clients=6, max_inflight=1)
    for c in h.client_ids:
        h.submit(c, op("k", c))
    h.pump()
    seqs = {e.seq: len(e.results) for e in executed(h, "r1")}
    assert sum(seqs.values()) == 6 and max(seqs.values()) > 1, seqs
    assert all(len(a) == 1 for a in h.accepted.values())


def test_a_retransmitted_request_is_answered_from_the_reply_cache_not_run_again() -> None:
    h = Harness()
    frame = h.submit("c0", op("k", "a"))
    h.pump()
    for r in h.ids:
        h.send("c0", r, frame)
    h.pump()
    assert all(sum(len(e.results) for e in executed(h, r)) == 1 for r in h.ids)


# ------------------------------------------------------------------ bad input


def test_bad_input_is_dropped_counted_and_never_counted_to_a_quorum() -> None:
    h = Harness(batch_max=2)
    r1 = h.replicas["r1"]
    req = signed(Request("c0", 1, op("k", "v")), "c0")
    digest = batch_digest((req,))
    forged_hdr = Signed(encode_body(Header(0, 1, digest)), "r0", b"\x00" * 32, Header(0, 1, digest))
    cases = {
        "malformed": b"\x93\x01",
        "bad-signature": encode_frame(PrePrepare(forged_hdr, (req,))),
        "unknown-key": encode_frame(
            Signed(encode_body(Commit(0, 1, digest)), "mallory", b"", Commit(0, 1, digest))
        ),
        "oversized-batch": encode_frame(PrePrepare(
            signed(Header(0, 2, batch_digest((req, req, req))), "r0"), (req, req, req))),
        "pre-prepare-not-from-primary": encode_frame(PrePrepare(signed(Header(0, 1, digest), "r2"), (req,))),
        "outside-window": encode_frame(PrePrepare(signed(Header(0, 999, digest), "r0"), (req,))),
        "bad-digest": encode_frame(PrePrepare(signed(Header(0, 3, bytes(32)), "r0"), (req,))),
    }
    for reason, frame in cases.items():
        r1.receive(frame)
        assert r1.dropped[reason] == 1, (reason, dict(r1.dropped))
    out = r1.drain()
    assert not out.sends, "a refused frame made the replica say something"
    assert not r1.quarantined
    # commits signed by one replica three times still count once
    c = encode_frame(signed(Commit(0, 1, digest), "r2"))
    for _ in range(3):
        r1.receive(c)
    assert not r1.drain().sends and r1.last_exec == 0


def test_replayed_old_view_messages_are_dropped() -> None:
    h = Harness()
    h.submit("c0", op("k", "a"))
    h.pump()
    old = encode_frame(signed(Commit(0, 1, executed(h, "r2")[0].digest), "r2"))  # exactly what r2 sent
    for r in h.ids:  # move every replica to view 1
        h.replicas[r]._start_view_change(1)
    h.pump()
    assert all(h.replicas[r].view == 1 and not h.replicas[r].in_view_change for r in h.ids)
    h.replicas["r3"].receive(old)
    assert h.replicas["r3"].dropped["stale-view"] >= 1


def test_a_forged_request_inside_a_batch_is_refused() -> None:
    h = Harness()
    bad = Signed(encode_body(Request("c0", 1, b"x")), "c0", b"\x01" * 32, Request("c0", 1, b"x"))
    pp = PrePrepare(signed(Header(0, 1, batch_digest((bad,))), "r0"), (bad,))
    h.replicas["r1"].receive(encode_frame(pp))
    assert h.replicas["r1"].dropped["bad-request-in-batch"] == 1


# ------------------------------------------------------------------ evidence


def test_evidence_is_verifiable_alone_and_only_when_true() -> None:
    a = signed(Commit(3, 9, b"\x01" * 32), "r2")
    b = signed(Commit(3, 9, b"\x02" * 32), "r2")
    ev = decode_frame(encode_frame(Evidence(a, b)))
    assert isinstance(ev, Evidence) and offender(ev, KEYS) == "r2"
    assert offender(Evidence(a, a), KEYS) is None  # no conflict
    assert offender(Evidence(a, signed(Commit(3, 10, b"\x02" * 32), "r2")), KEYS) is None  # another slot
    fake = Signed(b.body, "r2", b"\x00" * 32, b.msg)
    assert offender(Evidence(a, fake), KEYS) is None  # forged half


def test_an_equivocating_primary_is_proven_and_quarantined_by_every_honest_replica() -> None:
    h = Harness()
    ra = signed(Request("c0", 1, op("k", "a")), "c0")
    rb = signed(Request("c1", 1, op("k", "b")), "c1")
    pa = PrePrepare(signed(Header(0, 1, batch_digest((ra,))), "r0"), (ra,))
    pb = PrePrepare(signed(Header(0, 1, batch_digest((rb,))), "r0"), (rb,))
    h.send("r0", "r1", encode_frame(pa))
    h.send("r0", "r2", encode_frame(pb))
    h.send("r0", "r3", encode_frame(pb))
    h.down.add("r0")
    h.pump()
    for r in ("r1", "r2", "r3"):
        q = [e for e in h.events[r] if isinstance(e, Quarantined)]
        assert [e.offender for e in q] == ["r0"] and offender(q[0].evidence, KEYS) == "r0"
        # replaced at once, without waiting for a timer
        assert h.replicas[r].view == 1 and not h.replicas[r].in_view_change
    h.submit("c0", op("after", "x"))
    h.tick(5)
    assert h.accepted["c0"], "requests keep committing with the liar shut out"


# ------------------------------------------------------------------ view change, state transfer, restart


def test_a_silent_primary_is_replaced() -> None:
    h = Harness(view_change_ticks=4)
    h.down.add("r0")
    h.submit("c0", op("k", "a"))
    h.pump()
    h.tick(4)
    assert all(h.replicas[r].view == 1 and not h.replicas[r].in_view_change for r in ("r1", "r2", "r3"))
    assert h.accepted["c0"]


def test_failed_views_wait_twice_as_long_each_time_up_to_the_cap() -> None:
    """Every new primary's proposals and new-views are lost: each view waits double (4, 8, 16, 32, cap)."""

    def no_primary(src: str, dst: str, frame: bytes) -> bool:
        f = decode_frame(frame)
        return not isinstance(f, PrePrepare) and not (isinstance(f, Signed) and isinstance(f.msg, NewView))

    h = Harness(view_change_ticks=4, view_change_doublings=3)
    h.submit("c0", op("k", "a"))
    r2, changes = h.replicas["r2"], []
    for t in range(150):
        before = r2.view
        h.tick(deliver=no_primary)
        if r2.view != before:
            changes.append(t)
    gaps = [b - a for a, b in itertools.pairwise(changes)]
    assert gaps[:5] == [4, 8, 16, 32, 32], changes
    assert not h.accepted["c0"]


def test_without_a_quorum_a_replica_waits_in_its_view_instead_of_running_ahead() -> None:
    h = Harness(view_change_ticks=4)
    h.down.update({"r0", "r1"})
    h.submit("c0", op("k", "a"))
    h.tick(100)
    assert {h.replicas[r].view for r in ("r2", "r3")} == {1}
    h.down.clear()
    h.tick(30)
    assert h.accepted["c0"], "once a quorum is back, the group moves on"


def test_a_lagging_replica_catches_up_by_state_transfer() -> None:
    h = Harness(checkpoint_interval=2, window=4, clients=1)
    h.down.add("r3")
    for i in range(8):
        h.submit("c0", op("k", str(i)))
        h.tick(3)
    assert h.replicas["r0"].low >= 6
    h.down.discard("r3")
    h.tick(30)
    r3 = h.replicas["r3"]
    assert any(isinstance(e, StateInstalled) for e in h.events["r3"])
    assert r3.last_exec == h.replicas["r0"].last_exec and r3.sm.snapshot() == h.replicas["r0"].sm.snapshot()


def test_a_restarted_replica_rejoins_and_never_contradicts_itself() -> None:
    h = Harness(clients=1)
    h.submit("c0", op("k", "a"))
    h.pump()
    durable = h.replicas["r2"].durable()
    h.replicas["r2"] = Replica(h.cfg, DecisionLog(), KEYS.signer("r2"), KEYS, durable)
    for i in range(3):
        h.submit("c0", op("k", str(i)))
        h.tick(3)
    h.tick(12)  # the others resend what r2 lost with its memory
    assert h.replicas["r2"].last_exec == h.replicas["r0"].last_exec
    assert not any(isinstance(e, Quarantined) for r in h.ids for e in h.events[r])


def test_view_entered_events_name_the_new_primary() -> None:
    h = Harness(view_change_ticks=3)
    h.down.add("r0")
    h.submit("c0", op("k", "a"))
    h.tick(10)
    assert any(isinstance(e, ViewEntered) and e.primary == "r1" for e in h.events["r2"])


# ------------------------------------------------------------------ the bound: n >= 3f+1


def _two_liars_split(h: Harness, second_liar_honest: bool) -> None:
    """r0 (primary) sends batch A to r2 and batch B to r3; r2 and r3 never hear from each other.

    With r1 also lying (prepares and commits both), r2 and r3 each see a full quorum and commit
    different batches at sequence 1: two liars of four are more than f=1. With r1 honest, r1
    prepares only one of them and neither side reaches a quorum for the other.
    """
    ra = signed(Request("c0", 1, op("k", "A")), "c0")
    rb = signed(Request("c1", 1, op("k", "B")), "c1")
    pa = PrePrepare(signed(Header(0, 1, batch_digest((ra,))), "r0"), (ra,))
    pb = PrePrepare(signed(Header(0, 1, batch_digest((rb,))), "r0"), (rb,))
    h.down.update({"r0"} if second_liar_honest else {"r0", "r1"})
    if second_liar_honest:
        h.send("r0", "r1", encode_frame(pa))
    for dst, pp in (("r2", pa), ("r3", pb)):
        hd = pp.head
        h.send("r0", dst, encode_frame(pp))
        h.send("r0", dst, encode_frame(signed(Commit(0, 1, hd.digest), "r0")))
        if not second_liar_honest:
            h.send("r1", dst, encode_frame(signed(Prepare(0, 1, hd.digest, pp.header), "r1")))
            h.send("r1", dst, encode_frame(signed(Commit(0, 1, hd.digest), "r1")))
    h.pump(deliver=lambda src, dst, _f: {src, dst} != {"r2", "r3"})


def _history(h: Harness, honest: tuple[str, ...]) -> PbftHistory:
    hist = PbftHistory(honest, {})
    for r in honest:
        hist.executions += [Execution(0, r, e.seq, e.digest, e.results) for e in executed(h, r)]
    return hist


def test_two_byzantine_of_four_break_safety_which_is_why_n_is_at_least_3f_plus_1() -> None:
    h = Harness()
    _two_liars_split(h, second_liar_honest=False)
    assert [e.seq for e in executed(h, "r2")] == [1] and [e.seq for e in executed(h, "r3")] == [1]
    assert agreement(_history(h, ("r2", "r3"))), "two liars of four should split the honest replicas"


def test_the_same_schedule_with_one_byzantine_of_four_stays_safe() -> None:
    h = Harness()
    _two_liars_split(h, second_liar_honest=True)
    assert not agreement(_history(h, ("r1", "r2", "r3")))
    assert not executed(h, "r2") or not executed(h, "r3")
