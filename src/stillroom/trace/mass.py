"""Radioactivity with open weights, from the suspect's whole next-token distribution.

Reading mode (`stillroom.trace.reading`) scores the suspect's single most likely token at
each position. A model that learned a little from our watermarked outputs moves some of its
probability towards the green tokens after the contexts it saw, which rarely changes its
argmax, so most of the trace is thrown away. This test keeps it: the green mass, the share
of the suspect's probability that falls on green tokens, summed over every position of the
texts it reads.

Why the p-value holds. The texts must be unwatermarked (checked: texts that carry the key are
refused). Then, for a model that never saw our watermarked outputs, the texts, the model and
its predictions are all independent of the key, and the only randomness left is the key's
green bits B(t, v) for each context t and token v: independent Bernoulli(gamma) draws (see
`stillroom.watermark.greenlist`). Grouping positions by context, the score is

    S = sum over (t, v) of c(t, v) * (B(t, v) - gamma),
    c(t, v) = a(t) * sum over positions after t of [suspect's P(v) - baseline's P(v)],

a weighted sum of independent centred Bernoullis with known weights, whose tail
`stillroom.trace.tail` gives by saddlepoint (the p-value) and Chernoff bound (a guarantee).

How contexts are weighted. A context's green list is drawn once, however often the context
occurs, so repeats add weight, never independent evidence. With a(t) = 1 a few very common
contexts (a space, "the") dominate the variance; with every context equal, the many contexts
read once, where a student learned least, dilute the rest. a(t) scales each context's weights
to a null variance proportional to the number of positions read after it: S is Stouffer's
combination of per-context z-scores weighted by the square root of those counts. The scaling
depends on the models and texts only, never the key, so the null above still holds. It was
chosen (with counts approximated by summed top-k probability) on the demo's fully watermarked
student and a tiny test model (z 9.0 and 9.2, against
7.9 and 1.2 with a(t) = 1 and 3.4 and 11.6 with equal weights, both with the teacher as
baseline) before it was applied to any other suspect.

The baseline is optional: a model we know never saw watermarked text, the teacher itself
for one. Its predictions are subtracted before scoring, so what the suspect shares with any
language model (which tokens follow "of", say) cancels and only its departures are scored:
the variance falls and the power rises. Without one, c is the suspect's probability alone.

Only each position's `top_k` most likely tokens (of each model) are kept, which bounds
memory; a choice made without the key, so it costs a little power, never validity. The
suspect reads the texts in its own tokenizer; its ids are mapped to the teacher's by token
string, and a position whose context has no teacher id is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stillroom.errors import InputError
from stillroom.trace.radioactivity import TupleScore
from stillroom.trace.reading import vocab_map
from stillroom.trace.tail import Tail, upper_tail
from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey

# Bits per token id when rows are packed for sorting: Gemma's 262,144 ids need 18.
_BITS = 20
# Pending (context, token) rows summed together past this many, to bound memory.
_COMPACT_AT = 8_000_000
# Texts whose own green count has a p-value below this carry the key: refused.
MARKED_TEXTS_P = 1e-3


@dataclass
class MassLook:
    queries: int  # texts (or answers) read so far
    positions: int
    z: float
    p_value: float  # saddlepoint p of everything read so far
    p_adjusted: float  # times the number of looks taken so far (Bonferroni)
    p_bound: float  # Chernoff bound, times the looks taken


@dataclass
class MassResult:
    suspect: str
    baseline: str | None
    key_id: str
    gamma: float
    queries: int  # texts read
    positions: int  # positions scored
    contexts: int  # distinct contexts among them
    pairs: int  # distinct (context, token) weights
    green_mass: float  # the suspect's mean probability on green tokens (gamma by chance)
    baseline_green_mass: float | None
    z: float
    p_value: float  # p x looks taken, saddlepoint: what the verdict rests on
    p_bound: float  # Chernoff bound x looks taken: the null tail is at most this, exactly
    target_p: float
    stopped: str  # "significant" | "budget"
    looks: list[MassLook] = field(default_factory=list)
    # Where the distributions came from: "weights" (the model run here), "api-texts" (an
    # API's prompt log-probs on our texts), "api-answers" (its top log-probs on its answers).
    source: str = "weights"
    top_k: int = 256
    mode: str = "mass"


@dataclass
class Weights:
    """Summed top-k probabilities per distinct (context, token) of one model on the texts."""

    rows: np.ndarray  # (N, w + 1) int64: context ids then token id (teacher ids), sorted
    prob: np.ndarray  # (N,) float64: summed probability
    contexts: np.ndarray  # (K, w) int64: the distinct contexts read, sorted
    counts: np.ndarray  # (K,) int64: positions read after each

    @property
    def positions(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def empty(cls, width: int) -> Weights:
        """No position read."""
        contexts = np.zeros((0, width), np.int64)
        return cls(np.zeros((0, width + 1), np.int64), np.zeros(0), contexts, np.zeros(0, np.int64))


def _top_rows(
    logits: Any, cap: float | None, k: int, col_ids: Any, contexts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(context + token rows, their probabilities) of the k likeliest tokens at each position."""
    import torch

    if cap:
        logits = torch.tanh(logits / cap) * cap
    p, idx = torch.softmax(logits.float(), -1).topk(k, dim=-1)
    tokens = col_ids[idx].numpy()
    rows = np.concatenate([np.repeat(contexts, k, axis=0), tokens.reshape(-1, 1)], axis=1)
    return rows, p.numpy().reshape(-1).astype(np.float64)


