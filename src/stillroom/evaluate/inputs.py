"""What `stillroom eval` reads from a run folder, for label and text tasks alike: the
harvest's test split, the students trained so far, their training logs, and the teacher it
times."""

from __future__ import annotations

from collections.abc import Callable
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


def timed_teacher(cfg: HarvestConfig) -> LocalTeacherConfig:
    """The teacher eval loads and times: only a local one has weights here."""
    if not isinstance(cfg.teacher, LocalTeacherConfig):
        raise ConfigError("config", [NEEDS_LOCAL_TEACHER])
    return cfg.teacher


def teacher_efficiency(
    cfg: HarvestConfig, items: int, batch: int, timed: Callable[[Any], tuple[float, float, float]]
) -> dict[str, Any]:
    """The teacher loaded as the config says, and `timed(teacher)` (p50, p95, throughput) over
    `items` items, with its size and the memory loading and running it took."""
    from stillroom.evaluate.efficiency import Efficiency, PeakMemory, folder_mb
    from stillroom.teachers.local import LocalTeacher

    local = timed_teacher(cfg)
    with PeakMemory() as memory:
        teacher = LocalTeacher.load(local.model, dtype=local.dtype, batch_size=batch)
        p50, p95, tput = timed(teacher)
    params = sum(p.numel() for p in teacher.runtime.lm.parameters())
    folder = Path(teacher.runtime.lm.name_or_path)
    eff = Efficiency(params, folder_mb(folder) if folder.is_dir() else 0.0, p50, p95, tput,
                     batch, items, memory.added_mb, local.dtype)  # fmt: skip
    return eff.as_dict()
