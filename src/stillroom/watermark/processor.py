"""Adds delta to the green logits of each row before a token is picked (the soft watermark).

The bias shifts probability towards the green list only where the model is unsure: a
near-certain token stays near-certain, so quality suffers little, while a 200-token answer
still gets enough extra green tokens for a z-score far beyond chance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey


class WatermarkProcessor:
    """`processor(logits, contexts)`: (B, V) logits and each row's last tokens -> biased logits."""

    def __init__(self, key: WatermarkKey) -> None:
        self.key = key
        self.green = GreenList(key)
        self.context_width = key.context_width

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
        if len(full) == logits.shape[0]:
            return logits.add(mask, alpha=self.key.delta)
        out = logits.clone()
        rows = torch.tensor(full, device=logits.device)
        out[rows] = logits[rows].add(mask, alpha=self.key.delta)
        return out
