"""Lossless compact encodings for columns of floats.

msgpack writes every Python float as 9 bytes. Most floats on the bus are
either short decimals (a temperature of 48.3, a load of 0.52) or float32 values
from a detector, and both fit in far fewer bytes without losing a bit:

* a short decimal ``v`` is written as the integer ``m`` with ``v == m / 10**k``;
  with ``|m| <= 2**53`` and ``k <= 22`` both numbers are exact doubles, so one
  IEEE division (correctly rounded in every language) gives ``v`` back;
* a float that is exactly a float32 is written as 4 bytes.

Nothing is ever rounded: a value that fits neither form is written whole.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from typing import Any

from schemas.errors import CodecError

__all__ = [
    "DECIMAL",
    "FLOAT32",
    "FLOAT64",
    "MAX_DECIMAL_EXPONENT",
    "MAX_EXACT_INT",
    "decimal_parts",
    "decode_float_column",
    "encode_float_column",
]

# Column encodings: [DECIMAL, k, [m, ...]] | [FLOAT32, bin] | [FLOAT64, bin] (little-endian).
DECIMAL = 0
FLOAT32 = 1
FLOAT64 = 2
MAX_EXACT_INT = 2**53
# 10**22 is the largest power of ten that is an exact double.
MAX_DECIMAL_EXPONENT = 22

_LITTLE_ENDIAN = sys.byteorder == "little"


def decimal_parts(value: float) -> tuple[int, int] | None:
    """``(k, m)`` with ``value == m / 10**k`` exactly, from the shortest repr; else None.

    None for -0.0 (the sign would be lost), non-finite values and reprs with an
    exponent. ``m`` is not range-checked here.

    >>> decimal_parts(48.3), decimal_parts(3.0), decimal_parts(1e-7)
    ((1, 483), (0, 3), None)
    """
    text = float.__repr__(value)
    if "e" in text or "n" in text or (text[0] == "-" and value == 0.0):
        return None
    point = text.index(".")
    fraction = text[point + 1:]
    if fraction == "0":
        return 0, int(text[:point])
    return len(fraction), int(text[:point] + fraction)


def _msgpack_int_size(m: int) -> int:
    if -32 <= m <= 127:
        return 1
    if -128 <= m <= 255:
        return 2
    if -32768 <= m <= 65535:
        return 3
    if -(2**31) <= m <= 2**32 - 1:
        return 5
    return 9


def _decimal_column(values: Sequence[float],
                    budget: int) -> tuple[int, list[int], int] | None:
    """``(k, ms, size)`` writing every value as ``m / 10**k`` with one shared k, or None.

    Gives up (None) as soon as the msgpack size of the mantissas must exceed
    ``budget`` bytes: sharing k only ever makes mantissas larger, so the sizes
    of the unshared ones plus a byte per value still to come are a lower bound.
    """
    parts = []
    exponent = 0
    lower_bound = len(values)
    for value in values:
        part = decimal_parts(value)
        if part is None:
            return None
        lower_bound += _msgpack_int_size(part[1]) - 1
        if lower_bound > budget:
            return None
        parts.append(part)
        if part[0] > exponent:
            exponent = part[0]
    if exponent > MAX_DECIMAL_EXPONENT:
        return None
    mantissas = []
    size = 0
    for k, m in parts:
        scaled = m * 10 ** (exponent - k)
        if not -MAX_EXACT_INT <= scaled <= MAX_EXACT_INT:
            return None
        size += _msgpack_int_size(scaled)
        mantissas.append(scaled)
    return exponent, mantissas, size


def _packed(typecode: str, values: Sequence[float]) -> bytes:
    packed = array(typecode, values)
    if not _LITTLE_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def encode_float_column(values: Sequence[float]) -> list[Any]:
    """The smallest lossless encoding of ``values`` (see the module docstring)."""
    if not values:
        return [FLOAT32, b""]
    # Out-of-range doubles become inf and NaN never compares equal, so both fail
    # this test; -0.0 == 0.0 passes it, which is fine because float32 keeps the sign.
    if array("f", values).tolist() == list(values):
        best_size, best = 4 * len(values), [FLOAT32, _packed("f", values)]
    else:
        best_size, best = 8 * len(values), [FLOAT64, _packed("d", values)]
    decimal = _decimal_column(values, best_size - 1)
    if decimal is not None:
        return [DECIMAL, decimal[0], decimal[1]]
    return best


def decode_float_column(column: object, count: int, what: str) -> list[float]:
    """The ``count`` floats in an encoded column; a :class:`CodecError` naming ``what`` if not."""
    if not isinstance(column, list) or not column or type(column[0]) is not int:
        raise CodecError(f"{what} must be [encoding, ...] with encoding 0, 1 or 2")
    encoding = column[0]
    if encoding == DECIMAL:
        if len(column) != 3 or type(column[1]) is not int or not isinstance(column[2], list):
            raise CodecError(f"{what}: a decimal column is [0, k, [m, ...]]")
        exponent, mantissas = column[1], column[2]
        if not 0 <= exponent <= MAX_DECIMAL_EXPONENT:
            raise CodecError(f"{what}: decimal exponent {exponent} is outside 0..22")
        if len(mantissas) != count:
            raise CodecError(f"{what} has {len(mantissas)} values; expected {count}")
        divisor = 10**exponent
        out = []
        for m in mantissas:
            if type(m) is not int or not -MAX_EXACT_INT <= m <= MAX_EXACT_INT:
                raise CodecError(f"{what}: decimal mantissas are integers within +-2**53")
            out.append(m / divisor)
        return out
    if encoding in (FLOAT32, FLOAT64):
        if len(column) != 2 or not isinstance(column[1], bytes):
            raise CodecError(f"{what}: a float{32 if encoding == FLOAT32 else 64} column is "
                             f"[{encoding}, bin]")
        typecode = "f" if encoding == FLOAT32 else "d"
        width = 4 if encoding == FLOAT32 else 8
        if len(column[1]) != width * count:
            raise CodecError(f"{what} holds {len(column[1])} bytes; expected {width} x {count}")
        unpacked: array[float] = array(typecode)
        unpacked.frombytes(column[1])
        if not _LITTLE_ENDIAN:
            unpacked.byteswap()
        floats: list[float] = unpacked.tolist()
        return floats
    raise CodecError(f"{what}: unknown float column encoding {encoding}")
