"""What `stillroom eval` reads from a run folder, for label and text tasks alike: the
harvest's test split (and its train split's answers, for the trivial baselines), the
students trained so far, their training logs, and the teacher it times."""

from __future__ import annotations

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
