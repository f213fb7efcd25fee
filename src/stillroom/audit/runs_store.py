"""Audit runs kept in the gateway database, so its flagged units become cases with history.

Tables (beside the gateway's own, created on first use; their own metadata, never the
gateway's migrations):

audit_runs            one row per audit: when, the FPR asked, the threshold, the calibration
                      (benign percentiles, centre and spread of every scored feature), warnings
audit_units           one row per flagged unit per run: score, severity, evidence, features,
                      example prompts, the links that joined its accounts
audit_unit_accounts   (run, unit, account): which accounts a flagged unit held in that run
audit_cases           one row per unit ever flagged: its status (new, in review, blocked,
                      dismissed) and the runs that flagged it first and last
audit_known_benign    accounts a reviewer dismissed as benign: the next audit keeps them in
                      its benign reference (`with_known_benign`)

A case is a unit name (an account id, or `actor:<its first account>`): the same actor flagged
again by a later run is the same case. The console writes the status; the audit only makes
new cases and moves `last_run`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stillroom.audit.result import AuditResult
from stillroom.audit.score import Calibration, score

metadata = sa.MetaData()
STATUSES = ("new", "in review", "blocked", "dismissed")
KNOWN_BENIGN_NOTE = (
    "unit(s) a reviewer dismissed as benign in the console count as known benign: they stay "
    "in the calibration's reference"
)

runs = sa.Table(
    "audit_runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # run_<hex>
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("source", sa.Text, nullable=False),  # what was audited, any password removed
    sa.Column("fpr", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("units", sa.Integer, nullable=False),
    sa.Column("accounts", sa.Integer, nullable=False),
    sa.Column("flagged", sa.Integer, nullable=False),
    sa.Column("rows_used", sa.Integer, nullable=False),
    sa.Column("window_start", sa.Float),
    sa.Column("window_end", sa.Float),
    sa.Column("known_benign", sa.Integer, nullable=False, default=0),
    sa.Column("calibration", sa.Text, nullable=False),  # JSON: features, center, scale, pct
    sa.Column("warnings", sa.Text, nullable=False),  # JSON list
)

units = sa.Table(
    "audit_units",
    metadata,
    sa.Column("run_id", sa.String(40), sa.ForeignKey("audit_runs.id"), primary_key=True),
    sa.Column("unit", sa.String(80), primary_key=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("n_accounts", sa.Integer, nullable=False),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),  # JSON list of sentences
    sa.Column("links", sa.Text, nullable=False),  # JSON {kind: pairs}
    sa.Column("features", sa.Text, nullable=False),  # JSON {feature: value}
    sa.Column("examples", sa.Text, nullable=False),  # JSON list of prompts
    sa.Column("first_flagged", sa.Float),
)

unit_accounts = sa.Table(
    "audit_unit_accounts",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("unit", sa.String(80), primary_key=True),
    sa.Column("account_id", sa.String(80), primary_key=True),
    sa.Index("ix_audit_unit_accounts_account", "account_id"),
)

cases = sa.Table(
    "audit_cases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("unit", sa.String(80), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False, default="new"),
    sa.Column("first_run", sa.String(40), nullable=False),
    sa.Column("last_run", sa.String(40), nullable=False),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

known_benign = sa.Table(
    "audit_known_benign",
    metadata,
    sa.Column("account_id", sa.String(80), primary_key=True),
    sa.Column("case_id", sa.Integer, nullable=False),
    sa.Column("since", sa.Float, nullable=False),
)


schema_versions = sa.Table(
    "stillroom_schema",
    metadata,
    sa.Column("component", sa.String(40), primary_key=True),  # "audit", "console"
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)
Migration = Callable[[sa.Connection], None]


def migrate(engine: Engine, component: str, migrations: list[tuple[int, Migration]]) -> int:
    """Apply a component's migrations not applied yet, in order, each in one transaction
    with its version; returns the version. Append-only, as the gateway's: a released entry
    is never edited, a change is a new entry."""
    schema_versions.create(engine, checkfirst=True)
    with engine.connect() as conn:
        done = conn.execute(
            sa.select(schema_versions.c.version).where(schema_versions.c.component == component)
        ).scalar()
    version = int(done or 0)
    for number, step in migrations:
        if number <= version:
            continue
        with engine.begin() as conn:
            step(conn)
            row = {"version": number, "applied_at": time.time()}
            if version == 0:
                conn.execute(schema_versions.insert().values(component=component, **row))
            else:
                conn.execute(
                    schema_versions.update()
                    .where(schema_versions.c.component == component)
                    .values(**row)
                )
        version = number
    return version


def _initial(conn: sa.Connection) -> None:
    for table in (runs, units, unit_accounts, cases, known_benign):
        table.create(conn, checkfirst=True)


MIGRATIONS: list[tuple[int, Migration]] = [(1, _initial)]


def create_tables(engine: Engine) -> None:
    migrate(engine, "audit", MIGRATIONS)


def is_stillroom_gateway(engine: Engine) -> bool:
    """Whether the database holds a stillroom gateway (its accounts and request log)."""
    names = set(sa.inspect(engine).get_table_names())
    return {"accounts", "requests"} <= names


def public_source(source: str) -> str:
    """The source as stored and shown: a URL's password is never written down."""
    url = sa.engine.make_url(source) if "://" in source else None
    return url.render_as_string(hide_password=True) if url is not None else source


