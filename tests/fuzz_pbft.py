"""PBFT fuzz targets (registered in tests/fuzz_targets.py): the frame decoder and the handlers behind it.

``pbft_wire``: the frame decoder returns a frame or raises CodecError; a
decoded frame survives its encoder; the same bytes given to a replica and to a
client are dropped and counted when they do not decode.

``pbft_replica``: a sequence of frames, each handed to a fresh replica's (and
a client's) handler, with clock ticks between them. Random bytes almost never
carry a valid signature, so unless the mode byte says otherwise every signed
record in a decoded frame (nested ones too) is signed again with its claimed
signer's key (the fuzz group's simulator keys): the handlers see what any
replica could send them, i.e. up to n Byzantine replicas. The only properties
checked are the ones that must hold whatever the input: no exception, an
undecodable frame is counted as ``malformed``, and every frame the replica
sends decodes.

Input layout of ``pbft_replica``: a mode byte (bits 0-1: which replica
receives, bit 2: keep the original signatures, bit 3: also make each
pre-prepare header name its batch's digest), then up to MAX_FRAMES of
``ticks (1 byte) | length (2 bytes, big-endian) | frame``.

Seeds come from a real run of the fuzz group: requests committed with
checkpoints, a view change after the primary goes silent, a state transfer,
and an equivocation proof.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections import deque
from collections.abc import Iterator

from protocols.pbft import (
    Client,
    DecisionLog,
    Evidence,
    PbftConfig,
    Replica,
    SimKeys,
    decode_frame,
    encode_frame,
)
from protocols.pbft.messages import (
    Body,
    Commit,
    Frame,
    NewView,
    Prepare,
    PreparedProof,
    PrePrepare,
    Signed,
    StateReply,
    StateRequest,
    ViewChange,
    batch_digest,
    encode_body,
)
from schemas.errors import CodecError

__all__ = ["SEEDS", "pbft_replica", "pbft_wire"]

IDS = ("r0", "r1", "r2", "r3")
CLIENT = "c1"
KEYS = SimKeys([*IDS, CLIENT], seed=1)
# Small numbers, so that a few frames and ticks reach checkpoints, watermarks and view changes.
CONFIG = PbftConfig(IDS, checkpoint_interval=2, window=4, batch_max=2, view_change_ticks=3, resend_ticks=4,
                    client_resend_ticks=4)
MAX_FRAMES = 32


def _client() -> Client:
    client = Client(CONFIG, KEYS.signer(CLIENT), KEYS)
    client.submit(b'{"key": "k", "value": "v"}')  # outstanding, so replies are counted toward a result
    return client


def pbft_wire(data: bytes) -> None:
    """The frame decoder, then the raw bytes to a replica and a client (signatures checked for real)."""
    try:
        frame = decode_frame(data)
    except CodecError:
        frame = None
    if frame is not None:
        encoded = encode_frame(frame)
        assert decode_frame(encoded) == frame, "a PBFT frame does not survive a round trip"
    replica = Replica(CONFIG, DecisionLog(), KEYS.signer("r1"), KEYS)
    _receive(replica, data, frame is not None)
    client = _client()
    before = client.dropped
    client.receive(data)
    assert frame is not None or client.dropped == before + 1, "an undecodable reply was not counted"


def pbft_replica(data: bytes) -> None:
    """Frames, signed again as their claimed signers, to one fresh replica and a client; see the module."""
    if not data:
        return
    mode = data[0]
    replica = Replica(CONFIG, DecisionLog(), KEYS.signer(IDS[mode & 3]), KEYS)
    client = _client()
    for ticks, raw in _frames(data):
        frame = raw
        if not mode & 4:
            with contextlib.suppress(CodecError):
                frame = encode_frame(_resign(decode_frame(raw), fix_digests=bool(mode & 8)))
        _receive(replica, frame, None)
        client.receive(frame)
        for _ in range(ticks):
            replica.tick()
            client.tick()
            _check_output(replica)


def _frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    i, n = 1, 0
    while i + 3 <= len(data) and n < MAX_FRAMES:
        size = int.from_bytes(data[i + 1:i + 3], "big")
        yield data[i] % 4, data[i + 3:i + 3 + size]
        i, n = i + 3 + size, n + 1


def _receive(replica: Replica, frame: bytes, decodes: bool | None) -> None:
    if decodes is None:
        try:
            decode_frame(frame)
            decodes = True
        except CodecError:
            decodes = False
    before = replica.dropped["malformed"]
    replica.receive(frame)
    if not decodes:
        assert replica.dropped["malformed"] == before + 1, "an undecodable frame was not counted"
    _check_output(replica)


def _check_output(replica: Replica) -> None:
    out = replica.drain()
    for send in out.sends:
        decode_frame(send.frame)  # a replica never sends what it cannot read itself (CodecError fails)
    replica.status()


# -- signing again as the claimed signer ----------------------------------------------------------------


def _resign(frame: Frame, fix_digests: bool) -> Frame:
    if isinstance(frame, Signed):
        return _signed(frame, fix_digests)
    if isinstance(frame, PrePrepare):
        return _pre_prepare(frame, fix_digests)
    return Evidence(_signed(frame.first, fix_digests), _signed(frame.second, fix_digests))


def _signed(s: Signed, fix: bool) -> Signed:
    msg = _body(s.msg, fix)
    body = encode_body(msg)
    signature = KEYS.signer(s.signer).sign(body) if KEYS.knows(s.signer) else s.signature
    return Signed(body, s.signer, signature, msg)


def _pre_prepare(pp: PrePrepare, fix: bool) -> PrePrepare:
    batch = tuple(_signed(r, fix) for r in pp.batch)
    header = pp.header
    if fix:
        header = dataclasses.replace(header, msg=dataclasses.replace(pp.head, digest=batch_digest(batch)))
    return PrePrepare(_signed(header, fix), batch)


def _body(m: Body, fix: bool) -> Body:
    if isinstance(m, Prepare):
        return dataclasses.replace(m, header=_signed(m.header, fix))
    if isinstance(m, ViewChange):
        return dataclasses.replace(
            m, stable_proof=tuple(_signed(s, fix) for s in m.stable_proof),
            prepared=tuple(PreparedProof(_pre_prepare(p.pre_prepare, fix),
                                         tuple(_signed(s, fix) for s in p.prepares)) for p in m.prepared))
    if isinstance(m, NewView):
        return dataclasses.replace(m, view_changes=tuple(_signed(s, fix) for s in m.view_changes),
                                   pre_prepares=tuple(_pre_prepare(p, fix) for p in m.pre_prepares))
    if isinstance(m, StateReply):
        return dataclasses.replace(m, proof=tuple(_signed(s, fix) for s in m.proof))
    return m


# -- seeds: a recorded run of the fuzz group ------------------------------------------------------------


def _record() -> list[tuple[str, bytes]]:
    """(receiver, frame) of each frame of a short run: commits, checkpoints, a view change, state transfer."""
    replicas = {r: Replica(CONFIG, DecisionLog(), KEYS.signer(r), KEYS) for r in IDS}
    client = Client(CONFIG, KEYS.signer(CLIENT), KEYS)
    log: list[tuple[str, bytes]] = []
    queue: deque[tuple[str, bytes]] = deque()
    down: set[str] = set()

    def flush(sender: str) -> None:
        for send in replicas[sender].drain().sends:
            for dst in ([r for r in IDS if r != sender] if send.dst is None else [send.dst]):
                if sender not in down and dst not in down:
                    queue.append((dst, send.frame))

    def run(frames: list[tuple[str, bytes]], ticks: int) -> None:
        queue.extend(frames)
        for _ in range(ticks + 1):
            for _ in range(2000):
                if not queue:
                    break
                dst, frame = queue.popleft()
                log.append((dst, frame))
                if dst == CLIENT:
                    client.receive(frame)
                else:
                    replicas[dst].receive(frame)
                    flush(dst)
            for r in IDS:
                if r not in down:
                    replicas[r].tick()
                    flush(r)

    for i in range(3):  # r0 leads view 0; three requests pass a checkpoint
        request = client.submit(json.dumps({"key": f"k{i}", "value": "v"}).encode())
        run([(r, request) for r in IDS], ticks=2)
        client.abandon()
    down.add("r0")  # the primary goes silent: a view change to r1
    request = client.submit(b'{"key": "k9", "value": "v"}')
    run([(r, request) for r in IDS if r != "r0"], ticks=12)
    down.discard("r0")  # back, and behind: it asks r1 for the state (its reply is a seed too)
    ask = StateRequest(1)
    body = encode_body(ask)
    run([("r1", encode_frame(Signed(body, "r0", KEYS.signer("r0").sign(body), ask)))], ticks=0)
    return log


def _equivocation() -> bytes:
    def commit(digest: bytes) -> Signed:
        m = Commit(0, 1, digest)
        body = encode_body(m)
        return Signed(body, "r2", KEYS.signer("r2").sign(body), m)

    return encode_frame(Evidence(commit(b"a" * 32), commit(b"b" * 32)))


def _seeds() -> dict[str, list[bytes]]:
    log = _record()
    frames = list(dict.fromkeys(f for _, f in log))
    frames.append(_equivocation())
    kinds: dict[str, bytes] = {}  # one frame of each record type, and pre-prepares
    for f in frames:
        decoded = decode_frame(f)
        msg = decoded.header.msg if isinstance(decoded, PrePrepare) else (
            decoded.msg if isinstance(decoded, Signed) else None)
        kinds.setdefault(type(decoded).__name__ + type(msg).__name__, f)
    header_kinds = {type(decode_frame(f)).__name__ for f in kinds.values()}
    assert {"PrePrepare", "Evidence", "Signed"} <= header_kinds

    def packed(mode: int, items: list[tuple[int, bytes]]) -> bytes:
        return bytes([mode]) + b"".join(bytes([t]) + len(f).to_bytes(2, "big") + f for t, f in items)

    replica_seeds = [packed(1, [(1, f)]) for f in kinds.values()]
    to_r1 = [f for dst, f in log if dst == "r1"][:MAX_FRAMES]
    replica_seeds += [packed(1, [(0, f) for f in to_r1]), packed(1 | 8, [(1, f) for f in to_r1[:8]])]
    return {"pbft_wire": list(kinds.values()), "pbft_replica": replica_seeds}


SEEDS = _seeds()
