"""One ACL battery, run with real clients against both brokers with the one ACL (broker/acl.py).

Each test runs twice: against a Mosquitto started with the configuration
:class:`~broker.mosquitto_config.MosquittoSite` generates, and against the
embedded broker with the same :class:`~broker.acl.BusAcl` and per-device
users. ``cam-1`` plays the hostile device, ``cam-2`` the victim, ``coord``
the coordinator (and the Raft nodes and operator).

A negative check must not wait for a message that does not come, so every
check ends with a *sentinel*: a message the actor may legitimately cause,
sent after the forbidden ones on the same connection, so that once it has
arrived anything forbidden that got through would have arrived before it
(one publisher, one subscriber: the broker keeps the order).

Break 1 of issue 17 (``test_break_1_*``) runs a real three-node Raft group
in this process (its nodes log in as ``coord``) and replays every step the
hostile tester took: read the holder's session id and token from the
replies, release the holder's lock with them, acquire it, transfer the
leadership, remove a member.

PBFT replicas and proposers need no coordinator login: four ``edge-bus bft
serve`` processes and a proposer, each logged in as a device user, commit on
Mosquitto with the generated ACL (``test_pbft_*``).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.acl import BusAcl
from broker.coordination.client import RaftClient
from broker.coordination.driver import DriverConfig, RaftDriver
from broker.coordination.lock_client import LockClient
from broker.coordination.transport import PeerTransport
from broker.credentials import Credentials
from broker.embedded import EmbeddedBroker
from broker.mosquitto_config import MosquittoSite
from broker.session import BusConfig
from protocols.coordination.group_state import decode_lock_result
from protocols.coordination.wire import AdminRequest, ClientRequest, encode
from protocols.locks import Acquire, KeepAlive, LockStatus, Release, encode_command
from protocols.raft import Role
from tests import pbft_groups
from tests.brokers import MosquittoUnderTest, MqttProbe, Received, free_port

COORD = Credentials("coord", "coord-pw")
ATTACKER = Credentials("cam-1", "pw-1")
VICTIM = Credentials("cam-2", "pw-2")
DEVICES = (ATTACKER, VICTIM)
GROUP = "site"
NODES = ("n1", "n2", "n3")
_ids = itertools.count()


@dataclass
class Site:
    kind: str
    host: str
    port: int

    def probe(self, creds: Credentials) -> MqttProbe:
        return MqttProbe((self.host, self.port), f"{creds.username}-probe-{next(_ids)}", creds.username,
                         creds.password).connected()

    def bus(self, creds: Credentials) -> BusConfig:
        return BusConfig(host=self.host, port=self.port, username=creds.username, password=creds.password,
                         protocol="3.1.1", clean_start=True)


@pytest.fixture(params=["mosquitto", "embedded"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    if request.param == "mosquitto":
        mosquitto = MosquittoUnderTest(tmp_path / "mosquitto", MosquittoSite(
            listener_host="127.0.0.1", port=free_port(), data_dir=tmp_path / "mosquitto" / "data",
            devices=DEVICES, coordinators=[COORD], run_as_user="root" if os.geteuid() == 0 else None))
        mosquitto.start()
        try:
            yield Site("mosquitto", mosquitto.host, mosquitto.port)
        finally:
            mosquitto.stop()
    else:
        acl = BusAcl(devices=tuple(d.username for d in DEVICES), coordinators=(COORD.username,))
        embedded = EmbeddedBroker(port=0, data_dir=tmp_path / "embedded", credentials=[COORD, *DEVICES],
                                  bus_acl=acl, persistence=False)
        embedded.start()
        try:
            yield Site("embedded", "127.0.0.1", embedded.port)
        finally:
            embedded.stop()


def _until(probe: MqttProbe, done: Callable[[Received], bool], timeout: float = 15.0) -> list[Received]:
    """Everything ``probe`` receives up to and including the first message ``done`` accepts."""
    got: list[Received] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = probe.expect(max(0.1, deadline - time.monotonic()))
        got.append(msg)
        if done(msg):
            return got


# -- topics: what a device may write and read ---------------------------------------------------

DENIED_WRITES = (
    "edgebus/cam-2/metrics", "edgebus/cam-2/birth", "edgebus/cam-2/status", "edgebus/cam-2/cmd/config",
    "edgebus/_anomaly/cam-2/cpu",
    "edgebus/_sys/raft/site/n1", "edgebus/_sys/raft/site/n1/status",
    "edgebus/_sys/raft/site/admin/req", "edgebus/_sys/raft/site/admin/req/n1",
    "edgebus/_sys/lock/site/req/cam-2", "edgebus/_sys/lock/site/req/cam-2/n1",
    "edgebus/_sys/lock/site/reply/cam-2/holder", "edgebus/_sys/lock/site/events",
    "edgebus/_sys/tx/site/from/cam-2", "edgebus/_sys/tx/site/to/cam-2",
    "homeassistant/sensor/cam-2/cpu/config", "homeassistant/status",
    "edgebus/_sys/bft/site/status/cam-2", "edgebus/_sys/bft/site/deadletter/cam-2",
    "edgebus/_sys/bft/site/quarantined/cam-2", "edgebus/_sys/bft/site/decided",
    "edgebus/_sys/bft/site/to/cam-2/x", "edgebus/_sys/bft/site/status/cam-1/x",
)
ALLOWED_WRITES = (
    "edgebus/cam-1/metrics", "edgebus/cam-1/birth", "homeassistant/sensor/cam-1/cpu/config",
    "edgebus/_sys/lock/site/req/cam-1", "edgebus/_sys/lock/site/req/cam-1/n1",
    "edgebus/_sys/tx/site/from/cam-1",
    # PBFT: any inbox (frames are signed), the evidence, its own status, dead letters and quarantines
    "edgebus/_sys/bft/site/to/cam-2", "edgebus/_sys/bft/site/to/r0", "edgebus/_sys/bft/site/evidence",
    "edgebus/_sys/bft/site/status/cam-1", "edgebus/_sys/bft/site/deadletter/cam-1",
    "edgebus/_sys/bft/site/quarantined/cam-1",
)


def test_a_device_writes_only_its_own_lanes(site: Site) -> None:
    observer = site.probe(COORD)
    device = site.probe(ATTACKER)
    try:
        for topic_filter in ("edgebus/#", "homeassistant/#"):
            observer.subscribe(topic_filter)
        for topic in (*DENIED_WRITES, *ALLOWED_WRITES):
            device.publish(topic, topic)
        sentinel = "edgebus/cam-1/state/sentinel"
        device.publish(sentinel, b"last")
        arrived = {m.topic for m in _until(observer, lambda m: m.topic == sentinel)} - {sentinel}
    finally:
        device.close()
        observer.close()
    assert sorted(arrived & set(DENIED_WRITES)) == []
    assert arrived == set(ALLOWED_WRITES)


DEVICE_FILTERS = (
    "#", "edgebus/#", "edgebus/_sys/#", "edgebus/+/cmd/#", "edgebus/cam-2/cmd/#",
    "edgebus/_sys/lock/site/reply/cam-2/#", "edgebus/_sys/lock/site/reply/+/+",
    "edgebus/_sys/tx/site/to/cam-2", "edgebus/_sys/tx/site/to/+", "edgebus/_sys/raft/site/#",
    "$share/g/edgebus/cam-2/cmd/#",
    "edgebus/_sys/bft/#", "edgebus/_sys/bft/site/to/+", "edgebus/_sys/bft/site/to/cam-2",
    "edgebus/_sys/bft/site/status/+", "edgebus/_sys/bft/site/evidence",
    # its own
    "edgebus/cam-1/cmd/#", "edgebus/_sys/lock/site/reply/cam-1/#", "edgebus/_sys/tx/site/to/cam-1",
    "edgebus/_sys/lock/site/events", "homeassistant/status",
    "edgebus/_sys/bft/site/to/cam-1", "edgebus/_sys/bft/site/decided",
)
DENIED_READS = (
    "edgebus/cam-2/cmd/config", "edgebus/cam-2/metrics", "edgebus/_anomaly/cam-2/cpu",
    "edgebus/_sys/lock/site/reply/cam-2/holder", "edgebus/_sys/lock/site/req/cam-2",
    "edgebus/_sys/tx/site/to/cam-2", "edgebus/_sys/tx/site/from/cam-2",
    "edgebus/_sys/raft/site/n1", "edgebus/_sys/raft/site/admin/req", "edgebus/_sys/raft/site/admin/reply/op",
    "edgebus/_sys/bft/site/to/cam-2", "edgebus/_sys/bft/site/to/r0", "edgebus/_sys/bft/site/status/cam-2",
    "edgebus/_sys/bft/site/evidence", "edgebus/_sys/bft/site/deadletter/cam-2",
    "edgebus/_sys/bft/site/quarantined/cam-2",
)
ALLOWED_READS = (
    "edgebus/cam-1/cmd/config", "edgebus/_sys/lock/site/reply/cam-1/c1", "edgebus/_sys/tx/site/to/cam-1",
    "edgebus/_sys/lock/site/events", "homeassistant/status",
    "edgebus/_sys/bft/site/to/cam-1", "edgebus/_sys/bft/site/decided",
)


def test_a_device_reads_only_its_own_lanes(site: Site) -> None:
    device = site.probe(ATTACKER)
    coordinator = site.probe(COORD)
    try:
        for topic_filter in DEVICE_FILTERS:
            device.subscribe(topic_filter)  # a refused one gets 0x80 (both brokers); deliveries decide
        for topic in (*DENIED_READS, *ALLOWED_READS):
            coordinator.publish(topic, topic)
        sentinel = "edgebus/cam-1/cmd/sentinel"
        coordinator.publish(sentinel, b"last")
        arrived = {m.topic for m in _until(device, lambda m: m.topic == sentinel)} - {sentinel}
    finally:
        coordinator.close()
        device.close()
    assert sorted(arrived & set(DENIED_READS)) == []
    assert arrived == set(ALLOWED_READS)


def test_a_will_on_another_device_s_topic_is_refused(site: Site) -> None:
    """A forged ``offline`` will: Mosquitto drops it, the embedded broker refuses the CONNECT."""
    observer = site.probe(COORD)
    try:
        observer.subscribe("edgebus/cam-2/status")
        observer.subscribe("edgebus/cam-1/status")
        liar = MqttProbe((site.host, site.port), "liar", ATTACKER.username, ATTACKER.password)
        liar.client.will_set("edgebus/cam-2/status", b"offline", qos=1)
        rc, _ = liar.connect()
        if not rc.is_failure:
            liar.client._sock_close()  # no DISCONNECT: the broker publishes the will (if it accepts it)
            liar.client.loop_stop()
        honest = MqttProbe((site.host, site.port), "honest", ATTACKER.username, ATTACKER.password)
        honest.client.will_set("edgebus/cam-1/status", b"offline", qos=1)
        honest.connected()
        honest.client._sock_close()
        honest.client.loop_stop()
        got = _until(observer, lambda m: m.topic == "edgebus/cam-1/status")
    finally:
        observer.close()
    assert [m.topic for m in got] == ["edgebus/cam-1/status"]


# -- break 1: the coordination service --------------------------------------------------------------


# An election timeout of a second: the embedded broker checks each new connection's password
# (Argon2) on its event loop, and a shorter timeout sees that stall as a dead leader.
@pytest.fixture
def group(site: Site, tmp_path: Path) -> Iterator[list[RaftDriver]]:
    drivers = [RaftDriver(DriverConfig(GROUP, node, NODES, tmp_path / "raft", tick_ms=10, election_ticks=100),
                          site.bus(COORD), seed=i).start() for i, node in enumerate(NODES)]
    try:
        yield drivers
    finally:
        for d in drivers:
            d.stop()


def _leader(drivers: list[RaftDriver], timeout: float = 20.0) -> RaftDriver:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leaders = sorted((d for d in drivers if d.status().role == Role.LEADER.value),
                         key=lambda d: d.status().term)
        if leaders:
            leader = leaders[-1]
            voters = [d for d in drivers if d.config.node in leader.status().members]
            if all(d.status().leader == leader.config.node for d in voters):
                return leader
        time.sleep(0.02)
    raise AssertionError(f"no leader within {timeout:g} s: {[d.status() for d in drivers]}")


def _ask_in_own_lane(probe: MqttProbe, lane: str, client: str, body: bytes, timeout: float = 20.0) -> None:
    """A lock request from ``probe``'s connection, re-sent until answered (the group applies it once)."""
    reply_topic = f"edgebus/_sys/lock/{GROUP}/reply/{lane}/{client}"
    payload = encode(ClientRequest(client, 1, "lock", body))
    deadline = time.monotonic() + timeout
    while True:
        probe.publish(f"edgebus/_sys/lock/{GROUP}/req/{lane}", payload)
        try:
            _until(probe, lambda m: m.topic == reply_topic, timeout=min(1.0, deadline - time.monotonic()))
            return
        except AssertionError:
            if time.monotonic() >= deadline:
                raise


