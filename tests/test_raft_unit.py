"""Scripted scenarios for the pure Raft core: a tiny synchronous network under the test's control."""

from __future__ import annotations

import pytest

from protocols.raft import (
    Accepted,
    AppendRequest,
    ClientReply,
    Entry,
    EntryKind,
    HardState,
    Message,
    NotLeader,
    RaftConfig,
    RaftNode,
    Ready,
    Rejected,
    Role,
    VoteRequest,
    VoteResponse,
)
from protocols.raft.ready import must_sync
from protocols.sim import AppendRegister, DurableStore, SplitMix64, replay
from protocols.sim.cluster import SimConfig

CFG = RaftConfig(election_ticks=10, heartbeat_ticks=2)


class Net:
    """Synchronous delivery; ``isolated`` nodes still tick but send and receive nothing."""

    def __init__(self, ids: list[str], cfg: RaftConfig = CFG, members: list[str] | None = None) -> None:
        self.ids = ids
        self.cfg = cfg
        self.members = members or ids
        self.stores = {i: DurableStore() for i in ids}
        self.sms: dict[str, AppendRegister] = {}
        self.nodes: dict[str, RaftNode] = {}
        self.isolated: set[str] = set()
        self.down: set[str] = set()
        self.queue: list[Message] = []
        self.replies: list[ClientReply] = []
        self.readies: list[tuple[str, Ready]] = []  # every node's batches, in order
        self._seed = 1
        for i in ids:
            self.start(i)

    def start(self, i: str) -> None:
        self._seed += 1
        self.sms[i] = AppendRegister()
        self.nodes[i] = RaftNode(i, self.members, self.sms[i], SplitMix64(self._seed), self.cfg,
                                 self.stores[i].load())
        self.down.discard(i)
        self.flush(i)

    def crash(self, i: str) -> None:
        self.down.add(i)

    def flush(self, i: str) -> None:
        """The driver contract: early appends, write, advance, the rest; again until nothing is left."""
        while not (rd := self.nodes[i].ready()).empty:
            self.readies.append((i, rd))
            self.queue.extend(rd.early_messages)
            self.stores[i].persist(rd)
            self.nodes[i].advance(rd)
            self.queue.extend(rd.messages)
            self.replies.extend(rd.replies)

    def deliver(self) -> None:
        while self.queue:
            m = self.queue.pop(0)
            if {m.src, m.dst} & (self.isolated | self.down):
                continue
            self.nodes[m.dst].step(m)
            self.flush(m.dst)

    def ticks(self, n: int) -> None:
        for _ in range(n):
            for i in self.ids:
                if i not in self.down:
                    self.nodes[i].tick()
                    self.flush(i)
            self.deliver()

    def leader(self) -> RaftNode:
        cut_off = self.down | self.isolated
        leaders = [n for i, n in self.nodes.items() if n.role is Role.LEADER and i not in cut_off]
        assert len(leaders) == 1, [n.status() for n in self.nodes.values()]
        return leaders[0]

    def propose(self, cmd: bytes, client: str = "c", seq: int = 0) -> Accepted:
        lead = self.leader()
        res = lead.propose(cmd, client, seq)
        assert isinstance(res, Accepted), res
        self.flush(lead.id)
        self.deliver()
        return res


def test_three_nodes_elect_one_leader_and_replicate() -> None:
    net = Net(["a", "b", "c"])
    net.ticks(40)
    lead = net.leader()
    for k in range(5):
        net.propose(f"x{k}".encode(), "c1", k + 1)
    net.ticks(4)
    for i in net.ids:
        assert net.sms[i].items == [b"x0", b"x1", b"x2", b"x3", b"x4"]
        assert net.nodes[i].leader == lead.id
    assert [r.request_seq for r in net.replies] == [1, 2, 3, 4, 5]


def test_follower_redirects_to_the_leader() -> None:
    net = Net(["a", "b", "c"])
    net.ticks(40)
    lead = net.leader()
    follower = next(n for n in net.nodes.values() if n is not lead)
    assert follower.propose(b"x", "c1", 1) == NotLeader(lead.id)


