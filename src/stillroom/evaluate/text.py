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
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stillroom.config import HarvestConfig
from stillroom.errors import ConfigError, StoreError
from stillroom.evaluate.efficiency import (
    Efficiency,
    PeakMemory,
    cost_per_million,
    folder_mb,
    measure,
)
from stillroom.evaluate.inputs import (
    NEEDS_LOCAL_TEACHER,
    teacher_efficiency,
    test_records,
    trained_students,
    training_logs,
)
from stillroom.evaluate.metrics import corpus_chrf, exact_match
from stillroom.evaluate.result import EvalResult
from stillroom.teacher_config import LocalTeacherConfig
from stillroom.teachers.base import GenerationParams, TeacherRequest

METRIC = "chrf"
EXAMPLES = 3  # test items whose answers eval.json and the report show


@dataclass
class TextItems:
    requests: list[TeacherRequest]  # one per test prompt, greedy, generation.max_tokens
    teacher: list[str]  # the teacher's stored answers
    gold: list[str] | None  # gold text, when task.gold_field names it


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


def load_text_items(cfg: HarvestConfig) -> TextItems:
    params = GenerationParams(max_tokens=cfg.generation.max_tokens, stop=tuple(cfg.generation.stop))
    first = _first_answers(iter(test_records(cfg)))
    requests, teacher, gold, missing = [], [], [], 0
    field = cfg.task.gold_field
    for rec in first:
        req = json.loads(rec["request"])
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
        if field is not None:
            value = json.loads(rec["fields"] or "{}").get(field)
            missing += value is None
            gold.append("" if value is None else str(value))
    if missing:
        raise StoreError(
            f"{cfg.run_dir}: {missing} of {len(first)} test items have no {field!r} field "
            "stored; the run was harvested before it was in prompts.keep_fields. Harvest "
            "again under a new name, or drop task.gold_field"
        )
    return TextItems(requests, teacher, gold if field is not None else None)


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
    teacher: dict[str, Any] = {"name": cfg.teacher.model, "role": "teacher", "fidelity": None}
    teacher["quality"] = text_scores(items.teacher, refs)
    teacher["efficiency"] = teacher_efficiency(
        cfg, len(timed), batch, lambda t: _timed(t, timed, batch, latency_items)
    )
    models: dict[str, Any] = {"teacher": teacher}
    shown: dict[str, list[str]] = {"teacher": items.teacher[:EXAMPLES]}
    if items.gold is not None:
        shown["gold"] = items.gold[:EXAMPLES]
    for role, folder in trained_students(cfg.run_dir):
        answers, eff, kl, note = _student_run(cfg, folder, items.requests, timed, batch,
                                              latency_items)  # fmt: skip
        models[role] = _student_entry(str(folder), role, eff, answers, refs, items.teacher, kl)
        shown[role] = answers[:EXAMPLES]
        notes += [f"{role}: {note}"] if note else []
    cores = os.cpu_count() or 1
    for entry in models.values():
        tput = entry["efficiency"]["throughput_items_per_s"]
        entry["cost_per_1m_requests_usd"] = round(cost_per_million(tput, cpu_hour_usd, cores), 4)
    task = {"kind": "generate", "n_test": len(items.requests), "metric": METRIC,
            "quality_against": against, "gold_field": cfg.task.gold_field}  # fmt: skip
    return {
        "run": cfg.name,
        "task": task,
        "headline": text_headline(models, against),
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
        "teacher-generated test token, over the teacher's stored top-k and the rest."
    ]
    if items.gold is None:
        notes.append(
            "No gold text (task.gold_field is not set): quality is fidelity to the teacher, "
            "exact match and chrF against the teacher's answers; the teacher scores 100% "
            "by definition."
        )
    return notes


def text_headline(models: dict[str, Any], against: str) -> str:
    t, s = models["teacher"], models.get("student")
    if s is None:
        return "no student to compare yet: run `stillroom train` first"
    kept = s["quality"][METRIC] / max(t["quality"][METRIC], 1e-9)
    cheaper = t["cost_per_1m_requests_usd"] / max(s["cost_per_1m_requests_usd"], 1e-12)
    speed = s["efficiency"]["throughput_items_per_s"] / t["efficiency"]["throughput_items_per_s"]
    what = "chrF against gold" if against == "gold" else "chrF against the teacher's answers"
    cost = f"{_times(cheaper)} lower" if cheaper >= 1 else f"{_times(1 / cheaper)} higher"
    return (
        f"the student keeps {kept:.1%} of the teacher's quality ({what}) at {cost} cost "
        f"and {_times(speed)} the speed"
    )


def _times(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def _generate(runner: Any, requests: list[TeacherRequest], batch: int) -> list[str]:
    out: list[str] = []
    for i in range(0, len(requests), batch):
        out += [c.choices[0].text for c in runner.generate(requests[i : i + batch])]
    return out


def _timed(runner: Any, requests: list[TeacherRequest], batch: int, latency_items: int) -> Any:
    """(p50, p95, items/s) as `measure` gives them; items go in as their prompt text, so its
    length-sorted batching works as for classification."""
    by_text = {_text(r): r for r in requests}
    return measure(
        lambda chunk: runner.generate([by_text[t] for t in chunk]),
        [_text(r) for r in requests],
        batch=batch,
        latency_items=latency_items,
    )


def _text(request: TeacherRequest) -> str:
    if request.messages is not None:
        return json.dumps(request.messages)
    return request.prompt or ""


def _student_run(
    cfg: HarvestConfig,
    folder: Path,
    requests: list[TeacherRequest],
    timed: list[TeacherRequest],
    batch: int,
    latency_items: int,
) -> tuple[list[str], dict[str, Any], float | None, str | None]:
    """The student's greedy answers to every test prompt, its efficiency on the prompts the
    teacher is timed on, and its mean top-k KL to the teacher (or why there is none)."""
    import torch

    from stillroom.evaluate.topk import mean_topk_kl
    from stillroom.teachers.local import LocalTeacher
    from stillroom.train.students import load_student

    with PeakMemory() as memory:
        student = load_student(folder, cfg.eval.student_dtype)
        runner = LocalTeacher(student.model, student.tokenizer, name=str(folder), batch_size=batch)
        answers = _generate(runner, requests, batch)
        p50, p95, tput = _timed(runner, timed, batch, latency_items)
    eff = Efficiency(student.params_student, folder_mb(folder), p50, p95, tput, batch,
                     len(timed), memory.added_mb, cfg.eval.student_dtype)  # fmt: skip
    with torch.inference_mode():
        kl, note = mean_topk_kl(cfg, student)
    return answers, eff.as_dict(), None if kl is None else round(kl, 4), note
