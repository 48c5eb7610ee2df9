"""Deterministic random draws keyed on content, not on arrival order.

Every random choice the simulator makes is a pure function of (seed, what was asked, which occurrence of
that request it is), so concurrent clients see the same outcomes whatever order requests arrive in.
"""

from __future__ import annotations

import struct
from hashlib import blake2b
from statistics import NormalDist

_STD_NORMAL = NormalDist()
_INV_2_53 = 1.0 / (1 << 53)
_PACK_KEY = struct.Struct("<QQQ").pack
_MASK = 0xFFFFFFFFFFFFFFFF


def digest64(data: bytes) -> int:
    """An 8-byte digest of `data` as an unsigned int (used for per-body bookkeeping)."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def uniforms(seed: int, key: int, index: int, count: int = 4) -> tuple[float, ...]:
    """`count` (<= 8) independent uniforms in [0, 1) determined by (seed, key, index)."""
    raw = blake2b(_PACK_KEY(seed & _MASK, key & _MASK, index & _MASK), digest_size=8 * count).digest()
    return tuple((int.from_bytes(raw[i : i + 8], "little") >> 11) * _INV_2_53 for i in range(0, 8 * count, 8))


def normal(u: float) -> float:
    """A standard normal deviate from a uniform in [0, 1) (inverse CDF, clamped away from 0 and 1)."""
    if u < 1e-12:
        u = 1e-12
    elif u > 1.0 - 1e-12:
        u = 1.0 - 1e-12
    return _STD_NORMAL.inv_cdf(u)


def text_key(*parts: str) -> int:
    """An 8-byte key for a tuple of strings (unambiguous: parts are length-prefixed)."""
    h = blake2b(digest_size=8)
    for p in parts:
        b = p.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return int.from_bytes(h.digest(), "little")
