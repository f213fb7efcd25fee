"""Incremental audits: a state file that keeps what earlier runs read, so a run reads only
the rows logged since, and remembers when each account was first flagged.

The state is a DuckDB database file (`--state FILE`) with three tables:

- `seen`: every usable request read so far, in the typed form the features query (no
  prompt or reply text: a few dozen bytes a row);
- `samples`: each account's sampled prompts (the `sample` with the lowest prompt hashes, the
  same sample a full audit of the whole log would draw, whatever order the rows came in);
- `flags`: the first time (in log time: the newest request the run had read) each account
  was flagged, with its unit and score then.

A run reads the source from the newest stored request on (rows at that instant again,
de-duplicated by request id), adds the new rows and samples in one transaction, scores the
whole stored window, and records new flags in a second one. A run killed midway leaves the
state as the last finished run wrote it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stillroom.audit.engine import DuckDBEngine, SQLEngine
from stillroom.audit.result import FlaggedUnit
from stillroom.errors import InputError


class AuditState:
    """The state file, attached to one DuckDB engine as the catalog `st`."""

    def __init__(self, path: Path, engine: SQLEngine) -> None:
        if not isinstance(engine, DuckDBEngine):
            raise InputError("--state keeps its tables in DuckDB: drop --engine spark")
        self.path = path
        self.engine = engine
        self.con = engine.con
        try:
            self.con.execute(f"ATTACH '{path}' AS st")
        except Exception as e:  # duckdb raises its own IOException/InvalidInputException
            raise InputError(
                f"{path}: not an audit state file ({str(e).splitlines()[0]}); give a new path "
                "or one an earlier `stillroom audit --state` wrote"
            ) from None
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS st.flags (account_id VARCHAR PRIMARY KEY, "
            "unit VARCHAR, first_flag_ts DOUBLE, score DOUBLE)"
        )

    def _has(self, table: str) -> bool:
        rows = self.con.execute(
            "SELECT 1 FROM duckdb_tables() WHERE database_name = 'st' AND table_name = ?",
            [table],
        ).fetchall()
        return bool(rows)

    def watermark(self) -> float | None:
        """The newest request time stored; a run reads from here on."""
        if not self._has("seen"):
            return None
        value = self.con.execute("SELECT max(ts) FROM st.seen").fetchone()
        return None if value is None or value[0] is None else float(value[0])

    def absorb(self, sampled: list[dict[str, Any]], per_account: int) -> list[dict[str, Any]]:
        """Add this run's rows (`log`) and sampled prompts to the state; point `log` at every
        stored row; return every account's kept sample."""
        c = self.con
        c.execute("BEGIN")
        try:
            if not self._has("seen"):
                c.execute("CREATE TABLE st.seen AS SELECT * FROM log WHERE false")
                c.execute(
                    "CREATE TABLE st.samples (account_id VARCHAR, rid VARCHAR, phash VARCHAR, "
                    "endpoint VARCHAR, text VARCHAR)"
                )
            c.execute(
                "INSERT INTO st.seen SELECT * FROM log WHERE rid NOT IN "
                "(SELECT rid FROM st.seen WHERE ts >= (SELECT min(ts) FROM log))"
            )
            if sampled:
                names = ("account_id", "rid", "phash", "endpoint", "text")
                self.engine.register("fresh", {k: [r[k] for r in sampled] for k in names})
                c.execute(
                    "INSERT INTO st.samples SELECT account_id, rid, phash, endpoint, text "
                    "FROM fresh WHERE rid NOT IN (SELECT rid FROM st.samples)"
                )
            c.execute(
                "DELETE FROM st.samples WHERE (account_id, rid) IN (SELECT account_id, rid "
                "FROM (SELECT account_id, rid, row_number() OVER (PARTITION BY account_id "
                "ORDER BY phash, rid) AS rn FROM st.samples) WHERE rn > ?)",
                [per_account],
            )
            c.execute("COMMIT")
        except Exception:
            c.execute("ROLLBACK")
            raise
        self.engine.view("log", "SELECT * FROM st.seen")
        rows = c.execute(
            "SELECT account_id, rid, phash, endpoint, text FROM st.samples "
            "ORDER BY account_id, phash, rid"
        ).fetchall()
        names = ("account_id", "rid", "phash", "endpoint", "text")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def record(self, flagged: list[FlaggedUnit], as_of: float) -> dict[str, float]:
        """Store first flags of this run's flagged accounts; {account: first flag time} of
        every account flagged now (earlier first flags kept)."""
        c = self.con
        rows = [(a, f["unit"], as_of, f["score"]) for f in flagged for a in f["accounts"]]
        c.execute("BEGIN")
        try:
            if rows:
                c.executemany("INSERT OR IGNORE INTO st.flags VALUES (?, ?, ?, ?)", rows)
            c.execute("COMMIT")
        except Exception:
            c.execute("ROLLBACK")
            raise
        first = dict(c.execute("SELECT account_id, first_flag_ts FROM st.flags").fetchall())
        return {a: float(first[a]) for a, *_ in rows}

    def close(self) -> None:
        self.con.execute("DETACH st")
