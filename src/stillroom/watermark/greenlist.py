"""Which tokens are green after a context: for a whole vocabulary at once, or for one token.

Kirchenbauer et al. seed a PRNG with the previous token and permute the vocabulary, the
first gamma*V ids being green. Permuting 262k ids at every step of every row is slow, so
the same kind of list comes from integer arithmetic instead:

    value[v]   = mix(vocab_seed + (v + 1) * GOLDEN)          per key, per vocabulary id
    seed(ctx)  = blake2b(ctx ids, key=secret)                per context: 64 bits
    green(v)  <=> mix(value[v] XOR seed(ctx)) < gamma * 2^64

`mix` is splitmix64's multiply-xorshift finalizer (without its last xorshift, which only
touches the low bits a comparison against gamma * 2^64 hardly reads). After two rounds every
output bit depends on every input bit, so the lists of two contexts, or of two keys, are as
good as independent draws, and about gamma of any set of ids is green. The seed is a keyed
cryptographic hash, so nobody without the secret can compute a context's list.

All arithmetic is on unsigned 64-bit integers: numpy uint64 arrays (which wrap modulo 2^64 by
definition) for the vectorised paths and Python ints masked to 64 bits for the scalar one, so
the two agree bit for bit. torch's int64 would overflow into negative numbers and shift them
arithmetically; torch only receives the finished boolean mask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from stillroom.watermark.key import WatermarkKey

if TYPE_CHECKING:
    import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: splitmix64's counter step
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
# Detection caches context seeds; past this many entries the cache starts afresh.
_SEED_CACHE_MAX = 1 << 20


def _mix(x: int) -> int:
    """The scalar finalizer on a Python int in [0, 2^64)."""
    x ^= x >> 30
    x = (x * _M1) & _MASK64
    x ^= x >> 27
    return (x * _M2) & _MASK64


def _mix_inplace(x: np.ndarray, tmp: np.ndarray | None = None) -> np.ndarray:
    """The same finalizer on a uint64 array, in place; `tmp` is scratch of x's shape."""
    tmp = np.empty_like(x) if tmp is None else tmp
    np.right_shift(x, np.uint64(30), out=tmp)
    x ^= tmp
    x *= np.uint64(_M1)
    np.right_shift(x, np.uint64(27), out=tmp)
    x ^= tmp
    x *= np.uint64(_M2)
    return x


