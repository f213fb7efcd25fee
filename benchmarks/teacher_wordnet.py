"""The default task's teacher: Gemma 3 270M on WordNet noun glosses, scored by label log-probs.

Builds the task (`stillroom.tasks.wordnet`, Debian's `wordnet-base`), splits it as a harvest
would (seeded hash of the id: train 0.8, validation 0.05, test 0.15), and scores the test
items with `LocalTeacher.score_batch` on the few-shot prompt (the shared prefix's KV cache is
built once and reused). Prints one JSON object: accuracy and macro-F1, raw and calibrated,
items/s, prompt length; and, as baselines measured in the same run, the naive prompt (one
example per class, raw argmax: DESIGN's 47%) and scoring without prefix KV reuse.

Calibration (report both; neither sees a gold label):
- "prior": divide each label's probability by its mean over unlabelled train items, i.e.
  subtract the log of the teacher's average label distribution (its label prior).
- "contextual": contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): the same
  division, with the prior read from content-free inputs ("N/A", "", "[MASK]") instead.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/teacher_wordnet.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stillroom.config import SplitConfig
from stillroom.harvest.prompts import split_of
from stillroom.runtime.gemma import DEFAULT_TEACHER
from stillroom.tasks.wordnet import (
    CANDIDATES,
    DEFAULT_CLASSES,
    FEW_SHOT,
    LABELS,
    VERBALIZERS,
    build_wordnet_task,
    few_shot_prefix,
    format_item,
)
from stillroom.teachers.local import LocalTeacher

SPLIT = SplitConfig(train=0.8, validation=0.05, test=0.15, seed=0)
CONTENT_FREE = ["N/A", "", "[MASK]"]  # Zhao et al. 2021's content-free inputs


def label_probs(teacher: LocalTeacher, prefix: str, texts: list[str]) -> tuple[np.ndarray, float]:
    """(N, C) label probabilities renormalised over the candidates, and the seconds taken."""
    start = time.perf_counter()
    scores = np.array(teacher.score_batch([prefix + format_item(t) for t in texts], CANDIDATES))
    seconds = time.perf_counter() - start
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True), seconds


def metrics(probs: np.ndarray, gold: np.ndarray) -> dict[str, Any]:
    pred = probs.argmax(axis=1)
    f1s, per_class = [], {}
    for j, label in enumerate(LABELS):
        tp = int(((pred == j) & (gold == j)).sum())
        wrong = int(((pred == j) != (gold == j)).sum())  # false positives + false negatives
        f1s.append(2 * tp / (2 * tp + wrong) if tp else 0.0)
        per_class[label] = round(float((pred[gold == j] == j).mean()), 3)
    return {
        "accuracy": round(float((pred == gold).mean()), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "per_class_accuracy": per_class,
    }


def calibrated(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """p(label | x) / prior(label), renormalised: removes the teacher's label bias."""
    out = probs / prior
    return out / out.sum(axis=1, keepdims=True)


def no_reuse_items_per_s(teacher: LocalTeacher, prefix: str, texts: list[str]) -> float:
    """One prompt per call: no common prefix, so the whole few-shot prompt runs every time."""
    start = time.perf_counter()
    for text in texts:
        teacher.score_batch([prefix + format_item(text)], CANDIDATES)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shots", type=int, default=len(FEW_SHOT) // len(DEFAULT_CLASSES))
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--limit", type=int, default=None, help="score at most N items")
    parser.add_argument("--calibration-items", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a hub
    if args.threads:
        torch.set_num_threads(args.threads)
    load_at_start = round(os.getloadavg()[0], 2)

    with tempfile.TemporaryDirectory() as tmp:
        path = build_wordnet_task(Path(tmp), per_class=args.per_class, seed=args.seed)
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    by_split: dict[str, list[dict[str, str]]] = {"train": [], "validation": [], "test": []}
    for row in rows:
        by_split[split_of(row["id"], SPLIT)].append(row)
    items = by_split[args.split][: args.limit]
    # Calibration reads unlabelled train items, never the items scored (unless told to
    # score the train split, in which case it takes train items from the far end).
    pool = by_split["train"][::-1] if args.split == "train" else by_split["train"]
    cal_texts = [r["text"] for r in pool[: args.calibration_items]]
    texts = [r["text"] for r in items]
    gold = np.array([LABELS.index(r["label"]) for r in items])

    teacher = LocalTeacher.load(DEFAULT_TEACHER)
    prefix = few_shot_prefix(FEW_SHOT[: args.shots * len(DEFAULT_CLASSES)])
    # The first call builds the prefix's KV cache (and warms the allocator): time it apart.
    teacher._prefix = None
    _, prefix_s = label_probs(teacher, prefix, texts[:2])
    probs, seconds = label_probs(teacher, prefix, texts)
    prior, _ = label_probs(teacher, prefix, cal_texts)
    content_free, _ = label_probs(teacher, prefix, CONTENT_FREE)
    tokens = [len(teacher.tokenizer(prefix + format_item(t))["input_ids"]) for t in texts]

    result: dict[str, Any] = {
        "task": "WordNet 3.0 noun glosses -> lexicographer category",
        "classes": {VERBALIZERS[c]: c for c in DEFAULT_CLASSES},
        "n": len(items),
        "split": args.split,
        "dataset_items": len(rows),
        "split_sizes": {k: len(v) for k, v in by_split.items()},
        "teacher": DEFAULT_TEACHER,
        "shots_per_class": args.shots,
        "prefix_tokens": len(teacher.tokenizer(prefix)["input_ids"]),
        "prompt_tokens_mean": round(float(np.mean(tokens)), 1),
        "raw": metrics(probs, gold),
        "calibrated_prior": metrics(calibrated(probs, prior.mean(axis=0)), gold),
        "calibrated_contextual": metrics(calibrated(probs, content_free.mean(axis=0)), gold),
        "calibration_items": len(cal_texts),
        "items_per_s": round(len(items) / seconds, 2),
        "first_call_with_prefix_build_s": round(prefix_s, 2),
    }
    if not args.no_baselines:
        naive = few_shot_prefix(FEW_SHOT[: len(DEFAULT_CLASSES)])
        naive_probs, naive_s = label_probs(teacher, naive, texts)
        naive_prior, _ = label_probs(teacher, naive, cal_texts)
        result["baseline_one_shot_per_class"] = {
            "raw": metrics(naive_probs, gold),
            "calibrated_prior": metrics(calibrated(naive_probs, naive_prior.mean(axis=0)), gold),
            "items_per_s": round(len(items) / naive_s, 2),
        }
        sample = texts[:16]
        result["baseline_no_prefix_reuse_items_per_s"] = round(
            no_reuse_items_per_s(teacher, prefix, sample), 2
        )
    result["machine"] = {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Other work on the machine slows every figure; the 1-min load average says how much.
        "load_avg_at_start_and_end": [load_at_start, round(os.getloadavg()[0], 2)],
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
