"""Cases: the queue, one case with its evidence, and what a reviewer does to one.

Every action is one transaction: the change (the gateway's own block state on its accounts
table, the case's status, the known-benign list) and its trail entry commit together or not
at all. A block is the gateway's block: the running gateway reads it with the key, so it
refuses the accounts' keys (403) once its key cache (1 s) turns over.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stillroom.audit.runs_store import STATUSES, cases, known_benign, runs, unit_accounts, units
from stillroom.audit.text import prompt_of
from stillroom.console.store import ConsoleError, Reviewer, append, attachments
from stillroom.serve.db import accounts, api_keys, requests

POLICIES = ("model-extraction", "automated-harvesting", "account-sharing", "terms-other")
SEVERITIES = ("high", "medium", "low")
PAGE = 100
MAX_MATCHES = 1000  # accounts (and units) one search may match
_RANK = sa.case({"high": 0, "medium": 1, "low": 2}, value=units.c.severity, else_=3)


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    severity: str | None = None
    min_accounts: int = 1
    q: str = ""  # a unit, an account id, or the start of an account name
    page: int = 1


def check_filters(status: str, severity: str, min_accounts: str, q: str, page: str) -> Filters:
    """Filters from a query string, each bad one named with what it may be."""
    if status and status not in STATUSES:
        raise ConsoleError(f"status={status!r}: give one of {', '.join(STATUSES)}, or none")
    if severity and severity not in SEVERITIES:
        raise ConsoleError(f"severity={severity!r}: give one of {', '.join(SEVERITIES)}")
    ints = {}
    for name, value, top in (("min_accounts", min_accounts, 10**6), ("page", page, 10**6)):
        if not value.isdigit() or not 1 <= int(value) <= top:
            raise ConsoleError(f"{name}={value[:20]!r}: give a whole number from 1 to {top}")
        ints[name] = int(value)
    if len(q) > 200:
        raise ConsoleError("q: a search is at most 200 characters")
    return Filters(status or None, severity or None, ints["min_accounts"], q.strip(), ints["page"])


def queue(engine: Engine, f: Filters) -> tuple[list[dict[str, Any]], int]:
    """One page of cases, strongest first, and how many match."""
    q = (
        sa.select(
            cases.c.id,
            cases.c.unit,
            cases.c.status,
            cases.c.opened_at,
            cases.c.updated_at,
            units.c.score,
            units.c.severity,
            units.c.n_accounts,
            units.c.requests,
            units.c.evidence,
            runs.c.created_at.label("run_at"),
        )
        .join(units, sa.and_(units.c.run_id == cases.c.last_run, units.c.unit == cases.c.unit))
        .join(runs, runs.c.id == cases.c.last_run)
    )
    if f.status:
        q = q.where(cases.c.status == f.status)
    if f.severity:
        q = q.where(units.c.severity == f.severity)
    if f.min_accounts > 1:
        q = q.where(units.c.n_accounts >= f.min_accounts)
    with engine.connect() as conn:
        if f.q:
            q = q.where(cases.c.unit.in_([f.q, *_units_holding(conn, f.q)]))
        total = conn.execute(sa.select(sa.func.count()).select_from(q.subquery())).scalar_one()
        rows = conn.execute(
            q.order_by(_RANK, units.c.score.desc(), cases.c.id)
            .limit(PAGE)
            .offset((f.page - 1) * PAGE)
        ).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        ev = json.loads(d.pop("evidence"))
        d["evidence"] = ev[0] if ev else ""
        out.append(d)
    return out, int(total)


def _units_holding(conn: sa.Connection, q: str) -> list[str]:
    """Units that ever held the account with id `q`, or an account whose name starts with
    `q`. The prefix is a range on the name's index (a LIKE would read every account)."""
    named = sa.select(accounts.c.id).where(
        sa.or_(accounts.c.id == q, sa.and_(accounts.c.name >= q, accounts.c.name < q + "\uffff"))
    )
    ids = [q, *conn.execute(named.limit(MAX_MATCHES)).scalars()]
    held = sa.select(unit_accounts.c.unit).where(unit_accounts.c.account_id.in_(ids)).distinct()
    return list(conn.execute(held.limit(MAX_MATCHES)).scalars())


