"""PBFT wire records and their canonical encoding (msgpack arrays, one layout per record).

A signature covers the exact bytes of a record's body, so every signed record
travels as :class:`Signed`: those bytes, the signer's replica (or client) id,
the signature, and the decoded body. Decoding is the one validated reader for
everything that arrives over the bus: a malformed frame raises
:class:`~schemas.errors.CodecError` and nothing else.

>>> r = Request("c1", 7, b"op")
>>> decode_body(encode_body(r)) == r
True
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import msgpack

from schemas.errors import CodecError, PayloadTooLarge, UnsupportedVersion

WIRE_VERSION = 1
_DECODE_ERRORS = (
    ValueError, TypeError, RecursionError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
)
MAX_FRAME_BYTES = 1 << 20
MAX_ID = 64
DIGEST_BYTES = 32


def _check_id(name: str, value: str) -> None:
    if not value or len(value) > MAX_ID:
        raise ValueError(f"{name} must be 1..{MAX_ID} characters, got {value!r}")


def _check_nat(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _check_digest(value: bytes) -> None:
    if len(value) != DIGEST_BYTES:
        raise ValueError(f"a digest is {DIGEST_BYTES} bytes, got {len(value)}")


@dataclass(frozen=True, slots=True)
class Request:
    """A client's operation; ``timestamp`` orders one client's requests (exactly-once execution)."""

    client: str
    timestamp: int
    operation: bytes

    def __post_init__(self) -> None:
        _check_id("client", self.client)
        _check_nat("timestamp", self.timestamp)


@dataclass(frozen=True, slots=True)
class Header:
    """The primary's signed part of a pre-prepare: batch ``digest`` goes at ``seq`` in ``view``."""

    view: int
    seq: int
    digest: bytes

    def __post_init__(self) -> None:
        _check_nat("view", self.view)
        _check_nat("seq", self.seq)
        _check_digest(self.digest)


@dataclass(frozen=True, slots=True)
class Prepare:
    """A backup agrees to ``digest`` at (view, seq); carries the primary's signed header as evidence."""

    view: int
    seq: int
    digest: bytes
    header: Signed

    def __post_init__(self) -> None:
        _check_nat("view", self.view)
        _check_nat("seq", self.seq)
        _check_digest(self.digest)


@dataclass(frozen=True, slots=True)
class Commit:
    view: int
    seq: int
    digest: bytes

    def __post_init__(self) -> None:
        _check_nat("view", self.view)
        _check_nat("seq", self.seq)
        _check_digest(self.digest)


@dataclass(frozen=True, slots=True)
class Reply:
    view: int
    client: str
    timestamp: int
    result: bytes

    def __post_init__(self) -> None:
        _check_nat("view", self.view)
        _check_id("client", self.client)
        _check_nat("timestamp", self.timestamp)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The signer's state digest after executing ``seq``."""

    seq: int
    state_digest: bytes

    def __post_init__(self) -> None:
        _check_nat("seq", self.seq)
        _check_digest(self.state_digest)


@dataclass(frozen=True, slots=True)
class PreparedProof:
    """A pre-prepare and 2f matching prepares: the request at ``seq`` may have committed."""

    pre_prepare: PrePrepare
    prepares: tuple[Signed, ...]


@dataclass(frozen=True, slots=True)
class ViewChange:
    new_view: int
    stable_seq: int
    stable_proof: tuple[Signed, ...]  # 2f+1 checkpoints for stable_seq (empty at 0)
    prepared: tuple[PreparedProof, ...]

    def __post_init__(self) -> None:
        _check_nat("new_view", self.new_view)
        _check_nat("stable_seq", self.stable_seq)


@dataclass(frozen=True, slots=True)
class NewView:
    view: int
    view_changes: tuple[Signed, ...]
    pre_prepares: tuple[PrePrepare, ...]

    def __post_init__(self) -> None:
        _check_nat("view", self.view)


@dataclass(frozen=True, slots=True)
class StateRequest:
    """Ask for the state at a stable checkpoint at or after ``seq``."""

    seq: int

    def __post_init__(self) -> None:
        _check_nat("seq", self.seq)


