"""`stillroom eval`: teacher, student and baseline on the same held-out items, same run.
This module measures label tasks; evaluate/text.py generation tasks.

Quality against gold labels, fidelity to the teacher, and efficiency measured here (latency
at batch 1, throughput at batch N, memory, size), priced per million requests. The teacher's
test-split answers are the ones it gave during the harvest (the same prompts, the same
model); its speed is measured live on a sample of them.
"""

from __future__ import annotations

import json
import platform
from typing import Any

import numpy as np

from stillroom.config import HarvestConfig
from stillroom.errors import ConfigError, StoreError
from stillroom.evaluate.efficiency import price_models
from stillroom.evaluate.inputs import (
    split_records,
    test_records,
    timed_teacher,
    trained_students,
    training_logs,
    training_set_note,
)
from stillroom.evaluate.metrics import accuracy, confusion, label_kl, macro_f1
from stillroom.evaluate.result import EvalResult
from stillroom.evaluate.rounds import TIMING_NOTE, serve_and_time
from stillroom.evaluate.served import LabelStudent, LabelTeacher
from stillroom.evaluate.text import evaluate_text
from stillroom.evaluate.verdict import judge, speed_verdict, verdict_headline
from stillroom.evaluate.workers import ModelSpec

CPU_HOUR_USD = 0.05  # a 2-core cloud VM is ~$0.10/hour: $0.05 per core-hour
NOTES = [
    TIMING_NOTE,
    "Differences between models are paired over the test items, with a 95% bootstrap "
    "interval; the most common label is the train split's, scored on the test items.",
]


def evaluate(
    cfg: HarvestConfig,
    *,
    timed_items: int | None = None,
    latency_items: int | None = None,
    batch: int = 16,
    cpu_hour_usd: float = CPU_HOUR_USD,
) -> EvalResult:
    """Labels (task.kind: classify) or text (task.kind: generate, see evaluate/text.py).
    Items timed default to 96 (16 at batch 1) for labels, 16 (5) for text: generating an
    answer costs many forward passes where scoring labels costs one."""
    if cfg.task.kind == "generate":
        return evaluate_text(cfg, timed_items=timed_items or 16, latency_items=latency_items or 5,
                             batch=batch, cpu_hour_usd=cpu_hour_usd)  # fmt: skip
    timed_items, latency_items = timed_items or 96, latency_items or 16
    test = _test_items(cfg)
    labels, gold = cfg.task.labels, test["gold"]
    candidates = list(cfg.task.candidates)
    specs = {"teacher": ModelSpec(LabelTeacher, (timed_teacher(cfg), candidates, batch))}
    items = {"teacher": test["prompts"][:timed_items]}
    for role, folder in trained_students(cfg.run_dir):
        args = (folder, cfg.eval.student_dtype, candidates, test["texts"], batch)
        specs[role] = ModelSpec(LabelStudent, args, code_of=folder)
        items[role] = test["texts"][:timed_items]
    logps, efficiency = serve_and_time(specs, items, batch=batch, latency_items=latency_items)
    logps["teacher"] = test["teacher_logp"]
    preds = {role: logp.argmax(1) for role, logp in logps.items()}
    names = {role: str(spec.args[0]) for role, spec in specs.items()}
    names["teacher"] = cfg.teacher.model
    models = _entries(names, logps, gold, efficiency)
    cores = price_models(models, cpu_hour_usd)
    majority = _majority_label(cfg, gold)
    models["most_common"] = {"name": f"always {labels[majority]!r}", "role": "trivial",
                             "fidelity": None} | _quality(np.full_like(gold, majority), gold,
                                                          len(labels))  # fmt: skip
    verdict = judge(
        {role: (pred == gold).astype(float) for role, pred in preds.items()},
        {"most_common": (gold == majority).astype(float)},
        {k: m["quality"]["accuracy"] for k, m in models.items()},
        "accuracy",
    ) | speed_verdict(models)
    return {
        "run": cfg.name,
        "task": {"kind": "classify", "labels": labels, "n_test": len(gold), "metric": "accuracy"},
        "headline": headline(models, verdict),
        "verdict": verdict,
        "models": models,
        "confusion": {"labels": labels}
        | {role: confusion(pred, gold, len(labels)).tolist() for role, pred in preds.items()},
        "notes": [*NOTES, *filter(None, [training_set_note(cfg)])],
        "training_logs": training_logs(cfg.run_dir),
        "settings": {
            "cpu_hour_usd": cpu_hour_usd,
            "machine": f"{platform.machine()}, {cores} cores",
            "items_timed": min(timed_items, len(gold)),
            "batch": batch,
        },
    }


def _entries(
    names: dict[str, str],
    logps: dict[str, np.ndarray],
    gold: np.ndarray,
    efficiency: dict[str, Any],
) -> dict[str, Any]:
    """Each model's row: quality against gold, fidelity to the teacher, efficiency."""
    models: dict[str, Any] = {}
    teacher = logps["teacher"]
    for role, logp in logps.items():
        pred = logp.argmax(1)
        models[role] = {"name": names[role], "role": role, "efficiency": efficiency[role]}
        models[role] |= _quality(pred, gold, teacher.shape[1])
        models[role]["fidelity"] = None if role == "teacher" else {
            "agreement": round(float((pred == teacher.argmax(1)).mean()), 4),
            "kl": round(label_kl(teacher, logp), 4),
        }  # fmt: skip
    return models


def headline(models: dict[str, Any], verdict: dict[str, Any]) -> str:
    return verdict_headline(verdict, models, "accuracy", _percent, _points, "points")


def _percent(v: float) -> str:
    return f"{v:.1%}"


def _points(v: float) -> str:
    return f"{100 * v:.1f}"


def _majority_label(cfg: HarvestConfig, test_gold: np.ndarray) -> int:
    """The train split's most common gold label (the test split's when train has none)."""
    field, labels = cfg.task.gold_field, cfg.task.labels
    seen = [json.loads(r["fields"] or "{}").get(field) for r in split_records(cfg, "train")]
    counts = np.bincount([labels.index(str(v)) for v in seen if str(v) in labels],
                         minlength=len(labels))  # fmt: skip
    if counts.sum() == 0:
        counts = np.bincount(test_gold, minlength=len(labels))
    return int(counts.argmax())


def _test_items(cfg: HarvestConfig) -> dict[str, Any]:
    records = test_records(cfg)
    if cfg.task.gold_field is None:
        raise ConfigError("config", ["task.gold_field: eval needs gold labels to score quality"])
    labels = cfg.task.labels
    fields = [json.loads(r["fields"] or "{}") for r in records]
    missing = [f for f in fields if str(f.get(cfg.task.gold_field)) not in labels]
    if missing:
        raise StoreError(
            f"{cfg.run_dir}: {len(missing)} test items have no gold label among task.labels"
        )
    return {
        "gold": np.array([labels.index(str(f[cfg.task.gold_field])) for f in fields]),
        "teacher_logp": np.stack([np.frombuffer(r["label_logprobs"], "<f4") for r in records]),
        "prompts": [json.loads(r["request"])["prompt"] for r in records],
        "texts": [(cfg.task.student_input or "{text}").format_map(f) for f in fields],
    }


def _quality(pred: np.ndarray, gold: np.ndarray, n: int) -> dict[str, Any]:
    return {
        "quality": {
            "accuracy": round(accuracy(pred, gold), 4),
            "macro_f1": round(macro_f1(pred, gold, n), 4),
        }
    }
