"""Classification students: soft-label KD on the teacher's label log-probs.

The student reads an item without the teacher's few-shot prefix and answers with the next
token: its logits for each label's token, at the item's last position, are its label scores.
The teacher scores each label's whole candidate, so a candidate of several tokens would be
judged on its first token alone: labels must be one token each, and distinct, in the
student's vocabulary (`stillroom.harvest.preflight` checks this before the harvest).
"""

from __future__ import annotations

from typing import Any

import torch

from stillroom.errors import ConfigError
from stillroom.train.data import LabelBatch
from stillroom.train.losses import soft_label_loss


def label_token_ids(tokenizer: Any, candidates: tuple[str, ...]) -> torch.Tensor:
    """(C,) the token of each candidate (" animal"): one token each, all different."""
    problems, ids = [], []
    for c in candidates:
        tokens = tokenizer(c, add_special_tokens=False)["input_ids"]
        if not tokens:
            problems.append(f"task.labels: {c!r} has no tokens; give every label a word")
        elif len(tokens) > 1:
            pieces = [tokenizer.decode([t]) for t in tokens]
            problems.append(
                f"task.labels: {c!r} is {len(tokens)} tokens in the student's vocabulary "
                f"({pieces}); the student answers with one token, so only {pieces[0]!r} would "
                "count; rename the label to one word that is a single token"
            )
        ids.append(int(tokens[0]) if tokens else -1)
    clash = [c for c, t in zip(candidates, ids, strict=True) if t >= 0 and ids.count(t) > 1]
    if clash:
        problems.append(
            f"task.labels: {clash} start with the same token in the student's vocabulary; "
            "choose label words whose first tokens differ"
        )
    if problems:
        raise ConfigError("config", problems)
    return torch.tensor(ids, dtype=torch.long)


def left_pad(batch: LabelBatch, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded rows moved to the left, so every row's last token is at T-1 and only the
    last position's logits need computing. Returns ids, mask, position ids: (B, T) each."""
    b, t = batch.input_ids.shape
    lengths = batch.attention_mask.sum(1)
    ids = torch.full_like(batch.input_ids, pad_id)
    mask = torch.zeros_like(batch.attention_mask)
    for i in range(b):
        n = int(lengths[i])
        ids[i, t - n :] = batch.input_ids[i, :n]
        mask[i, t - n :] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, positions


def label_logits(
    model: Any, batch: LabelBatch, label_ids: torch.Tensor, pad_id: int
) -> torch.Tensor:
    """(B, C) the student's logits for each label's first token after each item."""
    ids, mask, positions = left_pad(batch, pad_id)
    device = label_ids.device
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        logits_to_keep=1,
    )
    return out.logits[:, -1, :].float()[:, label_ids]  # (B, V) -> (B, C)


def labels_loss(
    model: Any,
    batch: LabelBatch,
    label_ids: torch.Tensor,
    pad_id: int,
    *,
    temperature: float,
    alpha: float,
) -> dict[str, torch.Tensor]:
    logits = label_logits(model, batch, label_ids, pad_id)
    teacher = batch.teacher.to(logits.device)
    gold = batch.gold.to(logits.device)
    has_gold = bool((gold >= 0).any())  # rows without gold (transfer set) learn the teacher alone
    parts = soft_label_loss(
        logits,
        teacher,
        temperature=temperature,
        gold=gold if has_gold else None,
        alpha=alpha if has_gold else 1.0,
    )
    out = {"loss": parts.total, "kd": parts.kd}
    if parts.ce is not None:
        out["ce"] = parts.ce
    return out


@torch.no_grad()
def labels_eval(model: Any, batches: Any, label_ids: torch.Tensor, pad_id: int) -> dict[str, float]:
    """Accuracy against gold, agreement with the teacher, KL(teacher || student) over labels."""
    n = correct = agree = gold_n = 0
    kl = 0.0
    for batch in batches:
        logits = label_logits(model, batch, label_ids, pad_id)
        q = torch.log_softmax(logits, dim=-1)  # (B, C)
        p = torch.log_softmax(batch.teacher.to(q.device), dim=-1)
        kl += float((p.exp() * (p - q)).sum())
        pred = q.argmax(-1)
        agree += int((pred == p.argmax(-1)).sum())
        gold = batch.gold.to(q.device)
        known = gold >= 0
        correct += int((pred[known] == gold[known]).sum())
        gold_n += int(known.sum())
        n += len(pred)
    if n == 0:
        return {}
    out = {"val_kl": kl / n, "val_agreement": agree / n}
    if gold_n:
        out["val_accuracy"] = correct / gold_n
    return out
