"""`stillroom distill`: harvest, train the student (and the gold-only baseline), eval, report.

Each stage is resumable: the harvest skips stored calls, training resumes from its newest
checkpoint and is skipped once finished with the same config, and eval reruns (it is the
measurement). A rerun after a crash continues where it stopped.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from stillroom.config import HarvestConfig, dump_config
from stillroom.reportkit.files import write_atomic


def distill(
    cfg: HarvestConfig, *, show_progress: bool = True, limit: int | None = None
) -> dict[str, Any]:
    """Every stage in turn. `limit`: harvest only the first N prompts of the file (a trial
    run); the harvest checks the task before any teacher call."""
    from transformers.utils import logging as hf_logging

    from stillroom.evaluate.report import write_report
    from stillroom.evaluate.run import evaluate
    from stillroom.harvest.runner import harvest

    # Stage lines and step lines show progress; per-file weight bars would bury them.
    hf_logging.disable_progress_bar()
    stage = _Stages()
    stage("harvest")
    h = harvest(cfg, show_progress=show_progress, first=limit)
    for note in h.checks:
        _log(f"  note: {note}")
    stage("train the student")
    scope = {"first_prompts": limit}  # a student of the first N prompts is not the full one's
    _train_once(cfg, cfg.run_dir, scope)
    if cfg.task.gold_field:
        stage("train the baseline (same student, gold answers only)")
        _train_once(gold_baseline(cfg), cfg.run_dir / "baseline", scope)
    stage("evaluate teacher, student and baseline")
    result = evaluate(cfg)
    result["harvest"] = {"calls": h.planned, "spent_usd": h.run_total_usd}
    write_json(cfg.run_dir / "eval.json", result)
    paths = write_report(cfg.run_dir, result)
    stage.done()
    return {"headline": result["headline"], "report": str(paths["html"]), "eval": result}


def gold_baseline(cfg: HarvestConfig) -> HarvestConfig:
    """The same student trained on the gold answers alone, no teacher: what distilling must
    beat. A classifier learns the gold label (alpha 0); a generator the gold text."""
    baseline = cfg.model_copy(deep=True)
    if cfg.task.kind == "classify":
        baseline.train.alpha = 0.0
    else:
        baseline.train.objective = "sequence"
        baseline.train.targets = "gold"
    return baseline


class _Stages:
    """Announces each stage and how long the previous one took."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.name: str | None = None

    def __call__(self, name: str) -> None:
        self._close()
        self.name = name
        _log(f"== {name}")

    def done(self) -> None:
        self._close()
        _log(f"== done in {time.perf_counter() - self.started:.0f} s")

    def _close(self) -> None:
        now = time.perf_counter()
        if self.name is not None:
            _log(f"   ({self.name}: {now - self.last:.0f} s)")
        self.last = now


def _train_once(cfg: HarvestConfig, out_dir: Path, scope: dict[str, Any]) -> None:
    """Train unless a finished student has the same config and was trained on the same
    prompts (`scope`: `--limit`, which the config does not hold)."""
    from stillroom.train.trainer import train

    done = out_dir / "train_summary.json"
    same = (
        (out_dir / "config.yaml").is_file()
        and (out_dir / "config.yaml").read_text() == dump_config(cfg)
        and _read_scope(out_dir) == scope
    )
    if done.is_file() and same and (out_dir / "student" / "config.json").is_file():
        _log(f"  {out_dir / 'student'} is trained with this config; skipping")
        return
    train(cfg, resume=same, quiet=True, out_dir=out_dir)
    write_json(out_dir / _SCOPE, scope)


_SCOPE = "distill_scope.json"


def _read_scope(out_dir: Path) -> dict[str, Any]:
    """The prompts a finished student was trained on; a run from before `--limit` used all."""
    path = out_dir / _SCOPE
    return json.loads(path.read_text()) if path.is_file() else {"first_prompts": None}


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2))


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
