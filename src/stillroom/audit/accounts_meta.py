"""What the provider knows of each account at sign-up, for links between accounts.

Read from `--accounts FILE` (Parquet, CSV or JSONL: `account_id` (or `id`), and any of
`created_at`, `organization`, `email_domain`, `payment_fingerprint`), or, when the audited
source is a stillroom gateway database, from its `accounts` table (`created_at` only).
Values become link evidence of the *account* family (links.py): accounts created within the
same 6 hours, the same organization, the same email domain (free-mail domains are everyone's
and never count), the same payment method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stillroom.errors import InputError

FIELDS = ("created_at", "organization", "email_domain", "payment_fingerprint")
CREATED_BUCKET_S = 6 * 3600.0
FREE_MAIL = frozenset(
    (
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "yahoo.com",
        "icloud.com",
        "me.com",
        "proton.me",
        "protonmail.com",
        "aol.com",
        "gmx.com",
        "gmx.de",
        "mail.ru",
        "yandex.ru",
        "qq.com",
        "163.com",
    )
)


def load(path: str | None, source: str) -> dict[str, dict[str, Any]]:
    """{account: known fields} from `path`, else from a gateway database at `source`."""
    if path is not None:
        return _from_file(Path(path).expanduser())
    from stillroom.audit.ingest import is_gateway_db

    if is_gateway_db(source):
        return _from_gateway(source)
    return {}


def _from_file(path: Path) -> dict[str, dict[str, Any]]:
    import duckdb

    if not path.is_file():
        raise InputError(f"--accounts {path}: no such file; give a Parquet, CSV or JSONL table")
    reader = {".parquet": "read_parquet", ".csv": "read_csv_auto"}.get(
        path.suffix, "read_json_auto"
    )
    con = duckdb.connect()
    try:
        rel = con.sql(f"SELECT * FROM {reader}('{path}')")
        cols = rel.columns
        key = "account_id" if "account_id" in cols else "id" if "id" in cols else None
        if key is None:
            raise InputError(
                f"--accounts {path}: no account_id column (its columns: {', '.join(cols)}); "
                "name the accounts' column account_id"
            )
        have = [f for f in FIELDS if f in cols]
        if not have:
            raise InputError(
                f"--accounts {path}: none of {', '.join(FIELDS)}; nothing to link accounts by"
            )
        created = (
            "CASE WHEN typeof(created_at) LIKE 'TIMESTAMP%' OR typeof(created_at) = 'DATE' "
            "THEN epoch(CAST(created_at AS TIMESTAMP)) ELSE TRY_CAST(created_at AS DOUBLE) END"
        )
        parts = [
            f"{created} AS created_at" if f == "created_at" else f"CAST({f} AS VARCHAR) AS {f}"
            for f in have
        ]
        rows = con.sql(
            f"SELECT CAST({key} AS VARCHAR) AS account_id, {', '.join(parts)} "
            f"FROM {reader}('{path}')"
        ).fetchall()
    except duckdb.Error as e:
        raise InputError(f"--accounts {path}: cannot read it ({str(e).splitlines()[0]})") from None
    finally:
        con.close()
    return {str(r[0]): dict(zip(have, r[1:], strict=True)) for r in rows if r[0]}


def _from_gateway(source: str) -> dict[str, dict[str, Any]]:
    import sqlalchemy as sa

    from stillroom.serve.db import database_url

    engine = sa.create_engine(database_url(source))
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("accounts"):
                return {}
            rows = conn.execute(sa.text("SELECT id, created_at FROM accounts")).all()
    finally:
        engine.dispose()
    return {str(i): {"created_at": float(c) if c is not None else None} for i, c in rows}


def evidence(meta: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(kind, value, account) triples for links.py."""
    out = []
    for acct, m in meta.items():
        if m.get("created_at") is not None:
            out.append(("created", str(int(float(m["created_at"]) // CREATED_BUCKET_S)), acct))
        if m.get("organization"):
            out.append(("organization", str(m["organization"]).strip().lower(), acct))
        domain = str(m.get("email_domain") or "").strip().lower()
        if domain and domain not in FREE_MAIL:
            out.append(("email", domain, acct))
        if m.get("payment_fingerprint"):
            out.append(("payment", str(m["payment_fingerprint"]), acct))
    return out
