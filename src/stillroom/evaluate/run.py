"""`stillroom eval`: teacher, student and baseline on the same held-out items, same run.
This module measures label tasks; evaluate/text.py generation tasks.

Quality against gold labels, fidelity to the teacher, and efficiency measured here (latency
at batch 1, throughput at batch N, memory, size), priced per million requests. The teacher's
test-split answers are the ones it gave during the harvest (the same prompts, the same
model); its speed is measured live on a sample of them.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

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
    teacher_efficiency,
    test_records,
    trained_students,
    training_logs,
)
from stillroom.evaluate.metrics import accuracy, confusion, label_kl, macro_f1
from stillroom.evaluate.result import EvalResult
from stillroom.evaluate.text import evaluate_text

CPU_HOUR_USD = 0.05  # a 2-core cloud VM is ~$0.10/hour: $0.05 per core-hour


def evaluate(
    cfg: HarvestConfig,
    *,
    timed_items: int | None = None,
    latency_items: int | None = None,
    batch: int = 16,
    cpu_hour_usd: float = CPU_HOUR_USD,
) -> EvalResult:
    """Labels (task.kind: classify) or text (task.kind: generate, see evaluate/text.py).
    Items timed default to 96 (16 at batch 1) for labels, 32 (8) for text: generating an
    answer costs many forward passes where scoring labels costs one."""
    if cfg.task.kind == "generate":
        return evaluate_text(cfg, timed_items=timed_items or 32, latency_items=latency_items or 8,
                             batch=batch, cpu_hour_usd=cpu_hour_usd)  # fmt: skip
    timed_items, latency_items = timed_items or 96, latency_items or 16
    test = _test_items(cfg)
    labels = cfg.task.labels
    gold = test["gold"]
    models: dict[str, Any] = {}
    confusions: dict[str, Any] = {"labels": labels}
    teacher_pred = test["teacher_logp"].argmax(1)
    teacher: dict[str, Any] = {"name": cfg.teacher.model, "role": "teacher", "fidelity": None}
    teacher |= _quality(teacher_pred, gold, len(labels))
    timed, candidates = test["prompts"][:timed_items], list(cfg.task.candidates)
    teacher["efficiency"] = teacher_efficiency(
        cfg, len(timed), batch,
        lambda t: measure(lambda b: t.score_batch(list(b), candidates), timed, batch=batch,
                          latency_items=latency_items),
    )  # fmt: skip
    models["teacher"] = teacher
    confusions["teacher"] = confusion(teacher_pred, gold, len(labels)).tolist()
    for role, folder in trained_students(cfg.run_dir):
        logp, eff = _student_run(cfg, folder, test["texts"], timed_items, batch, latency_items)
        pred = logp.argmax(1)
        entry: dict[str, Any] = {"name": str(folder), "role": role, "efficiency": eff}
        entry |= _quality(pred, gold, len(labels))
        entry["fidelity"] = {
            "agreement": round(float((pred == teacher_pred).mean()), 4),
            "kl": round(label_kl(test["teacher_logp"], logp), 4),
        }
        models[role] = entry
        confusions[role] = confusion(pred, gold, len(labels)).tolist()
    cores = os.cpu_count() or 1
    for entry in models.values():
        tput = entry["efficiency"]["throughput_items_per_s"]
        entry["cost_per_1m_requests_usd"] = round(cost_per_million(tput, cpu_hour_usd, cores), 4)
    return {
        "run": cfg.name,
        "task": {"kind": "classify", "labels": labels, "n_test": len(gold), "metric": "accuracy"},
        "headline": headline(models),
        "models": models,
        "confusion": confusions,
        "training_logs": training_logs(cfg.run_dir),
        "settings": {
            "cpu_hour_usd": cpu_hour_usd,
            "machine": f"{platform.machine()}, {cores} cores",
            "items_timed": min(timed_items, len(gold)),
            "batch": batch,
        },
    }


def headline(models: dict[str, Any]) -> str:
    t, s = models["teacher"], models.get("student")
    if s is None:
        return "no student to compare yet: run `stillroom train` first"
    kept = s["quality"]["accuracy"] / max(t["quality"]["accuracy"], 1e-9)
    cheaper = t["cost_per_1m_requests_usd"] / max(s["cost_per_1m_requests_usd"], 1e-12)
    speed = s["efficiency"]["throughput_items_per_s"] / t["efficiency"]["throughput_items_per_s"]
    return (
        f"the student keeps {kept:.1%} of the teacher's accuracy at {cheaper:.0f}x lower cost "
        f"and {speed:.0f}x the speed"
    )


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


def _student_run(
    cfg: HarvestConfig, folder: Path, texts: list[str], timed: int, batch: int, latency_items: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """The student's label log-probs on every test text, and its efficiency on the first
    `timed` of them: the same items the teacher is timed on."""
    import torch

    from stillroom.train.data import LabelExample, collate_labels
    from stillroom.train.labels import label_logits, label_token_ids
    from stillroom.train.students import load_student

    with PeakMemory() as memory:
        student = load_student(folder, cfg.eval.student_dtype)
        model, tok = student.model.eval(), student.tokenizer
        label_ids = label_token_ids(tok, cfg.task.candidates)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        blank = np.zeros(len(cfg.task.labels), np.float32)

        @torch.inference_mode()
        def run(chunk: Any) -> np.ndarray:
            group = [LabelExample(np.asarray(tok(t)["input_ids"]), blank, -1) for t in chunk]
            logits = label_logits(model, collate_labels(group, pad), label_ids, pad)
            return torch.log_softmax(logits, -1).numpy()

        logp = np.concatenate([run(texts[i : i + batch]) for i in range(0, len(texts), batch)])
        p50, p95, tput = measure(run, texts[:timed], batch=batch, latency_items=latency_items)
    eff = Efficiency(student.params_student, folder_mb(folder), p50, p95, tput, batch,
                     min(timed, len(texts)), memory.added_mb, cfg.eval.student_dtype)  # fmt: skip
    return logp, eff.as_dict()
