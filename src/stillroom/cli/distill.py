"""The distill face from the shell: harvest, train, eval, distill, demo, task, export."""

from __future__ import annotations

from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from stillroom.cli.output import emit, say


class ExportFormat(StrEnum):
    PARQUET = "parquet"
    JSONL = "jsonl"


def harvest(
    config: Annotated[Path, typer.Argument(help="Harvest config (YAML).")],
    limit: Annotated[int | None, typer.Option(help="Make at most N teacher calls.")] = None,
    first: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N prompts of the file.")
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="Hard cap in USD on the run store's total spend.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count prompts, estimate tokens and cost; no calls.")
    ] = False,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip malformed prompt rows; count and report them.")
    ] = False,
    retry_errors: Annotated[
        bool, typer.Option("--retry-errors", help="Call again for stored error rows.")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: --set generation.max_tokens=64"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Harvest teacher outputs into runs/<name>/harvest.sqlite; reruns skip what is stored.

    Example: stillroom harvest examples/harvest-gemma.yaml --limit 100 --budget 5
    """
    from stillroom.config import load_config
    from stillroom.harvest.runner import dry_run as estimate
    from stillroom.harvest.runner import harvest as run_harvest

    overrides = list(set_ or [])
    if budget is not None:
        overrides.append(f"cost.budget_usd={budget}")
    cfg = load_config(config, overrides)
    if dry_run:
        plan = estimate(cfg, limit=limit, skip_bad=skip_bad, first=first)
        emit(asdict(plan))
        _say_notes(plan.checks)
        return
    result = run_harvest(
        cfg,
        limit=limit,
        skip_bad=skip_bad,
        retry_errors=retry_errors,
        show_progress=not quiet,
        first=first,
    )
    emit(asdict(result))
    _say_notes(result.checks, result.resplit)
    if result.skipped_rows:
        say(f"skipped {len(result.skipped_rows)} bad rows; first: {result.skipped_rows[0]}")
    if result.stopped == "budget":
        say(
            f"stopped at the budget (${cfg.cost.budget_usd}): the next call's worst case would "
            "exceed it; raise --budget to continue"
        )
        raise typer.Exit(3)


def _say_notes(notes: list[str], resplit: int = 0) -> None:
    for note in notes:
        say(f"note: {note}")
    if resplit:
        say(f"moved {resplit} stored calls to the split the config now gives them")


def train(
    config: Annotated[Path, typer.Argument(help="Run config (YAML) with a train section.")],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint.")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: --set train.max_steps=100"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No per-step log on stderr.")] = False,
) -> None:
    """Train a student on the run's harvest; saves runs/<name>/student/ (a Hugging Face folder).

    Example: stillroom train examples/harvest-gemma.yaml --set train.max_steps=50
    Several GPUs: accelerate launch -m stillroom train CONFIG
    """
    from stillroom.config import load_config
    from stillroom.train.trainer import train as run_train

    cfg = load_config(config, list(set_ or []))
    emit(asdict(run_train(cfg, resume=resume, quiet=quiet)))


def eval_(
    config: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key.")] = None,
) -> None:
    """Teacher vs student vs baseline on the held-out split; writes eval.json and the report.

    Example: stillroom eval examples/wordnet.yaml
    """
    from stillroom.config import load_config
    from stillroom.distill import write_json
    from stillroom.evaluate.report import write_report
    from stillroom.evaluate.run import evaluate

    cfg = load_config(config, list(set_ or []))
    result = evaluate(cfg)
    write_json(cfg.run_dir / "eval.json", result)
    paths = write_report(cfg.run_dir, result)
    emit(result)
    say(result["headline"])
    say(f"report: {paths['html']}")


def distill(
    config: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Use only the first N prompts of the file (a trial run)."),
    ] = None,
) -> None:
    """Harvest, train, eval and report in one resumable command.

    Example: stillroom distill examples/wordnet.yaml --limit 100
    """
    from stillroom.config import load_config
    from stillroom.distill import distill as run_distill

    cfg = load_config(config, list(set_ or []))
    out = run_distill(cfg, show_progress=not quiet, limit=limit)
    emit({"headline": out["headline"], "report": out["report"]})
    say(out["headline"])
    say(f"report: {out['report']}")


def demo(
    quick: Annotated[
        bool, typer.Option("--quick", help="A small version: fewer users, prompts, steps.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default runs/story or runs/story-quick).")
    ] = None,
) -> None:
    """The whole story: serve a watermarked model, users and a distiller use it, the
    distiller trains a student, the audit finds its accounts, the trace gives its p-value.
    Resumable: a rerun finishes what is missing.

    Example: stillroom demo --quick
    """
    from stillroom.demo.story import run_demo

    folder = out or Path("runs/story-quick" if quick else "runs/story")
    story = run_demo(folder, quick=quick)
    from stillroom.demo.report import headline

    emit({"headline": headline(story), "report": story["report"]})


def task(
    name: Annotated[
        str, typer.Argument(help="The built-in task: wordnet (classify) or wordnet-derived.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for the task's JSONL.")] = Path("examples/data"),
    per_class: Annotated[int, typer.Option(help="wordnet: items per class.")] = 300,
    items: Annotated[
        int | None,
        typer.Option(help="wordnet-derived: items in all (default: every usable one, 4,982)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Which items are drawn.")] = 0,
    transfer: Annotated[
        int,
        typer.Option(
            help="wordnet-derived: prompts without references for the transfer set "
            "(wordnet-derived-transfer.jsonl; 0: none)."
        ),
    ] = 7000,
) -> None:
    """Build a built-in task's data from an installed package (WordNet: Debian wordnet-base).

    wordnet: noun definitions -> 8 categories. wordnet-derived: a definition -> the derived
    word it defines ("in a magical manner (adverb)" -> "magically"), plus a transfer set
    of other derived senses' definitions without references (prompts.transfer_path).
    Each row carries `prompt`, the teacher's few-shot prompt for the item.
    Example: stillroom task wordnet-derived --out examples/data
    """
    from stillroom.errors import InputError
    from stillroom.tasks.derived import TRANSFER_FILE, build_derived_task
    from stillroom.tasks.wordnet import build_wordnet_task

    if name == "wordnet":
        path = build_wordnet_task(out, per_class=per_class, seed=seed, with_prompts=True)
    elif name == "wordnet-derived":
        path = build_derived_task(out, items=items, seed=seed, transfer=transfer)
    else:
        raise InputError(
            f"no built-in task {name!r}; the built-in tasks are: wordnet, wordnet-derived"
        )
    out_json: dict[str, object] = {"path": str(path), "items": _lines(path)}
    if name == "wordnet-derived" and transfer:
        extra = path.with_name(TRANSFER_FILE)
        out_json["transfer"] = {"path": str(extra), "prompts": _lines(extra)}
    emit(out_json)


def _lines(path: Path) -> int:
    with path.open(encoding="utf-8") as f:
        return sum(1 for _ in f)


def export(
    run: Annotated[Path, typer.Argument(help="Run folder, e.g. runs/my-run.")],
    format: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.PARQUET,
    out: Annotated[Path | None, typer.Option(help="Output file (default: in the run).")] = None,
    split: Annotated[
        str | None, typer.Option(help="Only this split: train, validation or test.")
    ] = None,
) -> None:
    """Export a run's harvest, one row per completion with decoded top-k signals.

    Example: stillroom export runs/my-run --format parquet
    """
    from stillroom.harvest.export import export_run

    path = export_run(run, format.value, out, split)
    emit({"path": str(path)})