def case(engine: Engine, case_id: int) -> dict[str, Any]:
    """One case: its latest flag (evidence, features, the run's calibration), its history,
    its accounts as the gateway has them now, and recent prompts."""
    with engine.connect() as conn:
        c = conn.execute(sa.select(cases).where(cases.c.id == case_id)).first()
        if c is None:
            raise ConsoleError(f"no case {case_id}; the queue lists the cases", 404)
        u = conn.execute(
            sa.select(units).where(units.c.run_id == c.last_run, units.c.unit == c.unit)
        ).one()
        run = conn.execute(sa.select(runs).where(runs.c.id == c.last_run)).one()
        history = conn.execute(
            sa.select(
                units.c.run_id,
                units.c.score,
                units.c.severity,
                units.c.n_accounts,
                runs.c.created_at,
                runs.c.threshold,
            )
            .join(runs, runs.c.id == units.c.run_id)
            .where(units.c.unit == c.unit)
            .order_by(runs.c.created_at.desc())
        ).all()
    members = case_accounts(engine, c.last_run, c.unit)
    return {
        "id": c.id,
        "unit": c.unit,
        "status": c.status,
        "opened_at": c.opened_at,
        "updated_at": c.updated_at,
        "score": u.score,
        "severity": u.severity,
        "requests": u.requests,
        "evidence": json.loads(u.evidence),
        "links": json.loads(u.links),
        "features": json.loads(u.features),
        "examples": json.loads(u.examples),
        "run": {
            "id": run.id,
            "at": run.created_at,
            "fpr": run.fpr,
            "threshold": run.threshold,
            "source": run.source,
            "calibration": json.loads(run.calibration),
        },
        "history": [dict(h._mapping) for h in history],
        "accounts": members,
    }


def case_accounts(engine: Engine, run_id: str, unit: str) -> list[dict[str, Any]]:
    """The unit's accounts with their gateway state now and their live keys (an account the
    gateway no longer has is listed as unknown, not dropped)."""
    q = (
        sa.select(
            unit_accounts.c.account_id,
            accounts.c.name,
            accounts.c.blocked_at,
            accounts.c.blocked_reason,
        )
        .select_from(unit_accounts.outerjoin(accounts, accounts.c.id == unit_accounts.c.account_id))
        .where(unit_accounts.c.run_id == run_id, unit_accounts.c.unit == unit)
        .order_by(unit_accounts.c.account_id)
    )
    with engine.connect() as conn:
        found = [
            dict(r._mapping) | {"known": r.name is not None, "keys": []} for r in conn.execute(q)
        ]
        keys = conn.execute(
            sa.select(api_keys.c.id, api_keys.c.account_id, api_keys.c.label, api_keys.c.created_at)
            .where(
                api_keys.c.account_id.in_([a["account_id"] for a in found]),
                api_keys.c.revoked_at.is_(None),
            )
            .order_by(api_keys.c.created_at)
        ).all()
    by_account = {a["account_id"]: a for a in found}
    for k in keys:
        by_account[k.account_id]["keys"].append(dict(k._mapping))
    return found


def recent_prompts(engine: Engine, account_ids: list[str], k: int = 5) -> list[dict[str, Any]]:
    """The latest `k` answered prompts of these accounts (the index on account and time
    serves it; refusals carry no prompt worth reading)."""
    found: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for a in account_ids[:50]:
            rows = conn.execute(
                sa.select(
                    requests.c.created_at,
                    requests.c.account_id,
                    requests.c.endpoint,
                    requests.c.messages,
                    requests.c.prompt,
                )
                .where(requests.c.account_id == a, requests.c.status == 200)
                .order_by(requests.c.created_at.desc())
                .limit(k)
            ).all()
            found += [dict(r._mapping) for r in rows]
    found.sort(key=lambda r: -r["created_at"])
    out = []
    for r in found[:k]:
        text = prompt_of(
            r["messages"] if r["endpoint"] != "completions" else r["prompt"], r["endpoint"]
        )
        out.append({"at": r["created_at"], "account_id": r["account_id"], "text": text[:400]})
    return out