def severity(score_: float, threshold: float) -> str:
    """How far past the threshold: each scored feature adds at most CLIP (2) standard spreads,
    so a margin of one spread is one feature clearly past the benign tail."""
    margin = score_ - threshold
    return "high" if margin >= 1.0 else "medium" if margin >= 0.3 else "low"


def known_benign_accounts(engine: Engine) -> set[str]:
    if not sa.inspect(engine).has_table(known_benign.name):
        return set()
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(known_benign.c.account_id))}


def with_known_benign(
    cal: Calibration, unit_features: dict[str, dict[str, Any]], benign: Collection[str]
) -> tuple[Calibration, int]:
    """`cal` with every unit whose accounts a reviewer dismissed as benign kept in its
    reference, even where the screen left it out as a likely harvester: the threshold then
    sits above it. A new calibration (a watching audit reuses the one it was given); and
    how many units that touched (0: `cal` itself, unchanged)."""
    kept = [f for f in unit_features.values() if f["members"] and set(f["members"]) <= set(benign)]
    if not kept:
        return cal, 0
    s = score(cal, kept)[0]
    out = s[s > (cal.ref_scores.max() if len(cal.ref_scores) else -1.0)]
    note = f"{len(kept)} {KNOWN_BENIGN_NOTE}"
    earlier = [n for n in cal.notes if KNOWN_BENIGN_NOTE not in n]  # a watching audit's last
    return replace(
        cal,
        ref_scores=np.concatenate([cal.ref_scores, out]),
        screened_out=max(0, cal.screened_out - len(out)),
        notes=[*earlier, note],
    ), len(kept)


def record_run(engine: Engine, result: AuditResult, source: str, benign: int = 0) -> str:
    """Write one audit's flagged units (and the run) into the database; returns the run id."""
    create_tables(engine)
    run_id = "run_" + secrets.token_hex(8)
    m, now = result.measured, time.time()
    with engine.begin() as conn:
        conn.execute(runs.insert().values(**_run_row(result, source, benign, run_id, now)))
        for f in result.flagged:
            conn.execute(
                units.insert().values(
                    run_id=run_id,
                    unit=f["unit"],
                    score=f["score"],
                    severity=severity(f["score"], result.threshold),
                    n_accounts=len(f["accounts"]),
                    requests=int(f["features"].get("requests") or 0),
                    evidence=json.dumps(f["evidence"]),
                    links=json.dumps(m.links.evidence.get(f["unit"], {})),
                    features=json.dumps(f["features"], default=float),
                    examples=json.dumps(f["examples"]),
                    first_flagged=f.get("first_flagged"),
                )
            )
            conn.execute(
                unit_accounts.insert(),
                [{"run_id": run_id, "unit": f["unit"], "account_id": a} for a in f["accounts"]],
            )
            _open_case(conn, f["unit"], run_id, now)
    return run_id


def case_of(engine: Engine, unit: str) -> int | None:
    """The console's case id for a unit a stored run flagged, or None."""
    with engine.connect() as conn:
        found = conn.execute(sa.select(cases.c.id).where(cases.c.unit == unit)).first()
    return None if found is None else int(found.id)


def _run_row(
    result: AuditResult, source: str, benign: int, run_id: str, now: float
) -> dict[str, Any]:
    m, cal = result.measured, result.calibration
    return {
        "id": run_id,
        "created_at": now,
        "source": public_source(source),
        "fpr": result.fpr,
        "threshold": result.threshold,
        "units": len(m.units),
        "accounts": len(m.links.units),
        "flagged": len(result.flagged),
        "rows_used": m.stats.used,
        "window_start": m.window[0],
        "window_end": m.window[1],
        "known_benign": benign,
        "calibration": json.dumps(
            {
                "features": cal.features,
                "center": cal.center.tolist(),
                "scale": cal.scale.tolist(),
                "percentiles": cal.percentiles,
            }
        ),
        "warnings": json.dumps(result.warnings),
    }


def _open_case(conn: sa.Connection, unit: str, run_id: str, now: float) -> None:
    found = conn.execute(sa.select(cases.c.id).where(cases.c.unit == unit)).first()
    if found is None:
        conn.execute(
            cases.insert().values(
                unit=unit,
                status="new",
                first_run=run_id,
                last_run=run_id,
                opened_at=now,
                updated_at=now,
            )
        )
    else:
        conn.execute(cases.update().where(cases.c.id == found.id).values(last_run=run_id))
