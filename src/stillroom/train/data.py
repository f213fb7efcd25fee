"""Training examples streamed from a harvest store, in the student's token ids.

Nothing here holds a whole harvest: records stream from SQLite, a bounded buffer is sorted
by length into batches (length bucketing, so little padding is computed), and each batch's
top-k signals are decoded only when the batch is built.

An empty teacher answer (zero tokens: the first token generated was a stop string or the
end) teaches a sequence or logit student nothing and carries no top-k; it is skipped and
counted, never mistaken for a harvest without signals.

Alignment: the logits at position t predict token t + 1. A completion starting at index
`start` of `input_ids` is scored at positions start-1 .. L-2, and the teacher's top-k for
completion token j belongs to position start-1+j.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from stillroom.errors import VocabMismatch as VocabMismatch  # its home before the tree
from stillroom.harvest.signals import decode_topk
from stillroom.harvest.store import RunStore


@dataclass
class Example:
    input_ids: np.ndarray  # (L,) student ids: prompt then completion
    start: int  # index of the first completion token
    topk: bytes | None  # encoded teacher signals for the completion, decoded per batch
    # The teacher's prompt in student ids, when the student reads another one
    # (task.student_template): what on-policy scoring puts before the student's answer.
    teacher_prompt: np.ndarray | None = None
    forced: int = 0  # trailing answer tokens added here (AnswerEnd), which the teacher wrote

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class AnswerEnd:
    """The end of an answer that stopped on the stop string. A local teacher's stored ids
    end before that string (it is cut from the answer), so a student trained on them never
    sees where an answer ends and writes on to max_tokens. The string's tokens are put back
    after such answers, with the teacher's certainty as their signal: it did write them."""

    stop_ids: tuple[int, ...]  # generation.stop (a single string), in student ids
    eos_ids: frozenset[int]  # an answer ending in one of these stopped by itself

    def complete(self, completion: np.ndarray, finish: str | None) -> tuple[np.ndarray, int]:
        ended = len(completion) > 0 and int(completion[-1]) in self.eos_ids
        if finish != "stop" or ended or not self.stop_ids:
            return completion, 0
        return np.concatenate([completion, np.asarray(self.stop_ids, np.int64)]), len(self.stop_ids)


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    targets: torch.Tensor  # (B, T) long: the token each position predicts (0 where masked)
    loss_mask: torch.Tensor  # (B, T) bool: positions that predict a completion token
    topk_ids: torch.Tensor | None  # (B, T, k) long, -1 where absent
    topk_logprobs: torch.Tensor | None  # (B, T, k) float32, -inf where absent
    topk_rest: torch.Tensor | None  # (B, T) float32
    teacher_prompts: list[np.ndarray | None] | None = None  # Example.teacher_prompt per row

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def n_targets(self) -> int:
        return int(self.loss_mask.sum())


class TeacherToStudent:
    """Maps teacher token ids to student ids (-1: not in the student's vocabulary)."""

    def __init__(self, table: np.ndarray, identity: bool) -> None:
        self.table = table  # (vocab_teacher,) int64
        self.identity = identity

    def ids(self, teacher_ids: np.ndarray, where: str) -> np.ndarray:
        out = self.table[teacher_ids]
        if (out < 0).any():
            missing = int(teacher_ids[out < 0][0])
            raise VocabMismatch(
                f"{where}: teacher token {missing} is not in the student's vocabulary; "
                "rebuild the student from this harvest (student.init: shrink with trim_vocab) "
                "or use objective: sequence"
            )
        return out


@dataclass
class ExampleCounts:
    """What `iter_examples` passed over, for the caller to report."""

    empty: int = 0  # teacher answers of zero tokens
    no_gold: int = 0  # rows without gold text, passed over by train.targets: gold


def is_empty_answer(rec: dict[str, Any]) -> bool:
    """Whether a stored completion has no tokens: by its token ids (local teachers), its
    token strings (API teachers), or else its text."""
    if rec["token_ids"] is not None:
        return len(rec["token_ids"]) == 0
    if rec["tokens"] is not None:
        return not json.loads(rec["tokens"])
    return not rec["text"]