def _own_ids(
    batch: Sequence[np.ndarray], inverse: np.ndarray, fallback: int, bos: int | None, pad: int
) -> tuple[Any, Any]:
    """(ids, attention mask) of teacher-id sequences in the reading model's own ids, padded."""
    import torch

    ids = torch.full((len(batch), max(len(s) for s in batch)), pad)
    mask = torch.zeros_like(ids)
    for r, seq in enumerate(batch):
        own = np.where(seq >= 0, inverse[np.maximum(seq, 0)], fallback)
        if bos is not None and len(seq) and seq[0] < 0:
            own[0] = bos  # the suspect's own <bos>, which has no teacher id
        ids[r, : len(seq)] = torch.from_numpy(own)
        mask[r, : len(seq)] = 1
    return ids, mask


def read_distributions(
    model: Any,
    texts: Sequence[str],
    tokenizer: Any,
    width: int,
    *,
    top_k: int = 256,
    batch_size: int = 8,
    max_length: int = 512,
    positions_of: Any = None,
) -> tuple[Weights, Any]:
    """Run `model` (a LocalTeacher) over `texts`; returns its summed top-k probabilities per
    (context, token) in the teacher's ids, and the positions it read (teacher-id sequences),
    so another model can read exactly the same ones (`positions_of`)."""
    import torch

    lm, own_tok = model.lm, model.tokenizer
    to_teacher = vocab_map(own_tok, tokenizer)
    head_rows = lm.get_output_embeddings().weight.shape[0]
    cols = np.nonzero(to_teacher[: min(head_rows, len(to_teacher))] >= 0)[0]
    col_ids = torch.from_numpy(to_teacher[cols])
    if positions_of is None:
        enc = own_tok(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)
        sequences = [to_teacher[np.asarray(x, dtype=np.int64)] for x in enc["input_ids"]]
    else:
        sequences = positions_of
    # Teacher id -> this model's id; a token it lacks reads as its unknown (or pad) token.
    fallback = own_tok.unk_token_id if own_tok.unk_token_id is not None else model.pad_token_id
    inverse = np.full(max(len(tokenizer), int(to_teacher.max()) + 1), fallback, dtype=np.int64)
    inverse[to_teacher[cols]] = cols
    bos = own_tok.bos_token_id
    cap = getattr(lm.config, "final_logit_softcapping", None)
    head = lm.get_output_embeddings()
    weight = head.weight[torch.from_numpy(cols)]
    chunks: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    read: list[np.ndarray] = []  # the context of every position scored
    k = min(top_k, len(cols))
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start : start + batch_size]
            ids, mask = _own_ids(batch, inverse, fallback, bos, model.pad_token_id)
            hidden = lm.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            for r, seq in enumerate(batch):
                ctx = _contexts(seq, width)  # (T - w + 1, w): context ending at each position
                keep = np.nonzero((ctx >= 0).all(axis=1))[0]
                if len(keep):
                    logits = hidden[r, keep + width - 1] @ weight.T
                    rows, p = _top_rows(logits, cap, k, col_ids, ctx[keep])
                    chunks.append(rows)
                    probs.append(p)
                    read.append(ctx[keep])
            if sum(len(x) for x in chunks) > _COMPACT_AT:  # bound memory on long reads
                chunks, probs = _compact(chunks, probs)
    if not chunks:  # nothing long enough to read: no weight, and no evidence
        return Weights.empty(width), sequences
    chunks, probs = _compact(chunks, probs)
    every = np.concatenate(read)
    contexts, counts = _sum_rows(every, np.ones(len(every)))
    return Weights(chunks[0], probs[0], contexts, counts.astype(np.int64)), sequences


