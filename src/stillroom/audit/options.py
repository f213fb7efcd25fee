"""The options of an audit, checked together before any row is read; `run_audit` runs one,
`audits` one or, watching, one every so often."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from stillroom.audit.ingest import LogSchema
from stillroom.errors import InputError
from stillroom.options import VerbOptions

if TYPE_CHECKING:
    from stillroom.audit.result import AuditResult
    from stillroom.audit.score import Calibration


class Engine(StrEnum):
    DUCKDB = "duckdb"  # in-process, the default
    SPARK = "spark"  # Spark SQL, for logs past one machine


class Embedding(StrEnum):
    STATIC = "static"  # MiniLM's word-piece table: fast, no model run
    TRANSFORMER = "transformer"  # the whole MiniLM


class AuditOptions(VerbOptions):
    verb: ClassVar[str] = "audit"
    source: str  # a gateway database, or Parquet/JSONL log files
    engine: Engine = Engine.DUCKDB
    fpr: float = Field(0.001, gt=0, lt=0.5)  # the false-positive rate asked for
    min_requests: int = Field(1, ge=1)  # never flag a unit with fewer requests
    calibrate: str | None = None  # a log of known-benign traffic to calibrate on
    calibration: Path | None = None  # a calibration saved by an earlier audit
    mapping: dict[str, str] = Field(default_factory=dict)  # source column -> log column
    log_schema: LogSchema = LogSchema.AUTO
    since: float | None = None  # window, epoch seconds
    until: float | None = None
    sample: int = Field(24, ge=2)  # prompts sampled per account for the text features
    embedder: Embedding = Embedding.STATIC
    link: bool = True  # join accounts that act as one
    state: Path | None = None  # incremental: what was read, kept here
    accounts_table: str | None = None  # account metadata for links
    watch: float | None = Field(None, gt=0)  # with state: audit again every this many s

    def combination_problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if self.watch is not None and self.state is None:
            found.append(("watch", "audits again with what it kept: give {state} too"))
        if self.state is not None and self.engine != Engine.DUCKDB:
            found.append(("state", "keeps its tables in DuckDB: use {engine} duckdb"))
        if self.calibrate is not None and self.calibration is not None:
            found.append(("calibration", "is one calibration, {calibrate} another: give one"))
        if self.since is not None and self.until is not None and self.since >= self.until:
            found.append(("until", "comes before {since}: the window is empty"))
        return found


def audits(o: AuditOptions) -> Iterator[AuditResult]:
    """One audit, or with `watch` one every `watch` seconds for ever. A calibration that does
    not come from the log itself (a reference log, a saved one) is made once and reused: the
    reference does not change between runs, while the log audited does."""
    result = run_audit(o)
    yield result
    fixed = result.calibration if o.calibrate or o.calibration else None
    while o.watch is not None:
        time.sleep(o.watch)
        yield run_audit(o, fixed)


def run_audit(o: AuditOptions, calibration: Calibration | None = None) -> AuditResult:
    """One audit as the options ask; `calibration`, when given, instead of the one they name."""
    from stillroom.audit.run import audit
    from stillroom.audit.score import Calibration

    if calibration is None and o.calibration is not None:
        try:
            calibration = Calibration.from_json(json.loads(o.calibration.read_text()))
        except (OSError, ValueError, KeyError) as e:
            raise InputError(
                f"{o.calibration}: not a saved calibration ({e}); save one from an audit first"
            ) from None
    return audit(
        o.source, engine=o.engine.value, fpr=o.fpr, min_requests=o.min_requests,
        calibration=calibration, calibrate=o.calibrate, mapping=o.mapping,
        schema=o.log_schema.value, since=o.since, until=o.until, sample=o.sample,
        embedder=o.embedder.value, link=o.link, state=o.state,
        accounts_table=o.accounts_table, record=True,
    )  # fmt: skip