def test_break_1_every_step_is_refused(site: Site, group: list[RaftDriver]) -> None:
    """Each step of break 1 is recorded, not asserted at once, so a regression names every hole."""
    leader = _leader(group)
    term, members = leader.status().term, leader.status().members
    holder = LockClient.connect(site.bus(VICTIM), GROUP, "holder")
    thief: LockClient | None = None
    spy = site.probe(ATTACKER)
    holes: list[str] = []
    try:
        token = holder.acquire("door")
        # Step 1: read the holder's session id and token from the replies. The spy listens
        # wherever it can, the holder talks, then a thief of the spy's own user opens a
        # session: its reply (which the spy may read) is the sentinel.
        for topic_filter in ("edgebus/_sys/lock/site/reply/#", "edgebus/_sys/#", "#",
                             "edgebus/_sys/lock/site/reply/cam-1/#"):  # the last: its own replies
            spy.subscribe(topic_filter)
        assert holder.keep_alive("holder")
        thief = LockClient.connect(site.bus(ATTACKER), GROUP, "thief")
        heard = _until(spy, lambda m: m.topic == "edgebus/_sys/lock/site/reply/cam-1/thief")
        if any("/cam-2/" in m.topic for m in heard):
            holes.append("read the holder's replies")

        # Steps 2 and 3: use the holder's session id and token in the thief's own lane; the
        # group binds a session to the identity that opened it.
        def ask(command: object) -> LockStatus:
            assert thief is not None
            reply = thief.raft.request("lock", encode_command(command))  # type: ignore[arg-type]
            return decode_lock_result(reply.result).status

        for what, command, refused in (
                ("renewed the holder's session", KeepAlive("holder"), LockStatus.NOT_OWNER),
                ("acquired with the holder's session", Acquire("holder", "vault"), LockStatus.NOT_OWNER),
                ("released the holder's lock", Release("holder", "door", token), LockStatus.NOT_OWNER),
                ("acquired the held lock", Acquire("thief", "door", wait=False), LockStatus.BUSY)):
            if ask(command) is not refused:
                holes.append(what)

        # The same in the holder's lane, and steps 4-5 (transfer the leadership, remove a
        # member) on the admin topics, straight from the spy's connection; then a request in
        # the spy's own lane whose reply proves the leader has seen all of that.
        forger = spy
        node = leader.config.node
        for topic in ("edgebus/_sys/lock/site/req/cam-2", f"edgebus/_sys/lock/site/req/cam-2/{node}"):
            forger.publish(topic, encode(ClientRequest("holder", 2**62, "lock",
                                                       encode_command(Release("holder", "door", token)))))
        followers = [n for n in NODES if n != leader.config.node]
        for topic in ("edgebus/_sys/raft/site/admin/req", f"edgebus/_sys/raft/site/admin/req/{node}"):
            forger.publish(topic, encode(AdminRequest("evil", 1, "remove", followers[1])))
            forger.publish(topic, encode(AdminRequest("evil", 2, "transfer", followers[0])))
        try:
            _ask_in_own_lane(forger, "cam-1", "forger", encode_command(KeepAlive("thief")))
            current = _leader(group)
        except AssertionError as exc:
            holes.append(f"the group stopped answering ({exc})")
        else:
            if current.app.locks.holder("door") != ("holder", token):
                holes.append("released the holder's lock in the holder's lane")
            status = current.status()
            if current is not leader or leader.node.transferee is not None or status.term != term:
                holes.append("transferred the leadership")
            if set(status.members) != set(members) or set(current.node.members) != set(members):
                holes.append("removed a member")
        assert holes == [], f"break 1 still works: {holes}"

        # The legitimate roles still work: the holder releases, the thief gets the lock next,
        # the operator (a coordinator user) reads the members.
        assert holder.release("door", token)
        assert thief.acquire("door", timeout=10) > token
        operator_session = PeerTransport(site.bus(COORD), "operator")
        operator = RaftClient(operator_session, GROUP, "operator", timeout=10)
        operator_session.start()
        try:
            assert operator_session.wait_connected(10)
            assert set(operator.admin("members").members) == set(NODES)
        finally:
            operator_session.stop()
    finally:
        spy.close()
        if thief is not None:
            thief.close()
        holder.close()


