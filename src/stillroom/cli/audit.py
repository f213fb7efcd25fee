"""`stillroom audit` and `stillroom simulate-traffic`.

Heavy imports (duckdb, pyspark, the embedder) wait inside the functions: `--help` stays fast.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stillroom.audit.ingest import LogSchema
from stillroom.audit.options import Embedding, Engine
from stillroom.cli.options import parse_options
from stillroom.cli.output import emit, parse_when, say
from stillroom.errors import InputError

if TYPE_CHECKING:
    from stillroom.audit.result import AuditResult


class Shown(StrEnum):
    """What stdout shows: a table for people, or the JSON."""

    TABLE = "table"
    JSON = "json"


def audit(  # long: typer reads the options from this signature
    source: Annotated[
        str,
        typer.Argument(
            help="Gateway DB (SQLite path or postgresql:// URL; a LiteLLM proxy's DB too), "
            "or Parquet/JSONL: the request log, a LiteLLM spend-log export, OTel GenAI spans."
        ),
    ],
    engine: Annotated[Engine, typer.Option(help="SQL engine.")] = Engine.DUCKDB,
    fpr: Annotated[
        float, typer.Option(help="Expected false-positive rate among benign accounts.")
    ] = 0.001,
    min_requests: Annotated[
        int, typer.Option(help="Never flag an account (or actor) with fewer requests.")
    ] = 1,
    format: Annotated[Shown, typer.Option("--format", help="What stdout shows.")] = Shown.TABLE,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")] = None,
    calibrate: Annotated[
        str | None,
        typer.Option(help="A log of known-benign traffic to calibrate on (default: this log)."),
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="A calibration saved with --save-calibration.")
    ] = None,
    save_calibration: Annotated[
        Path | None, typer.Option(help="Save the calibration used, for later audits.")
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="Rename a column: OLD=NEW (repeatable), e.g. ts=created_at; NEW may be "
            "params.KEY (temp=params.temperature). LiteLLM/OTel: the column or span attribute "
            "to read, e.g. user=account_id.",
        ),
    ] = None,
    schema: Annotated[
        LogSchema, typer.Option(help="Log schema (auto: told by its columns).")
    ] = LogSchema.AUTO,
    since: Annotated[str | None, typer.Option(help="Window start (epoch or ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Window end (epoch or ISO).")] = None,
    sample: Annotated[int, typer.Option(help="Prompts sampled per account for text.")] = 24,
    embedder: Annotated[
        Embedding, typer.Option(help="MiniLM: static (word-piece table) or transformer.")
    ] = Embedding.STATIC,
    no_links: Annotated[
        bool, typer.Option("--no-links", help="Score accounts alone; do not join sybils.")
    ] = False,
    block: Annotated[
        bool, typer.Option("--block", help="Block the flagged accounts in the gateway DB.")
    ] = False,
    db: Annotated[
        str | None, typer.Option("--db", help="Gateway DB for --block (default: SOURCE).")
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            help="Incremental: keep what was read in this file; later runs read only new rows "
            "and report when each unit was first flagged."
        ),
    ] = None,
    accounts: Annotated[
        str | None,
        typer.Option(
            "--accounts",
            help="Accounts table (Parquet/CSV/JSONL: account_id, created_at, organization, "
            "email_domain, payment_fingerprint) for links; a gateway DB's own is read unasked.",
        ),
    ] = None,
    watch: Annotated[
        float | None,
        typer.Option(help="With --state: audit again every this many seconds, until Ctrl-C."),
    ] = None,
) -> None:
    """Find the accounts that harvest the API for distillation, with evidence.

    Example: stillroom audit gateway.sqlite --fpr 0.001 --html audit.html
    Early warning: stillroom audit gateway.sqlite --state audit.state --watch 3600
    """
    from stillroom.audit.ingest import parse_map
    from stillroom.audit.options import AuditOptions, audits

    options = parse_options(
        AuditOptions,
        {"log_schema": "--schema", "accounts_table": "--accounts", "link": "--no-links"},
        source=source, engine=engine, fpr=fpr, min_requests=min_requests,
        calibrate=calibrate, calibration=calibration, mapping=parse_map(map_), log_schema=schema,
        since=parse_when(since, "--since"), until=parse_when(until, "--until"), sample=sample,
        embedder=embedder, link=not no_links, state=state, accounts_table=accounts, watch=watch,
    )  # fmt: skip
    for result in audits(options):
        _report(result, save_calibration, block, db or source, json_out, html_out, format)


def _report(
    result: AuditResult,
    save_calibration: Path | None,
    block: bool,
    db: str,
    json_out: Path | None,
    html_out: Path | None,
    format: str,
) -> None:
    from stillroom.audit import report

    if save_calibration is not None:
        result.calibration.save(save_calibration)
    data = report.as_json(result)
    if block:
        from stillroom.audit.block import block_flagged

        try:
            blocked = block_flagged(db, result.flagged)
        except InputError as e:
            raise InputError(f"--block: {e} (with --db)") from None
        for account, why in blocked.refused.items():
            say(f"not blocked: {account}: {why}")
        data["blocked"] = blocked.accounts
    if json_out is not None:
        from stillroom.reportkit.files import write_atomic

        write_atomic(json_out, json.dumps(data, indent=2, default=str) + "\n")
    if html_out is not None:
        report.write_html(result, html_out)
    if format == Shown.JSON:
        emit(data)
    else:
        sys.stdout.write(report.table(result))


def simulate_traffic(
    out: Annotated[Path, typer.Option("--out", help="Folder for requests.parquet + labels.")],
    accounts: Annotated[int, typer.Option(help="Accounts to simulate.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    days: Annotated[float, typer.Option(help="Length of the log in days.")] = 7.0,
) -> None:
    """Labeled API traffic in the gateway's log schema: benign personas and distillers.

    Example: stillroom simulate-traffic --out sim/ --accounts 1000 --seed 1
    """
    from stillroom.audit.simulate import simulate

    if accounts < 10:
        raise InputError(f"--accounts {accounts}: simulate at least 10 accounts")
    if not 1 <= days <= 90:
        raise InputError(f"--days {days}: give 1 to 90 days")
    emit(simulate(out, accounts=accounts, seed=seed, days=days))
