"""What `stillroom eval` reads from a run folder, for label and text tasks alike: the
harvest's test split, the students trained so far, and their training logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stillroom.config import HarvestConfig
from stillroom.errors import StoreError
from stillroom.harvest.store import RunStore


def test_records(cfg: HarvestConfig) -> list[dict[str, Any]]:
    """The harvest's test-split records; an error if there are none."""
    store = RunStore.open_run(cfg.run_dir)
    try:
        records = list(store.iter_records("test"))
    finally:
        store.close()
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