class _Sized(Protocol):
    def __len__(self) -> int: ...


E = TypeVar("E", bound=_Sized)
B = TypeVar("B")

Encoder = Callable[[dict[str, Any], str, str | None], tuple[list[int], list[int]]]
# A row's kept fields -> the student's prompt ids (task.student_template), or None.
StudentPrompt = Callable[[dict[str, Any], str], list[int]]
# A row's kept fields, the teacher's answer text -> the gold answer's ids (train.targets: gold),
# or None for a row without gold (a transfer-set prompt), which is passed over.
GoldAnswer = Callable[[dict[str, Any], str, str], list[int] | None]


def iter_examples(
    store: RunStore,
    split: str,
    *,
    mapping: TeacherToStudent | None,
    encode: Encoder,
    max_len: int,
    need_signals: bool,
    counts: ExampleCounts | None = None,
    student_prompt: StudentPrompt | None = None,
    end: AnswerEnd | None = None,
    gold_answer: GoldAnswer | None = None,
) -> Iterator[Example]:
    """One example per stored completion of `split`; empty answers are skipped (and counted
    in `counts`).

    With teacher token ids in the store (local teachers) and a mapping, the student sees
    exactly the teacher's tokens; otherwise `encode(request, text, finish_reason)` tokenizes
    prompt and completion with the student's tokenizer (sequence KD from API harvests).
    With `student_prompt` the student reads its own prompt before the teacher's answer;
    with `end`, answers cut at the stop string get it back (stored ids only). With
    `gold_answer` the student learns the row's gold answer instead of the teacher's: rows
    the teacher left empty count too, rows without gold do not.
    """
    counts = ExampleCounts() if counts is None else counts
    for rec in store.iter_records(split):
        where = f"{store.path} call {rec['key']}"
        request = json.loads(rec["request"])
        if is_empty_answer(rec) and gold_answer is None:
            counts.empty += 1
            continue
        if need_signals and rec["topk"] is None:
            raise VocabMismatch(_no_signals(where, request))
        if rec["token_ids"] is not None and rec["prompt_ids"] is not None and mapping:
            prompt = mapping.ids(np.frombuffer(rec["prompt_ids"], "<i4").astype(np.int64), where)
            completion = mapping.ids(np.frombuffer(rec["token_ids"], "<i4").astype(np.int64), where)
            completion, forced = (
                (completion, 0) if end is None else end.complete(completion, rec["finish_reason"])
            )
        else:
            (prompt, completion), forced = _encoded(rec, request, encode, need_signals, where), 0
        fields = json.loads(rec["fields"]) if rec["fields"] else {}
        if gold_answer is not None:
            gold = gold_answer(fields, rec["text"], where)
            if gold is None:
                counts.no_gold += 1
                continue
            completion, forced = np.asarray(gold, np.int64), 0
        if len(completion) == 0:
            continue
        teacher_prompt = None
        if student_prompt is not None:
            teacher_prompt, prompt = prompt, np.asarray(student_prompt(fields, where), np.int64)
        ids = np.concatenate([prompt, completion])
        if len(ids) > max_len:  # keep the completion's start: cut its tail
            ids = ids[:max_len]
        if len(ids) <= len(prompt):
            continue  # the prompt alone fills max_len: nothing to learn from
        topk = rec["topk"] if need_signals else None
        yield Example(ids, len(prompt), topk, teacher_prompt, forced)


