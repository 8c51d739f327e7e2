"""BufferedSocket: paho's small reads served from one read, tiny writes held and sent in order."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from broker.buffered_socket import HOLD_LIMIT, BufferedSocket
from broker.paho_client import FewerSyscallsClient, _LoopWaker
from broker.session import BusSession
from tests.brokers import MosquittoUnderTest
from tests.bus_helpers import WAIT, config_for, wait_until


@pytest.fixture
def pair() -> Iterator[tuple[BufferedSocket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(2)
    yield BufferedSocket(ours), theirs
    ours.close()
    theirs.close()


def received(peer: socket.socket) -> bytes:
    peer.setblocking(False)
    try:
        return peer.recv(1 << 20)
    except BlockingIOError:
        return b""
    finally:
        peer.settimeout(2)


def test_small_reads_come_from_one_read_and_keep_the_byte_order(
        pair: tuple[BufferedSocket, socket.socket]) -> None:
    buffered, peer = pair
    peer.sendall(bytes(range(200)))
    assert buffered.pending() == 0  # nothing read from the socket yet: paho would select (and see it)
    assert buffered.recv(1) == b"\x00"
    assert buffered.pending() == 199  # now held: paho skips select and keeps reading
    assert buffered.recv(3) == b"\x01\x02\x03"
    assert buffered.recv(1000) == bytes(range(4, 200))  # a short read, as sockets give
    assert buffered.pending() == 0
    with pytest.raises(BlockingIOError):
        buffered.recv(1)


def test_acks_written_while_reading_are_held_until_the_reader_would_wait(
        pair: tuple[BufferedSocket, socket.socket]) -> None:
    buffered, peer = pair
    peer.sendall(b"xyz")
    buffered.recv(1)  # this thread is now the reader
    assert buffered.send(b"\x40\x02\x00\x01") == 4
    assert buffered.send(b"\x40\x02\x00\x02") == 4
    assert received(peer) == b""  # held
    buffered.recv(2)  # the read buffer runs dry: still nothing to wait for
    assert received(peer) == b""
    assert buffered.pending() == 0  # paho is about to select: what is held goes out first
    assert received(peer) == b"\x40\x02\x00\x01\x40\x02\x00\x02"


def test_held_bytes_never_exceed_the_limit(pair: tuple[BufferedSocket, socket.socket]) -> None:
    buffered, peer = pair
    peer.sendall(b"x")
    buffered.recv(1)
    for _ in range(HOLD_LIMIT // 4 + 1):
        buffered.send(b"\x40\x02\x00\x01")
    assert len(received(peer)) >= HOLD_LIMIT


def test_large_writes_and_other_threads_flush_what_is_held_first(
        pair: tuple[BufferedSocket, socket.socket]) -> None:
    buffered, peer = pair
    peer.sendall(b"x")
    buffered.recv(1)
    buffered.send(b"\x40\x02\x00\x07")
    assert buffered.send(b"P" * 100) == 100
    assert received(peer) == b"\x40\x02\x00\x07" + b"P" * 100
    buffered.send(b"\x40\x02\x00\x08")
    other = threading.Thread(target=buffered.send, args=(b"\xc0\x00",))  # a ping from another thread
    other.start()
    other.join()
    assert received(peer) == b"\x40\x02\x00\x08\xc0\x00"


def test_close_sends_what_is_held(pair: tuple[BufferedSocket, socket.socket]) -> None:
    buffered, peer = pair
    peer.sendall(b"x")
    buffered.recv(1)
    buffered.send(b"\xe0\x00")  # DISCONNECT
    buffered.close()
    assert peer.recv(10) == b"\xe0\x00"


def test_a_full_send_buffer_keeps_bytes_held_and_paho_polling(
        pair: tuple[BufferedSocket, socket.socket]) -> None:
    buffered, peer = pair
    peer.sendall(b"x")
    buffered.recv(1)
    raw = buffered.raw
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    total = 0
    while True:  # fill the kernel's buffers (bounded: they are a few hundred KiB at most)
        try:
            total += raw.send(b"F" * 65536)
        except BlockingIOError:
            break
        assert total < 64 << 20
    buffered.send(b"\x40\x02\x00\x09")
    assert buffered.pending() == 1  # cannot send now: paho must come back instead of sleeping in select
    with pytest.raises(BlockingIOError):
        buffered.send(b"Q" * 100)  # a later packet must not overtake the held ack
    drained = 0
    while drained < total + 4:
        chunk = peer.recv(1 << 20)
        drained += len(chunk)
        buffered.pending()
    assert buffered.pending() == 0
    assert buffered.send(b"Q" * 100) == 100


@pytest.mark.integration
def test_the_session_runs_paho_on_the_buffered_socket_without_self_wakeups(
        mosquitto_broker: MosquittoUnderTest) -> None:
    """The hooks into paho's private parts engage with the pinned paho, and messages flow both ways."""
    bus = BusSession(config_for(mosquitto_broker, client_id="buffered-check"))
    got: list[bytes] = []
    bus.subscribe("edgebus/buffered/#", lambda m: got.append(bytes(m.payload)))
    bus.start()
    try:
        assert bus.wait_connected(WAIT)
        client = bus._conn.client if bus._conn is not None else None
        assert isinstance(client, FewerSyscallsClient)
        assert isinstance(client.socket(), BufferedSocket)
        assert wait_until(lambda: isinstance(client._sockpairW, _LoopWaker))
        for i in range(200):
            assert bus.publish(f"edgebus/buffered/{i % 3}", str(i).encode(), qos=1)
        assert wait_until(lambda: len(got) == 200), f"received {len(got)} of 200"
        assert sorted(int(p) for p in got) == list(range(200))
    finally:
        bus.stop()