def test_rejoining_partitioned_node_does_not_disrupt_a_stable_leader() -> None:
    net = Net(["a", "b", "c", "d", "e"])
    net.ticks(40)
    lead = net.leader()
    term = lead.term
    loner = next(i for i in net.ids if i != lead.id)
    net.isolated.add(loner)
    net.ticks(200)  # the loner times out again and again, but pre-vote keeps its term
    assert net.nodes[loner].term == term
    net.isolated.clear()
    net.ticks(40)
    assert net.leader() is lead and lead.term == term


def test_without_pre_vote_a_rejoining_node_does_bump_the_term() -> None:
    """The control experiment for the test above: pre-vote is what protects the leader."""
    cfg = RaftConfig(election_ticks=10, heartbeat_ticks=2, pre_vote=False, check_quorum=False)
    net = Net(["a", "b", "c"], cfg)
    net.ticks(40)
    term = net.leader().term
    loner = next(i for i in net.ids if i != net.leader().id)
    net.isolated.add(loner)
    net.ticks(100)
    net.isolated.clear()
    net.ticks(60)
    assert net.leader().term > term


def test_vote_is_refused_inside_the_leader_lease() -> None:
    net = Net(["a", "b", "c"])
    net.ticks(40)
    lead = net.leader()
    f = next(n for n in net.nodes.values() if n is not lead)
    f.step(VoteRequest("zz", f.id, lead.term + 5, 10**6, lead.term + 4))
    assert f.term == lead.term and not f.ready().messages


def test_restart_from_persisted_state_keeps_log_and_vote() -> None:
    net = Net(["a", "b", "c"])
    net.ticks(40)
    for k in range(3):
        net.propose(f"x{k}".encode(), "c1", k + 1)
    net.ticks(4)
    for i in net.ids:
        net.crash(i)
    for i in net.ids:
        before = net.stores[i].load()
        net.start(i)
        n = net.nodes[i]
        assert (n.term, n.voted_for) == (before.hard_state.term, before.hard_state.voted_for)
        assert net.sms[i].items == [b"x0", b"x1", b"x2"]  # re-applied up to the persisted commit
    net.ticks(60)
    net.propose(b"after", "c1", 4)
    net.ticks(4)
    assert all(net.sms[i].items[-1] == b"after" for i in net.ids)


def test_retried_command_is_applied_once_and_answered_from_cache() -> None:
    net = Net(["a", "b", "c"])
    net.ticks(40)
    first = net.propose(b"pay", "c1", 7)
    again = net.propose(b"pay", "c1", 7)  # the client never saw the reply and retries
    net.ticks(4)
    assert again.index > first.index
    assert net.sms[net.leader().id].items == [b"pay"]
    assert [(r.request_seq, r.result) for r in net.replies] == [(7, b"1"), (7, b"1")]


def test_lagging_follower_catches_up_through_a_snapshot() -> None:
    net = Net(["a", "b", "c"], RaftConfig(election_ticks=10, heartbeat_ticks=2, snapshot_threshold=5))
    net.ticks(40)
    lag = next(i for i in net.ids if i != net.leader().id)
    net.isolated.add(lag)
    for k in range(20):
        net.propose(f"x{k}".encode(), "c1", k + 1)
    net.ticks(4)
    assert net.leader().log.snapshot_index >= 15  # compacted past what the laggard has
    net.isolated.clear()
    net.ticks(40)
    assert net.sms[lag].items == [f"x{k}".encode() for k in range(20)]
    assert net.nodes[lag].log.snapshot_index > 0
    # and the de-duplication table travelled with the snapshot
    lead = net.leader()
    net.crash(lead.id)
    net.ticks(60)
    net.propose(b"x19", "c1", 20)
    net.ticks(4)
    assert net.sms[net.leader().id].items.count(b"x19") == 1