def hourly_activity(engine: Engine, account_ids: list[str]) -> list[tuple[int, int]]:
    """(hour since the epoch, requests) for these accounts, in order."""
    hour = sa.cast(requests.c.created_at / 3600, sa.Integer)
    if engine.dialect.name == "postgresql":  # a cast rounds there; the hour must floor
        hour = sa.cast(sa.func.floor(requests.c.created_at / 3600), sa.Integer)
    q = (
        sa.select(hour.label("h"), sa.func.count().label("n"))
        .where(requests.c.account_id.in_(account_ids))
        .group_by("h")
        .order_by("h")
    )
    with engine.connect() as conn:
        return [(int(r.h), int(r.n)) for r in conn.execute(q)]


def set_status(engine: Engine, who: Reviewer, case_id: int, action: str, reason: str) -> None:
    """Take a case into review, reopen a dismissed one, or add a note (status unchanged)."""
    with engine.begin() as conn:
        c, members = _lock(conn, case_id)
        after = {"note": c.status, "review": "in review", "reopen": "in review"}[action]
        if action == "reopen" and c.status != "dismissed":
            raise ConsoleError(f"case {case_id} is {c.status}, not dismissed: nothing to reopen")
        if action == "reopen":
            conn.execute(known_benign.delete().where(known_benign.c.case_id == case_id))
        _move(conn, case_id, after)
        append(conn, who, action, case_id, members, {"status": c.status}, {"status": after}, reason)


def dismiss(engine: Engine, who: Reviewer, case_id: int, reason: str) -> None:
    """Benign after all: the accounts become known benign for the next audit's calibration."""
    with engine.begin() as conn:
        c, members = _lock(conn, case_id)
        if c.status == "blocked":
            raise ConsoleError(f"case {case_id} is blocked: unblock it before dismissing it")
        now = time.time()
        held = {r[0] for r in conn.execute(sa.select(known_benign.c.account_id))}
        new = [
            {"account_id": a, "case_id": case_id, "since": now} for a in members if a not in held
        ]
        if new:
            conn.execute(known_benign.insert(), new)
        _move(conn, case_id, "dismissed")
        append(
            conn,
            who,
            "dismiss",
            case_id,
            members,
            {"status": c.status},
            {"status": "dismissed", "known_benign": members},
            reason,
        )


def block(
    engine: Engine, who: Reviewer, case_id: int, blocked: bool, reason: str, policy: str | None
) -> list[str]:
    """Block (or unblock) every account of the case in the gateway; returns those changed."""
    if blocked and policy not in POLICIES:
        raise ConsoleError(f"policy={policy!r}: give one of {', '.join(POLICIES)}")
    with engine.begin() as conn:
        c, members = _lock(conn, case_id)
        state = conn.execute(
            sa.select(accounts.c.id, accounts.c.blocked_at, accounts.c.blocked_reason).where(
                accounts.c.id.in_(members)
            )
        ).all()
        if not state:
            raise ConsoleError(f"case {case_id}: the gateway has none of its accounts any more")
        before = {
            r.id: {"blocked": r.blocked_at is not None, "reason": r.blocked_reason} for r in state
        }
        # The gateway tells a blocked client its account's block reason: it gets the policy,
        # while the reviewer's words and name stay in the trail.
        stored = f"policy: {policy}" if blocked else None
        values = {"blocked_at": time.time() if blocked else None, "blocked_reason": stored}
        changed = [a for a, b in before.items() if b["blocked"] != blocked]
        if c.status == "dismissed":  # blocked after all: no longer known benign
            conn.execute(known_benign.delete().where(known_benign.c.case_id == case_id))
        conn.execute(accounts.update().where(accounts.c.id.in_(list(before))).values(**values))
        after_status = "blocked" if blocked else "in review"
        _move(conn, case_id, after_status)
        after = {a: {"blocked": blocked, "reason": stored} for a in before}
        append(
            conn,
            who,
            "block" if blocked else "unblock",
            case_id,
            sorted(before),
            {"status": c.status, "accounts": before},
            {"status": after_status, "accounts": after},
            reason,
            policy,
        )
    return changed


