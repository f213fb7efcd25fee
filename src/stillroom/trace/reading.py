"""Radioactivity with open weights: read the suspect's predictions on our watermarked texts.

Sander et al. (2024) call it reading mode: instead of asking the suspect to write, feed it
text we watermarked and take its most likely next token (argmax) at every position. A model
trained on our outputs has learned to prefer the green tokens after the contexts it saw, so
its predictions are green more often than gamma. One forward pass scores every position of
a text, which makes this far stronger per query than generating.

Validity needs care beyond the generating mode. Each (context, predicted token) tuple counts
once, as there. And every (context, token) tuple of the texts themselves is excluded: the
texts are watermarked, so their own tuples are green more often than gamma, and a model that
never saw our outputs but predicts well (the teacher itself without the watermark) predicts
exactly those tokens. Scoring them would convict it. A tuple outside the texts is, under the
null, green with probability at most gamma whatever the text: the text only says which tokens
followed a context, which makes the other tokens after that context, if anything, slightly
less likely green. So the green count is at most Binomial(n, gamma) and the exact p-value
stays valid (benchmarks/trace_calibration.py measures both this rule and its absence).

Valid, but conservative on watermarked texts: when a clean model's favourite token is not
what the text says, the watermark often passed it over for being red, so its predictions
score green less often than gamma. The texts can instead be *unwatermarked* answers of the
teacher to fresh prompts of the same kind: they carry nothing about the key, so the null is
exact, while a model trained on our watermarked outputs still predicts green after the
contexts it learned (in tests, about as strongly as on fresh watermarked texts). Texts the
suspect trained on are the weakest choice: what it memorised is their own tuples, excluded.

The suspect may have its own (say trimmed) vocabulary: its ids are mapped to the watermarked
teacher's through the token strings, and positions whose context or prediction has no
teacher id are skipped, which costs power and never validity. The texts are encoded with the
suspect's tokenizer, as it would read them; their teacher encoding is excluded too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stillroom.errors import InputError
from stillroom.trace.radioactivity import (
    Look,
    RadioactivityResult,
    TupleScore,
    conclude,
    planned_looks,
    take_look,
)
from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey

# Positions whose scores are computed at once: (chunk, V) floats stay small at Gemma's 262k.
_CHUNK = 128


def vocab_map(suspect_tok: Any, teacher_tok: Any) -> np.ndarray:
    """(V_suspect,) int64: each suspect id's teacher id, by token string; -1 where the teacher
    has no such token, and for special tokens (a context of <bos> is not text we wrote)."""
    teacher_vocab = teacher_tok.get_vocab()
    size = max(len(suspect_tok), max(suspect_tok.get_vocab().values()) + 1)
    out = np.full(size, -1, dtype=np.int64)
    for token, i in suspect_tok.get_vocab().items():
        out[i] = teacher_vocab.get(token, -1)
    special = set(suspect_tok.all_special_ids)
    out[[i for i in special if 0 <= i < size]] = -1
    return out


def read_mode_test(
    folder: str,
    texts: Sequence[str],
    key: WatermarkKey,
    tokenizer: Any,
    *,
    budget: int = 2000,
    target_p: float = 1e-6,
    batch_size: int = 8,
    max_length: int = 512,
    exclude_texts: bool = True,
    progress: Callable[[Look], None] | None = None,
    model: Any = None,
) -> RadioactivityResult:
    """Read `texts` (up to `budget` of them) with the suspect in `folder`; stop once the
    Bonferroni-adjusted p-value is below `target_p`. `tokenizer` is the watermarked teacher's.

    `exclude_texts=False` scores the texts' own tuples too: invalid (see the module
    docstring), kept only so the calibration benchmark can show why. `model` is an already
    loaded LocalTeacher, for callers holding one.
    """
    if not texts:
        raise InputError(
            "reading mode needs texts to read; give --texts FILE (JSONL of teacher answers)"
        )
    if model is None:
        from stillroom.teachers.local import LocalTeacher

        model = LocalTeacher.load(folder, batch_size=batch_size)
    lm, own_tok = model.lm, model.tokenizer
    to_teacher = vocab_map(own_tok, tokenizer)
    texts = list(texts[:budget])
    score = TupleScore(GreenList(key))
    w = score.green_list.width
    own = own_tok(texts, add_special_tokens=True, truncation=True, max_length=max_length)
    own_ids = [np.asarray(x, dtype=np.int64) for x in own["input_ids"]]
    if exclude_texts:
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            score.exclude(ids)
        for ids in own_ids:
            score.exclude_rows(_valid(_windows(to_teacher[ids], w)))
    looks: list[Look] = []
    done = 0
    for k, upto in enumerate(planned_looks(len(texts)), start=1):
        for start in range(done, upto, batch_size):
            batch = own_ids[start : min(upto, start + batch_size)]
            for ids, preds in zip(batch, predictions(lm, batch, model.pad_token_id), strict=True):
                # Position i predicts token i + 1 from the context ending at token i.
                said = np.full(len(preds), -1, dtype=np.int64)
                known = preds < len(to_teacher)  # the model's head may outgrow its tokenizer
                said[known] = to_teacher[preds[known]]
                rows = np.concatenate([_windows(to_teacher[ids], w - 1), said[w - 1 :, None]], 1)
                score.add_rows(_valid(rows))
        done = upto
        if take_look(score, looks, done, k, progress).p_adjusted < target_p:
            break
    return conclude(str(folder), key, score, looks, target_p, mode="read")


def predictions(lm: Any, batch: Sequence[np.ndarray], pad_id: int) -> list[np.ndarray]:
    """The argmax next token at every position of each sequence (right-padded, one pass).

    Scores come from the last hidden state a chunk of positions at a time, never the whole
    (B, T, V) logits. Gemma's final-logit softcapping is monotone, so the argmax of the raw
    products is the argmax of the logits.
    """
    import torch

    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, x in enumerate(batch):
        ids[r, : len(x)] = torch.from_numpy(x)
        mask[r, : len(x)] = 1
    head = lm.get_output_embeddings()
    with torch.no_grad():
        hidden = lm.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        out = []
        for r, x in enumerate(batch):
            h = hidden[r, : len(x)]
            best = [head(h[i : i + _CHUNK]).argmax(-1) for i in range(0, len(x), _CHUNK)]
            out.append(torch.cat(best).cpu().numpy().astype(np.int64))
    return out


def _windows(ids: np.ndarray, w: int) -> np.ndarray:
    """(T - w, w + 1) sliding windows of `ids`; empty when too short."""
    from numpy.lib.stride_tricks import sliding_window_view

    if len(ids) <= w:
        return np.zeros((0, w + 1), np.int64)
    return sliding_window_view(ids, w + 1)


def _valid(rows: np.ndarray) -> np.ndarray:
    """Rows whose every id maps to the teacher's vocabulary."""
    return rows[(rows >= 0).all(axis=1)]
