"""The top-k signal codec: round trips within the stated bounds, corruption caught, size budget.

Guarantees under test (see stillroom.harvest.signals):
- ids exact; rows sorted by logprob, descending, ties in the caller's order;
- |logprob error| <= 0.01, the requirement; the codec promises 1/128 + float32 rounding;
- |rest mass error| <= 2.5e-4 * rest + 1e-38;
- <= 4 bytes per (id, logprob) entry, all overhead included, at k=20 over 262,144 ids.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stillroom.errors import StoreError
from stillroom.harvest.signals import TopKSignals, decode_topk, encode_topk

VOCAB = 262_144
LP_TOL = 1 / 128 + 1e-5  # half the 1/64 grid + float32 rounding for |logprob| <= 100
REST_REL_TOL = 2.5e-4
REST_ABS_TOL = 1e-38


@st.composite
def records(draw: st.DrawFn, max_t: int = 24, max_k: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """(T, k) ids and logprobs: unsorted rows, ties, absent (-inf) entries, tiny and huge ids."""
    T = draw(st.integers(0, max_t))
    k = draw(st.integers(1, max_k))
    id_high = draw(st.sampled_from([1, 50, VOCAB, 2**31]))
    ids = draw(hnp.arrays(np.int64, (T, k), elements=st.integers(0, id_high - 1)))
    lp = st.one_of(
        st.floats(-100.0, 0.0),  # includes -0.0
        st.sampled_from([-0.5, -2.0, -7.25, -100.0]),  # ties
        st.just(-np.inf),  # absent
    )
    lps = draw(hnp.arrays(np.float64, (T, k), elements=lp))
    return ids, lps


def expected(ids: np.ndarray, lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What decode must return: rows stably sorted descending, absent entries as id -1."""
    order = np.argsort(-lps, axis=1, kind="stable")
    ids, lps = np.take_along_axis(ids, order, 1), np.take_along_axis(lps, order, 1)
    return np.where(np.isneginf(lps), -1, ids), lps


def default_rest(lps: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.exp(lps.astype(np.float64)).sum(axis=1), 0.0, 1.0)


def assert_round_trip(got: TopKSignals, ids: np.ndarray, lps: np.ndarray, rest: np.ndarray) -> None:
    want_ids, want_lps = expected(ids, lps)
    assert got.ids.dtype == np.int64 and got.ids.shape == ids.shape
    assert got.logprobs.dtype == np.float32 and got.logprobs.shape == ids.shape
    assert got.rest_mass.dtype == np.float32 and got.rest_mass.shape == (ids.shape[0],)
    assert (got.T, got.k) == ids.shape
    np.testing.assert_array_equal(got.ids, want_ids)
    absent = np.isneginf(want_lps)
    np.testing.assert_array_equal(np.isneginf(got.logprobs), absent)
    err = np.abs(got.logprobs[~absent].astype(np.float64) - want_lps[~absent])
    assert err.max(initial=0.0) <= LP_TOL
    assert (got.logprobs[:, :-1] >= got.logprobs[:, 1:]).all()  # rows descending
    rest_err = np.abs(got.rest_mass.astype(np.float64) - rest)
    assert (rest_err <= REST_REL_TOL * rest + REST_ABS_TOL).all()


# --- round trips ---------------------------------------------------------------------------


@given(records())
@example((np.zeros((16, 6), dtype=np.int64), np.full((16, 6), -np.inf)))  # zero-width tail
def test_round_trip_with_computed_rest_mass(rec: tuple[np.ndarray, np.ndarray]) -> None:
    ids, lps = rec
    assert_round_trip(decode_topk(encode_topk(ids, lps)), ids, lps, default_rest(lps))