def merge(a: Weights | None, b: Weights) -> Weights:
    """The weights of two reads together, as if read at once."""
    if a is None:
        return b
    rows, prob = _sum_rows(np.concatenate([a.rows, b.rows]), np.concatenate([a.prob, b.prob]))
    both = np.concatenate([a.contexts, b.contexts])
    contexts, counts = _sum_rows(both, np.concatenate([a.counts, b.counts]).astype(np.float64))
    return Weights(rows, prob, contexts, np.rint(counts).astype(np.int64))


def weights_from_rows(rows: np.ndarray, prob: np.ndarray, contexts: np.ndarray) -> Weights:
    """Weights from (context + token) rows with their probabilities, and the context of every
    position read (one row each): for distributions that come from elsewhere (an API)."""
    summed, p = _sum_rows(rows, prob)
    distinct, counts = _sum_rows(contexts, np.ones(len(contexts)))
    return Weights(summed, p, distinct, counts.astype(np.int64))


def _compact(
    chunks: list[np.ndarray], probs: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rows, prob = _sum_rows(np.concatenate(chunks), np.concatenate(probs))
    return [rows], [prob]


def _contexts(seq: np.ndarray, width: int) -> np.ndarray:
    """(T - width + 1, width): the `width` ids ending at each position (a position predicts
    the token after it); empty when the sequence is shorter than the width."""
    from numpy.lib.stride_tricks import sliding_window_view

    if len(seq) < width:
        return np.zeros((0, width), np.int64)
    return sliding_window_view(seq, width)


def _sum_rows(rows: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows, sorted; `values` summed over each)."""
    unique, inverse = np.unique(_pack(rows), return_inverse=True)
    return _unpack(unique, rows.shape[1]), np.bincount(inverse.reshape(-1), weights=values)


def _pack(rows: np.ndarray) -> np.ndarray:
    """One int64 per row of ids, ordered as the rows are (lexicographically)."""
    bits = _BITS
    if len(rows) and int(rows.max()) >= 1 << bits:
        raise InputError(f"--mode mass handles token ids below 2^{bits}; got {int(rows.max())}")
    if rows.shape[1] * bits > 63:
        raise InputError(
            f"--mode mass packs a context and a token into 63 bits; a context of "
            f"{rows.shape[1] - 1} tokens of {bits} bits each does not fit: use a key with "
            "--context-width 2 or less"
        )
    packed = np.zeros(len(rows), dtype=np.int64)
    for j in range(rows.shape[1]):
        packed = (packed << bits) | rows[:, j]
    return packed


def _unpack(packed: np.ndarray, width: int) -> np.ndarray:
    out = np.empty((len(packed), width), dtype=np.int64)
    rest = packed.copy()
    for j in reversed(range(width)):
        out[:, j] = rest & ((1 << _BITS) - 1)
        rest >>= _BITS
    return out


def combine(suspect: Weights, baseline: Weights | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, c): the suspect's summed probabilities minus the baseline's on their union of
    rows, then each context's weights scaled to a null variance proportional to how often it
    was read (Stouffer's weighted z over contexts; see the module docstring)."""
    if baseline is None:
        rows, c = suspect.rows, suspect.prob
    else:
        both = np.concatenate([suspect.rows, baseline.rows])
        rows, c = _sum_rows(both, np.concatenate([suspect.prob, -baseline.prob]))
    w = suspect.contexts.shape[1]
    where = np.searchsorted(_pack(suspect.contexts), _pack(rows[:, :w]))
    norm = np.sqrt(np.bincount(where, weights=c * c, minlength=len(suspect.counts)))
    scale = np.divide(np.sqrt(suspect.counts), norm, out=np.zeros(len(norm)), where=norm > 0)
    return rows, c * scale[where]


def green_bits(green_list: GreenList, rows: np.ndarray) -> np.ndarray:
    """(N,) bool: is each row's token green after its context."""
    w = green_list.width
    return green_list.green_pairs(rows[:, :w], rows[:, w])


def score(c: np.ndarray, green: np.ndarray, gamma: float) -> Tail:
    """The null tail at S = sum c (green - gamma)."""
    return upper_tail(c, float((c * (green - gamma)).sum()), gamma)


def refuse_marked_texts(sequences: Sequence[np.ndarray], green_list: GreenList) -> None:
    """Raise if the texts themselves carry the key: the null needs key-free texts."""
    counted = TupleScore(green_list)
    for seq in sequences:
        counted.add(seq[seq >= 0].tolist())
    if counted.scored and counted.p_value() < MARKED_TEXTS_P:
        raise InputError(
            f"--texts: these texts carry this key's watermark ({counted.green} of "
            f"{counted.scored} pairs green, p = {counted.p_value():.2g}); --mode mass needs "
            "texts that never passed through the watermark, e.g. the teacher's answers "
            "served without it. Use --mode read for watermarked texts."
        )


# Reads a chunk of texts: (the suspect's weights, the baseline's or None).
Reader = Callable[[Sequence[str]], "tuple[Weights, Weights | None]"]


def mass_test(
    folder: str,
    texts: Sequence[str],
    key: WatermarkKey,
    tokenizer: Any,
    *,
    baseline: str | None = None,
    budget: int = 2000,
    target_p: float = 1e-6,
    top_k: int = 256,
    batch_size: int = 8,
    max_length: int = 512,
    model: Any = None,
    baseline_model: Any = None,
    progress: Callable[[MassLook], None] | None = None,
) -> MassResult:
    """Read up to `budget` of `texts` with the suspect in `folder` (and the `baseline`
    folder, if given) and test its green mass. `tokenizer` is the watermarked teacher's;
    `model`/`baseline_model` are already loaded LocalTeachers, for callers holding them."""
    if not texts:
        raise InputError(
            "--mode mass needs texts to read; give --texts FILE (JSONL of unwatermarked "
            "teacher answers)"
        )
    from stillroom.teachers.local import LocalTeacher

    texts = list(texts[:budget])
    green_list = GreenList(key)
    # Checked on the teacher's encoding before any model loads: a refusal costs no reading.
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    refuse_marked_texts([np.asarray(x, dtype=np.int64) for x in encoded], green_list)
    if model is None:
        model = LocalTeacher.load(folder, batch_size=batch_size)
    if baseline is not None and baseline_model is None:
        baseline_model = LocalTeacher.load(str(baseline), batch_size=batch_size)
    opts = {"top_k": top_k, "batch_size": batch_size, "max_length": max_length}

    def read(chunk: Sequence[str]) -> tuple[Weights, Weights | None]:
        ours, sequences = read_distributions(model, chunk, tokenizer, green_list.width, **opts)
        if baseline_model is None:
            return ours, None
        base, _ = read_distributions(
            baseline_model, chunk, tokenizer, green_list.width, positions_of=sequences, **opts
        )
        return ours, base

    base_name = None
    if baseline_model is not None:
        base_name = str(baseline or getattr(baseline_model, "model", ""))
    return sequential_mass(
        read, texts, key, suspect=str(folder), baseline=base_name, target_p=target_p,
        progress=progress, top_k=top_k,
    )  # fmt: skip


def sequential_mass(
    read: Reader,
    items: Sequence[str],
    key: WatermarkKey,
    *,
    suspect: str,
    baseline: str | None,
    target_p: float,
    progress: Callable[[MassLook], None] | None = None,
    source: str = "weights",
    top_k: int = 256,
) -> MassResult:
    """Read `items` in chunks up to each planned look (doubling from 50) and test the green
    mass of all read so far; stop at the first look whose p-value times the looks taken is
    below `target_p`, so stopping early cannot inflate significance."""
    from stillroom.trace.radioactivity import planned_looks

    green_list = GreenList(key)
    ours = base = None
    looks: list[MassLook] = []
    done = 0
    for k, upto in enumerate(planned_looks(len(items)), start=1):
        mine, theirs = read(items[done:upto])
        ours = merge(ours, mine)
        base = merge(base, theirs) if theirs is not None else base
        done = upto
        rows, c = combine(ours, base)
        tail = score(c, green_bits(green_list, rows), key.gamma)
        look = MassLook(
            done, ours.positions, tail.z, tail.p_value,
            min(1.0, tail.p_value * k), min(1.0, tail.p_bound * k),
        )  # fmt: skip
        looks.append(look)
        (progress or (lambda _: None))(look)
        if look.p_adjusted < target_p:
            break
    if ours is None or ours.positions == 0:
        raise InputError("the texts gave no position to score: are they empty or too short?")
    last = looks[-1]
    return MassResult(
        suspect=suspect,
        baseline=baseline,
        key_id=key.key_id,
        gamma=key.gamma,
        queries=last.queries,
        positions=ours.positions,
        contexts=len(ours.counts),
        pairs=len(rows),
        green_mass=_green_share(ours, green_list),
        baseline_green_mass=None if base is None else _green_share(base, green_list),
        z=last.z,
        p_value=last.p_adjusted,
        p_bound=last.p_bound,
        target_p=target_p,
        stopped="significant" if last.p_adjusted < target_p else "budget",
        looks=looks,
        source=source,
        top_k=top_k,
    )


def _green_share(w: Weights, green_list: GreenList) -> float:
    """Mean probability on green tokens per position (within the kept top-k)."""
    total = float(w.prob.sum())
    return float(w.prob[green_bits(green_list, w.rows)].sum() / total) if total else 0.0
