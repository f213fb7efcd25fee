"""The request log into a typed, validated table `log`, whatever it came from.

Sources: a gateway database (SQLite path or postgresql:// URL, read with SQLAlchemy in chunks
into a staged Parquet file), Parquet files, or JSONL files, in the gateway's schema (README,
"Request log schema"); `--map old=new` renames another export's columns. Columns of the wrong
type are converted where the meaning is clear (ISO timestamps, JSON objects instead of JSON
text, numbers as text) and refused with the column's name otherwise. Rows that cannot be
used (no time, params that are not JSON, negative tokens) are counted by reason, not fatal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stillroom.audit.engine import DuckDBEngine, SQLEngine
from stillroom.errors import InputError

REQUIRED = ("created_at", "account_id", "params")
TEXT_COLUMNS = ("messages", "prompt")
OPTIONAL = (
    "id",
    "key_id",
    "endpoint",
    "model",
    "response_text",
    "prompt_tokens",
    "completion_tokens",
    "status",
    "error",
    "latency_ms",
    "backend_ms",
    "client_addr",
    "user_agent",
    "watermark_key_id",
)
STRINGS = (
    "id",
    "account_id",
    "key_id",
    "endpoint",
    "model",
    "client_addr",
    "user_agent",
    "error",
    "watermark_key_id",
)
JSONS = ("messages", "params", "response_text")
INTS = ("prompt_tokens", "completion_tokens", "status")
NESTED = re.compile(r"^(struct|map|array|list|json)|\[\]$|^STRUCT|^MAP|\[\]", re.IGNORECASE)
NUMERIC = re.compile(
    r"^(tiny|small|big|huge|u)?int|^(double|float|real|decimal|long|short|"
    r"byte|integer|hugeint)",
    re.IGNORECASE,
)
COT_PHRASES = (
    "step by step",
    "step-by-step",
    "chain of thought",
    "your reasoning",
    "show your work",
    "show all of your reasoning",
    "reason carefully",
    "think carefully",
    "explain your thinking",
)


@dataclass
class Source:
    """Where the log is, as files one engine can read; `label` names it in messages."""

    label: str
    kind: str  # parquet | jsonl
    paths: list[Path]
    staged: Path | None = None  # a temporary folder we made and remove


@dataclass
class IngestStats:
    rows: int = 0
    used: int = 0
    unattributed: int = 0  # no account (missing or unknown key): refused, not anyone's
    outside_window: int = 0
    garbage: dict[str, int] = field(default_factory=dict)
    converted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "used": self.used,
            "unattributed": self.unattributed,
            "outside_window": self.outside_window,
            "garbage": self.garbage,
            "garbage_total": sum(self.garbage.values()),
            "converted": self.converted,
        }


def parse_map(items: list[str] | None) -> dict[str, str]:
    """`--map old=new` pairs into {old: new}."""
    out: dict[str, str] = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise InputError(f"--map {item!r}: give OLD=NEW, e.g. --map ts=created_at")
        if new.strip() not in (*REQUIRED, *TEXT_COLUMNS, *OPTIONAL):
            raise InputError(
                f"--map {item!r}: {new.strip()!r} is not a column of the request log; "
                f"targets are {', '.join((*REQUIRED, *TEXT_COLUMNS, *OPTIONAL))}"
            )
        out[old.strip()] = new.strip()
    return out


def resolve(source: str, workdir: Path) -> Source:
    """A Source from what the user typed: a DB URL or SQLite file, a file, a folder, a glob."""
    if source.startswith(("postgresql://", "postgres://", "sqlite://")) or _is_sqlite(source):
        return _stage_db(source, workdir)
    path = Path(source).expanduser()
    if any(ch in source for ch in "*?["):
        paths = sorted(Path(p) for p in _glob(source))
    elif path.is_dir():
        paths = sorted([*path.glob("*.parquet"), *path.glob("*.jsonl"), *path.glob("*.json")])
        paths = [p for p in paths if p.name != "labels.parquet" and p.name != "manifest.json"]
    else:
        paths = [path]
    if not paths or not all(p.is_file() for p in paths):
        raise InputError(
            f"{source}: no such log; give a gateway database (SQLite path or postgresql:// "
            "URL), a Parquet or JSONL file, a folder of them, or a glob"
        )
    kinds = {_kind(p) for p in paths}
    if len(kinds) != 1:
        raise InputError(f"{source}: mixes Parquet and JSONL files; audit one kind at a time")
    return Source(source, kinds.pop(), paths)


def _glob(pattern: str) -> list[str]:
    import glob

    return glob.glob(str(Path(pattern).expanduser()))


def _kind(path: Path) -> str:
    if path.suffix in (".parquet", ".pq"):
        return "parquet"
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise InputError(f"{path}: unknown log format {path.suffix!r}; use .parquet or .jsonl")


def _is_sqlite(source: str) -> bool:
    path = Path(source).expanduser()
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _stage_db(source: str, workdir: Path) -> Source:
    """Copy a gateway database's `requests` table into Parquet, 100k rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from stillroom.serve.db import database_url

    url = source if source.startswith("sqlite://") else database_url(source)
    engine = sa.create_engine(url)
    out = workdir / "staged.parquet"
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("requests"):
                raise InputError(
                    f"{source}: no `requests` table; is this a stillroom gateway database "
                    "(stillroom serve --db)? For other exports use Parquet/JSONL with --map"
                )
            result = conn.execution_options(stream_results=True).execute(
                sa.text("SELECT * FROM requests")
            )
            names = list(result.keys())
            writer = None
            while chunk := result.fetchmany(100_000):
                cols = {n: [row[i] for row in chunk] for i, n in enumerate(names)}
                table = pa.table(cols)
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema)
                writer.write_table(table.cast(writer.schema))
            if writer is None:
                raise InputError(f"{source}: the request log is empty; nothing to audit")
            writer.close()
    except sa.exc.SQLAlchemyError as e:
        raise InputError(
            f"{source}: cannot read the request log ({e.__class__.__name__}: "
            f"{str(e).splitlines()[0]}); check the path or URL"
        ) from None
    finally:
        engine.dispose()
    return Source(source, "parquet", [out], staged=workdir)


