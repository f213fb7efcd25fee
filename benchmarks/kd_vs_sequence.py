"""Top-k logit KD against sequence KD on a harvest of the real Gemma 3 270M teacher.

Same harvest, same student init (Gemma shrunk to 3 layers with a trimmed vocabulary), same
steps and batches; the only difference is the objective. Reports each student's validation
KL to the teacher's top-k distribution (lower is closer to the teacher) and validation CE on
the teacher's tokens.

    python benchmarks/kd_vs_sequence.py [--prompts 240] [--steps 60]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from stillroom.config import validate_config
from stillroom.harvest.runner import harvest
from stillroom.train.trainer import train

TOPICS = [
    "volcanoes", "honey bees", "the moon", "bread", "rivers", "chess", "glaciers", "owls",
    "electric cars", "coffee", "deserts", "violins", "tides", "mushrooms", "bridges",
    "penguins", "clouds", "libraries", "tomatoes", "trains",
]  # fmt: skip
TEMPLATES = [
    "Question: What is interesting about {t}?\nAnswer:",
    "Write one sentence about {t}.\n",
    "Explain {t} to a child.\nExplanation:",
    "List two facts about {t}.\n1.",
    "Question: Why do people study {t}?\nAnswer:",
    "A short story about {t}:\n",
    "Describe {t} in simple words.\n",
    "Question: Where can you find {t}?\nAnswer:",
    "The most surprising thing about {t} is",
    "Q: How would you describe {t}?\nA:",
    "Here is a fun fact about {t}:",
    "Teacher: Tell me about {t}.\nStudent:",
]


def config(work: Path, name: str, n_steps: int, objective: str) -> Any:
    return validate_config(
        {
            "name": name,
            "runs_dir": str(work / "runs"),
            "prompts": {"path": str(work / "prompts.jsonl"), "field": "text", "id_field": "id"},
            "teacher": {"kind": "local", "model": "gemma-3-270m", "batch_size": 16},
            "generation": {"max_tokens": 32, "temperature": 1.0, "seed": 0, "top_logprobs": 20},
            "split": {"train": 0.85, "validation": 0.15, "test": 0.0},
            "train": {
                "objective": objective,
                "student": {"init": "shrink", "keep_every": 6, "trim_vocab": True},
                "max_steps": n_steps,
                "batch_tokens": 2048,
                "lr": 5e-4,
                "warmup_steps": 5,
                "alpha": 1.0,
                "eval_every": n_steps,
                "checkpoint_every": 0,
                "early_stopping_patience": None,
            },
        },
        "benchmark",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=240)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--work", type=Path, help="keep the harvest here; a rerun resumes it")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        pairs = list(itertools.product(TEMPLATES, TOPICS))[: args.prompts]
        with (work / "prompts.jsonl").open("w") as f:
            for i, (template, topic) in enumerate(pairs):
                f.write(json.dumps({"id": f"q{i}", "text": template.format(t=topic)}) + "\n")
        start = time.perf_counter()
        base = config(work, "harvest", args.steps, "logits")
        h = harvest(base, show_progress=False)
        harvest_s = time.perf_counter() - start
        results: dict[str, Any] = {}
        for objective in ("logits", "sequence"):
            cfg = config(work, objective, args.steps, objective)
            cfg.run_dir.mkdir(parents=True, exist_ok=True)
            (cfg.run_dir / "harvest.sqlite").write_bytes(
                (base.run_dir / "harvest.sqlite").read_bytes()
            )
            r = train(cfg, quiet=True)
            results[objective] = {
                "val_kl_to_teacher": r.best_val and round(r.best_val["val_kl"], 4),
                "val_ce_on_teacher_tokens": r.best_val and round(r.best_val["val_ce"], 4),
                "steps": r.steps,
                "train_tokens_per_s": round(r.tokens_per_s, 1),
                "elapsed_s": round(r.elapsed_s, 1),
            }
        student = r.student
    print(
        json.dumps(
            {
                "benchmark": "kd_vs_sequence",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "teacher": "gemma-3-270m (fp32)",
                "harvest": {"completions": h.ok, "completion_tokens": h.completion_tokens,
                            "top_k": 20, "seconds": round(harvest_s, 1)},
                "student": {k: student[k] for k in ("layers", "params_student",
                            "params_teacher", "vocab_student", "vocab_teacher")},
                "logit_kd": results["logits"],
                "sequence_kd": results["sequence"],
                "kl_ratio_logits_over_sequence": round(
                    results["logits"]["val_kl_to_teacher"]
                    / results["sequence"]["val_kl_to_teacher"], 3),
            },
            indent=2,
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
