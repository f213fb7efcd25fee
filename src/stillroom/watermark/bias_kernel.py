"""Adding the watermark's bias in place, in one pass over each row of logits.

The numpy path in `greenlist.py` builds a (B, V) boolean mask first: six passes over a
262k-id row of uint64 per context, then a pass to add it, about 2-4 ms a row on this
project's CPU, which cost vLLM a fifth of its tokens/s. Here each logit is read once, its
green test computed in registers and delta added where green: about 0.2 ms a row, compiled
by numba (a dependency of ours and of vLLM). Where numba cannot be imported the same result
comes from the numpy mask, so the two paths are checked against each other bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)


def _bias_rows_py(
    logits: np.ndarray,
    rows: np.ndarray,
    seeds: np.ndarray,
    values: np.ndarray,
    threshold: np.uint64,
    delta: np.float32,
) -> None:
    """logits[rows[i], v] += delta wherever mix(values[v] ^ seeds[i]) < threshold."""
    for i in range(rows.shape[0]):
        out = logits[rows[i]]
        seed = seeds[i]
        for v in range(min(values.shape[0], out.shape[0])):
            x = values[v] ^ seed
            x ^= x >> _S30
            x *= _M1
            x ^= x >> _S27
            x *= _M2
            if x < threshold:
                out[v] += delta


def _compiled() -> Callable[..., None] | None:
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; vLLM's venv has it too
        return None
    jit: Any = numba.njit(cache=True, nogil=True, boundscheck=False)
    return jit(_bias_rows_py)


_NOT_YET: Any = object()
# Filled on first use: importing numba takes about 0.3 s, which every command that merely
# imports the watermark would otherwise pay. None: no numba (the numpy mask is used).
_KERNEL: Any = _NOT_YET


def _kernel() -> Callable[..., None] | None:
    global _KERNEL
    if _KERNEL is _NOT_YET:
        _KERNEL = _compiled()
    return _KERNEL


def add_bias_inplace(
    logits: np.ndarray,
    rows: np.ndarray,
    seeds: np.ndarray,
    values: np.ndarray,
    threshold: int,
    delta: float,
) -> bool:
    """Add `delta` to the green logits of `rows` (float32, C-contiguous), in place.

    `seeds[i]` is row `rows[i]`'s context seed and `values` the key's per-id values. False,
    with nothing changed, where the fast path does not apply (no numba, another dtype or
    layout): the caller then adds the numpy mask instead.
    """
    kernel = _kernel()
    if kernel is None or logits.dtype != np.float32 or not logits.flags.c_contiguous:
        return False
    kernel(
        logits,
        np.ascontiguousarray(rows, dtype=np.int64),
        np.ascontiguousarray(seeds, dtype=np.uint64),
        values,
        np.uint64(threshold),
        np.float32(delta),
    )
    return True