@given(records(), st.data())
def test_round_trip_with_given_rest_mass(
    rec: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    ids, lps = rec
    special = st.sampled_from([0.0, 1.0, 1e-30, 1e-40, 1e-45, 1e-200, 0.5])
    rest = data.draw(hnp.arrays(np.float64, ids.shape[0], elements=st.floats(0, 1) | special))
    assert_round_trip(decode_topk(encode_topk(ids, lps, rest)), ids, lps, rest)


@given(records(max_k=3), st.sampled_from([np.int32, np.uint32, np.int64]))
def test_float32_logprobs_and_narrow_id_dtypes(
    rec: tuple[np.ndarray, np.ndarray], id_dtype: type
) -> None:
    ids, lps = rec
    ids, lps32 = ids % 1000, lps.astype(np.float32)
    got = decode_topk(encode_topk(ids.astype(id_dtype), lps32))
    assert_round_trip(got, ids, lps32.astype(np.float64), default_rest(lps32))


def test_empty_record() -> None:
    for k in (0, 1, 20):
        blob = encode_topk(np.zeros((0, k), dtype=np.int64), np.zeros((0, k)))
        got = decode_topk(blob)
        assert got.ids.shape == got.logprobs.shape == (0, k)
        assert got.rest_mass.shape == (0,)
    assert len(encode_topk(np.zeros((0, 20), dtype=np.int64), np.zeros((0, 20)))) < 40


def test_k_one_and_k_zero() -> None:
    ids, lps = np.array([[7], [262_143], [0]]), np.array([[-0.25], [-np.inf], [0.0]])
    got = decode_topk(encode_topk(ids, lps))
    assert got.ids.tolist() == [[7], [-1], [0]]
    assert got.logprobs[:, 0].tolist() == [-0.25, -np.inf, 0.0]
    np.testing.assert_allclose(got.rest_mass, [1 - np.exp(-0.25), 1.0, 0.0], rtol=3e-4)
    got = decode_topk(encode_topk(np.zeros((3, 0), dtype=np.int64), np.zeros((3, 0))))
    assert got.ids.shape == (3, 0)
    np.testing.assert_array_equal(got.rest_mass, [1.0, 1.0, 1.0])


def test_unsorted_rows_keep_ids_paired_and_ties_keep_order() -> None:
    ids = np.array([[10, 20, 30, 40, 50]])
    lps = np.array([[-3.0, -1.0, -1.0, -np.inf, -0.5]])
    got = decode_topk(encode_topk(ids, lps))
    assert got.ids.tolist() == [[50, 20, 30, 10, -1]]
    assert got.logprobs.tolist() == [[-0.5, -1.0, -1.0, -3.0, -np.inf]]


def test_very_negative_logprobs() -> None:
    lps = np.array([[-100.0, -100.004, -1000.0, -9999.0, -16384.0]])  # -9999: OpenAI's floor
    got = decode_topk(encode_topk(np.arange(5)[None], lps))
    assert np.abs(got.logprobs - lps).max() <= 1 / 128 + 0.001  # float32 spacing at 16384
    np.testing.assert_array_equal(got.ids, np.arange(5)[None])


def test_all_absent_rows() -> None:
    ids = np.array([[1, 2], [3, 4]])
    lps = np.array([[-np.inf, -np.inf], [-1.0, -np.inf]])
    got = decode_topk(encode_topk(ids, lps))
    assert got.ids.tolist() == [[-1, -1], [3, -1]]
    assert got.rest_mass[0] == 1.0


def test_tiny_positive_logprob_is_float_noise() -> None:
    got = decode_topk(encode_topk(np.array([[3]]), np.array([[1e-7]])))
    assert got.logprobs[0, 0] == 0.0


@pytest.mark.parametrize(
    ("ids", "lps", "rest", "message"),
    [
        ([[1, 2]], [[-1.0, np.nan]], None, "NaN"),
        ([[1, 2]], [[0.5, -1.0]], None, "<= 0"),
        ([[1, 2]], [[-1.0, -20000.0]], None, "below"),
        ([[-1, 2]], [[-1.0, -2.0]], None, "ids must be in"),
        ([[1, 2]], [[-1.0]], None, "(T, k)"),
        ([[1.5, 2.0]], [[-1.0, -2.0]], None, "integers"),
        ([[1, 2]], [[-1.0, -2.0]], [1.5], "rest_mass"),
        ([[1, 2]], [[-1.0, -2.0]], [0.1, 0.2], "shape"),
    ],
)
def test_invalid_input_raises(ids: list, lps: list, rest: list | None, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        encode_topk(
            np.array(ids), np.array(lps), None if rest is None else np.array(rest, dtype=float)
        )


def test_golden_bytes() -> None:
    """The version-1 layout, byte for byte: changing it needs a new version number."""
    ids = np.array([[5, 3, 9], [262_143, 0, 1]])
    lps = np.array([[-0.1, -1.5, -np.inf], [-0.01, -0.02, -9.0]])
    blob = encode_topk(ids, lps, np.array([0.5, 0.0]))
    assert blob.hex() == GOLDEN_HEX
    got = decode_topk(bytes.fromhex(GOLDEN_HEX))
    assert got.ids.tolist() == [[5, 3, -1], [262_143, 0, 1]]
    assert got.rest_mass.tolist() == [np.float32(np.exp(-1420 / 2048)), 0.0]


GOLDEN_HEX = "53544b010102031200010905080363332071a00d00fc00050000fffff00000000160e2a941"


# --- corruption ----------------------------------------------------------------------------


def sample_blob() -> bytes:
    rng = np.random.default_rng(1)
    lps = np.sort(-rng.exponential(2.0, (16, 5)), axis=1)[:, ::-1]
    lps[3, 2:] = -np.inf
    return encode_topk(rng.integers(0, VOCAB, (16, 5)), lps)


@given(st.data())
def test_flipped_byte_raises_store_error(data: st.DataObject) -> None:
    blob = bytearray(sample_blob())
    pos = data.draw(st.integers(0, len(blob) - 1))
    blob[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(StoreError):
        decode_topk(bytes(blob))


@given(st.data())
def test_truncated_or_extended_blob_raises_store_error(data: st.DataObject) -> None:
    blob = sample_blob()
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(StoreError):
        decode_topk(blob[:cut])
    with pytest.raises(StoreError):
        decode_topk(blob + data.draw(st.binary(min_size=1, max_size=8)))


@settings(max_examples=300)
@given(st.data())
def test_tampered_blob_with_valid_checksum_never_crashes(data: st.DataObject) -> None:
    """Past the checksum, inconsistent content is a StoreError, never another exception."""
    body = bytearray(sample_blob()[:-4])
    for _ in range(data.draw(st.integers(1, 3))):
        body[data.draw(st.integers(4, len(body) - 1))] = data.draw(st.integers(0, 255))
    blob = bytes(body) + zlib.crc32(body).to_bytes(4, "little")
    try:
        got = decode_topk(blob)
    except StoreError:
        return
    assert got.ids.shape == got.logprobs.shape


def test_store_error_messages_say_what_is_wrong() -> None:
    blob = sample_blob()
    with pytest.raises(StoreError, match="bad magic"):
        decode_topk(b"")
    with pytest.raises(StoreError, match="version 9.*Upgrade"):
        decode_topk(blob[:3] + b"\x09" + blob[4:])
    with pytest.raises(StoreError, match="truncated"):
        decode_topk(blob[:-1])


# --- size on realistic distributions -------------------------------------------------------


def realistic_rows(kind: str, T: int, k: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of a full softmax over 262,144 ids, fixed seed.

    gaussian: logits sigma * N(0, 1), sigma ~ U(1.5, 4.5) per row (flat to moderately peaked);
    zipf: logit of rank r is -s * ln(r) + N(0, 0.3^2), s ~ U(1, 2.5), ranks randomly
    permuted over the ids (top-1 probability from ~0.07 to ~0.9, as in LM outputs).
    """
    rng = np.random.default_rng(seed)
    log_rank = np.log(np.arange(1, VOCAB + 1))
    ids = np.empty((T, k), dtype=np.int64)
    lps = np.empty((T, k))
    for t in range(T):
        if kind == "gaussian":
            logits = rng.standard_normal(VOCAB) * rng.uniform(1.5, 4.5)
        else:
            logits = -rng.uniform(1.0, 2.5) * log_rank + 0.3 * rng.standard_normal(VOCAB)
            logits = logits[rng.permutation(VOCAB)]
        logits -= np.logaddexp.reduce(logits)
        top = np.argpartition(-logits, k)[:k]
        top = top[np.argsort(-logits[top])]
        ids[t], lps[t] = top, logits[top]
    return ids, lps


@pytest.mark.parametrize("kind", ["gaussian", "zipf"])
def test_size_budget_at_k20_on_realistic_rows(kind: str) -> None:
    ids, lps = realistic_rows(kind, T=128)
    blob = encode_topk(ids, lps)
    per_entry = len(blob) / ids.size
    assert per_entry <= 4.0, f"{per_entry:.3f} bytes per entry"
    assert_round_trip(decode_topk(blob), ids, lps, default_rest(lps))
