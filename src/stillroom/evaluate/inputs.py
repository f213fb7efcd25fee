"""What `stillroom eval` reads from a run folder, for label and text tasks alike: the
harvest's test split (and its train split's answers, for the trivial baselines), the
students trained so far, their training logs, and the teacher it times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stillroom.config import HarvestConfig
from stillroom.errors import ConfigError, StoreError
from stillroom.harvest.store import RunStore
from stillroom.teacher_config import LocalTeacherConfig

NEEDS_LOCAL_TEACHER = (
    "teacher.kind: eval times the teacher live on this machine and needs its weights "
    "(teacher.kind: local with teacher.model a model folder)"
)


def split_records(cfg: HarvestConfig, split: str) -> list[dict[str, Any]]:
    store = RunStore.open_run(cfg.run_dir)
    try:
        return list(store.iter_records(split))
    finally:
        store.close()


def test_records(cfg: HarvestConfig) -> list[dict[str, Any]]:
    """The harvest's test-split records; an error if there are none."""
    records = split_records(cfg, "test")
    if not records:
        raise StoreError(f"{cfg.run_dir}: no test items in the harvest; check split.test")
    return records


def training_set_note(cfg: HarvestConfig) -> str | None:
    """How many train-split answers the student had, and how many of them the gold-only
    baseline could use: a transfer set's prompts (prompts.transfer_path) have no gold."""
    field = cfg.task.gold_field
    if field is None:
        return None
    prompts: dict[str, bool] = {}
    for rec in split_records(cfg, "train"):
        value = json.loads(rec["fields"] or "{}").get(field)
        prompts[rec["prompt_id"]] = value is not None and str(value).strip() != ""
    with_gold = sum(prompts.values())
    if with_gold == len(prompts):
        return None
    return (
        f"The student learned from the teacher's answers to {len(prompts):,} train-split "
        f"prompts, {len(prompts) - with_gold:,} of them without gold ({field}; a transfer set "
        f"such as prompts.transfer_path); the gold-only baseline learned from the "
        f"{with_gold:,} with gold. Answering prompts nobody labelled is what distilling "
        "adds over training on the labels."
    )


def trained_students(run_dir: Path) -> list[tuple[str, Path]]:
    found = [("student", run_dir / "student"), ("baseline", run_dir / "baseline" / "student")]
    return [(role, path) for role, path in found if (path / "config.json").is_file()]


def training_logs(run_dir: Path) -> dict[str, str]:
    logs = {
        "student": run_dir / "train_log.jsonl",
        "baseline": run_dir / "baseline" / "train_log.jsonl",
    }
    return {role: str(path) for role, path in logs.items() if path.is_file()}


def timed_teacher(cfg: HarvestConfig) -> LocalTeacherConfig:
    """The teacher eval loads and times: only a local one has weights here."""
    if not isinstance(cfg.teacher, LocalTeacherConfig):
        raise ConfigError("config", [NEEDS_LOCAL_TEACHER])
    return cfg.teacher
