"""`stillroom eval` for generation tasks (task.kind: generate).

The test split's prompts, one answer per prompt. The teacher's answers are the ones it gave
during the harvest (the first stored sample of each prompt); every student answers greedily,
up to generation.max_tokens, through the same generation loop that serves local models, in
batches. Quality is exact match and chrF against the gold text when task.gold_field names
one; fidelity is the same two measures against the teacher's answers, plus the mean KL to
the teacher's stored top-k log-probs on the teacher's own tokens when the harvest has them.
Without gold text, quality is fidelity to the teacher, and the teacher scores 100 by
definition. Speed is measured live for teacher and students with the same loop and params.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stillroom.config import HarvestConfig
from stillroom.errors import ConfigError, StoreError
from stillroom.evaluate.efficiency import price_models
from stillroom.evaluate.inputs import (
    NEEDS_LOCAL_TEACHER,
    split_records,
    test_records,
    timed_teacher,
    trained_students,
    training_logs,
    training_set_note,
)
from stillroom.evaluate.metrics import chrf, corpus_chrf, exact_match, normalise_whitespace
from stillroom.evaluate.result import EvalResult
from stillroom.evaluate.rounds import TIMING_NOTE, serve_and_time
from stillroom.evaluate.served import TextStudent, TextTeacher
from stillroom.evaluate.verdict import judge, paired_gap, speed_verdict, verdict_headline
from stillroom.evaluate.workers import ModelSpec
from stillroom.teacher_config import LocalTeacherConfig
from stillroom.teachers.base import GenerationParams, TeacherRequest

METRIC = "chrf"
EXAMPLES = 3  # test items whose answers eval.json and the report show


@dataclass
class TextItems:
    requests: list[TeacherRequest]  # one per test prompt, greedy, generation.max_tokens
    teacher: list[str]  # the teacher's stored answers
    gold: list[str] | None  # gold text, when task.gold_field names it
    inputs: list[str]  # what the student reads: the trivial answer that copies it
    # The same items as the student reads them (task.student_template), else `requests`.
    student_requests: list[TeacherRequest]


def check_text_config(cfg: HarvestConfig) -> None:
    """Problems eval can see in the config before touching the store, all at once."""
    problems = []
    gold = cfg.task.gold_field
    if gold is not None and gold not in cfg.prompts.keep_fields:
        problems.append(
            f"task.gold_field: {gold!r} is not in prompts.keep_fields, so the harvest does not "
            f"store it; add {gold!r} to prompts.keep_fields before harvesting (a run harvested "
            "without it must be harvested again), or drop task.gold_field to score fidelity "
            "to the teacher only"
        )
    if not isinstance(cfg.teacher, LocalTeacherConfig):
        problems.append(NEEDS_LOCAL_TEACHER)
    if cfg.generation.max_tokens is None:
        problems.append(
            "generation.max_tokens: eval lets each student answer up to this many tokens; "
            "set a number (the harvest's, e.g. 256)"
        )
    if problems:
        raise ConfigError("config", problems)


def load_text_items(cfg: HarvestConfig, split: str = "test") -> TextItems:
    """One split's items (eval's: test), with the teacher's stored answers."""
    params = GenerationParams(max_tokens=cfg.generation.max_tokens, stop=tuple(cfg.generation.stop))
    records = test_records(cfg) if split == "test" else split_records(cfg, split)
    first = _first_answers(iter(records))
    requests, teacher, gold, inputs, missing = [], [], [], [], 0
    students: list[TeacherRequest] = []
    field = cfg.task.gold_field
    for rec in first:
        req = json.loads(rec["request"])
        fields = json.loads(rec["fields"] or "{}")
        if "candidates" in req:
            raise StoreError(
                f"{cfg.run_dir}: the harvest scored labels (task.kind: classify) but the config "
                "says task.kind: generate; evaluate with the config it was harvested with"
            )
        messages = req.get("messages")
        requests.append(
            TeacherRequest(
                prompt=req.get("prompt"),
                messages=None if messages is None else tuple((r, c) for r, c in messages),
                params=params,
            )
        )
        teacher.append(rec["text"] or "")
        students.append(_student_request(cfg, fields, requests[-1], rec["key"]))
        inputs.append(_what_it_reads(students[-1]))
        if field is not None:
            value = fields.get(field)
            missing += value is None
            gold.append("" if value is None else str(value))
    if missing:
        raise StoreError(
            f"{cfg.run_dir}: {missing} of {len(first)} test items have no {field!r} field "
            "stored; the run was harvested before it was in prompts.keep_fields. Harvest "
            "again under a new name, or drop task.gold_field"
        )
    return TextItems(requests, teacher, gold if field is not None else None, inputs, students)


def _what_it_reads(request: TeacherRequest) -> str:
    """A request's text as the student reads it: the prompt, or a chat's last message."""
    return request.messages[-1][1] if request.messages else (request.prompt or "")


