"""Top-k signal codec: a teacher's k most likely tokens at each generated position, compactly.

For every generated token the harvest keeps the teacher's top-k (id, logprob) pairs and the
probability mass outside them. JSON spends ~26 bytes per pair; at k=20 on Gemma's 262,144-token
vocabulary this codec spends ~2.35 on real Gemma 3 270M rows and ~2.9 on synthetic rows with
random ids (`benchmarks/signal_size.py` prints the figures).

    blob = encode_topk(ids, logprobs)        # (T, k) ints, (T, k) floats; rest mass computed
    got = decode_topk(blob)                  # TopKSignals: ids, logprobs, rest_mass, T, k

Guarantees, for `got = decode_topk(encode_topk(ids, logprobs, rest_mass))`:

- ids exact; rows come back sorted by logprob, descending (ties keep the caller's order);
- |logprob error| <= 1/128 + float32 rounding < 0.009 nats, for logprobs in [-16384, 0];
- absent entries (logprob -inf; APIs sometimes return fewer than k) come back as id -1,
  logprob -inf, after the present ones;
- |rest mass error| <= 2.5e-4 * rest + 1e-38: relative error <= 0.025% down to float32's
  smallest normal number; masses below e^-100 decode as 0.

How. Each logprob is rounded on its own to a grid of 1/64 nat, q = round(-logprob * 64), so
errors never accumulate; stored are each row's first q and the differences of consecutive
q's, small non-negative integers because rows are sorted. These, the rest-mass codes (log
space) and the per-row entry counts are Rice coded, with one Rice parameter per group (per
column for the differences, whose scale shrinks down the row). Ids are either fixed-width
(the bit length of the largest id: 18 bits for Gemma) or, when smaller, indices into the
record's sorted table of distinct ids, whose differences are Rice coded: a teacher's top-k
sets reuse the same ~1,000 tokens across a 200-token completion, so that saves ~5 bits per
entry. Quotients go in one unary stream, remainders and ids in one stream of fixed-width
fields, so encode and decode are whole-array numpy operations with no per-entry Python.

Byte layout, version 1. Varints are unsigned LEB128; bit streams are MSB first, zero padded
to a whole byte.

    magic      3 bytes   b"STK"
    version    1 byte    1
    flags      1 byte    bit 0: some row has fewer than k entries (the `missing` group exists)
                         bit 1: ids are indices into a table (the `table` group exists)
    T          varint    generated tokens (rows)
    k          varint    entries per row
    id_bits    1 byte    bits per id field
    D          varint    only if flags bit 1: entries in the id table
    rice_r     1 byte per Rice group, in group order below
    n_unary    varint    byte length of the unary stream
    unary      n_unary   per Rice value v (group order): (v >> r) zero bits, then a one bit
    fixed      ...       per Rice value: its low r bits; then one id field per present entry
                         (row-major): the id, or its index in the table
    crc32      4 bytes   little-endian, over every byte before it

Rice groups, in order:

    missing    only if flags bit 0; per row: k - (number of present entries)
    top        per row with an entry: q of its first (largest) entry
    rest       per row: 0 if the rest mass is below e^-100, else 1 + round(-ln(rest) * 2048)
    gap_j      j = 1 .. k-1; per row with more than j entries: q_j - q_(j-1)
    table      only if flags bit 1: the sorted distinct ids' differences (the first from 0)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from stillroom.errors import StoreError

MAGIC = b"STK"
VERSION = 1

LP_SCALE = 64  # logprob grid: 1/64 nat, so rounding error <= 1/128 < 0.01
LP_FLOOR = -16384.0  # float32 spacing here is 0.002, so the bound above still holds
REST_SCALE = 2048  # rest-mass grid in log space
REST_LOG_FLOOR = 100.0  # rest masses below e^-100 decode as 0
_REST_TOLERANCE = 1e-4  # rest masses this far outside [0, 1] are float noise; clipped
_MAX_ENTRIES = 1 << 22  # T * k per record: 200k tokens at k=20; bounds a bad blob's memory
_MAX_ID_BITS = 32
_MAX_RICE_R = 24  # remainder fields must fit _pack_fields (<= 32 bits)
_FLAG_MISSING = 1
_FLAG_ID_TABLE = 2


@dataclass(frozen=True, eq=False)
class TopKSignals:
    """Decoded top-k signals of one completion."""

    ids: np.ndarray  # (T, k) int64; -1 where absent
    logprobs: np.ndarray  # (T, k) float32; rows descending; -inf where absent
    rest_mass: np.ndarray  # (T,) float32; probability mass outside the stored entries

    @property
    def T(self) -> int:
        return int(self.ids.shape[0])

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])


# --- bit streams ---------------------------------------------------------------------------


def _pack_fields(values: np.ndarray, widths: np.ndarray) -> bytes:
    """values[i] as a widths[i]-bit MSB-first field (widths <= 32), concatenated, zero padded.

    Each field lands in a 64-bit window over two consecutive 32-bit words; fields never
    overlap, so OR-ing them into the words is a sum, which np.add.at does without a loop.
    """
    total = int(widths.sum())
    if total == 0:
        return b""
    offsets = np.cumsum(widths)
    offsets -= widths  # (N,) bit offset of each field
    window = values.astype(np.uint64)
    window <<= (64 - widths - (offsets & 31)).astype(np.uint64)
    word = offsets >> 5
    words = np.zeros(total // 32 + 2, dtype=np.uint64)  # + 2: a zero-width last field's word+1
    np.add.at(words, word, window >> np.uint64(32))
    window &= np.uint64(0xFFFFFFFF)
    word += 1
    np.add.at(words, word, window)
    return words.astype(">u4").tobytes()[: (total + 7) // 8]


def _unpack_fields(data: bytes, start: int, widths: np.ndarray) -> np.ndarray:
    """Inverse of `_pack_fields`: the fields of `widths`, reading `data` from bit `start`."""
    if widths.size == 0:
        return np.zeros(0, dtype=np.int64)
    n_words = len(data) // 4 + 2  # room for the last field's two-word window
    padded = np.zeros(n_words * 4, dtype=np.uint8)
    padded[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    words = padded.view(">u4").astype(np.uint64)
    offsets = start + np.cumsum(widths) - widths
    word, bit = offsets >> 5, offsets & 31
    window = (words[word] << np.uint64(32)) | words[word + 1]
    shifted = window >> (64 - bit - widths).astype(np.uint64)
    mask = (np.uint64(1) << widths.astype(np.uint64)) - np.uint64(1)
    return (shifted & mask).astype(np.int64)


def _rice_params(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per group (consecutive runs of `sizes`), a Rice parameter of (near) least total length.

    The optimum for geometric-like values is near log2(mean); the exact cost is checked
    there and one step either side (the cost is roughly convex in r).
    """
    if values.size == 0:
        return np.zeros(sizes.size, dtype=np.int64)
    ends = np.cumsum(sizes)
    starts = ends - sizes

    def group_sums(x: np.ndarray) -> np.ndarray:
        cum = np.concatenate([[0], np.cumsum(x)])
        return cum[ends] - cum[starts]

    mean = group_sums(values) / np.maximum(sizes, 1)
    guess = np.floor(np.log2(np.maximum(mean, 1.0))).astype(np.int64)  # (G,)
    candidates = np.clip(guess + np.array([[-1], [0], [1]]), 0, _MAX_RICE_R)  # (3, G)
    cost = np.stack(
        [group_sums(values >> np.repeat(r, sizes)) + sizes * (1 + r) for r in candidates]
    )
    return candidates[np.argmin(cost, axis=0), np.arange(sizes.size)]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    """Header fields from a blob; running off the end is a StoreError."""

    def __init__(self, buf: bytes, end: int) -> None:
        self.buf, self.pos, self.end = buf, 0, end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise StoreError("top-k signal blob is truncated (header runs past its end)")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        n, shift = 0, 0
        while True:
            byte = self.take(1)[0]
            n |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return n
            shift += 7
            if shift > 63:
                raise StoreError("top-k signal blob is corrupt (overlong varint)")