def load(
    engine: SQLEngine,
    src: Source,
    mapping: dict[str, str],
    workdir: Path,
    since: float | None = None,
    until: float | None = None,
) -> IngestStats:
    """Create `log` (typed, one row per usable request) on `engine`; return what was read."""
    if src.kind == "jsonl":
        if isinstance(engine, DuckDBEngine):
            engine.read_jsonl("src_raw", src.paths)
        else:  # Spark reads Parquet; DuckDB stages JSONL once
            staged = workdir / "staged_jsonl.parquet"
            duck = DuckDBEngine()
            duck.read_jsonl("src_raw", src.paths)
            _check_columns(src, duck.columns("src_raw"), mapping)
            duck.con.execute(f"COPY (SELECT * FROM src_raw) TO '{staged}' (FORMAT parquet)")
            duck.close()
            engine.read_parquet("src_raw", [staged])
    else:
        engine.read_parquet("src_raw", src.paths)
    cols = _check_columns(src, engine.columns("src_raw"), mapping)
    stats = IngestStats()
    engine.view("src_typed", _typed_sql(engine, src, cols, stats))
    total = engine.rows("SELECT count(*) AS n FROM src_typed")[0]["n"]
    if total == 0:
        raise InputError(f"{src.label}: the request log is empty; nothing to audit")
    lo, hi = since if since is not None else -1e18, until if until is not None else 1e18
    engine.materialize("log_all", _normalised_sql(engine))
    counts = engine.rows(
        "SELECT count(*) AS rows, "
        "sum(CASE WHEN bad IS NULL AND account_id IS NULL THEN 1 ELSE 0 END) AS unattributed, "
        f"sum(CASE WHEN bad IS NULL AND account_id IS NOT NULL AND (ts < {lo!r} OR ts >= {hi!r})"
        " THEN 1 ELSE 0 END) AS outside FROM log_all"
    )[0]
    stats.rows = int(counts["rows"])
    stats.unattributed = int(counts["unattributed"] or 0)
    stats.outside_window = int(counts["outside"] or 0)
    for r in engine.rows(
        "SELECT bad, count(*) AS n FROM log_all WHERE bad IS NOT NULL GROUP BY bad"
    ):
        stats.garbage[str(r["bad"])] = int(r["n"])
    dropped = sum(stats.garbage.values()) + stats.unattributed + stats.outside_window
    if dropped:
        engine.materialize(
            "log",
            f"SELECT * FROM log_all WHERE bad IS NULL AND account_id IS NOT NULL "
            f"AND ts >= {lo!r} AND ts < {hi!r}",
        )
    else:  # every row is usable: no second copy
        engine.view("log", "SELECT * FROM log_all")
    stats.used = stats.rows - dropped
    if stats.used == 0:
        raise InputError(
            f"{src.label}: none of its {stats.rows:,} rows is usable (garbage: "
            f"{stats.garbage or 'none'}, unattributed: {stats.unattributed:,}, outside the "
            f"window: {stats.outside_window:,}); check --since/--until and --map"
        )
    return stats