def _student_request(
    cfg: HarvestConfig, fields: dict[str, Any], request: TeacherRequest, key: str
) -> TeacherRequest:
    """The request as the student reads it: its own template over the item's kept fields
    (task.student_template), or the teacher's own prompt."""
    template = cfg.task.student_template
    if template is None:
        return request
    try:
        return replace(request, prompt=template.format_map(fields), messages=None)
    except KeyError as e:
        raise StoreError(
            f"{cfg.run_dir}: test call {key} has no {e.args[0]!r} field for "
            "task.student_template; add it to prompts.keep_fields and harvest again"
        ) from None


def most_common_answer(cfg: HarvestConfig, gold: bool) -> str:
    """The train split's most frequent gold text, or without gold the teacher's most
    frequent answer there (whitespace-normalised; the first seen wins a tie)."""
    records = split_records(cfg, "train")
    if gold:
        field = cfg.task.gold_field
        texts = [json.loads(r["fields"] or "{}").get(field) for r in records]
    else:
        texts = [r["text"] for r in _first_answers(iter(records))]
    counts = Counter(normalise_whitespace(str(t)) for t in texts if t is not None)
    return counts.most_common(1)[0][0] if counts else ""


def _first_answers(records: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per prompt, the first sample's first choice, in the store's key order."""
    best: dict[str, dict[str, Any]] = {}
    for rec in records:
        seen = best.get(rec["prompt_id"])
        if seen is None or _sample(rec) < _sample(seen):
            best[rec["prompt_id"]] = rec
    return list(best.values())


def _sample(rec: dict[str, Any]) -> tuple[int, int]:
    return rec["sample_index"], rec["choice"]


def text_scores(hyps: list[str], refs: list[str]) -> dict[str, float]:
    return {
        "exact_match": round(exact_match(hyps, refs), 4),
        "chrf": round(corpus_chrf(hyps, refs), 2),
    }


def evaluate_text(
    cfg: HarvestConfig,
    *,
    timed_items: int,
    latency_items: int,
    batch: int,
    cpu_hour_usd: float,
) -> EvalResult:
    check_text_config(cfg)
    items = load_text_items(cfg)
    against = "gold" if items.gold is not None else "teacher"
    notes = _notes(cfg, items)
    refs = items.gold if items.gold is not None else items.teacher
    timed = items.requests[:timed_items]
    specs = {"teacher": ModelSpec(TextTeacher, (timed_teacher(cfg), batch))}
    for role, folder in trained_students(cfg.run_dir):
        specs[role] = ModelSpec(TextStudent, (cfg, folder, items.student_requests, batch),
                                code_of=folder)  # fmt: skip
    # Each model is timed on the same items as it reads them: students on their own prompts.
    on = {role: timed if role == "teacher" else items.student_requests[:timed_items]
          for role in specs}  # fmt: skip
    predicted, efficiency = serve_and_time(specs, on, batch=batch,
                                           latency_items=latency_items,
                                           length=lambda r: len(_text(r)))  # fmt: skip
    models, answers = _entries(cfg, items, refs, predicted, efficiency, notes)
    cores = price_models(models, cpu_hour_usd)
    models |= (trivial := _trivial(cfg, items, refs))
    verdict = _verdict(answers, trivial, models, refs)
    for t in trivial.values():
        del t["answers"]
    task = {"kind": "generate", "n_test": len(items.requests), "metric": METRIC,
            "quality_against": against, "gold_field": cfg.task.gold_field}  # fmt: skip
    shown = {k: v[:EXAMPLES] for k, v in answers.items()}
    shown |= {} if items.gold is None else {"gold": items.gold[:EXAMPLES]}
    return {
        "run": cfg.name,
        "task": task,
        "headline": text_headline(models, verdict, against),
        "verdict": verdict,
        "models": models,
        "notes": notes,
        "examples": [
            {"prompt": _text(r)} | {k: v[i] for k, v in shown.items()}
            for i, r in enumerate(items.requests[:EXAMPLES])
        ],
        "training_logs": training_logs(cfg.run_dir),
        "settings": {
            "cpu_hour_usd": cpu_hour_usd,
            "machine": f"{platform.machine()}, {cores} cores",
            "items_timed": len(timed),
            "batch": batch,
            "decoding": f"greedy, up to {cfg.generation.max_tokens} tokens",
        },
    }


def _entries(
    cfg: HarvestConfig,
    items: TextItems,
    refs: list[str],
    predicted: dict[str, Any],
    efficiency: dict[str, Any],
    notes: list[str],
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Each model's row, and each model's answers; a student's note on its KL joins `notes`."""
    teacher: dict[str, Any] = {"name": cfg.teacher.model, "role": "teacher", "fidelity": None}
    teacher |= {"quality": text_scores(items.teacher, refs), "efficiency": efficiency["teacher"]}
    models: dict[str, Any] = {"teacher": teacher}
    answers = {"teacher": items.teacher}
    for role, folder in trained_students(cfg.run_dir):
        answers[role], kl, note = predicted[role]
        models[role] = _student_entry(str(folder), role, efficiency[role], answers[role], refs,
                                      items.teacher, kl)  # fmt: skip
        notes += [f"{role}: {note}"] if note else []
    return models, answers


def _trivial(cfg: HarvestConfig, items: TextItems, refs: list[str]) -> dict[str, Any]:
    """Trivial answers scored like the models: copying the input, and always the most
    common answer of the train split. Their answers stay under "answers" for the verdict."""
    common = most_common_answer(cfg, items.gold is not None)
    shown = common if len(common) <= 40 else common[:39] + "…"
    out = {}
    for key, name, texts in (
        ("copy_input", "copying the input", items.inputs),
        ("most_common", f"always answering {shown!r}", [common] * len(refs)),
    ):
        out[key] = {"name": name, "role": "trivial", "fidelity": None, "answers": texts,
                    "quality": text_scores(texts, refs)}  # fmt: skip
    return out


def _verdict(
    answers: dict[str, list[str]],
    trivial: dict[str, Any],
    models: dict[str, Any],
    refs: list[str],
) -> dict[str, Any]:
    """judge's verdict on per-item chrF, and the student against the baseline on exact
    match: chrF gives partial credit, and a baseline that gets more answers exactly right
    still wins something the headline must not hide."""
    verdict = judge(
        {role: _sentence_chrf(texts, refs) for role, texts in answers.items()},
        {key: _sentence_chrf(t["answers"], refs) for key, t in trivial.items()},
        {key: m["quality"][METRIC] for key, m in models.items()},
        METRIC,
    )
    if "student" in answers and "baseline" in answers:
        exact = {r: _item_exact(answers[r], refs) for r in ("student", "baseline")}
        gap = paired_gap(exact["student"], exact["baseline"])
        verdict["student_over_baseline_exact_match"] = gap.as_dict()
    return verdict | speed_verdict(models)


def _sentence_chrf(hyps: list[str], refs: list[str]) -> np.ndarray:
    return np.array([chrf(h, r) for h, r in zip(hyps, refs, strict=True)])  # (N,)


def _item_exact(hyps: list[str], refs: list[str]) -> np.ndarray:
    return np.array([exact_match([h], [r]) for h, r in zip(hyps, refs, strict=True)])  # (N,)


def _student_entry(
    name: str,
    role: str,
    efficiency: dict[str, Any],
    answers: list[str],
    refs: list[str],
    teacher: list[str],
    kl: Any,
) -> dict[str, Any]:
    """One student's row: its quality against the references, its fidelity to the teacher."""
    to_teacher = text_scores(answers, teacher)
    return {
        "name": name,
        "role": role,
        "efficiency": efficiency,
        "quality": text_scores(answers, refs),
        "fidelity": {
            "agreement": to_teacher["exact_match"],
            "chrf_to_teacher": to_teacher["chrf"],
            "kl": kl,
        },
    }


def _notes(cfg: HarvestConfig, items: TextItems) -> list[str]:
    """What the numbers mean, for the report."""
    notes = [
        f"Students answer greedily, up to {cfg.generation.max_tokens} tokens; the teacher's "
        "answers are its harvested ones. Exact match compares answers after stripping them "
        "and collapsing whitespace runs to one space; chrF is corpus chrF (Popović 2015: "
        "character 1- to 6-grams, whitespace removed, beta 2) on a 0-100 scale. Agreement is "
        "exact match with the teacher's answer; KL is the mean KL(teacher || student) per "
        "teacher-generated test token, over the teacher's stored top-k and the rest.",
        "Two trivial answers are scored beside the models: copying the input, and always "
        "giving the train split's most common answer. Differences between models and against "
        "the better trivial answer are paired over the test items on sentence-level chrF, "
        "with a 95% bootstrap interval.",
        TIMING_NOTE,
    ]
    if (trained_on := training_set_note(cfg)) is not None:
        notes.append(trained_on)
    if items.gold is None:
        notes.append(
            "No gold text (task.gold_field is not set): quality is fidelity to the teacher, "
            "exact match and chrF against the teacher's answers; the teacher scores 100% "
            "by definition."
        )
    return notes


def text_headline(models: dict[str, Any], verdict: dict[str, Any], against: str) -> str:
    what = "chrF against gold" if against == "gold" else "chrF against the teacher's answers"
    headline = verdict_headline(verdict, models, what, lambda v: f"{v:.1f}",
                                lambda v: f"{v:.1f}", "chrF points")  # fmt: skip
    gap = verdict.get("student_over_baseline_exact_match")
    if gap is None or gap["high"] >= 0:
        return headline
    s, b = (models[r]["quality"]["exact_match"] for r in ("student", "baseline"))
    return (
        f"the gold-only baseline gets more answers exactly right than the student ({b:.1%} vs "
        f"{s:.1%}, ahead by {-gap['diff']:.1%}, 95% interval {-gap['high']:.1%} to "
        f"{-gap['low']:.1%}); {headline}"
    )


def _text(request: TeacherRequest) -> str:
    if request.messages is not None:
        return json.dumps(request.messages)
    return request.prompt or ""