# --- encode --------------------------------------------------------------------------------


def _check_inputs(
    ids: np.ndarray, lps: np.ndarray, rest_mass: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    ids = np.asarray(ids)
    lps = np.asarray(lps, dtype=np.float64)
    if ids.ndim != 2 or lps.shape != ids.shape:
        raise ValueError(
            f"ids and logprobs must both be (T, k) arrays; got {ids.shape} and {lps.shape}"
        )
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
    if max(ids.size, ids.shape[1]) > _MAX_ENTRIES:
        raise ValueError(
            f"{ids.shape} is too large for one record (at most {_MAX_ENTRIES} entries); "
            "split the completion"
        )
    if np.isnan(lps).any():
        raise ValueError("logprobs contain NaN; mark absent entries with -inf instead")
    # A logprob is <= 0; allow float noise that rounds to 0 on the grid.
    if (lps > 0.5 / LP_SCALE).any():
        raise ValueError(f"logprobs must be <= 0; got max {lps.max():.4g}")
    present = lps > -np.inf
    if (lps[present] < LP_FLOOR).any():
        raise ValueError(
            f"logprobs below {LP_FLOOR:g} cannot be stored within 0.01; "
            "pass -inf to mark an entry absent"
        )
    ids64 = ids.astype(np.int64)
    kept = ids64[present]
    if kept.size and (kept.min() < 0 or kept.max() >= 1 << _MAX_ID_BITS):
        raise ValueError(f"ids must be in [0, 2^{_MAX_ID_BITS}); got {kept.min()}..{kept.max()}")
    rest = None
    if rest_mass is not None:
        rest = np.asarray(rest_mass, dtype=np.float64)
        if rest.shape != (ids.shape[0],):
            raise ValueError(f"rest_mass must have shape ({ids.shape[0]},), got {rest.shape}")
        bad = np.isnan(rest) | (rest < -_REST_TOLERANCE) | (rest > 1 + _REST_TOLERANCE)
        if bad.any():
            raise ValueError(f"rest_mass must be a probability in [0, 1]; got {rest[bad][0]}")
        rest = np.clip(rest, 0.0, 1.0)
    return ids64, lps, rest


def _bit_length(n: int) -> int:
    return max(1, int(n).bit_length())


def _unique_inverse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(x, return_inverse=True), at half the cost for our sizes (one argsort)."""
    if x.size == 0:
        return x, x
    order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.empty(x.size, dtype=bool)
    first[0] = True
    np.not_equal(xs[1:], xs[:-1], out=first[1:])
    inverse = np.empty(x.size, dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return xs[first], inverse


def _rest_codes(rest: np.ndarray) -> np.ndarray:
    """(T,) rest masses in [0, 1] -> non-negative integer codes (log space; 0 means ~0)."""
    with np.errstate(divide="ignore"):
        neg_log = np.minimum(-np.log(rest), REST_LOG_FLOOR)
    return np.where(neg_log < REST_LOG_FLOOR, 1 + np.rint(neg_log * REST_SCALE), 0).astype(np.int64)


def encode_topk(  # long: the byte layout, written in the order it is read
    ids: np.ndarray, logprobs: np.ndarray, rest_mass: np.ndarray | None = None
) -> bytes:
    """Encode (T, k) top-k ids and logprobs, plus the (T,) mass outside them, into bytes.

    Rows need not be sorted. logprob -inf marks an absent entry (its id is ignored). With
    `rest_mass` None it is 1 - sum(exp(logprobs)) per row, clipped to [0, 1]. Invalid input
    (NaN, positive or < -16384 logprobs, negative ids) raises ValueError.
    """
    ids64, lps, rest = _check_inputs(ids, logprobs, rest_mass)
    T, k = lps.shape
    # Sort each row descending; stable, so tied entries keep the caller's order.
    if T and k > 1 and not (lps[:, :-1] >= lps[:, 1:]).all():
        order = np.argsort(-lps, axis=1, kind="stable")
        lps = np.take_along_axis(lps, order, axis=1)
        ids64 = np.take_along_axis(ids64, order, axis=1)
    present = lps > -np.inf  # (T, k); present entries come first in each row
    n_present = present.sum(axis=1)  # (T,)
    if rest is None:  # in float64, before any rounding
        rest = np.clip(1.0 - np.exp(lps).sum(axis=1), 0.0, 1.0)

    # Each value rounded to its own grid point, so the error stays <= 1/128 down the row.
    q = np.rint(-np.where(present, lps, 0.0) * LP_SCALE).astype(np.int64)  # (T, k)
    gap_present = present[:, 1:].T  # (k-1, T): gaps column-major, one group per column
    parts = [q[n_present > 0, :1].ravel(), _rest_codes(rest), np.diff(q, axis=1).T[gap_present]]
    sizes = [int(n_present.astype(bool).sum()), T, *gap_present.sum(axis=1).tolist()]
    flags = 0
    if (n_present < k).any():
        flags |= _FLAG_MISSING
        parts.insert(0, k - n_present)
        sizes.insert(0, T)
    kept = ids64[present]  # row-major
    table, index = _unique_inverse(kept)
    parts.append(np.diff(table, prepend=0))
    sizes.append(table.size)
    values = np.concatenate(parts).astype(np.int64)
    r = _rice_params(values, np.array(sizes, dtype=np.int64))  # (G,)

    # Ids: fixed width, or indices into the table of distinct ids, whichever is smaller.
    deltas = parts[-1]
    table_cost = int((deltas >> r[-1]).sum()) + table.size * (1 + int(r[-1]))
    index_bits = _bit_length(table.size - 1)
    id_bits = _bit_length(kept.max()) if kept.size else 1
    if table_cost + index_bits * kept.size < id_bits * kept.size:
        flags |= _FLAG_ID_TABLE
        id_fields, id_bits = index, index_bits
    else:
        id_fields = kept
        values, sizes, r = values[: values.size - table.size], sizes[:-1], r[:-1]

    r_each = np.repeat(r, sizes)  # (N,)
    quotients = values >> r_each
    unary_bits = np.zeros(int(quotients.sum()) + values.size, dtype=np.uint8)
    unary_bits[np.cumsum(quotients + 1) - 1] = 1
    unary = np.packbits(unary_bits).tobytes()
    fixed = _pack_fields(
        np.concatenate([values & ((1 << r_each) - 1), id_fields]),
        np.concatenate([r_each, np.full(id_fields.size, id_bits, dtype=np.int64)]),
    )
    header = [MAGIC, bytes([VERSION, flags]), _varint(T), _varint(k), bytes([id_bits])]
    if flags & _FLAG_ID_TABLE:
        header.append(_varint(table.size))
    body = b"".join([*header, r.astype(np.uint8).tobytes(), _varint(len(unary)), unary, fixed])
    return body + zlib.crc32(body).to_bytes(4, "little")


# --- decode --------------------------------------------------------------------------------


def decode_topk(blob: bytes) -> TopKSignals:
    """Decode bytes from `encode_topk`; a corrupt or truncated blob raises StoreError."""
    buf = bytes(blob)
    if buf[:3] != MAGIC:
        raise StoreError("not a top-k signal blob (bad magic); the store may be corrupt")
    if len(buf) < 4 or buf[3] != VERSION:
        version = buf[3] if len(buf) >= 4 else "missing"
        raise StoreError(
            f"top-k signal blob has format version {version}; this stillroom reads version "
            f"{VERSION}. Upgrade stillroom to read this store."
        )
    if len(buf) < 9 or zlib.crc32(buf[:-4]) != int.from_bytes(buf[-4:], "little"):
        raise StoreError("top-k signal blob is corrupt or truncated (checksum mismatch)")
    try:
        return _decode_body(buf)
    except (IndexError, ValueError, OverflowError) as e:  # inconsistent, yet checksummed
        raise StoreError(f"top-k signal blob is corrupt: {e}") from e


def _corrupt(what: str) -> StoreError:
    return StoreError(f"top-k signal blob is corrupt ({what})")


def _decode_body(buf: bytes) -> TopKSignals:  # long: the byte layout, read in order
    rd = _Reader(buf, len(buf) - 4)
    rd.take(4)
    flags = rd.take(1)[0]
    T, k = rd.varint(), rd.varint()
    id_bits = rd.take(1)[0]
    has_missing, has_table = bool(flags & _FLAG_MISSING), bool(flags & _FLAG_ID_TABLE)
    D = rd.varint() if has_table else 0
    if max(k, T * k) > _MAX_ENTRIES or max(T, D) > 8 * len(buf) or not 1 <= id_bits <= _MAX_ID_BITS:
        raise _corrupt(f"T={T}, k={k}, id_bits={id_bits}, table size {D}")
    r = np.frombuffer(
        rd.take(int(has_missing) + 2 + max(k - 1, 0) + int(has_table)), dtype=np.uint8
    ).astype(np.int64)
    if (r > _MAX_RICE_R).any():
        raise _corrupt("Rice parameter out of range")
    n_unary = rd.varint()
    ones = np.flatnonzero(np.unpackbits(np.frombuffer(rd.take(n_unary), dtype=np.uint8)))
    quotients = np.diff(ones, prepend=-1) - 1  # (N,) every Rice value's quotient
    fixed = rd.take(rd.end - rd.pos)

    # The row counts come first: they size every other group.
    bit = 0
    if has_missing:
        if ones.size < T:
            raise _corrupt("unary stream too short")
        missing = (quotients[:T] << r[0]) | _unpack_fields(fixed, 0, np.full(T, r[0]))
        if (missing > k).any():
            raise _corrupt("row count above k")
        n_present, r, quotients, bit = k - missing, r[1:], quotients[T:], T * int(r[0])
    else:
        n_present = np.full(T, k, dtype=np.int64)
    present = np.arange(k) < n_present[:, None]  # (T, k)
    has_top = n_present > 0
    gap_present = present[:, 1:].T  # (k-1, T)
    sizes = np.array(
        [has_top.sum(), T, *gap_present.sum(axis=1).tolist(), *([D] if has_table else [])],
        dtype=np.int64,
    )
    if quotients.size != sizes.sum() or (n_unary and n_unary * 8 - int(ones[-1]) > 8):
        raise _corrupt(f"unary stream holds {ones.size} values, expected {sizes.sum()}")
    n_ids = int(present.sum())
    r_each = np.repeat(r, sizes)
    widths = np.concatenate([r_each, np.full(n_ids, id_bits, dtype=np.int64)])
    total_bits = bit + int(widths.sum())
    if not total_bits <= 8 * len(fixed) < total_bits + 8:
        raise _corrupt(f"fixed stream of {len(fixed)} bytes, expected {(total_bits + 7) // 8}")
    fields = _unpack_fields(fixed, bit, widths)
    values = (quotients << r_each) | fields[: r_each.size]
    top, rest_code, gaps, deltas = np.split(values, np.cumsum([sizes[0], T, gap_present.sum()]))
    id_fields = fields[r_each.size :]
    if has_table:
        if (id_fields >= D).any():
            raise _corrupt("id index past the table")
        id_fields = np.cumsum(deltas)[id_fields]

    q = np.zeros((T, k), dtype=np.int64)
    if k:
        q[has_top, 0] = top
        gap_matrix = np.zeros((max(k - 1, 0), T), dtype=np.int64)
        gap_matrix[gap_present] = gaps
        q[:, 1:] = gap_matrix.T
    q = np.cumsum(q, axis=1)
    logprobs = np.where(present, -q / LP_SCALE, -np.inf).astype(np.float32)
    ids = np.full((T, k), -1, dtype=np.int64)
    ids[present] = id_fields
    rest = np.where(rest_code > 0, np.exp(-(rest_code - 1) / REST_SCALE), 0.0)
    return TopKSignals(ids=ids, logprobs=logprobs, rest_mass=rest.astype(np.float32))
