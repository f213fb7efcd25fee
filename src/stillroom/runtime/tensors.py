"""Id lists to padded batch tensors."""

from __future__ import annotations

import torch


def pad_batch(
    seqs: list[list[int]], pad_id: int, device: torch.device, *, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists to (B, L) ids and a (B, L) 0/1 mask; an empty list is all padding."""
    width = max(1, max(map(len, seqs)))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        if seq:
            span = slice(width - len(seq), width) if left else slice(0, len(seq))
            ids[i, span] = torch.tensor(seq, dtype=torch.long)
            mask[i, span] = 1
    return ids.to(device), mask.to(device)


def common_prefix_len(seqs: list[list[int]], limit: int) -> int:
    """How many leading ids all `seqs` share, at most `limit`."""
    n = 0
    first = seqs[0]
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n
