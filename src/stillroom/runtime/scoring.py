"""Total log-probs of candidate continuations (labels) after each of many prompts.

The prompts' common token prefix (a few-shot header) runs once and its KV cache is handed
back to the caller to keep for later calls; the output layer runs only where a candidate
token is predicted, never over the prompt.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from stillroom.runtime.model import LocalModel
from stillroom.runtime.tensors import common_prefix_len, pad_batch

# A shared prompt prefix's ids and the KV cache that holds them (batch of one).
PrefixKV = tuple[tuple[int, ...], Any]

# A shared prompt prefix shorter than this is not worth caching.
_MIN_PREFIX_TOKENS = 8


def score_ids(
    model: LocalModel,
    prompts: list[list[int]],
    targets: list[list[int]],
    *,
    batch_size: int,
    row_tokens: int,
    prefix: PrefixKV | None = None,
) -> tuple[list[list[float]], PrefixKV | None]:
    """(P, C) total log-probs of each target after each prompt, and the prefix cache to keep.

    At most about `row_tokens` (row, token) KV-cache entries are held at once: long prompts
    go fewer per chunk, long candidates fewer per group.
    """
    out: list[list[float]] = []
    start = 0
    while start < len(prompts):
        width = max(map(len, prompts[start : start + batch_size]))
        size = min(batch_size, max(1, row_tokens // width))
        with model.lock, torch.inference_mode():
            chunk = prompts[start : start + size]
            n_prefix, cache, prefix = _prefix_cache(model, chunk, prefix)
            out.extend(_score_chunk(model, chunk, targets, n_prefix, cache, row_tokens).tolist())
        start += size
    return out, prefix


def _score_chunk(
    model: LocalModel,
    prompts: list[list[int]],
    targets: list[list[int]],
    n_prefix: int,
    cache: Any,
    row_tokens: int,
) -> torch.Tensor:
    """(P, C) total log-probs: one pass over the prompts, then one over the candidates."""
    p, device = len(prompts), model.device
    # Prompt suffixes after the shared prefix, right-padded: (P, S).
    ids, suffix_mask = pad_batch([t[n_prefix:] for t in prompts], model.pad_token_id, device)
    mask = torch.cat([suffix_mask.new_ones(p, n_prefix), suffix_mask], dim=1)  # (P, Lp+S)
    positions = n_prefix + torch.arange(ids.shape[1], device=device).expand(p, -1)
    hidden = model.hidden(ids, mask, positions, cache)  # (P, S, H)
    last = suffix_mask.sum(1) - 1  # (P,) each prompt's last real position
    firsts = torch.tensor([t[0] for t in targets], device=device).expand(p, -1)
    scores = model.log_probs(hidden[torch.arange(p), last], firsts)  # (P, C)
    # Candidates of 2+ tokens continue from each prompt's cache, a few at a time: every
    # candidate row holds its own copy of the prompt's KV.
    multi = [j for j, t in enumerate(targets) if len(t) > 1]
    width = mask.shape[1] + max(map(len, targets))
    per_group = max(1, row_tokens // (p * width))
    for g in range(0, len(multi), per_group):
        group = multi[g : g + per_group]
        reuse = g + per_group >= len(multi)  # the last group may consume the cache
        sub = cache if reuse else copy.deepcopy(cache)
        rest = _continuations(model, sub, mask, n_prefix + last + 1, [targets[j] for j in group])
        scores[:, group] += rest
    return scores


def _continuations(
    model: LocalModel, cache: Any, mask: torch.Tensor, start: torch.Tensor, targets: list[list[int]]
) -> torch.Tensor:
    """Log-prob of each target's tokens after its first, given the prompts in `cache`.

    cache and mask (P, L) hold the prompts; start (P,) is each one's next position.
    Rows are prompt-major (row p*G + g). Returns (P, G).
    """
    p, g, device, pad = mask.shape[0], len(targets), model.device, model.pad_token_id
    inputs, input_mask = pad_batch([t[:-1] for t in targets], pad, device)
    nexts, _ = pad_batch([t[1:] for t in targets], pad, device)  # (G, M)
    cache.batch_repeat_interleave(g)
    mask = torch.cat([mask.repeat_interleave(g, 0), input_mask.repeat(p, 1)], dim=1)
    steps = torch.arange(inputs.shape[1], device=device)  # (M,)
    positions = start.repeat_interleave(g)[:, None] + steps  # (P*G, M)
    hidden = model.hidden(inputs.repeat(p, 1), mask, positions, cache)  # (P*G, M, H)
    where = input_mask.repeat(p, 1).bool()  # (P*G, M): positions that predict a token
    picked = model.log_probs(hidden[where], nexts.repeat(p, 1)[where][:, None])[:, 0]
    total = torch.zeros(p * g, device=device)
    return total.index_add_(0, where.nonzero()[:, 0], picked).view(p, g)


def prefix_cache(model: LocalModel, prompts: list[list[int]]) -> tuple[int, Any]:
    """(length of the prompts' shared prefix, a KV cache for the batch holding it once)."""
    n, cache, _ = _prefix_cache(model, prompts, None)
    return n, cache


def _prefix_cache(
    model: LocalModel, prompts: list[list[int]], hit: PrefixKV | None
) -> tuple[int, Any, PrefixKV | None]:
    """A fresh KV cache for the chunk holding the prompts' shared prefix if any, and the
    prefix cache to keep (the one given, or a new one when it no longer fits)."""
    limit = min(map(len, prompts)) - 1  # every prompt keeps >= 1 token for its suffix
    usable = hit
    if usable is None or not all(tuple(t[: len(usable[0])]) == usable[0] for t in prompts):
        usable = None
    if usable is None or len(usable[0]) > limit:
        n = common_prefix_len(prompts, limit) if len(prompts) > 1 else 0
        if n < _MIN_PREFIX_TOKENS:
            return 0, model.new_cache(), hit
        cache = model.new_cache()
        ids = torch.tensor([prompts[0][:n]], device=model.device)  # (1, Lp)
        positions = torch.arange(n, device=model.device)[None]
        model.hidden(ids, torch.ones_like(ids), positions, cache)
        usable = (tuple(prompts[0][:n]), cache)
    cache = copy.deepcopy(usable[1])
    cache.batch_repeat_interleave(len(prompts))
    return len(usable[0]), cache, usable
