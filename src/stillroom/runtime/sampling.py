"""Choosing the next token from a row's logits, and the hook that may bias those logits first.

A `LogitsProcessor` (the watermark's, for one) is handed in by whoever owns it: the runtime
only calls it, so it knows nothing of keys or green lists.

A sampled token is the inverse CDF of the tempered softmax at one uniform draw from the row's
own generator, found in two levels (a block of ids by the blocks' masses, then an id within
it) so that a 262k-wide row costs a few elementwise passes rather than a serial cumsum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

# Vocabulary block of the two-level inverse CDF: ~sqrt(262k), so both levels stay short.
_BLOCK = 512


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
    logits: torch.Tensor,
    params: SamplingParams,
    generators: list[torch.Generator],
    scratch: bool = False,
) -> torch.Tensor:
    """Next token per row: greedy when temperature is None or 0, else sampled. (A, V) -> (A,)

    Sampling inverts the CDF with one uniform draw per row from that row's generator, so a
    row's sample depends on its seed and logits only, never on the batch it ran in: exact,
    and far cheaper than torch.multinomial over a 262k vocabulary. With `scratch`, the
    caller reads `logits` no more and they may be overwritten: no (A, V) copy is made.
    """
    if not params.temperature:
        return logits.argmax(dim=-1)
    u = torch.cat([torch.rand(1, generator=g, device=logits.device) for g in generators])
    if params.top_p is None or params.top_p >= 1.0:
        return sample_blocks(logits if scratch else logits.clone(), params.temperature, u)
    probs = torch.softmax(logits / params.temperature, dim=-1)  # (A, V)
    probs, ids = nucleus(probs, params.top_p)  # (A, K) each
    picks = invert_cdf(probs.cumsum(dim=-1), u)  # (A,)
    return ids.gather(1, picks[:, None])[:, 0]


def sample_blocks(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    """Token drawn at quantile u[a] of softmax(logits[a] / temperature): (A, V), (A,) -> (A,).
    Overwrites `logits` (a fresh 262k-wide buffer per step costs page faults, not just copying).

    The vocabulary is cut into blocks of _BLOCK ids: the quantile first picks a block by
    the blocks' masses, then a token within it. The same inverse CDF as one cumulative sum
    over the whole vocabulary, but a 262k-wide row is read a few times by cheap elementwise
    passes instead of a serial cumsum, softmax and their copies, and the sums are shorter
    (so rounding errs less).
    """
    rows, vocab = logits.shape
    weights = logits.sub_(logits.amax(dim=-1, keepdim=True)).mul_(1.0 / temperature).exp_()
    # (A, V) unnormalised probabilities, 1 at each row's most likely id
    pad = -vocab % _BLOCK
    if pad:  # small vocabularies: zero-mass ids fill the last block
        weights = torch.nn.functional.pad(weights, (0, pad))
    blocks = weights.reshape(rows, -1, _BLOCK)  # (A, nb, _BLOCK)
    mass = blocks.sum(dim=-1)  # (A, nb)
    cdf = mass.cumsum(dim=-1)  # (A, nb)
    block = invert_cdf(cdf, u)  # (A,)
    target = u * cdf[:, -1]  # (A,): the quantile, in unnormalised mass
    below = (cdf - mass).gather(1, block[:, None])[:, 0]  # (A,): mass of earlier blocks
    inner = blocks[torch.arange(rows, device=logits.device), block].cumsum(dim=-1)  # (A, B)
    within = ((target - below) / inner[:, -1]).clamp(0.0, 1.0)
    return block * _BLOCK + invert_cdf(inner, within)


def invert_cdf(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """First index whose running mass exceeds fraction u[a] of row a's total: (A, K), (A,).

    A quantile that rounding puts at or past the total picks the last id with any mass,
    never a zero-mass one.
    """
    target = (u * cdf[:, -1])[:, None]  # (A, 1)
    picks = torch.searchsorted(cdf, target, right=True)[:, 0]  # (A,)
    return torch.minimum(picks, cdf.argmax(dim=-1))  # argmax: the first id reaching the total


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