def test_fast_backoff_repairs_a_divergent_follower() -> None:
    net = Net(["a", "b", "c"])
    net.ticks(40)
    old = net.leader()
    net.isolated.add(old.id)
    for k in range(10):  # appended by the isolated leader, never committed
        assert isinstance(old.propose(f"lost{k}".encode()), Accepted)
        net.flush(old.id)
    net.queue.clear()
    net.ticks(60)
    new = net.leader()
    for k in range(3):
        net.propose(f"kept{k}".encode(), "c1", k + 1)
    net.isolated.clear()
    net.ticks(40)
    assert net.sms[old.id].items == [b"kept0", b"kept1", b"kept2"]
    assert old.log.last_index == new.log.last_index


def test_add_then_remove_a_member() -> None:
    net = Net(["a", "b", "c", "d"], members=["a", "b", "c"])
    net.ticks(40)
    lead = net.leader()
    net.propose(b"x", "c1", 1)
    assert isinstance(lead.propose_membership(add="d"), Accepted)
    assert isinstance(lead.propose_membership(remove="b"), Rejected)  # one change at a time
    net.flush(lead.id)
    net.ticks(10)
    assert net.nodes["d"].members == ("a", "b", "c", "d") and net.sms["d"].items == [b"x"]
    victim = next(i for i in ["a", "b", "c"] if i != lead.id)
    assert isinstance(lead.propose_membership(remove=victim), Accepted)
    net.flush(lead.id)
    net.ticks(10)
    assert victim not in lead.members
    assert lead.propose_membership(remove=lead.id) == Rejected(
        "a leader cannot remove itself; transfer leadership first"
    )
    net.crash(victim)
    net.propose(b"y", "c1", 2)
    net.ticks(4)
    assert net.sms["d"].items == [b"x", b"y"]


def test_leadership_transfer() -> None:
    net = Net(["a", "b", "c"])
    net.ticks(40)
    lead = net.leader()
    target = next(i for i in net.ids if i != lead.id)
    assert lead.transfer_leadership(target)
    net.flush(lead.id)
    net.deliver()
    net.ticks(2)
    assert net.leader().id == target and net.nodes[target].term == lead.term


def test_config_entries_are_logged() -> None:
    net = Net(["a", "b", "c", "d"], members=["a", "b", "c"])
    net.ticks(40)
    lead = net.leader()
    net.propose(b"x")
    res = lead.propose_membership(add="d")
    assert isinstance(res, Accepted)
    assert lead.log.entry(res.index).kind is EntryKind.CONFIG


def test_same_seed_replays_the_same_run() -> None:
    cfg = SimConfig(duration=1_500, settle=1_000)
    a, b = replay(99, cfg).history, replay(99, cfg).history
    assert a.applied == b.applied and a.acks == b.acks and a.faults == b.faults
    assert replay(100, cfg).history.faults != a.faults


def test_leader_gone_hint_elects_a_new_leader_sooner_than_a_timeout() -> None:
    def failover_ticks(hint: bool) -> int:
        net = Net(["a", "b", "c"])
        net.ticks(40)
        old = net.leader()
        net.crash(old.id)
        if hint:  # what the MQTT driver does when the leader's will message arrives
            for i in net.ids:
                if i != old.id:
                    net.nodes[i].leader_gone(old.id)
        for t in range(1, 100):
            net.ticks(1)
            if any(n.role is Role.LEADER and n.term > old.term for n in net.nodes.values()):
                return t
        raise AssertionError("no new leader")

    assert failover_ticks(hint=True) < CFG.election_ticks + 3
    assert failover_ticks(hint=False) >= CFG.election_ticks


