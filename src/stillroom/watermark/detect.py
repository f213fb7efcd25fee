"""Is this text watermarked? A one-sided exact binomial test on its green tokens.

Without the watermark each scored token is green with probability gamma, independently of
the others (the green list of every context is a fresh keyed draw), so the green count of n
scored tokens is Binomial(n, gamma) and the p-value P(X >= green) is exact: no normal
approximation, which overstates significance on short texts. The z-score is reported too,
as the paper does: (green - gamma n) / sqrt(n gamma (1 - gamma)).

Two choices keep that null true on real text:

- A (context, token) pair is scored once however often it occurs. Its greenness is fixed by
  the key, so a repeated phrase ("of the", a code idiom) would count the same coin flip again
  and again and make ordinary text look marked.
- The first `context_width` tokens are skipped: their context lies before the text we see.

The detector reads token ids. For text, the teacher's tokenizer re-encodes it; a decoded
and re-encoded sequence can split a few words differently from the sampled ids, which only
costs a little power (those pairs score as unmarked), never validity.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import binom

from stillroom.errors import InputError
from stillroom.runtime.loading import load_tokenizer
from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey

__all__ = ["Detection", "detect", "detect_many", "detect_text", "detect_texts"]

# Fast tokenizers fail ("Already borrowed") when two threads encode with one at once.
_TOKENIZER_LOCK = threading.Lock()


@dataclass(frozen=True)
class Detection:
    tokens: int  # token ids given
    tokens_scored: int  # distinct (context, token) pairs after the first context_width tokens
    green: int  # how many of those pairs are green
    z: float
    p_value: float  # P(green >= observed) if the text were not watermarked: exact binomial
    key_id: str
    gamma: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect(token_ids: Sequence[int], key: WatermarkKey | GreenList) -> Detection:
    """Score one token-id sequence against a key."""
    return detect_many([token_ids], key)[0]


def detect_many(
    sequences: Sequence[Sequence[int]], key: WatermarkKey | GreenList
) -> list[Detection]:
    """Score many sequences; shares context seeds between them and computes p-values at once."""
    green_list = key if isinstance(key, GreenList) else GreenList(key)
    counts = np.array([_count(s, green_list) for s in sequences], dtype=np.int64).reshape(-1, 2)
    return _detections([len(s) for s in sequences], counts[:, 0], counts[:, 1], green_list.key)


def detect_text(text: str, key: WatermarkKey | GreenList, tokenizer: Any = None) -> Detection:
    """Score a text, tokenized as the teacher does (default: the built-in Gemma tokenizer)."""
    return detect_texts([text], key, tokenizer)[0]


def detect_texts(
    texts: Sequence[str], key: WatermarkKey | GreenList, tokenizer: Any = None
) -> list[Detection]:
    """Score many texts: one batched tokenizer call, then `detect_many`."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    if not texts:
        return []
    with _TOKENIZER_LOCK:
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return detect_many(ids, key)


def _count(token_ids: Sequence[int], green_list: GreenList) -> tuple[int, int]:
    """(distinct scored pairs, green among them) of one sequence."""
    w = green_list.width
    ids = np.asarray(token_ids, dtype=np.int64)
    if len(ids) <= w:
        return 0, 0
    if ids.min() < 0:
        raise InputError(f"token ids must be non-negative; got {int(ids.min())}")
    pairs = np.unique(sliding_window_view(ids, w + 1), axis=0)  # (U, w + 1): context, token
    green = green_list.green_pairs(pairs[:, :w], pairs[:, w])
    return len(pairs), int(green.sum())


def _detections(
    tokens: list[int], n: np.ndarray, green: np.ndarray, key: WatermarkKey
) -> list[Detection]:
    gamma = key.gamma
    p = np.where(n > 0, binom.sf(green - 1, n, gamma), 1.0)  # P(X >= green)
    spread = np.sqrt(np.maximum(n, 1) * gamma * (1 - gamma))
    z = np.where(n > 0, (green - gamma * n) / spread, 0.0)
    return [
        Detection(
            tokens=t,
            tokens_scored=int(n_i),
            green=int(g_i),
            z=float(z_i),
            p_value=float(min(1.0, max(0.0, p_i))),
            key_id=key.key_id,
            gamma=gamma,
        )
        for t, n_i, g_i, z_i, p_i in zip(tokens, n, green, z, p, strict=True)
    ]
