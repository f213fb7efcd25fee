"""Fidelity on the teacher's stored top-k: mean KL(teacher || student) per generated token.

The student reads each test prompt and the teacher's own completion (teacher forcing, the
same token ids training used, mapped into the student's vocabulary) and is compared, at
every completion position, with the teacher's top-k log-probs and rest mass over k + 1
buckets (`train.losses.topk_buckets`): the measure `stillroom train` reports as val_kl, on
the test split. Top-k entries the student's vocabulary lacks move into the rest bucket.
"""

from __future__ import annotations

from typing import Any

from stillroom.config import HarvestConfig
from stillroom.harvest.store import RunStore
from stillroom.train.data import (
    ExampleCounts,
    StudentPrompt,
    TeacherToStudent,
    VocabMismatch,
    collate,
    is_empty_answer,
    iter_batches,
    iter_examples,
)
from stillroom.train.losses import forward_kl, topk_buckets
from stillroom.train.student_vocab import student_prompt_ids
from stillroom.train.students import Student


def mean_topk_kl(cfg: HarvestConfig, student: Student) -> tuple[float | None, str | None]:
    """(mean KL over the teacher's generated test tokens, a note or None), or (None, why
    not). Empty teacher answers (zero tokens) have nothing to compare: the KL is over the
    rest, and the note says how many were left out."""
    store = RunStore.open_run(cfg.run_dir)
    try:
        first = next((r for r in store.iter_records("test") if not is_empty_answer(r)), None)
        if first is None:
            return None, "no top-k KL: the test split has no non-empty teacher answer"
        if first["topk"] is None:
            return None, (
                "no top-k KL: the harvest stored no top-k log-probs "
                "(harvest with generation.top_logprobs > 0 to measure it)"
            )
        if first["token_ids"] is None or first["prompt_ids"] is None:
            return None, (
                "no top-k KL: the harvest's top-k are token strings from an API teacher, not "
                "ids in a vocabulary the student shares"
            )
        mapping = TeacherToStudent(student.teacher_to_student(), student.to_teacher is None)
        pad = student.tokenizer.pad_token_id
        counts = ExampleCounts()
        try:
            kl = _kl(cfg, store, student, mapping, 0 if pad is None else pad, counts)
        except VocabMismatch as e:
            return None, f"no top-k KL: {e}"
        return kl, _empty_note(counts)
    finally:
        store.close()


def own_prompt(cfg: HarvestConfig, tokenizer: Any) -> StudentPrompt | None:
    """How the student reads a stored row when it has its own template (else None: it
    reads the teacher's prompt)."""
    template = cfg.task.student_template
    if template is None:
        return None
    return lambda fields, where: student_prompt_ids(tokenizer, template, fields, where)


def _empty_note(counts: ExampleCounts) -> str | None:
    if not counts.empty:
        return None
    n = counts.empty
    return (
        f"top-k KL leaves out {n} empty teacher answer{'s' if n != 1 else ''} (zero tokens) "
        "of the test split: it is the mean over the others"
    )


def _kl(
    cfg: HarvestConfig,
    store: RunStore,
    student: Student,
    mapping: TeacherToStudent,
    pad: int,
    counts: ExampleCounts,
) -> float | None:
    def examples() -> Any:
        counts.empty = 0  # counted once per pass
        return iter_examples(
            store,
            "test",
            mapping=mapping,
            encode=_no_encode,
            max_len=cfg.train.max_len,
            need_signals=True,
            counts=counts,
            student_prompt=own_prompt(cfg, student.tokenizer),
        )

    batches = iter_batches(
        examples,
        lambda group: collate(group, mapping, pad),
        max_batch_tokens=cfg.train.batch_tokens,
        seed=0,
        epoch=0,
        shuffle=False,
    )
    total, n = 0.0, 0
    model = student.model.eval()
    for batch in batches:
        if batch.topk_ids is None or batch.topk_logprobs is None:
            continue
        mask = batch.loss_mask  # (B, T) positions predicting a completion token
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        rest = batch.topk_rest[mask] if batch.topk_rest is not None else None
        q, p = topk_buckets(
            logits[mask].float(), batch.topk_ids[mask], batch.topk_logprobs[mask], rest
        )  # (N, k+1) each
        total += float(forward_kl(q, p).sum())
        n += int(mask.sum())
    return total / n if n else None


def _no_encode(request: dict[str, Any], text: str, finish: str | None) -> Any:
    raise VocabMismatch("the harvest has no teacher token ids to compare the student on")
