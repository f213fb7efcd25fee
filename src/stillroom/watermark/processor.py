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

import torch

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
        w = self.context_width
        full = [i for i, c in enumerate(contexts) if len(c) >= w]
        if not full:
            return logits
        ids = torch.tensor([list(contexts[i])[-w:] for i in full], dtype=torch.long)  # (B', w)
        mask = self.green.green_mask(ids, logits.shape[-1]).to(logits.device)  # (B', V)
        skip = [t for t in self.unbiased if t < mask.shape[-1]]
        mask[:, skip] = False
        if len(full) == logits.shape[0]:
            return logits.add(mask, alpha=self.key.delta)
        out = logits.clone()
        rows = torch.tensor(full, device=logits.device)
        out[rows] = logits[rows].add(mask, alpha=self.key.delta)
        return out
