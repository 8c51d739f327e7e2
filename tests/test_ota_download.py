"""The windowed chunk download and the chunk server (protocols/ota), over a hostile simulated link."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.ota import ChunkOutcome, ChunkServer, Download
from schemas.errors import CodecError
from schemas.ota import MIN_CHUNK_SIZE, ChunkRequest, UpdateManifest, decode_chunk, encode_chunk

CHUNK = MIN_CHUNK_SIZE


def make(data: bytes, update_id: str = "u-1") -> tuple[UpdateManifest, ChunkServer]:
    manifest = UpdateManifest.for_artifact(data, update_id=update_id, kind="model", name="m.onnx",
                                           version="1", chunk_size=CHUNK, created="2025-01-01T00:00:00Z")
    server = ChunkServer(manifest, lambda i: data[i * CHUNK:(i + 1) * CHUNK])
    return manifest, server


def artifact(chunks: float, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(int(chunks * CHUNK))


@dataclass
class Link:
    """A lossy, duplicating, reordering, corrupting link between a ChunkServer and a Download."""

    rng: random.Random
    loss: float
    duplicate: float
    corrupt: float
    stray: float  # frames of another update or past the last chunk
    in_flight: list[tuple[bytes, bool]] = field(default_factory=list)  # (frame, intact)

    def send(self, server: ChunkServer, request: ChunkRequest | None) -> None:
        if request is None:
            return
        for index, frame in server.on_request(request):
            if self.rng.random() < self.loss:
                continue
            intact = True
            if self.rng.random() < self.corrupt:
                _, _, data = decode_chunk(frame)
                if data and self.rng.random() < 0.5:
                    spot = self.rng.randrange(len(data))
                    data = data[:spot] + bytes([data[spot] ^ 0x5A]) + data[spot + 1:]
                else:
                    data = data + b"!" if self.rng.random() < 0.5 else data[:-1]
                frame, intact = encode_chunk(request.update_id, index, data), False
            copies = 2 if self.rng.random() < self.duplicate else 1
            self.in_flight.extend([(frame, intact)] * copies)
            if self.rng.random() < self.stray:
                other = self.rng.choice([encode_chunk("other", index, b"x" * 10),
                                         encode_chunk(request.update_id, 10**6, b"x")])
                self.in_flight.append((other, False))

    def deliver_one(self) -> tuple[bytes, bool]:
        # Reordering: any frame in flight may arrive next.
        return self.in_flight.pop(self.rng.randrange(len(self.in_flight)))


@dataclass
class Run:
    download: Download
    accepted: dict[int, bytes] = field(default_factory=dict)
    requested: list[int] = field(default_factory=list)


def drive(download: Download, server: ChunkServer, link: Link, *, max_steps: int, spurious_timeout: float,
          stop_after: int | None = None) -> Run:
    """Keep answering the download until it completes (or ``stop_after`` deliveries), checking invariants."""
    run = Run(download)
    manifest = download.manifest

    def ask(request: ChunkRequest | None) -> None:
        if request is not None:
            assert request.update_id == manifest.update_id
            run.requested.extend(request.indexes())
        assert len(download.outstanding) <= download.window
        link.send(server, request)

    ask(download.request())
    deliveries = 0
    for _ in range(max_steps):
        if download.complete or (stop_after is not None and deliveries >= stop_after):
            return run
        if not link.in_flight or link.rng.random() < spurious_timeout:
            ask(download.on_timeout())
            continue
        frame, intact = link.deliver_one()
        deliveries += 1
        update_id, index, data = decode_chunk(frame)
        held_before = index < manifest.chunk_count and download.holds(index)
        outcome = download.on_chunk(index, data, update_id=update_id)
        if outcome is ChunkOutcome.ACCEPTED:
            assert intact, "a corrupt chunk was accepted"
            assert index not in run.accepted
            run.accepted[index] = data
        elif update_id != manifest.update_id or index >= manifest.chunk_count:
            assert outcome is ChunkOutcome.UNKNOWN
        elif held_before:
            assert outcome is ChunkOutcome.DUPLICATE
        else:
            assert not intact and outcome is ChunkOutcome.CORRUPT
        ask(download.request())
    raise AssertionError(f"not complete after {max_steps} steps: {download.received}/{download.total}")


links = st.builds(lambda seed, loss, dup, bad, stray: Link(random.Random(seed), loss, dup, bad, stray),
                  st.integers(0, 2**32), st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0, 0.3),
                  st.floats(0, 0.2))


@settings(max_examples=150, deadline=None)
@given(chunks=st.floats(0.01, 40), window=st.integers(1, 12), link=links,
       spurious_timeout=st.floats(0, 0.2), seed=st.integers(0, 1000))
def test_any_hostile_link_ends_with_exactly_the_artifact(chunks: float, window: int, link: Link,
                                                        spurious_timeout: float, seed: int) -> None:
    data = artifact(max(chunks, 1 / CHUNK), seed)
    manifest, server = make(data)
    run = drive(Download(manifest, window=window), server, link, max_steps=50_000,
                spurious_timeout=spurious_timeout)
    download = run.download
    assert download.complete and download.received == download.total == manifest.chunk_count
    assert b"".join(run.accepted[i] for i in range(manifest.chunk_count)) == data
    assert hashlib.sha256(b"".join(run.accepted[i] for i in range(manifest.chunk_count))).hexdigest() \
        == manifest.sha256
    assert list(download.missing()) == [] and download.outstanding == frozenset()
    assert download.request() is None and download.on_timeout() is None
    # Every chunk asked for more than once shows up in the counts on both sides.
    asked_twice = {i for i in set(run.requested) if run.requested.count(i) > 1}
    assert download.re_requested == len(asked_twice)
    assert server.chunks_sent == len(run.requested)


@settings(max_examples=100, deadline=None)
@given(chunks=st.integers(2, 40), window=st.integers(1, 12), first=links, second=links,
       stop_after=st.integers(0, 60))
def test_resuming_from_the_bitmap_never_asks_for_a_held_chunk(chunks: int, window: int, first: Link,
                                                              second: Link, stop_after: int) -> None:
    data = artifact(chunks - 0.5)
    manifest, server = make(data)
    before = drive(Download(manifest, window=window), server, first, max_steps=50_000,
                   spurious_timeout=0.05, stop_after=stop_after)
    saved = before.download.bitmap
    held = {i for i in range(manifest.chunk_count) if saved[i // 8] >> (i % 8) & 1}
    assert held == set(before.accepted)

    resumed = Download(manifest, window=window, have=saved)
    assert resumed.received == len(held) and resumed.bitmap == saved
    assert set(resumed.missing()) == set(range(manifest.chunk_count)) - held
    after = drive(resumed, server, second, max_steps=50_000, spurious_timeout=0.05)
    assert not held & set(after.requested)
    whole = {**before.accepted, **after.accepted}
    assert b"".join(whole[i] for i in range(manifest.chunk_count)) == data


# -- units ----------------------------------------------------------------------------


def test_a_clean_link_asks_for_each_chunk_once_in_windows() -> None:
    data = artifact(10)
    manifest, _ = make(data)
    download = Download(manifest, window=4)
    assert download.request() == ChunkRequest("u-1", ((0, 4),))
    assert download.request() is None  # the window is full
    assert download.on_chunk(1, data[CHUNK:2 * CHUNK]) is ChunkOutcome.ACCEPTED
    assert download.request() == ChunkRequest("u-1", ((4, 5),))
    assert download.outstanding == {0, 2, 3, 4}
    assert download.re_requested == 0


def test_a_corrupt_chunk_is_asked_for_again_and_counted() -> None:
    data = artifact(3)
    manifest, _ = make(data)
    download = Download(manifest, window=2)
    assert download.request() == ChunkRequest("u-1", ((0, 2),))
    assert download.on_chunk(0, b"\0" * CHUNK) is ChunkOutcome.CORRUPT
    assert download.on_chunk(1, data[CHUNK:2 * CHUNK - 1]) is ChunkOutcome.CORRUPT  # short
    assert download.received == 0 and download.outstanding == frozenset()
    assert download.request() == ChunkRequest("u-1", ((0, 2),))
    assert download.re_requested == 2


def test_timeout_forgets_what_is_outstanding_and_asks_again() -> None:
    manifest, _ = make(artifact(6))
    download = Download(manifest, window=3)
    assert download.request() == ChunkRequest("u-1", ((0, 3),))
    assert download.on_timeout() == ChunkRequest("u-1", ((0, 3),))
    assert download.re_requested == 3
    # A late, intact chunk is still welcome; the next request fills the window again.
    assert download.on_chunk(2, artifact(6)[2 * CHUNK:3 * CHUNK]) is ChunkOutcome.ACCEPTED
    assert download.request() == ChunkRequest("u-1", ((3, 4),))


def test_duplicates_and_strangers() -> None:
    data = artifact(2.5)
    manifest, _ = make(data)
    download = Download(manifest)
    last = data[2 * CHUNK:]
    assert download.on_chunk(2, last) is ChunkOutcome.ACCEPTED  # unasked, intact, short last chunk
    assert download.on_chunk(2, last) is ChunkOutcome.DUPLICATE
    assert download.on_chunk(3, last) is ChunkOutcome.UNKNOWN
    assert download.on_chunk(-1, last) is ChunkOutcome.UNKNOWN
    assert download.on_chunk(0, data[:CHUNK], update_id="other") is ChunkOutcome.UNKNOWN
    assert download.received == 1 and download.bitmap == b"\x04"
    assert list(download.missing()) == [0, 1]
    assert download.request() == ChunkRequest("u-1", ((0, 2),))


@pytest.mark.parametrize(("have", "message"), [
    (b"", "must be 1 bytes"),
    (b"\x00\x00", "must be 1 bytes"),
    (b"\x08", "past the last one"),
    ("\x00", "must be 1 bytes"),
])
def test_a_bitmap_that_does_not_fit_the_manifest_is_refused(have: bytes, message: str) -> None:
    manifest, _ = make(artifact(3))
    with pytest.raises(CodecError, match=message):
        Download(manifest, have=have)


def test_a_full_bitmap_is_complete_at_once() -> None:
    manifest, _ = make(artifact(8))
    download = Download(manifest, have=b"\xff")
    assert download.complete and download.request() is None and download.on_timeout() is None


@pytest.mark.parametrize("window", [0, -1, 1.5, True])
def test_window_must_be_positive(window: object) -> None:
    manifest, _ = make(artifact(1))
    with pytest.raises(ValueError, match="window"):
        Download(manifest, window=window)  # type: ignore[arg-type]


def test_chunk_server_answers_only_this_update_and_counts() -> None:
    data = artifact(3.5)
    _, server = make(data)
    frames = server.on_request(ChunkRequest("u-1", ((1, 3), (4, 9))))
    assert [i for i, _ in frames] == [1, 2]
    assert [decode_chunk(f) for _, f in frames] == [("u-1", 1, data[CHUNK:2 * CHUNK]),
                                                   ("u-1", 2, data[2 * CHUNK:3 * CHUNK])]
    assert server.on_request(ChunkRequest("other", ((0, 1),))) == []
    assert server.chunks_sent == 2 and server.resent == 0
    server.on_request(ChunkRequest("u-1", ((2, 4),)))
    assert server.chunks_sent == 4 and server.resent == 1
    assert server.bytes_sent == sum(len(f) for _, f in frames) + sum(
        len(encode_chunk("u-1", i, data[i * CHUNK:(i + 1) * CHUNK])) for i in (2, 3))


def test_chunk_server_refuses_to_send_an_artifact_that_changed() -> None:
    data = artifact(2)
    manifest, _ = make(data)
    server = ChunkServer(manifest, lambda i: b"\0" * CHUNK)
    with pytest.raises(CodecError, match="changed"):
        server.on_request(ChunkRequest("u-1", ((0, 1),)))