def test_leader_replicates_before_its_own_write_but_counts_itself_only_after_advance() -> None:
    """Raft thesis 10.2.1: appends leave early; the leader's own copy counts once its driver says durable."""
    net = Net(["a", "b", "c"])
    net.ticks(40)
    lead = net.leader()
    slow, fast = (i for i in net.ids if i != lead.id)
    net.isolated.add(slow)  # the quorum is the leader and ``fast``
    res = lead.propose(b"x", "c1", 1)
    assert isinstance(res, Accepted)
    rd = lead.ready()
    assert rd.entries and not rd.messages
    assert {m.dst for m in rd.early_messages} == {slow, fast}
    assert all(isinstance(m, AppendRequest) for m in rd.early_messages)
    net.queue.extend(rd.early_messages)  # sent, but the leader's write has not finished
    net.deliver()  # ``fast`` writes and acknowledges
    assert lead.commit < res.index, "counted its own entry before it was durable"
    net.stores[lead.id].persist(rd)
    lead.advance(rd)
    assert lead.commit == res.index
    net.flush(lead.id)
    assert [r.request_seq for r in net.replies] == [1]


def test_a_stale_advance_does_not_mark_a_rewritten_log_durable() -> None:
    """advance() names the last entry by (index, term): a write of another term's entry there is not ours."""
    net = Net(["a", "b", "c"])
    net.ticks(40)
    lead = net.leader()
    net.isolated.add(next(i for i in net.ids if i != lead.id))
    res = lead.propose(b"x", "c1", 1)
    assert isinstance(res, Accepted)
    rd = lead.ready()
    net.queue.extend(rd.early_messages)
    net.deliver()
    last = rd.entries[-1]
    lead.advance(Ready(entries=(Entry(last.term + 1, last.index),)))
    assert lead.commit < res.index
    lead.advance(rd)
    assert lead.commit == res.index


def test_votes_and_a_new_terms_messages_wait_for_the_write() -> None:
    net = Net(["a", "b", "c"], RaftConfig(election_ticks=10, heartbeat_ticks=2, pre_vote=False))
    node = net.nodes["a"]
    for _ in range(40):
        node.tick()
        rd = node.ready()
        if rd.messages or rd.early_messages:
            break
    assert rd.hard_state is not None and rd.hard_state.voted_for == "a"
    assert rd.messages and all(isinstance(m, VoteRequest) for m in rd.messages) and not rd.early_messages


@pytest.mark.parametrize(
    ("hard_state", "entries", "snapshot", "expected"),
    [
        (HardState(2, "a", 7), 0, False, False),  # the commit index moved: volatile
        (None, 0, False, False),  # nothing durable changed (messages, replies only)
        (HardState(3, None, 5), 0, False, True),  # a new term
        (HardState(2, "b", 5), 0, False, True),  # a vote
        (None, 1, False, True),  # an entry
        (HardState(2, "a", 7), 0, True, True),  # a snapshot
    ],
)
def test_must_sync_rule(hard_state: HardState | None, entries: int, snapshot: bool, expected: bool) -> None:
    assert must_sync(hard_state, HardState(2, "a", 5), entries, snapshot) is expected


def test_only_batches_that_move_the_commit_index_alone_skip_the_sync() -> None:
    """The core marks each Ready; a leader's reply to a client may leave before its (unsynced) write."""
    net = Net(["a", "b", "c"], RaftConfig(election_ticks=10, heartbeat_ticks=2, pre_vote=False))
    net.ticks(40)
    lead = net.leader()
    assert isinstance(lead.propose(b"x", "c1", 1), Accepted)
    lead.propose(b"y", "c1", 2)
    net.flush(lead.id)
    net.deliver()
    net.ticks(5)
    previous = {i: HardState() for i in net.ids}
    for node_id, rd in net.readies:
        hs, before = rd.hard_state, previous[node_id]
        durable_change = bool(rd.entries) or rd.snapshot is not None or (
            hs is not None and (hs.term, hs.voted_for) != (before.term, before.voted_for))
        assert rd.must_sync is durable_change, (node_id, rd)
        if hs is not None:
            previous[node_id] = hs
    votes = [rd for _, rd in net.readies if rd.hard_state and rd.hard_state.voted_for and
             any(isinstance(m, VoteResponse) for m in rd.messages)]
    assert votes and all(rd.must_sync for rd in votes)
    commit_only = [rd for _, rd in net.readies if not rd.must_sync and rd.hard_state is not None]
    assert commit_only and any(rd.replies for rd in commit_only)
