"""Adds delta to the green logits of each row before a token is picked (the soft watermark).

The bias shifts probability towards the green list only where the model is unsure: a
near-certain token stays near-certain, so quality suffers little, while a 200-token answer
still gets enough extra green tokens for a z-score far beyond chance.

End-of-sequence ids are never biased (`unbiased`): otherwise, after a context whose list
holds <eos>, answers end sooner (e^delta times as often), and how long answers run would
depend on the key. The detector is unaffected: decoded text holds no special tokens, and
under the null an <eos> pair is still green with probability gamma.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from stillroom.watermark.bias_kernel import add_bias_inplace
from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey


class WatermarkProcessor:  # a stillroom.runtime.sampling.LogitsProcessor
    """`processor(logits, contexts)`: (B, V) logits and each row's last tokens -> biased logits."""

    def __init__(self, key: WatermarkKey, *, unbiased: Iterable[int] = ()) -> None:
        self.key = key
        self.green = GreenList(key)
        self.context_width = key.context_width
        self.unbiased = sorted(set(unbiased))  # ids that never get delta (end of sequence)

    def __call__(self, logits: torch.Tensor, contexts: Sequence[Sequence[int]]) -> torch.Tensor:
        """A new (B, V) tensor: `delta` added to every green id of each row.

        `contexts[b]` is row b's previous tokens (prompt tail and generated so far; only the
        last `context_width` are read). A row with fewer has no green list and is left as is:
        the detector skips those positions too.
        """
        if all(len(c) < self.context_width for c in contexts):
            return logits
        out = logits.clone()
        self.apply_inplace(out, range(len(contexts)), contexts)
        return out

    def apply_inplace(
        self, logits: torch.Tensor, rows: Sequence[int], contexts: Sequence[Sequence[int]]
    ) -> None:
        """Add `delta` to the green ids of `logits[rows[i]]` after `contexts[i]`, in place."""
        w = self.context_width
        full = [i for i, c in enumerate(contexts) if len(c) >= w]
        if not full:
            return
        ctx = np.array([list(contexts[i])[-w:] for i in full], dtype=np.int64)  # (B', w)
        index = torch.tensor([rows[i] for i in full], dtype=torch.long)
        vocab = logits.shape[-1]
        skip = torch.tensor([t for t in self.unbiased if t < vocab], dtype=torch.long)
        kept = logits[index[:, None], skip]  # end-of-sequence logits, restored after
        if not (logits.device.type == "cpu" and self._add_fast(logits, index, ctx)):
            mask = torch.from_numpy(self.green.green_mask_np(ctx, vocab)).to(logits.device)
            logits[index] = logits[index].add(mask, alpha=self.key.delta)
        logits[index[:, None], skip] = kept

    def _add_fast(self, logits: torch.Tensor, index: torch.Tensor, ctx: np.ndarray) -> bool:
        """The one-pass kernel on a float32 CPU tensor (its numpy view shares memory)."""
        if logits.dtype != torch.float32 or logits.dim() != 2:
            return False
        seeds = np.array([self.green.context_seed(c) for c in ctx.tolist()], dtype=np.uint64)
        values = self.green.vocab_values(logits.shape[-1])
        return add_bias_inplace(
            logits.numpy(), index.numpy(), seeds, values, self.green.threshold, self.key.delta
        )