@dataclass(frozen=True, slots=True)
class StateReply:
    seq: int
    snapshot: bytes
    proof: tuple[Signed, ...]  # 2f+1 checkpoints naming sha256(snapshot)

    def __post_init__(self) -> None:
        _check_nat("seq", self.seq)


Body = Union[  # noqa: UP007 (a runtime alias of forward references)
    Request, Header, Prepare, Commit, Reply, Checkpoint, ViewChange, NewView, StateRequest, StateReply
]


@dataclass(frozen=True, slots=True)
class Signed:
    """A body's exact bytes, who signed them, the signature, and the body decoded from the bytes."""

    body: bytes
    signer: str
    signature: bytes
    msg: Body

    def __post_init__(self) -> None:
        _check_id("signer", self.signer)


@dataclass(frozen=True, slots=True)
class PrePrepare:
    """The signed header plus the batch it names (the batch is bound by the digest, not signed again)."""

    header: Signed
    batch: tuple[Signed, ...]

    @property
    def head(self) -> Header:
        assert isinstance(self.header.msg, Header)
        return self.header.msg


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two validly signed, conflicting statements by one replica: verifiable by anyone alone."""

    first: Signed
    second: Signed


Frame = Signed | PrePrepare | Evidence

# ------------------------------------------------------------------ encoding

_TAGS: dict[type, str] = {
    Request: "req", Header: "hdr", Prepare: "prep", Commit: "com", Reply: "rep", Checkpoint: "ckpt",
    ViewChange: "vc", NewView: "nv", StateRequest: "sreq", StateReply: "srep",
}


def _signed(s: Signed) -> list[Any]:
    return [s.body, s.signer, s.signature]


def _pp(p: PrePrepare) -> list[Any]:
    return [_signed(p.header), [_signed(r) for r in p.batch]]


def _fields(m: Body) -> list[Any]:
    if isinstance(m, Request):
        return [m.client, m.timestamp, m.operation]
    if isinstance(m, Header | Commit):
        return [m.view, m.seq, m.digest]
    if isinstance(m, Prepare):
        return [m.view, m.seq, m.digest, _signed(m.header)]
    if isinstance(m, Reply):
        return [m.view, m.client, m.timestamp, m.result]
    if isinstance(m, Checkpoint):
        return [m.seq, m.state_digest]
    if isinstance(m, ViewChange):
        return [
            m.new_view, m.stable_seq, [_signed(s) for s in m.stable_proof],
            [[_pp(p.pre_prepare), [_signed(s) for s in p.prepares]] for p in m.prepared],
        ]
    if isinstance(m, NewView):
        return [m.view, [_signed(s) for s in m.view_changes], [_pp(p) for p in m.pre_prepares]]
    if isinstance(m, StateRequest):
        return [m.seq]
    return [m.seq, m.snapshot, [_signed(s) for s in m.proof]]


def encode_body(m: Body) -> bytes:
    """The canonical bytes a signature covers."""
    return msgpack.packb([_TAGS[type(m)], *_fields(m)], use_bin_type=True)


def encode_frame(frame: Frame) -> bytes:
    if isinstance(frame, Signed):
        payload: list[Any] = ["s", _signed(frame)]
    elif isinstance(frame, PrePrepare):
        payload = ["pp", _pp(frame)]
    else:
        payload = ["ev", [_signed(frame.first), _signed(frame.second)]]
    return msgpack.packb([WIRE_VERSION, *payload], use_bin_type=True)


def batch_digest(batch: Sequence[Signed]) -> bytes:
    """What a pre-prepare's header names: sha256 over the batch's signed requests, in order."""
    return hashlib.sha256(msgpack.packb([_signed(r) for r in batch], use_bin_type=True)).digest()


# ------------------------------------------------------------------ decoding


def _list(x: Any, n: int | None = None, limit: int = 4096) -> list[Any]:
    if not isinstance(x, list) or (n is not None and len(x) != n) or len(x) > limit:
        raise CodecError(f"expected a list{f' of {n}' if n is not None else ''}, got {type(x).__name__}")
    return x


def _int(x: Any) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise CodecError(f"expected a non-negative integer, got {x!r}")
    return x


def _str(x: Any) -> str:
    if not isinstance(x, str):
        raise CodecError(f"expected a string, got {type(x).__name__}")
    return x


def _bin(x: Any) -> bytes:
    if not isinstance(x, bytes):
        raise CodecError(f"expected bytes, got {type(x).__name__}")
    return x


def _dec_signed(x: Any) -> Signed:
    body, signer, sig = _list(x, 3)
    raw = _bin(body)
    return Signed(raw, _str(signer), _bin(sig), decode_body(raw))


def _dec_signed_list(x: Any) -> tuple[Signed, ...]:
    return tuple(_dec_signed(s) for s in _list(x))


def _dec_pp(x: Any) -> PrePrepare:
    header, batch = _list(x, 2)
    pp = PrePrepare(_dec_signed(header), _dec_signed_list(batch))
    if not isinstance(pp.header.msg, Header) or not all(isinstance(r.msg, Request) for r in pp.batch):
        raise CodecError("a pre-prepare needs a signed header and signed requests")
    return pp


def _decode_fields(tag: str, f: list[Any]) -> Body:
    if tag == "req":
        c, ts, op = _list(f, 3)
        return Request(_str(c), _int(ts), _bin(op))
    if tag in ("hdr", "com"):
        v, s, d = _list(f, 3)
        return (Header if tag == "hdr" else Commit)(_int(v), _int(s), _bin(d))
    if tag == "prep":
        v, s, d, h = _list(f, 4)
        header = _dec_signed(h)
        if not isinstance(header.msg, Header):
            raise CodecError("a prepare must carry a pre-prepare header")
        return Prepare(_int(v), _int(s), _bin(d), header)
    if tag == "rep":
        v, c, ts, res = _list(f, 4)
        return Reply(_int(v), _str(c), _int(ts), _bin(res))
    if tag == "ckpt":
        s, d = _list(f, 2)
        return Checkpoint(_int(s), _bin(d))
    if tag == "vc":
        v, s, proof, prepared = _list(f, 4)
        pairs = (_list(p, 2) for p in _list(prepared))
        proofs = tuple(PreparedProof(_dec_pp(pp), _dec_signed_list(ps)) for pp, ps in pairs)
        return ViewChange(_int(v), _int(s), _dec_signed_list(proof), proofs)
    if tag == "nv":
        v, vcs, pps = _list(f, 3)
        return NewView(_int(v), _dec_signed_list(vcs), tuple(_dec_pp(p) for p in _list(pps)))
    if tag == "sreq":
        (s,) = _list(f, 1)
        return StateRequest(_int(s))
    if tag == "srep":
        s, snap, proof = _list(f, 3)
        return StateReply(_int(s), _bin(snap), _dec_signed_list(proof))
    raise CodecError(f"unknown PBFT record {tag!r}")


def decode_body(data: bytes) -> Body:
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True)
        parts = _list(doc)
        if not parts:
            raise CodecError("empty record")
        return _decode_fields(_str(parts[0]), parts[1:])
    except CodecError:
        raise
    except _DECODE_ERRORS as exc:
        raise CodecError(f"malformed PBFT record: {exc}") from exc


def decode_frame(data: bytes, max_bytes: int = MAX_FRAME_BYTES) -> Frame:
    """The one reader for PBFT frames off the wire; raises CodecError (or a subclass) on anything wrong.

    Decoded frames are immutable, so the same bytes (a broadcast, a retransmission)
    are decoded once: a small cache keyed by the exact bytes.
    """
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"PBFT frame of {len(data)} bytes exceeds {max_bytes}")
    return _decode_frame(bytes(data))


@functools.lru_cache(maxsize=2048)
def _decode_frame(data: bytes) -> Frame:
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True)
        version, kind, payload = _list(doc, 3)
        if version != WIRE_VERSION:
            raise UnsupportedVersion(f"PBFT wire version {version!r}; this build reads {WIRE_VERSION}")
        if kind == "s":
            return _dec_signed(payload)
        if kind == "pp":
            return _dec_pp(payload)
        if kind == "ev":
            a, b = _list(payload, 2)
            return Evidence(_dec_signed(a), _dec_signed(b))
        raise CodecError(f"unknown PBFT frame kind {kind!r}")
    except CodecError:
        raise
    except _DECODE_ERRORS as exc:
        raise CodecError(f"malformed PBFT frame: {exc}") from exc