# -- PBFT: replicas and a proposer as device users ---------------------------------------------------


def test_pbft_replicas_and_a_proposer_logged_in_as_devices_commit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Device users are enough for the whole protocol: inboxes, broadcasts, replies and status."""
    proposer = "p1"
    logins = {i: Credentials(i, f"pw-{i}") for i in (*pbft_groups.REPLICAS, proposer)}
    mosquitto = MosquittoUnderTest(tmp_path / "mosquitto", MosquittoSite(
        listener_host="127.0.0.1", port=free_port(), data_dir=tmp_path / "mosquitto" / "data",
        devices=list(logins.values()), coordinators=[COORD]))
    mosquitto.start()
    monkeypatch.setenv("EDGEBUS_BROKER_PASSWORD", COORD.password)  # `edge-bus bft status`, the operator's
    path = pbft_groups.make_group(tmp_path, pbft_groups.REPLICAS, (proposer,))
    group = pbft_groups.Group(mosquitto, tmp_path, path, {}, logins)
    results: list[dict[str, object]] = []
    try:
        for r in pbft_groups.REPLICAS:
            group.start(r)
        group.wait_up(capsys)  # the operator (a coordinator user) reads every replica's status
        client = group.client(proposer)
        try:
            for i in range(3):
                op = json.dumps({"key": f"k{i}", "value": "v"}).encode()
                results.append(json.loads(client.submit(op, pbft_groups.DEADLINE)))
        finally:
            client.stop()
    finally:
        group.stop_all()
        mosquitto.stop()
    assert [r["index"] for r in results] == [1, 2, 3]