def _encoded(
    rec: dict[str, Any], request: dict[str, Any], encode: Encoder, need_signals: bool, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and completion as `encode` tokenizes them: a harvest without teacher ids."""
    if need_signals:
        raise VocabMismatch(
            f"{where}: top-k logit KD needs the teacher's token ids, but this harvest "
            "has only token strings (an API teacher); use objective: sequence, or "
            "harvest a local teacher that shares the student's vocabulary"
        )
    p, c = encode(request, rec["text"], rec["finish_reason"])
    return np.asarray(p, np.int64), np.asarray(c, np.int64)


def _no_signals(where: str, request: dict[str, Any]) -> str:
    asked = int(request.get("params", {}).get("top_logprobs") or 0)
    if not asked:
        return (
            f"{where}: no top-k signals stored; harvest with generation.top_logprobs > 0 "
            "or use objective: sequence"
        )
    return (
        f"{where}: the harvest asked for {asked} top log-probs (generation.top_logprobs) but "
        "the teacher returned none for this answer; its API may not return log-probs: use "
        "objective: sequence, or a teacher that returns them"
    )


def iter_batches(
    examples: Callable[[], Iterator[E]],
    collate_fn: Callable[[list[E]], B],
    *,
    max_batch_tokens: int,
    seed: int,
    epoch: int,
    buffer: int = 512,
    shuffle: bool = True,
) -> Iterator[B]:
    """Length-bucketed batches: a buffer of examples sorted by length is cut into batches of
    at most `max_batch_tokens` (padded), and the batches are shuffled (seeded by epoch)."""
    rng = random.Random(f"{seed}:{epoch}")
    chunk: list[E] = []
    for ex in examples():
        chunk.append(ex)
        if len(chunk) >= buffer:
            yield from map(collate_fn, _bucket(chunk, max_batch_tokens, rng, shuffle))
            chunk = []
    if chunk:
        yield from map(collate_fn, _bucket(chunk, max_batch_tokens, rng, shuffle))


def _bucket(
    chunk: list[E], max_batch_tokens: int, rng: random.Random, shuffle: bool
) -> list[list[E]]:
    if shuffle:
        rng.shuffle(chunk)  # ties in length break differently each epoch
    chunk.sort(key=len)
    groups: list[list[E]] = []
    current: list[E] = []
    for ex in chunk:
        if current and (len(current) + 1) * len(ex) > max_batch_tokens:
            groups.append(current)
            current = []
        current.append(ex)
    if current:
        groups.append(current)
    if shuffle:
        rng.shuffle(groups)
    return groups


def collate(group: list[Example], mapping: TeacherToStudent | None, pad_id: int) -> Batch:
    b, t = len(group), max(len(ex) for ex in group)
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    attention = torch.zeros((b, t), dtype=torch.long)
    targets = torch.zeros((b, t), dtype=torch.long)
    loss_mask = torch.zeros((b, t), dtype=torch.bool)
    signals = [_signals(ex, mapping) for ex in group]
    k = max((s[0].shape[1] for s in signals if s is not None), default=0)
    topk_ids = torch.full((b, t, k), -1, dtype=torch.long) if k else None
    topk_lp = torch.full((b, t, k), float("-inf")) if k else None
    topk_rest = torch.zeros((b, t)) if k else None
    for i, ex in enumerate(group):
        n = len(ex)
        ids = torch.from_numpy(ex.input_ids)
        input_ids[i, :n] = ids
        attention[i, :n] = 1
        targets[i, : n - 1] = ids[1:]
        loss_mask[i, ex.start - 1 : n - 1] = True  # positions predicting completion tokens
        sig = signals[i]
        if sig is not None and topk_ids is not None and topk_lp is not None:
            sid, slp, srest = sig
            m = min(len(sid), n - ex.start)  # a cut completion keeps its first m tokens
            rows = slice(ex.start - 1, ex.start - 1 + m)
            topk_ids[i, rows, : sid.shape[1]] = torch.from_numpy(sid[:m])
            topk_lp[i, rows, : slp.shape[1]] = torch.from_numpy(slp[:m])
            assert topk_rest is not None
            topk_rest[i, rows] = torch.from_numpy(srest[:m])
            for row in range(ex.start - 1 + m, min(ex.start - 1 + m + ex.forced, n - 1)):
                topk_ids[i, row, 0] = int(ids[row + 1])  # an added end: the teacher's for sure
                topk_lp[i, row, 0] = 0.0
    prompts = [ex.teacher_prompt for ex in group]
    return Batch(input_ids, attention, targets, loss_mask, topk_ids, topk_lp, topk_rest,
                 prompts if any(p is not None for p in prompts) else None)  # fmt: skip


def _signals(
    ex: Example, mapping: TeacherToStudent | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Decode an example's top-k into student ids. Entries the student cannot represent move
    their probability into the rest bucket, so the teacher's distribution still sums to 1."""
    if ex.topk is None:
        return None
    sig = decode_topk(ex.topk)
    ids, lps = sig.ids.copy(), sig.logprobs.copy()  # (T, k)
    rest = sig.rest_mass.astype(np.float32).copy()  # (T,)
    present = ids >= 0
    if mapping is not None and not mapping.identity:
        mapped = np.where(present, mapping.table[np.where(present, ids, 0)], -1)
        lost = present & (mapped < 0)
        if lost.any():
            rest += np.where(lost, np.exp(lps), 0.0).sum(axis=1).astype(np.float32)
            lps[lost] = -np.inf
        ids = mapped
    ids[~np.isfinite(lps)] = -1
    return ids, lps, rest


# --- classification: soft labels ------------------------------------------------------------


@dataclass
class LabelExample:
    input_ids: np.ndarray  # (L,) student ids of the item as the student reads it
    teacher: np.ndarray  # (C,) float32: the teacher's log-prob of each label
    gold: int  # index of the gold label, -1 when there is none

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class LabelBatch:
    input_ids: torch.Tensor  # (B, T) long, right-padded
    attention_mask: torch.Tensor  # (B, T) long
    last: torch.Tensor  # (B,) long: each row's last real position
    teacher: torch.Tensor  # (B, C) float32
    gold: torch.Tensor  # (B,) long, -1 where unknown

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def n_targets(self) -> int:
        return int(self.input_ids.shape[0])


def iter_label_examples(
    store: RunStore,
    split: str,
    *,
    encode: Callable[[str], list[int]],
    template: str,
    labels: list[str],
    gold_field: str | None,
    max_len: int,
    gold_only: bool = False,
) -> Iterator[LabelExample]:
    """One example per stored classification call: the student's view of the item, the
    teacher's label log-probs, and the gold label when the config names one and the row has
    it (a transfer-set row may not: gold -1). `gold_only` passes over rows without gold."""
    for rec in store.iter_records(split):
        where = f"{store.path} call {rec['key']}"
        if rec["label_logprobs"] is None:
            raise VocabMismatch(
                f"{where}: no label log-probs stored; harvest with task.kind: classify"
            )
        fields = json.loads(rec["fields"]) if rec["fields"] else {}
        try:
            text = template.format_map(fields)
        except KeyError as e:
            raise VocabMismatch(
                f"{where}: task.student_template uses {{{e.args[0]}}}, which the harvest did "
                "not keep; add it to prompts.keep_fields and harvest again"
            ) from None
        ids = np.asarray(encode(text), np.int64)[-max_len:]  # keep the end: the label follows
        gold = -1
        if gold_only and (gold_field is None or gold_field not in fields):
            continue
        if gold_field is not None and gold_field in fields:
            value = str(fields[gold_field])
            if value not in labels:
                raise VocabMismatch(
                    f"{where}: gold label {value!r} is not one of task.labels {labels}"
                )
            gold = labels.index(value)
        teacher = np.frombuffer(rec["label_logprobs"], "<f4").copy()
        yield LabelExample(ids, teacher, gold)


def collate_labels(group: list[LabelExample], pad_id: int) -> LabelBatch:
    b, t = len(group), max(len(ex) for ex in group)
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    attention = torch.zeros((b, t), dtype=torch.long)
    for i, ex in enumerate(group):
        input_ids[i, : len(ex)] = torch.from_numpy(ex.input_ids)
        attention[i, : len(ex)] = 1
    return LabelBatch(
        input_ids,
        attention,
        attention.sum(1) - 1,
        torch.from_numpy(np.stack([ex.teacher for ex in group])),
        torch.tensor([ex.gold for ex in group], dtype=torch.long),
    )