class GreenList:
    """The green lists of one key. Cheap to build; caches the per-id values it computes."""

    def __init__(self, key: WatermarkKey) -> None:
        self.key = key
        self.width = key.context_width
        digest = hashlib.blake2b(key.secret, digest_size=8, person=b"stillroom-vocab").digest()
        self._vocab_seed = int.from_bytes(digest, "little")
        # green iff mixed < threshold: exactly a fraction gamma of [0, 2^64), to 2^-53.
        self.threshold = min(int(key.gamma * 2.0**64), _MASK64)
        self._values = np.empty(0, dtype=np.uint64)  # value[v] for v < len, grown on demand
        self._seeds: dict[tuple[int, ...], int] = {}

    # ---- per-id values and per-context seeds -------------------------------------------

    def token_value(self, token: int) -> int:
        return _mix((self._vocab_seed + (token + 1) * _GOLDEN) & _MASK64)

    def token_values(self, tokens: np.ndarray) -> np.ndarray:
        """value[v] for an array of non-negative ids: uint64, same shape."""
        x = tokens.astype(np.uint64) + np.uint64(1)
        x *= np.uint64(_GOLDEN)
        x += np.uint64(self._vocab_seed)
        return _mix_inplace(x)

    def vocab_values(self, vocab_size: int) -> np.ndarray:
        """value[v] for v in [0, vocab_size): (V,) uint64, computed once per key."""
        if len(self._values) < vocab_size:
            self._values = self.token_values(np.arange(vocab_size, dtype=np.uint64))
        return self._values[:vocab_size]

    def context_seed(self, context: Sequence[int]) -> int:
        """64 bits from a keyed hash of exactly `context_width` token ids."""
        ctx = tuple(int(t) for t in context)
        seed = self._seeds.get(ctx)
        if seed is None:
            if len(ctx) != self.width or min(ctx) < 0:
                raise ValueError(f"a context is {self.width} non-negative token ids; got {ctx}")
            material = b"".join(t.to_bytes(8, "little") for t in ctx)
            digest = hashlib.blake2b(
                material, digest_size=8, key=self.key.secret, person=b"stillroom-ctx"
            ).digest()
            seed = int.from_bytes(digest, "little")
            if len(self._seeds) >= _SEED_CACHE_MAX:
                self._seeds = {}
            self._seeds[ctx] = seed
        return seed

    # ---- greenness ----------------------------------------------------------------------

    def is_green(self, context: Sequence[int], token: int) -> bool:
        """One token after one context (the reference the vectorised paths must match)."""
        mixed = _mix(self.token_value(token) ^ self.context_seed(context))
        return mixed < self.threshold

    def green_mask_np(self, contexts: np.ndarray, vocab_size: int) -> np.ndarray:
        """(B, w) context ids -> (B, V) bool: every vocabulary id after every context.

        Row by row: one row's 2 MB of uint64 stays in cache through the six passes of the
        mix, where a whole (B, V) array would stream through memory each pass (3x slower).
        """
        values = self.vocab_values(vocab_size)  # (V,)
        out = np.empty((len(contexts), vocab_size), dtype=bool)
        row, tmp = np.empty_like(values), np.empty_like(values)
        threshold = np.uint64(self.threshold)
        for b, context in enumerate(contexts.tolist()):
            np.bitwise_xor(values, np.uint64(self.context_seed(context)), out=row)
            np.less(_mix_inplace(row, tmp), threshold, out=out[b])
        return out

    def green_mask(self, contexts: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """(B, w) LongTensor -> (B, V) BoolTensor on the contexts' device."""
        import torch

        mask = self.green_mask_np(contexts.detach().cpu().numpy(), vocab_size)
        return torch.from_numpy(mask).to(contexts.device)

    def green_pairs(self, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """(N, w) contexts and (N,) tokens -> (N,) bool: one token after each context."""
        if len(tokens) == 0:
            return np.zeros(0, dtype=bool)
        distinct, where = group_contexts(np.asarray(contexts).reshape(len(tokens), -1))
        return self.green_grouped(distinct, where, np.asarray(tokens))

    def green_grouped(
        self, distinct: np.ndarray, where: np.ndarray, tokens: np.ndarray
    ) -> np.ndarray:
        """`green_pairs` on contexts already grouped by `group_contexts`: (M, w) distinct
        contexts, (N,) the row of `distinct` each of the (N,) tokens follows. Grouping is the
        costly part and does not depend on the key: score one set of pairs under many keys
        by grouping once."""
        # One keyed hash per distinct context: scoring repeats few contexts over many tokens.
        seeds = np.array([self.context_seed(c) for c in distinct.tolist()], dtype=np.uint64)
        mixed = np.bitwise_xor(self.token_values(tokens), seeds[where])
        return _mix_inplace(mixed) < np.uint64(self.threshold)


def group_contexts(contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, w) non-negative context ids -> ((M, w) distinct contexts, (N,) row of each).

    Each context packs into one int64 when its ids fit (w ids of b bits, w * b <= 62), and a
    1-D unique over those is about 15 times faster than numpy's row-wise unique.
    """
    n, w = contexts.shape
    top = int(contexts.max()) if n else 0
    bits = max(top.bit_length(), 1)
    if w * bits > 62 or int(contexts.min(initial=0)) < 0:
        distinct, where = np.unique(contexts, axis=0, return_inverse=True)
        return distinct, where.reshape(-1)
    packed = np.zeros(n, dtype=np.int64)
    for j in range(w):
        packed = (packed << bits) | contexts[:, j].astype(np.int64)
    keys, where = np.unique(packed, return_inverse=True)
    mask = (1 << bits) - 1
    distinct = np.stack([(keys >> (bits * (w - 1 - j))) & mask for j in range(w)], axis=1)
    return distinct, where.reshape(-1)