def _check_columns(
    src: Source, have: list[tuple[str, str]], mapping: dict[str, str]
) -> dict[str, tuple[str, str]]:
    """{log column: (source column, source type)} after --map; names every missing column."""
    present = {name for name, _ in have}
    for old in mapping:
        if old not in present:
            raise InputError(
                f"{src.label}: --map names column {old!r}, which the log does not have; "
                f"its columns are {', '.join(sorted(present))}"
            )
    renamed: dict[str, tuple[str, str]] = {}
    for name, typ in have:
        new = mapping.get(name, name)
        if new not in renamed or name in mapping:
            renamed[new] = (name, typ)
    missing = [c for c in REQUIRED if c not in renamed]
    if not any(c in renamed for c in TEXT_COLUMNS):
        missing.append("messages or prompt")
    if missing:
        raise InputError(
            f"{src.label}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}; the audit reads the gateway's request log schema (README, "
            "'Request log schema'); map other names with --map OLD=NEW, e.g. --map ts=created_at"
        )
    return renamed


def _q(d: Any, name: str) -> str:
    if name.isidentifier():
        return name
    return f'"{name}"' if d.name == "duckdb" else f"`{name}`"


def _typed_sql(
    engine: SQLEngine, src: Source, cols: dict[str, tuple[str, str]], stats: IngestStats
) -> str:
    """SELECT every log column with its documented type from the (renamed) source columns."""
    d = engine.dialect
    parts = []
    for col in ("id", *REQUIRED, *TEXT_COLUMNS, *OPTIONAL[1:]):
        if col not in cols:
            parts.append(_null(d, col))
        else:
            old, typ = cols[col]
            parts.append(_coerce(d, src.label, _q(d, old), col, typ, stats))
    return f"SELECT {', '.join(parts)} FROM src_raw"


def _null(d: Any, col: str) -> str:
    if col in INTS:
        return f"CAST(NULL AS BIGINT) AS {col}"
    if col in ("created_at", "latency_ms", "backend_ms"):
        return f"CAST(NULL AS DOUBLE) AS {col}"
    return f"CAST(NULL AS {d.string}) AS {col}"


