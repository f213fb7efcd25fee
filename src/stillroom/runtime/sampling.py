"""Choosing the next token from a row's logits, and the hook that may bias those logits first.

A `LogitsProcessor` (the watermark's, for one) is handed in by whoever owns it: the runtime
only calls it, so it knows nothing of keys or green lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class LogitsProcessor(Protocol):
    """Rewrites a step's logits from each row's previous tokens, before anything reads them."""

    @property
    def context_width(self) -> int:
        """How many previous tokens (prompt tail, then generated) a row's context holds."""
        ...

    def __call__(self, logits: torch.Tensor, contexts: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B, V) logits and each row's last `context_width` tokens -> (B, V) logits."""
        ...


class SamplingParams(Protocol):
    """What the decoding loop reads of a request's sampling parameters (named as in the
    OpenAI API; teachers' GenerationParams is one)."""

    @property
    def temperature(self) -> float | None: ...

    @property
    def top_p(self) -> float | None: ...

    @property
    def n(self) -> int: ...

    @property
    def max_tokens(self) -> int | None: ...

    @property
    def top_logprobs(self) -> int: ...

    @property
    def stop(self) -> tuple[str, ...]: ...


def generator(seed: int, device: torch.device) -> torch.Generator:
    """A row's own random stream, so its sample does not depend on the batch it ran in."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def pick(
    logits: torch.Tensor, params: SamplingParams, generators: list[torch.Generator]
) -> torch.Tensor:
    """Next token per row: greedy when temperature is None or 0, else sampled. (A, V) -> (A,)

    Sampling inverts the CDF with one uniform draw per row from that row's generator:
    exact, and far cheaper than torch.multinomial over a 262k vocabulary.
    """
    if not params.temperature:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / params.temperature, dim=-1)  # (A, V)
    ids = None
    if params.top_p is not None and params.top_p < 1.0:
        probs, ids = nucleus(probs, params.top_p)  # (A, K) each
    cdf = probs.cumsum(dim=-1)  # (A, K or V)
    u = torch.cat([torch.rand(1, generator=g, device=probs.device) for g in generators])
    target = (u * cdf[:, -1])[:, None]  # (A, 1), strictly below each row's total
    picks = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)
    return (picks if ids is None else ids.gather(1, picks))[:, 0]


def nucleus(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest set of most likely tokens whose mass reaches top_p.

    (A, V) probs -> (A, K) probs (zero outside the nucleus) and their (A, K) token ids.
    Sorting a 262k vocabulary costs ~12 ms a row; the nucleus usually lies in the top 1024,
    so only rows whose top 1024 fall short of top_p (flat distributions) get a full sort.
    """
    vocab = probs.shape[-1]
    top, ids = probs.topk(min(1024, vocab), dim=-1)  # (A, K) sorted descending
    short = (top.sum(dim=-1) < top_p).nonzero()[:, 0]
    if len(short):
        top = torch.nn.functional.pad(top, (0, vocab - top.shape[-1]))  # (A, V), zero mass
        ids = torch.nn.functional.pad(ids, (0, vocab - ids.shape[-1]))
        top[short], ids[short] = probs[short].sort(dim=-1, descending=True)
    before = top.cumsum(dim=-1) - top  # mass ranked above each token; 0 for the first
    return top.masked_fill(before >= top_p, 0.0), ids