def revoke_key(engine: Engine, who: Reviewer, case_id: int, key_id: str, reason: str) -> None:
    """Revoke one live key of one of the case's accounts (the account stays as it is)."""
    with engine.begin() as conn:
        _c, members = _lock(conn, case_id)
        key = conn.execute(
            sa.select(api_keys.c.account_id, api_keys.c.revoked_at).where(api_keys.c.id == key_id)
        ).first()
        if key is None or key.account_id not in members:
            raise ConsoleError(f"key_id={key_id[:60]!r}: not a key of case {case_id}'s accounts")
        if key.revoked_at is not None:
            raise ConsoleError(f"key {key_id} is already revoked")
        conn.execute(
            api_keys.update().where(api_keys.c.id == key_id).values(revoked_at=time.time())
        )
        append(
            conn,
            who,
            "revoke key",
            case_id,
            [key.account_id],
            {"key": key_id, "live": True},
            {"key": key_id, "live": False},
            reason,
        )


def _lock(conn: sa.Connection, case_id: int) -> tuple[Any, list[str]]:
    """The case (row-locked where the database can) and its latest accounts."""
    q = sa.select(cases).where(cases.c.id == case_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    c = conn.execute(q).first()
    if c is None:
        raise ConsoleError(f"no case {case_id}; the queue lists the cases", 404)
    members = conn.execute(
        sa.select(unit_accounts.c.account_id)
        .where(unit_accounts.c.run_id == c.last_run, unit_accounts.c.unit == c.unit)
        .order_by(unit_accounts.c.account_id)
    ).scalars()
    return c, list(members)


def _move(conn: sa.Connection, case_id: int, status: str) -> None:
    conn.execute(
        cases.update().where(cases.c.id == case_id).values(status=status, updated_at=time.time())
    )


TRACE_TESTS = ("served", "radioactivity", "output_match", "identity")


def attach_trace(engine: Engine, who: Reviewer, case_id: int, verdict: Any, source: str) -> None:
    """Attach a `stillroom trace` verdict (its JSON, as `--json` writes it) to a case."""
    if not isinstance(verdict, dict) or not any(k in verdict for k in TRACE_TESTS):
        raise ConsoleError(
            f"{source}: not a trace verdict (a JSON object with one of "
            f"{', '.join(TRACE_TESTS)}); write one with `stillroom trace ... --json FILE`"
        )
    with engine.begin() as conn:
        _c, members = _lock(conn, case_id)
        conn.execute(
            attachments.insert().values(
                case_id=case_id,
                kind="trace",
                at=time.time(),
                reviewer=who.name,
                body=json.dumps(verdict),
            )
        )
        tests = [k for k in TRACE_TESTS if k in verdict]
        append(
            conn,
            who,
            "attach trace",
            case_id,
            members,
            {},
            {"suspect": verdict.get("suspect"), "tests": tests},
            f"trace verdict from {source}",
        )


def traces(engine: Engine, case_id: int) -> list[dict[str, Any]]:
    """The case's trace verdicts, newest first, each test as (name, statement, p-value)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(attachments)
            .where(attachments.c.case_id == case_id, attachments.c.kind == "trace")
            .order_by(attachments.c.id.desc())
        ).all()
    out = []
    for r in rows:
        v = json.loads(r.body)
        tests = [
            {
                "name": k.replace("_", " "),
                "statement": str(v[k].get("statement", "")),
                "p_value": v[k].get("p_value"),
            }
            for k in TRACE_TESTS
            if isinstance(v.get(k), dict)
        ]
        out.append(
            {"at": r.at, "reviewer": r.reviewer, "suspect": v.get("suspect", ""), "tests": tests}
        )
    return out