def _coerce(d: Any, label: str, expr: str, col: str, typ: str, stats: IngestStats) -> str:
    t = typ.lower()
    nested = bool(NESTED.search(typ)) or t.startswith(("struct", "map", "array"))
    numeric = bool(NUMERIC.match(t))
    stringy = t.startswith(("varchar", "string", "text", "char"))
    timestamp = t.startswith(("timestamp", "date"))
    if t in ("null", '"null"', "void"):
        return _null(d, col)
    if col == "created_at":
        if numeric:
            return f"CAST({expr} AS DOUBLE) AS created_at"
        if timestamp:
            stats.converted.append(f"created_at: {typ} to epoch seconds")
            return f"{d.epoch(expr)} AS created_at"
        if stringy:
            return (
                f"COALESCE(TRY_CAST({expr} AS DOUBLE), "
                f"{d.epoch(f'TRY_CAST({expr} AS TIMESTAMP)')}) AS created_at"
            )
        raise _type_error(label, col, typ, "epoch seconds (a number) or a timestamp")
    if col in JSONS:
        if nested:
            stats.converted.append(f"{col}: {typ} to JSON text")
            return f"{d.to_json(expr)} AS {col}"
        if stringy or t == "json":
            return f"CAST({expr} AS {d.string}) AS {col}"
        raise _type_error(label, col, typ, "JSON text")
    if col in INTS or col in ("latency_ms", "backend_ms"):
        target = "BIGINT" if col in INTS else "DOUBLE"
        if numeric or stringy:
            return f"TRY_CAST({expr} AS {target}) AS {col}"
        raise _type_error(label, col, typ, "a number")
    if nested:
        raise _type_error(label, col, typ, "text")
    return f"CAST({expr} AS {d.string}) AS {col}"


def _type_error(label: str, col: str, typ: str, want: str) -> InputError:
    return InputError(
        f"{label}: column {col!r} has type {typ}; the request log needs {want} there; "
        f"convert it, or --map another column to {col!r}"
    )


PARAMS = ("n", "temperature", "max_tokens", "logprobs", "top_logprobs")
COT_PATTERN = "|".join(COT_PHRASES)


def _normalised_sql(engine: SQLEngine) -> str:
    """One row per request with the fields the features use; `bad` names why a row is garbage.

    Each row's text is hashed once and its params parsed once (inner queries); the
    chain-of-thought phrases are one regular expression over the lower-cased text.
    """
    d = engine.dialect

    def param(key: str) -> str:
        return d.json_get("pj", PARAMS, key)

    lp, tlp = param("logprobs"), param("top_logprobs")
    n = f"TRY_CAST({param('n')} AS DOUBLE)"
    return f"""
SELECT
  COALESCE(id, concat(h, CAST(created_at AS {d.string}))) AS rid,
  substr(h, 1, 16) AS phash,
  CASE WHEN account_id = '' THEN NULL ELSE account_id END AS account_id,
  key_id, client_addr, user_agent,
  created_at AS ts,
  COALESCE(status, 200) AS status,
  COALESCE(prompt_tokens, CAST(length(txt) / 4 AS BIGINT)) AS prompt_tokens,
  COALESCE(completion_tokens, 0) AS completion_tokens,
  COALESCE({n}, 1e0) AS n,
  TRY_CAST({param("temperature")} AS DOUBLE) AS temperature,
  TRY_CAST({param("max_tokens")} AS DOUBLE) AS max_tokens,
  CASE WHEN {lp} = 'true' OR TRY_CAST({lp} AS DOUBLE) > 0 THEN 1 ELSE 0 END AS logprobs,
  COALESCE(TRY_CAST({tlp} AS DOUBLE), TRY_CAST({lp} AS DOUBLE), 0e0) AS top_logprobs,
  CASE WHEN messages IS NULL THEN 1
       ELSE (length(messages) - length(replace(replace(messages, '"role":"user"', ''),
             '"role": "user"', ''))) / 13 END AS turns,
  CASE WHEN {d.matches("lower(txt)", COT_PATTERN)} THEN 1 ELSE 0 END AS cot,
  CASE
    WHEN created_at IS NULL THEN 'created_at missing or not a time'
    WHEN txt IS NULL THEN 'no messages or prompt'
    WHEN params IS NOT NULL AND NOT pv THEN 'params not JSON'
    WHEN prompt_tokens < 0 OR completion_tokens < 0 THEN 'negative token count'
    WHEN {n} IS NOT NULL AND {n} < 1 THEN 'n below 1'
  END AS bad
FROM (
  SELECT *, {d.json_fields("params", PARAMS, valid="pv")} AS pj
  FROM (
    SELECT *, COALESCE(messages, prompt) AS txt, md5(COALESCE(messages, prompt)) AS h,
      {d.json_ok("params")} AS pv
    FROM src_typed) r0) r1"""
