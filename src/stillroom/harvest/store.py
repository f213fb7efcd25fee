"""The run store: `runs/<name>/harvest.sqlite`, one row per teacher call.

Schema (append-only migrations; `PRAGMA user_version` is the schema version):

    calls        one row per teacher call, keyed by the hash of its canonical request
      key TEXT PK, prompt_id, sample_index, split, request (canonical JSON), fields (JSON:
      kept row fields such as gold labels), status ('ok' | 'error'), error, model,
      prompt_tokens, completion_tokens, prompt_ids (int32 LE array: the prompt as a local
      teacher tokenized it), cost_usd, latency_s, compute_s, created_at
    completions  one row per returned sequence (n > 1 gives several per call)
      call_key, choice, text, finish_reason,
      token_ids (int32 LE array; local teachers), tokens (JSON list; API teachers),
      token_logprobs (float32 LE array), topk (signals codec blob),
      token_table (JSON list: the strings that topk ids index, for API teachers),
      label_logprobs (float32 LE array: classification, one per candidate label)
    teacher_scores  one row per scoring call of on-policy training (train/teacher_scores.py)
      key TEXT PK, model, tokens (sent), scored (answer tokens scored), topk (signals codec
      blob, teacher ids), cost_usd, created_at
    reservations one row per attempt at a call, written before its request is sent:
      id INTEGER PK, key, usd (the attempt's worst case), orphaned, started_at.
      A stored reply releases its own attempt's row. A row left by a killed run is spend
      that may have been billed: the next run marks it orphaned and it counts for good,
      even after a later run answers the same call (the teacher may have billed both).
      A row is never overwritten, and an orphaned one is never deleted.

A call and its completions are written in one transaction, committed before the next call
is acknowledged: a run killed at any point keeps every finished call and repeats none.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.errors import StoreError
from stillroom.harvest.signals import encode_topk
from stillroom.teachers.base import Completion

STORE_NAME = "harvest.sqlite"

_MIGRATIONS = [
    """
    CREATE TABLE calls (
        key TEXT PRIMARY KEY,
        prompt_id TEXT NOT NULL,
        sample_index INTEGER NOT NULL,
        split TEXT NOT NULL,
        request TEXT NOT NULL,
        fields TEXT,
        status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
        error TEXT,
        model TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        prompt_ids BLOB,
        cost_usd REAL NOT NULL DEFAULT 0,
        latency_s REAL,
        compute_s REAL,
        created_at REAL NOT NULL
    );
    CREATE INDEX calls_split ON calls (split, status);
    CREATE TABLE completions (
        call_key TEXT NOT NULL REFERENCES calls (key) ON DELETE CASCADE,
        choice INTEGER NOT NULL,
        text TEXT NOT NULL,
        finish_reason TEXT,
        token_ids BLOB,
        tokens TEXT,
        token_logprobs BLOB,
        topk BLOB,
        token_table TEXT,
        PRIMARY KEY (call_key, choice)
    );
    CREATE TABLE reservations (
        key TEXT PRIMARY KEY,
        usd REAL NOT NULL,
        orphaned INTEGER NOT NULL DEFAULT 0,
        started_at REAL NOT NULL
    );
    """,
    # 2: classification harvests store each candidate label's log-prob.
    "ALTER TABLE completions ADD COLUMN label_logprobs BLOB;",
    # 3: a reservation per attempt, not per call. Keyed by call, a rerun's reservation
    # replaced the killed run's, and releasing it forgot spend that may have been billed.
    """
    CREATE TABLE reservations_by_attempt (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        usd REAL NOT NULL,
        orphaned INTEGER NOT NULL DEFAULT 0,
        started_at REAL NOT NULL
    );
    INSERT INTO reservations_by_attempt (key, usd, orphaned, started_at)
        SELECT key, usd, orphaned, started_at FROM reservations;
    DROP TABLE reservations;
    ALTER TABLE reservations_by_attempt RENAME TO reservations;
    """,
    # 4: on-policy training's scoring calls: the teacher's top-k on a token sequence the
    # student wrote, keyed by the hash of (model, k, sequence, where its answer starts).
    """
    CREATE TABLE teacher_scores (
        key TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        scored INTEGER NOT NULL,
        topk BLOB NOT NULL,
        cost_usd REAL NOT NULL,
        created_at REAL NOT NULL
    );
    """,
]


@dataclass(frozen=True)
class CallMeta:
    """What the runner knows about a call before it is made."""

    key: str
    prompt_id: str
    sample_index: int
    split: str
    request: dict[str, Any]
    fields: dict[str, Any]


@dataclass
class StoreTotals:
    calls: int
    ok: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    orphaned_usd: float
    compute_s: float


class RunStore:
    """SQLite (WAL) store of teacher calls. One writer at a time (the harvest process)."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        if not path.exists() and not create:
            raise StoreError(f"{path}: no harvest store here; run `stillroom harvest` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.held: dict[str, int] = {}  # call key -> id of the reservation this process holds
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process; only power loss can drop the tail.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=10000")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: not a usable harvest store ({e})") from None

    @classmethod
    def open_run(cls, run_dir: Path, *, create: bool = False) -> RunStore:
        return cls(run_dir / STORE_NAME, create=create)

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(_MIGRATIONS):
            raise StoreError(
                f"{self.path}: written by a newer stillroom (schema {version}); upgrade stillroom"
            )
        for i in range(version, len(_MIGRATIONS)):
            self.db.executescript(f"BEGIN; {_MIGRATIONS[i]} PRAGMA user_version={i + 1}; COMMIT;")

    def close(self) -> None:
        self.db.close()

    # --- reading ---------------------------------------------------------------------------

    def stored_keys(self, *, include_errors: bool = True) -> set[str]:
        sql = "SELECT key FROM calls" + ("" if include_errors else " WHERE status = 'ok'")
        return {k for (k,) in self.db.execute(sql)}

    def totals(self) -> StoreTotals:
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(status='ok'), 0), COALESCE(SUM(status='error'), 0),"
            " COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
            " COALESCE(SUM(cost_usd), 0), COALESCE(SUM(compute_s), 0) FROM calls"
        ).fetchone()
        (scoring,) = self.db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM teacher_scores"
        ).fetchone()
        (orphaned,) = self.db.execute(
            "SELECT COALESCE(SUM(usd), 0) FROM reservations WHERE orphaned = 1"
        ).fetchone()
        return StoreTotals(
            calls=row[0],
            ok=row[1],
            errors=row[2],
            prompt_tokens=row[3],
            completion_tokens=row[4],
            cost_usd=row[5] + scoring,  # what the teacher billed, scoring calls included
            orphaned_usd=orphaned,
            compute_s=row[6],
        )

    def iter_records(self, split: str | None = None) -> Iterator[dict[str, Any]]:
        """Stream ok calls joined with their completions, one dict per completion."""
        sql = (
            "SELECT c.key, c.prompt_id, c.sample_index, c.split, c.request, c.fields, c.model,"
            " c.prompt_tokens, c.completion_tokens, c.prompt_ids, c.cost_usd, c.latency_s,"
            " p.choice, p.text, p.finish_reason, p.token_ids, p.tokens, p.token_logprobs,"
            " p.topk, p.token_table, p.label_logprobs"
            " FROM calls c JOIN completions p ON p.call_key = c.key WHERE c.status = 'ok'"
        )
        args: tuple[Any, ...] = ()
        if split is not None:
            sql += " AND c.split = ?"
            args = (split,)
        # Key order: the same stored records always stream in the same order, however the
        # calls finished, so training data order (and a resumed run) is reproducible.
        sql += " ORDER BY c.key, p.choice"
        cols = [
            "key", "prompt_id", "sample_index", "split", "request", "fields", "model",
            "prompt_tokens", "completion_tokens", "prompt_ids", "cost_usd", "latency_s", "choice",
            "text", "finish_reason", "token_ids", "tokens", "token_logprobs", "topk", "token_table",
            "label_logprobs",
        ]  # fmt: skip
        for row in self.db.execute(sql, args):
            yield dict(zip(cols, row, strict=True))

    # --- writing ---------------------------------------------------------------------------

    def reserve(self, key: str, usd: float) -> None:
        """Record an attempt's worst case before its request is sent (committed at once)."""
        cursor = self.db.execute(
            "INSERT INTO reservations (key, usd, started_at) VALUES (?, ?, ?)",
            (key, usd, time.time()),
        )
        assert cursor.lastrowid is not None
        self.held[key] = cursor.lastrowid

    def resplit(self, splits: dict[str, str]) -> int:
        """Move stored calls to the split `splits` gives their key (the config's split may
        have changed since they were stored); returns how many moved. Only the split column
        changes: no answer is lost."""
        with self._transaction():
            before = self.db.total_changes
            self.db.executemany(
                "UPDATE calls SET split = ? WHERE key = ? AND split != ?",
                [(split, key, split) for key, split in splits.items()],
            )
            return self.db.total_changes - before

    def orphan_reservations(self) -> float:
        """Mark reservations left by a killed run as spent (they may have been billed)."""
        self.db.execute("UPDATE reservations SET orphaned = 1 WHERE orphaned = 0")
        return self.totals().orphaned_usd

    def write_ok(
        self, meta: CallMeta, comp: Completion, cost_usd: float, *, replaces: bool = False
    ) -> None:
        """Store a finished call. `replaces`: it redoes a stored error row (--retry-errors)."""
        rows = [_completion_row(meta.key, c) for c in comp.choices]
        with self._transaction():
            self._insert_call(meta, "ok", None, comp, cost_usd, replaces)
            self.db.executemany(
                "INSERT INTO completions (call_key, choice, text, finish_reason, token_ids,"
                " tokens, token_logprobs, topk, token_table, label_logprobs)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            self._release(meta.key)

    def write_error(
        self, meta: CallMeta, error: str, cost_usd: float, *, replaces: bool = False
    ) -> None:
        with self._transaction():
            self._insert_call(meta, "error", error, None, cost_usd, replaces)
            self._release(meta.key)

    def _release(self, key: str) -> None:
        """Settle this process's own attempt: the stored row now carries its cost. Rows of
        earlier attempts at the same call stay, they may have been billed too."""
        reservation = self.held.pop(key, None)
        if reservation is not None:
            self.db.execute(
                "DELETE FROM reservations WHERE id = ? AND orphaned = 0", (reservation,)
            )

    def _insert_call(
        self,
        meta: CallMeta,
        status: str,
        error: str | None,
        comp: Completion | None,
        cost: float,
        replaces: bool,
    ) -> None:
        if replaces:  # only ever an error row: ok rows are never asked for again
            self._keep_error_charge(meta.key)
            self.db.execute("DELETE FROM calls WHERE key = ? AND status = 'error'", (meta.key,))
        self.db.execute(
            "INSERT INTO calls (key, prompt_id, sample_index, split, request, fields, status,"
            " error, model, prompt_tokens, completion_tokens, prompt_ids, cost_usd, latency_s,"
            " compute_s, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                meta.key,
                meta.prompt_id,
                meta.sample_index,
                meta.split,
                json.dumps(meta.request, sort_keys=True),
                json.dumps(meta.fields) if meta.fields else None,
                status,
                error,
                comp.model if comp else None,
                comp.usage.prompt_tokens if comp else None,
                comp.usage.completion_tokens if comp else None,
                _int32_blob(comp.prompt_token_ids if comp else None),
                cost,
                comp.latency_s if comp else None,
                comp.compute_s if comp else None,
                time.time(),
            ),
        )

    # --- on-policy scoring calls -------------------------------------------------------------

    def stored_scores(self, keys: list[str]) -> dict[str, bytes]:
        """The stored top-k blob of each key that has one."""
        found: dict[str, bytes] = {}
        for i in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT key, topk FROM teacher_scores WHERE key IN ({marks})"
            found.update(dict(self.db.execute(sql, chunk)))
        return found

    def write_scores(self, model: str, rows: list[tuple[str, int, int, bytes, float]]) -> None:
        """Store scoring calls, (key, tokens, scored, topk, cost_usd) each, and settle this
        process's reservations for them, in one transaction."""
        now = time.time()
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO teacher_scores (key, model, tokens, scored, topk,"
                " cost_usd, created_at) VALUES (?,?,?,?,?,?,?)",
                [(k, model, t, s, blob, usd, now) for k, t, s, blob, usd in rows],
            )
            for key, *_ in rows:
                self._release(key)

    def score_totals(self) -> tuple[int, int, float]:
        """(scoring calls, tokens sent, USD) over the store's life."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(tokens), 0), COALESCE(SUM(cost_usd), 0)"
            " FROM teacher_scores"
        ).fetchone()
        return int(row[0]), int(row[1]), float(row[2])

    def _keep_error_charge(self, key: str) -> None:
        """An error row being redone was charged its worst case (billed or not, we cannot
        tell); that charge moves to an orphaned reservation rather than vanish with the row."""
        self.db.execute(
            "INSERT INTO reservations (key, usd, orphaned, started_at)"
            " SELECT key, cost_usd, 1, created_at FROM calls"
            " WHERE key = ? AND status = 'error' AND cost_usd > 0",
            (key,),
        )

    def _transaction(self) -> _Tx:
        return _Tx(self.db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _completion_row(key: str, c: Any) -> tuple[Any, ...]:
    topk = None
    if c.top_ids is not None and c.top_logprobs is not None and c.top_ids.size:
        topk = encode_topk(c.top_ids, c.top_logprobs)
    return (
        key,
        c.index,
        c.text,
        c.finish_reason,
        _int32_blob(c.token_ids),
        json.dumps(c.tokens) if c.tokens is not None else None,
        np.asarray(c.token_logprobs, "<f4").tobytes() if c.token_logprobs is not None else None,
        topk,
        json.dumps(c.token_table) if c.token_table is not None else None,
        None if c.label_logprobs is None else np.asarray(c.label_logprobs, "<f4").tobytes(),
    )


def _int32_blob(ids: list[int] | None) -> bytes | None:
    return None if ids is None else np.asarray(ids, "<i4").tobytes()
