"""The README's lock API on a real Mosquitto and a 3-node Raft group (separate processes).

    client = LockClient.connect(bus_config, "locks")
    async with client.lock("camera-7/ptz") as token:          # token only ever grows
        ptz.move(..., fencing_token=token)                    # the resource rejects older tokens

and the synchronous ``with client.hold(name) as token:`` of the lock client's docstring.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.coordination import LockClient
from broker.coordination.local_cluster import GroupWatcher, LocalCluster
from broker.session import BusConfig, BusSession
from protocols.coordination.group_state import decode_lock_result
from protocols.locks import Acquire, FencedResource, LockStatus, encode_command
from schemas.errors import LockUnavailable
from tests.brokers import MosquittoUnderTest

pytestmark = pytest.mark.integration

NODES = ["n1", "n2", "n3"]
GROUP = "locks"
PTZ = "camera-7/ptz"


def _bus(broker: MosquittoUnderTest, client_id: str) -> BusConfig:
    return BusConfig(host=broker.host, port=broker.port, username=broker.username, password=broker.password,
                     client_id=client_id, clean_start=True)


@pytest.fixture
def bus_config(mosquitto_broker: MosquittoUnderTest, tmp_path: Path) -> Iterator[BusConfig]:
    cluster = LocalCluster(_bus(mosquitto_broker, "unused"), GROUP, tmp_path / "raft")
    session = BusSession(_bus(mosquitto_broker, "lock-api-watch"))
    watcher = GroupWatcher(session, GROUP)
    session.start()
    assert session.wait_connected(10)
    cluster.start()
    try:
        assert watcher.leader(NODES, timeout=15) is not None
        yield _bus(mosquitto_broker, "unused")
    finally:
        cluster.stop()
        session.stop(flush_timeout=0)


def _wait_until_queued(client: LockClient, name: str, timeout: float = 10.0) -> None:
    """Return once the lock table has ``client``'s session waiting for ``name``.

    A non-waiting Acquire from a session that already waits answers QUEUED (and queues nothing).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = client.raft.request("lock", encode_command(Acquire(client.session_id, name, wait=False)))
        status = decode_lock_result(reply.result).status
        if status is LockStatus.QUEUED:
            return
        assert status is LockStatus.BUSY, status  # not queued yet: its Acquire is still on the way
    raise AssertionError(f"{client.session_id} never queued for {name}")


def test_async_lock_as_the_readme_shows(bus_config: BusConfig) -> None:
    ptz = FencedResource()

    async def scenario() -> None:
        client = LockClient.connect(bus_config, GROUP)
        other = LockClient.connect(bus_config, GROUP)
        try:
            tokens = []
            for _ in range(3):
                async with client.lock(PTZ) as token:  # token only ever grows
                    ptz.check(PTZ, token)  # the resource rejects older tokens
                    tokens.append(token)
            assert tokens == sorted(set(tokens)), tokens

            async def second_holder() -> int:
                async with other.lock(PTZ, timeout=20) as token:
                    ptz.check(PTZ, token)
                    return token

            async with client.lock(PTZ) as held:
                ptz.check(PTZ, held)
                waiting = asyncio.create_task(second_holder())
                await asyncio.to_thread(_wait_until_queued, other, PTZ)
                assert not waiting.done()  # it waits for us: the lock has one holder
            token = await asyncio.wait_for(waiting, 20)  # granted once we released
            assert token > held
            assert not ptz.admit(PTZ, held)  # a late write by the first holder is refused
        finally:
            other.close()
            client.close()

    asyncio.run(scenario())


def test_hold_acquires_and_releases_with_a_growing_token(bus_config: BusConfig) -> None:
    with LockClient.connect(bus_config, GROUP) as locks, LockClient.connect(bus_config, GROUP) as other:
        with locks.hold(PTZ) as first, pytest.raises(LockUnavailable):  # held: one that won't wait is refused
            other.acquire(PTZ, wait=False)
        with other.hold(PTZ, wait=False) as second:  # released on leaving the block
            assert second > first
        with locks.hold(PTZ) as third:
            assert third > second
        with pytest.raises(RuntimeError), locks.hold(PTZ):  # released even when the body raises
            raise RuntimeError("the move failed")
        with other.hold(PTZ, wait=False) as fourth:
            assert fourth > third
