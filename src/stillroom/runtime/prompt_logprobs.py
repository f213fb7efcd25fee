"""The model's next-token distribution at every position of a given text (prompt log-probs).

What an OpenAI-style `echo` with `logprobs` (or vLLM's `prompt_logprobs`) returns: for each
token of the text, its log-prob given the tokens before it, and the top-k alternatives
there. One forward pass per batch; the output layer (Gemma: 262k x 640) runs 64 positions
at a time, so (T, V) logits never exist whole.

A logits processor (the watermark) is applied to each position as generation would apply
it, so a server reports the same distribution for a text whether it wrote it or was shown
it; otherwise comparing the two would reveal which tokens the processor favours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stillroom.runtime.model import HEAD_ROWS, LocalModel
from stillroom.runtime.sampling import LogitsProcessor
from stillroom.runtime.tensors import pad_batch


@dataclass
class TextLogprobs:
    """Row t describes the distribution after token t (predicting token t + 1); the last row
    is the distribution after the whole text."""

    ids: list[int]
    chosen: np.ndarray  # (T - 1,) float32: log-prob of token t + 1 after tokens 0..t
    top_ids: np.ndarray  # (T, k) int64
    top_logprobs: np.ndarray  # (T, k) float32


def text_logprobs(
    model: LocalModel,
    sequences: list[list[int]],
    k: int,
    *,
    processor: LogitsProcessor | None = None,
    batch_size: int = 8,
) -> list[TextLogprobs]:
    """Prompt log-probs of each id sequence (each non-empty); call under `model.lock`."""
    out: list[TextLogprobs | None] = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = pad_batch([sequences[i] for i in chunk], model.pad_token_id, model.device)
            hidden = model.lm.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            for r, i in enumerate(chunk):
                out[i] = _one(model, sequences[i], hidden[r, : len(sequences[i])], k, processor)
    return [x for x in out if x is not None]


def _one(
    model: LocalModel,
    seq: list[int],
    hidden: torch.Tensor,
    k: int,
    processor: LogitsProcessor | None,
) -> TextLogprobs:
    k = max(1, min(k, model.vocab_size))
    chosen, top_ids, top_lp = [], [], []
    nexts = torch.tensor([*seq[1:], 0], device=hidden.device)  # the last position has none
    width = processor.context_width if processor is not None else 0
    for s in range(0, len(seq), HEAD_ROWS):
        logits = model.head(hidden[s : s + HEAD_ROWS])  # (n, V)
        if processor is not None:
            logits = processor(
                logits, [seq[max(0, t + 1 - width) : t + 1] for t in range(s, s + len(logits))]
            )
        logp = logits.log_softmax(-1)
        chosen.append(logp.gather(1, nexts[s : s + len(logits), None])[:, 0])
        lp, idx = logp.topk(k, dim=-1)
        top_ids.append(idx)
        top_lp.append(lp)
    return TextLogprobs(
        ids=list(seq),
        chosen=torch.cat(chosen)[:-1].cpu().numpy().astype(np.float32),
        top_ids=torch.cat(top_ids).cpu().numpy().astype(np.int64),
        top_logprobs=torch.cat(top_lp).cpu().numpy().astype(np.float32),
    )
