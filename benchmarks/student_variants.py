"""Which student a generative task's harvest can teach: variants of the student and its
training, each trained on the same stored harvest and scored on the same items.

Each variant is the config's run with some keys changed (`VARIANTS`), trained in its own
folder on a copy of the config's harvest (`stillroom harvest CONFIG` first). Quality is
corpus chrF and exact match of the student's greedy answers against the task's gold text,
with the teacher's stored answers on the same items beside it:
- on the test split, the figure eval reports;
- on the validation split, which no variant was chosen on (the trainer reads only its
  cross-entropy), so the chosen variant's figure there is the held-out one.

    python benchmarks/student_variants.py --config examples/wordnet-derived.yaml \
        [--only freeze four-layers] [--work runs/variants]

Prints a JSON line per variant, then all of them as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from stillroom.config import HarvestConfig, load_config
from stillroom.evaluate.text import load_text_items, text_scores
from stillroom.train.trainer import train

# The config's own keys are overridden per variant. Without a transfer set
# (prompts.transfer_path: None) a variant learns from the labelled items' answers alone.
_LABELLED = {"prompts.transfer_path": None}
_FOUR = _LABELLED | {
    "train.student.keep_layers": [0, 6, 12, 17],
    "train.student.intermediate_size": 1024,
    "train.student.vocab_top_k": 3,
    "train.student.freeze_embeddings": True,
}
_TWO = _LABELLED | {"train.student.keep_layers": [0, 17], "train.student.vocab_top_k": None,
                    "train.student.intermediate_size": 1024,
                    "train.max_steps": 300}  # fmt: skip
VARIANTS: dict[str, dict[str, Any]] = {
    "two-layers": _TWO | {"train.student.freeze_embeddings": False},
    "two-layers-frozen": _TWO | {"train.student.freeze_embeddings": True},
    "four-layers-300-steps": _FOUR | {"train.max_steps": 300},
    "four-layers-600-steps": _FOUR | {"train.max_steps": 600},
    "four-layers-lr-1e-3": _FOUR | {"train.max_steps": 600, "train.lr": 1e-3},
    "four-layers-0-1-16-17": _FOUR
    | {"train.student.keep_layers": [0, 1, 16, 17], "train.max_steps": 300},
    # The example config as it stands: its transfer set, top 1 in the vocabulary, 896 neurons.
    "transfer-set": {"prompts.transfer_path": "config"},
    "gold-only-two-layers": _TWO
    | {
        "train.student.freeze_embeddings": True,
        "train.objective": "sequence",
        "train.targets": "gold",
    },
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS))
    ap.add_argument("--work", type=Path, default=Path("runs/variants"))
    ap.add_argument("--reuse", action="store_true",
                    help="score a variant's student already trained in --work; train only "
                         "those missing")  # fmt: skip
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = load_config(args.config)
    results = {}
    for name in args.only:
        cfg = variant_config(base, name, args.work)
        row: dict[str, Any] = {"overrides": VARIANTS[name]}
        if not (args.reuse and (cfg.run_dir / "student" / "config.json").is_file()):
            started = time.perf_counter()
            trained = train(cfg, quiet=True)
            row |= {"train_s": round(time.perf_counter() - started), "steps": trained.steps}
        row |= student_size(cfg)
        for split in ("test", "validation"):
            row[split] = scores(cfg, split)
        results[name] = row
        print(json.dumps({name: row}), flush=True)
    print(json.dumps({"benchmark": "student_variants", "config": str(args.config),
                      "variants": results}, indent=2))  # fmt: skip


def variant_config(base: HarvestConfig, name: str, work: Path) -> HarvestConfig:
    """The config with the variant's keys set, in a folder holding a copy of the harvest."""
    cfg = base.model_copy(deep=True)
    for key, value in VARIANTS[name].items():
        *path, last = key.split(".")
        section: Any = cfg
        for part in path:
            section = getattr(section, part)
        if value != "config":  # "config": the config's own value, which the variant needs
            setattr(section, last, value)
    if VARIANTS[name].get("prompts.transfer_path") == "config" and not cfg.prompts.transfer_path:
        raise SystemExit(f"{name} needs a transfer set: set prompts.transfer_path in the config")
    cfg.name, cfg.runs_dir = name, work
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    store = cfg.run_dir / "harvest.sqlite"
    if not store.exists():
        shutil.copyfile(base.run_dir / "harvest.sqlite", store)
        if cfg.prompts.transfer_path is None:
            set_aside_transfer(cfg)
    return cfg


def set_aside_transfer(cfg: HarvestConfig) -> None:
    """Delete, from the variant's copy of the harvest, the answers to prompts outside the
    config's prompts file (the transfer set's): training and the trimmed vocabulary both
    read every stored answer. The config's own store keeps them."""
    from stillroom.harvest.prompts import load_prompts

    labelled = [item.id for item in load_prompts(cfg.prompts, cfg.split)[0]]
    with sqlite3.connect(cfg.run_dir / "harvest.sqlite") as db:
        db.execute("CREATE TEMP TABLE labelled (id TEXT PRIMARY KEY)")
        db.executemany("INSERT INTO labelled VALUES (?)", [(i,) for i in labelled])
        db.execute("DELETE FROM completions WHERE call_key IN (SELECT key FROM calls"
                   " WHERE prompt_id NOT IN (SELECT id FROM labelled))")  # fmt: skip
        db.execute("DELETE FROM calls WHERE prompt_id NOT IN (SELECT id FROM labelled)")


def student_size(cfg: HarvestConfig) -> dict[str, Any]:
    """The saved student's parameters and vocabulary, as train reported them."""
    meta = json.loads((cfg.run_dir / "student" / "stillroom_student.json").read_text())
    shape = meta["student"]
    return {k: shape[k] for k in ("params_student", "params_ratio", "params_trainable",
                                  "vocab_student")}  # fmt: skip


def scores(cfg: HarvestConfig, split: str) -> dict[str, Any]:
    """chrF and exact match of the student and the teacher on one split's items."""
    from stillroom.teachers.local import LocalTeacher
    from stillroom.train.students import load_student

    items = load_text_items(cfg, split)
    gold = items.gold or []
    student = load_student(cfg.run_dir / "student", cfg.eval.student_dtype)
    runner = LocalTeacher(student.model, student.tokenizer, name=cfg.name, batch_size=32)
    answers: list[str] = []
    for i in range(0, len(items.student_requests), 32):
        batch = items.student_requests[i : i + 32]
        answers += [c.choices[0].text for c in runner.generate(batch)]
    student_q, teacher_q = text_scores(answers, gold), text_scores(items.teacher, gold)
    agree = sum(a.strip() == t.strip() for a, t in zip(answers, items.teacher, strict=True))
    return {
        "items": len(gold),
        "student": student_q,
        "teacher": teacher_q,
        "kept": round(student_q["chrf"] / max(teacher_q["chrf"], 1e-9), 4),
        "agrees_with_teacher": round(agree / max(len(gold), 1), 4),
    }


if __name__ == "__main__":
    main()
