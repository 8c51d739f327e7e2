"""Ricart-Agrawala: unit tests plus a seeded harness that delivers in-flight messages in random order.

The harness keeps FIFO order per (sender, receiver) channel, as the algorithm
assumes, and picks which channel delivers next, who requests, who releases and
who crashes from its own PRNG (SplitMix64; no ``random`` module), so a failing
seed replays exactly. After every step at most one live member may hold the
lock; at the end every live member that asked must have entered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import pytest

from protocols.locks.ricart_agrawala import (
    RAEffects,
    RAMessage,
    RAReply,
    RARequest,
    RAState,
    RicartAgrawalaNode,
    Send,
    decode_ra_message,
    encode_ra_message,
)
from schemas.errors import LockCodecError, LockError


class SplitMix64:
    def __init__(self, seed: int) -> None:
        self.state = seed & (2**64 - 1)

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & (2**64 - 1)
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n


class MutualExclusionViolated(AssertionError):
    pass


class Stuck(AssertionError):
    pass


Factory = Callable[[str, list[str]], RicartAgrawalaNode]
LEFT = "member-left"  # a will notification travelling from the broker


class Cluster:
    def __init__(self, n: int, seed: int, factory: Factory = RicartAgrawalaNode,
                 announce_leaves: bool = True) -> None:
        ids = [f"n{i}" for i in range(n)]
        self.nodes = {i: factory(i, ids) for i in ids}
        self.alive = set(ids)
        self.channels: dict[tuple[str, str], deque[RAMessage | str]] = {}
        self.rng = SplitMix64(seed)
        self.announce_leaves = announce_leaves
        self.asked: dict[str, int] = dict.fromkeys(ids, 0)
        self.entered: dict[str, int] = dict.fromkeys(ids, 0)

    def effects(self, node: str, effects: RAEffects) -> None:
        for send in effects.sends:
            self.channels.setdefault((node, send.to), deque()).append(send.message)
        if effects.entered:
            assert self.nodes[node].state is RAState.HELD
            self.entered[node] += 1
        holders = [i for i in sorted(self.alive) if self.nodes[i].state is RAState.HELD]
        if len(holders) > 1:
            raise MutualExclusionViolated(f"{holders} hold the lock together")

    def deliver_one(self) -> bool:
        busy = sorted(k for k, q in self.channels.items() if q)
        if not busy:
            return False
        src, dst = busy[self.rng.below(len(busy))]
        message = self.channels[(src, dst)].popleft()
        if dst in self.alive:
            node = self.nodes[dst]
            if isinstance(message, str):
                self.effects(dst, node.member_left(message))
            else:
                # Round trip through the wire encoding, as the driver would.
                self.effects(dst, node.on_message(decode_ra_message(encode_ra_message(message))))
        return True

    def crash(self, victim: str) -> None:
        self.alive.discard(victim)
        if self.announce_leaves:
            for other in sorted(self.alive):
                self.channels.setdefault(("broker", other), deque()).append(victim)

    def step(self, crashes_left: int) -> int:
        roll = self.rng.below(100)
        live = sorted(self.alive)
        node = live[self.rng.below(len(live))]
        state = self.nodes[node].state
        if roll < 15 and state is RAState.RELEASED:
            self.asked[node] += 1
            self.effects(node, self.nodes[node].request())
        elif roll < 30 and state is RAState.HELD:
            self.effects(node, self.nodes[node].release())
        elif roll < 32 and crashes_left and len(live) > 1:
            self.crash(node)
            return crashes_left - 1
        else:
            self.deliver_one()
        return crashes_left

    def drain(self, limit: int = 100_000) -> None:
        """No new requests or crashes: deliver everything and release every holder until quiet."""
        for _ in range(limit):
            holders = [i for i in sorted(self.alive) if self.nodes[i].state is RAState.HELD]
            if holders:
                self.effects(holders[0], self.nodes[holders[0]].release())
            elif not self.deliver_one():
                waiting = [i for i in sorted(self.alive) if self.nodes[i].state is RAState.WANTED]
                if waiting:
                    raise Stuck(f"{waiting} wait forever")
                for i in self.alive:
                    if self.asked[i] != self.entered[i]:
                        raise Stuck(f"{i} asked {self.asked[i]} times but entered {self.entered[i]}")
                return
        raise Stuck("did not quiesce")


def run(seed: int, n: int = 4, steps: int = 400, crashes: int = 1, factory: Factory = RicartAgrawalaNode,
        announce_leaves: bool = True) -> Cluster:
    cluster = Cluster(n, seed, factory, announce_leaves)
    for _ in range(steps):
        crashes = cluster.step(crashes)
    cluster.drain()
    return cluster


@pytest.mark.parametrize("seed", range(300))
def test_mutual_exclusion_and_progress_with_a_crash(seed: int) -> None:
    cluster = run(seed, n=2 + seed % 4, crashes=seed % 3)
    assert sum(cluster.entered.values()) > 0


@pytest.mark.slow
def test_mutual_exclusion_and_progress_many_seeds() -> None:
    for seed in range(5000):
        run(seed, n=2 + seed % 5, steps=800, crashes=seed % 3)


# ---- the checks can fail -------------------------------------------------------------------------


class NeverDefers(RicartAgrawalaNode):
    """Replies to every request at once, even while holding the lock."""

    def _on_request(self, request: RARequest) -> RAEffects:
        self._clock = max(self._clock, request.timestamp)
        return RAEffects((Send(request.sender, RAReply(self.node_id, request.timestamp)),))


class NoTieBreak(RicartAgrawalaNode):
    """Defers only to strictly older timestamps: two equal-stamp requests both go ahead."""

    def _on_request(self, request: RARequest) -> RAEffects:
        self._clock = max(self._clock, request.timestamp)
        older = self._state is RAState.WANTED and self._request_ts < request.timestamp
        if self._state is RAState.HELD or older:
            self._deferred[request.sender] = request.timestamp
            return RAEffects()
        return RAEffects((Send(request.sender, RAReply(self.node_id, request.timestamp)),))


@pytest.mark.parametrize("broken", [NeverDefers, NoTieBreak])
def test_harness_catches_a_broken_variant(broken: Factory) -> None:
    def violates(seed: int) -> bool:
        try:
            run(seed, n=3, crashes=0, factory=broken)
        except MutualExclusionViolated:
            return True
        return False

    assert any(violates(seed) for seed in range(200))


def test_without_will_notifications_a_crash_blocks_the_rest() -> None:
    stuck = 0
    for seed in range(100):
        try:
            run(seed, n=3, crashes=1, announce_leaves=False)
        except Stuck:
            stuck += 1
            run(seed, n=3, crashes=1, announce_leaves=True)  # the same seed with the will: no one stuck
    assert stuck > 0


# ---- unit tests ----------------------------------------------------------------------------------


def test_single_member_enters_at_once() -> None:
    node = RicartAgrawalaNode("a")
    assert node.request() == RAEffects((), entered=True)
    assert node.release() == RAEffects()


def test_older_request_wins_and_ties_break_by_id() -> None:
    a, b = RicartAgrawalaNode("a", ["a", "b"]), RicartAgrawalaNode("b", ["a", "b"])
    req_a, req_b = a.request().sends[0].message, b.request().sends[0].message
    assert req_a.timestamp == req_b.timestamp == 1
    assert b.on_message(req_a).sends == (Send("a", RAReply("b", 1)),)  # (1, "a") < (1, "b"): b yields
    assert a.on_message(req_b) == RAEffects()  # a defers b
    assert a.on_message(RAReply("b", 1)).entered
    released = a.release()
    assert released.sends == (Send("b", RAReply("a", 1)),)
    assert b.on_message(released.sends[0].message).entered
    assert b.clock == 1 and a.clock == 1


def test_stale_and_duplicate_replies_are_ignored() -> None:
    a = RicartAgrawalaNode("a", ["b", "c"])
    a.request()
    assert not a.on_message(RAReply("b", 1)).entered
    assert not a.on_message(RAReply("b", 1)).entered  # duplicate does not count for c
    assert a.awaiting == {"c"}
    a.release()  # give up
    a.request()  # timestamp 2
    assert not a.on_message(RAReply("c", 1)).entered  # reply to the abandoned request
    assert a.awaiting == {"b", "c"}


def test_member_left_unblocks_and_drops_what_is_owed() -> None:
    a = RicartAgrawalaNode("a", ["a", "b", "c"])
    a.request()
    a.on_message(RAReply("b", 1))
    assert a.state is RAState.WANTED
    assert a.member_left("c").entered  # c crashed before replying; its will says offline
    a.on_message(RARequest("b", 7))
    assert a.deferred == {"b"}
    a.member_left("b")
    assert a.release() == RAEffects() and a.members == frozenset()


def test_member_joined_while_waiting_is_asked_too() -> None:
    a = RicartAgrawalaNode("a", ["b"])
    a.request()
    joined = a.member_joined("c")
    assert joined.sends == (Send("c", RARequest("a", 1)),)
    assert a.member_joined("c") == RAEffects() and a.member_joined("a") == RAEffects()
    a.on_message(RAReply("b", 1))
    assert a.on_message(RAReply("c", 1)).entered


def test_misuse_and_bad_messages() -> None:
    a = RicartAgrawalaNode("a", ["b"])
    with pytest.raises(LockError):
        a.release()
    a.request()
    with pytest.raises(LockError):
        a.request()
    for bad in (b"\xc1", b"\x90", encode_ra_message(RAReply("b", 3))[:-1]):
        with pytest.raises(LockCodecError):
            decode_ra_message(bad)
    assert decode_ra_message(encode_ra_message(RARequest("n1", 42))) == RARequest("n1", 42)
