"""The sampling loop: our own loop over the KV cache rather than `model.generate`.

Each row samples from its own seeded generator (the same seed gives the same sample in any
batch), finished rows leave the batch, and stop strings end a row as soon as they appear.
Unless the caller asks for token ids only (`Decoding.logprobs`), at every step the row's
log-prob of its token and its top-k log-probs are kept, taken from the logits at temperature 1
(after the logits processor, if any, before temperature or top-p): the distribution the
token was drawn from, not the sampler's warped one. Each step is reduced to top-k as it is
made, so the (steps, batch, vocab) logits never pile up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from stillroom.runtime.model import LocalModel
from stillroom.runtime.sampling import LogitsProcessor, SamplingParams, generator, pick
from stillroom.runtime.tensors import pad_batch

# Stop strings are looked for in the decoded tail of this many tokens beyond their length.
_STOP_TAIL_SLACK = 8


@dataclass
class Row:
    """One sequence being generated, and what the model thought at each step."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_ids: list[np.ndarray] = field(default_factory=list)  # each (k,) int64
    top_logprobs: list[np.ndarray] = field(default_factory=list)  # each (k,) float32
    finish: str | None = None
    hit_stop_string: bool = False
    # The prompt's last tokens: the processor's context until enough tokens are generated.
    prompt_tail: list[int] = field(default_factory=list)

    def context(self, width: int) -> list[int]:
        """The last `width` tokens of prompt + generated (fewer only if both are short)."""
        if len(self.ids) >= width:
            return self.ids[len(self.ids) - width :]
        need = width - len(self.ids)
        return self.prompt_tail[max(0, len(self.prompt_tail) - need) :] + self.ids


@dataclass
class Decoding:
    """What one step needs besides the logits: the rules a row ends by."""

    params: SamplingParams
    eos_token_ids: frozenset[int]
    decode_text: Callable[[list[int]], str]  # for stop strings
    processor: LogitsProcessor | None
    # False: rows keep their token ids only (a caller that reads text, such as the trace,
    # skips the full-vocabulary normalisation and top-k of every step).
    logprobs: bool = True

    def ends_in_stop(self, ids: list[int]) -> bool:
        stop = self.params.stop
        tail = self.decode_text(ids[-(max(map(len, stop)) + _STOP_TAIL_SLACK) :])
        return any(s in tail for s in stop)


def decode(
    model: LocalModel,
    prompts: list[list[int]],
    seeds: list[int],
    how: Decoding,
) -> list[Row]:
    """Prefill once, then one token per step for the rows still open.

    Row j samples prompt j // n with seed j; call under `model.lock` and inference_mode.
    """
    params = how.params
    ids, mask = pad_batch(prompts, model.pad_token_id, model.device, left=True)  # (B, L)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L): left padding shifts them
    cache = model.new_cache()
    logits = model.logits(ids, mask, positions, cache)  # (B, V)
    if params.n > 1:  # prefill each prompt once, then fork its cache n ways
        cache.batch_repeat_interleave(params.n)
        logits = logits.repeat_interleave(params.n, dim=0)
        mask = mask.repeat_interleave(params.n, dim=0)
        positions = positions.repeat_interleave(params.n, dim=0)
    limit = max_new_tokens(params, ids.shape[1], model.max_positions)
    width = how.processor.context_width if how.processor is not None else 0
    # Only a processor reads the prompt's tail.
    rows = [
        Row(prompt_tail=prompts[j // params.n][-width:] if width else []) for j in range(len(seeds))
    ]
    active = list(range(len(rows)))  # rows still generating, in cache order
    generators = [generator(s, model.device) for s in seeds] if params.temperature else []
    positions = positions[:, -1:]  # (R, 1)
    while True:
        next_ids = _step(logits, [rows[r] for r in active], generators, how, limit)
        keep = [i for i, r in enumerate(active) if rows[r].finish is None]
        if not keep:
            return rows
        if len(keep) < len(active):  # drop finished rows from the batch and its cache
            index = torch.tensor(keep, device=model.device)
            cache.batch_select_indices(index)
            mask, positions, next_ids = mask[index], positions[index], next_ids[index]
            active = [active[i] for i in keep]
            generators = [generators[i] for i in keep] if generators else []
        mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)  # (A, L + t)
        positions = positions + 1
        logits = model.logits(next_ids[:, None], mask, positions, cache)  # (A, V)


def max_new_tokens(params: SamplingParams, prompt_len: int, max_positions: int | None) -> int:
    """The most tokens a row may add: max_tokens, within the model's context window."""
    room = (max_positions or 1 << 30) - prompt_len
    wanted = room if params.max_tokens is None else params.max_tokens
    return max(1, min(wanted, room))


def _step(
    logits: torch.Tensor,
    rows: list[Row],
    generators: list[torch.Generator],
    how: Decoding,
    limit: int,
) -> torch.Tensor:
    """Pick each open row's next token and record the model's distribution there."""
    params = how.params
    if how.processor is not None:  # first: what is recorded is what is sampled from
        width = how.processor.context_width
        logits = how.processor(logits, [row.context(width) for row in rows])  # (A, V)
    # Without log-probs nothing reads the logits after sampling, which may overwrite them.
    next_ids = pick(logits, params, generators, scratch=not how.logprobs)  # (A,)
    if how.logprobs:
        _record(logits, next_ids, rows, params.top_logprobs)
    for row, token in zip(rows, next_ids.tolist(), strict=True):
        row.ids.append(token)
        if token in how.eos_token_ids:
            row.finish = "stop"
        elif params.stop and how.ends_in_stop(row.ids):
            row.finish, row.hit_stop_string = "stop", True
        elif len(row.ids) >= limit:
            row.finish = "length"
    return next_ids


def _record(logits: torch.Tensor, next_ids: torch.Tensor, rows: list[Row], top: int) -> None:
    """Each row's log-prob of its token and its top-k, from the logits at temperature 1."""
    norm = torch.logsumexp(logits, dim=-1, keepdim=True)  # (A, 1)
    chosen = (logits.gather(1, next_ids[:, None]) - norm)[:, 0].tolist()  # (A,)
    k = min(top, logits.shape[-1])
    if k:
        top_logits, top_ids = logits.topk(k, dim=-1)  # (A, k), sorted descending
        top_lp_np = (top_logits - norm).cpu().numpy().astype(np.float32)
        top_ids_np = top_ids.cpu().numpy().astype(np.int64)
    for i, row in enumerate(rows):
        row.logprobs.append(chosen[i])
        if k:
            row.top_ids.append(top_ids_np[i])
            row.top_logprobs.append(top_lp_np[i])
