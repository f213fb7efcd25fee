"""The request log into a typed, validated table `log`, whatever it came from.

Sources: a gateway database (SQLite path or postgresql:// URL, read with SQLAlchemy in chunks
into a staged Parquet file), Parquet files, or JSONL files, in the gateway's schema (README,
"Request log schema"); `--map old=new` renames another export's columns, and `--map
col=params.KEY` builds `params` from separate columns (done unasked when a log has no
`params` but columns named like the parameters). Two foreign schemas are recognised by their
shape, or named with `--schema`: LiteLLM's spend log (its database or an export;
litellm_log.py) and OpenTelemetry GenAI spans in JSONL (otel_spans.py). Columns of the wrong
type are converted where the meaning is clear (ISO timestamps, JSON objects instead of JSON
text, numbers as text) and refused with the column's name otherwise. Rows that cannot be
used (no time, params that are not JSON, negative tokens) are counted by reason, not fatal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from stillroom.audit import litellm_log, otel_spans
from stillroom.audit.engine import DuckDBEngine, SQLEngine
from stillroom.audit.source import Source, check_mapped
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
PARAM_KEYS = tuple(litellm_log.BODY_PARAMS)  # n, temperature, top_p, max_tokens, stop, ...
AUTO_PARAMS = ("n", "temperature", "top_p", "max_tokens", "seed", "logprobs", "top_logprobs")
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


class LogSchema(StrEnum):
    """`--schema`: what kind of log a source holds."""

    AUTO = "auto"  # told by the columns (or, for a database, by its tables)
    STILLROOM = "stillroom"  # the gateway's request log
    LITELLM = "litellm"  # LiteLLM's spend log
    OTEL = "otel"  # OpenTelemetry GenAI spans, JSONL


SCHEMAS = tuple(s.value for s in LogSchema)


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


def check_schema(schema: str) -> LogSchema:
    """`--schema`, checked before anything is read."""
    try:
        return LogSchema(schema)
    except ValueError:
        raise InputError(f"--schema {schema!r}: use {', '.join(SCHEMAS)}") from None


def parse_map(items: list[str] | None) -> dict[str, str]:
    """`--map old=new` pairs into {old: new}; NEW is a request-log column or params.KEY (a
    sampling parameter)."""
    out: dict[str, str] = {}
    targets = (*REQUIRED, *TEXT_COLUMNS, *OPTIONAL)
    for item in items or []:
        old, sep, new = (part.strip() for part in item.partition("="))
        if not sep or not old or not new:
            raise InputError(f"--map {item!r}: give OLD=NEW, e.g. --map ts=created_at")
        key = new.removeprefix("params.")
        if new.startswith("params.") and key not in PARAM_KEYS:
            raise InputError(
                f"--map {item!r}: {key!r} is not a sampling parameter the request log keeps; "
                f"use params.KEY with KEY one of {', '.join(PARAM_KEYS)}"
            )
        if not new.startswith("params.") and new not in targets:
            raise InputError(
                f"--map {item!r}: {new!r} is not a column of the request log; targets are "
                f"{', '.join(targets)}, or params.KEY (e.g. temp=params.temperature)"
            )
        out[old] = new
    return out


def resolve(source: str, workdir: Path) -> Source:
    """A Source from what the user typed: a DB URL or SQLite file, a file, a folder, a glob."""
    if is_gateway_db(source):
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


def is_gateway_db(source: str) -> bool:
    """A database URL or an SQLite file (a gateway's, or a LiteLLM proxy's)."""
    return source.startswith(("postgresql://", "postgres://", "sqlite://")) or _is_sqlite(source)


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
    """The gateway's `requests` table (or LiteLLM's spend log) copied into Parquet."""
    from stillroom.audit.dbstage import copy_log

    out = workdir / "staged.parquet"
    schema = copy_log(source, out)
    return Source(source, "parquet", [out], staged=workdir, schema=schema)


def load(
    engine: SQLEngine,
    src: Source,
    mapping: dict[str, str],
    workdir: Path,
    since: float | None = None,
    until: float | None = None,
    schema: str = "auto",
    allow_empty: bool = False,
    read_from: float | None = None,
) -> IngestStats:
    """Create `log` (typed, one row per usable request) on `engine`; return what was read.
    `schema`: auto (told by the columns), stillroom, litellm or otel. `allow_empty`: a window
    with no usable row is not an error (an incremental audit with nothing new); `read_from`:
    rows logged before this time are not read at all (they were, by an earlier run)."""
    if isinstance(engine, DuckDBEngine):  # zoned timestamps and ISO text as UTC instants
        engine.con.execute("SET TimeZone = 'UTC'")
    stats = IngestStats()
    src, schema, renames, early = _prepare(
        src, mapping, check_schema(schema), workdir, stats.converted
    )
    schema = _read(engine, src, workdir, renames, schema)
    have = engine.columns("src_file")
    if schema == LogSchema.LITELLM:
        engine.view("src_raw", litellm_log.adapt_sql(engine.dialect, have, renames))
        stats.converted.extend(litellm_log.describe(engine, have, renames))
        renames = {}
    else:
        engine.view("src_raw", "SELECT * FROM src_file")
    cols, parts = _check_columns(src, engine.columns("src_raw"), renames)
    if parts:
        how = "--map" if any(v.startswith("params.") for v in renames.values()) else "unasked"
        columns = ", ".join(parts.values())
        stats.converted.append(
            f"params: JSON built from columns {columns} ({how}; the log has no params column)"
        )
    typed = _typed_sql(engine, src, cols, parts, stats)
    if read_from is not None:
        typed = f"SELECT * FROM ({typed}) t WHERE created_at >= {read_from!r}"
    engine.view("src_typed", typed)
    if engine.rows("SELECT count(*) AS n FROM src_typed")[0]["n"] == 0 and not allow_empty:
        left = [c for c in stats.converted if c.startswith("left out")]
        raise InputError(
            f"{src.label}: the request log is empty{' (' + left[0] + ')' if left else ''}; "
            "nothing to audit"
        )
    _count(engine, stats, since, until, early)
    if stats.used == 0 and not allow_empty:
        hint = "check --since/--until and --map"
        if schema == LogSchema.LITELLM and stats.garbage.get("no messages or prompt") == stats.rows:
            hint = litellm_log.NO_TEXT_HINT
        raise InputError(
            f"{src.label}: none of its {stats.rows:,} rows is usable (garbage: "
            f"{stats.garbage or 'none'}, unattributed: {stats.unattributed:,}, outside the "
            f"window: {stats.outside_window:,}); {hint}"
        )
    return stats


def _prepare(
    src: Source, mapping: dict[str, str], asked: LogSchema, workdir: Path, converted: list[str]
) -> tuple[Source, LogSchema, dict[str, str], dict[str, int]]:
    """(source, schema, renames, early garbage): the schema asked for or known, with OTel
    spans already staged as a request log (their unreadable lines are the early garbage)."""
    renames = dict(mapping)
    known = LogSchema(src.schema) if src.schema is not None else LogSchema.AUTO
    schema = asked if asked != LogSchema.AUTO else known
    if src.schema is not None and schema != known:
        table = litellm_log.TABLE if known == LogSchema.LITELLM else "requests"
        raise InputError(
            f"{src.label}: --schema {schema}, but the database holds a {known} log "
            f"({table}); drop --schema"
        )
    if schema == LogSchema.OTEL and src.kind != "jsonl":
        raise InputError(
            f"{src.label}: OpenTelemetry spans are read from JSONL (OTLP/JSON, one export or "
            "span per line); export them as JSONL, or drop --schema otel"
        )
    if src.kind == "jsonl" and (
        schema == LogSchema.OTEL
        or (schema == LogSchema.AUTO and otel_spans.looks_like(otel_spans.first_record(src)[1]))
    ):
        staged, early = otel_spans.stage(src, workdir, renames, converted)
        return staged, LogSchema.STILLROOM, {}, early
    return src, schema, renames, {}


def _read(
    engine: SQLEngine, src: Source, workdir: Path, mapping: dict[str, str], schema: LogSchema
) -> LogSchema:
    """The source's files as the view `src_file`; its schema, told by its columns when
    `schema` is auto, and its columns checked for that schema before any row is read."""
    if src.kind == "parquet":
        engine.read_parquet("src_file", src.paths)
    elif isinstance(engine, DuckDBEngine):
        engine.read_jsonl("src_file", src.paths)
    else:  # Spark reads Parquet; DuckDB stages the JSONL once, after checking its columns
        staged = workdir / "staged_jsonl.parquet"
        duck = DuckDBEngine()
        duck.read_jsonl("src_file", src.paths)
        schema = _check_source(src, duck.columns("src_file"), mapping, schema)
        duck.con.execute(f"COPY (SELECT * FROM src_file) TO '{staged}' (FORMAT parquet)")
        duck.close()
        engine.read_parquet("src_file", [staged])
    return _check_source(src, engine.columns("src_file"), mapping, schema)


def _check_source(
    src: Source, have: list[tuple[str, str]], mapping: dict[str, str], schema: LogSchema
) -> LogSchema:
    if schema == LogSchema.AUTO:
        foreign = litellm_log.looks_like([n for n, _ in have])
        schema = LogSchema.LITELLM if foreign else LogSchema.STILLROOM
    if schema == LogSchema.LITELLM:
        litellm_log.check(src.label, have, mapping)
    else:
        _check_columns(src, have, mapping)
    return schema


def _count(
    engine: SQLEngine,
    stats: IngestStats,
    since: float | None,
    until: float | None,
    early: dict[str, int],
) -> None:
    """Materialise `log_all` and `log`; count rows, garbage by reason, unattributed, outside."""
    lo, hi = since if since is not None else -1e18, until if until is not None else 1e18
    engine.materialize("log_all", _normalised_sql(engine))
    counts = engine.rows(
        "SELECT count(*) AS rows, "
        "sum(CASE WHEN bad IS NULL AND account_id IS NULL THEN 1 ELSE 0 END) AS unattributed, "
        f"sum(CASE WHEN bad IS NULL AND account_id IS NOT NULL AND (ts < {lo!r} OR ts >= {hi!r})"
        " THEN 1 ELSE 0 END) AS outside FROM log_all"
    )[0]
    stats.rows = int(counts["rows"]) + sum(early.values())
    stats.unattributed = int(counts["unattributed"] or 0)
    stats.outside_window = int(counts["outside"] or 0)
    stats.garbage.update(early)
    for r in engine.rows(
        "SELECT bad, count(*) AS n FROM log_all WHERE bad IS NOT NULL GROUP BY bad"
    ):
        stats.garbage[str(r["bad"])] = int(r["n"])
    dropped = sum(stats.garbage.values()) + stats.unattributed + stats.outside_window
    if dropped > sum(early.values()):
        engine.materialize(
            "log",
            f"SELECT * FROM log_all WHERE bad IS NULL AND account_id IS NOT NULL "
            f"AND ts >= {lo!r} AND ts < {hi!r}",
        )
    else:  # every row is usable: no second copy
        engine.view("log", "SELECT * FROM log_all")
    stats.used = stats.rows - dropped


def _check_columns(
    src: Source, have: list[tuple[str, str]], mapping: dict[str, str]
) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """({log column: (source column, source type)} after --map, {params key: source column}
    when `params` is built from separate columns); names every missing column."""
    present = {name for name, _ in have}
    check_mapped(src.label, present, mapping, "the log")
    renamed: dict[str, tuple[str, str]] = {}
    parts: dict[str, str] = {}
    for name, typ in have:
        new = mapping.get(name, name)
        if new.startswith("params.") and name in mapping:
            parts[new.removeprefix("params.")] = name
        elif new not in renamed or name in mapping:
            renamed[new] = (name, typ)
    if parts and "params" in renamed:
        col = next(iter(parts.values()))
        raise InputError(
            f"{src.label}: --map {col}={mapping[col]} builds params from separate columns, "
            "but the log has a params column too; use one: drop the params.* maps, or "
            "export the log without its params column"
        )
    if not parts and "params" not in renamed:  # separate columns named like the parameters
        parts = {k: k for k in AUTO_PARAMS if k in present and k not in mapping}
    missing = [c for c in REQUIRED if c not in renamed and not (c == "params" and parts)]
    if not any(c in renamed for c in TEXT_COLUMNS):
        missing.append("messages or prompt")
    if missing:
        raise InputError(
            f"{src.label}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}; the audit reads the gateway's request log schema (README, "
            "'Request log schema'); map other names with --map OLD=NEW, e.g. --map ts=created_at"
            + (
                " (params may be built from separate columns: --map temp=params.temperature)"
                if "params" in missing
                else ""
            )
        )
    return renamed, parts


def _q(d: Any, name: str) -> str:
    return litellm_log.quote(d, name)  # always quoted: a column may be named `limit`


def _typed_sql(
    engine: SQLEngine,
    src: Source,
    cols: dict[str, tuple[str, str]],
    params: dict[str, str],
    stats: IngestStats,
) -> str:
    """SELECT every log column with its documented type from the (renamed) source columns;
    `params` from separate columns ({key: column}) when given."""
    d = engine.dialect
    out = []
    for col in ("id", *REQUIRED, *TEXT_COLUMNS, *OPTIONAL[1:]):
        if col == "params" and params:
            pairs = [(k, _q(d, c)) for k, c in params.items()]
            out.append(f"{litellm_log.json_object(d, pairs)} AS params")
        elif col not in cols:
            out.append(_null(d, col))
        else:
            old, typ = cols[col]
            out.append(_coerce(d, src.label, _q(d, old), col, typ, stats))
    return f"SELECT {', '.join(out)} FROM src_raw"


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
        if stringy:  # DuckDB's TIMESTAMP drops an ISO offset; TIMESTAMPTZ applies it
            zoned = "TIMESTAMPTZ" if d.name == "duckdb" else "TIMESTAMP"
            return (
                f"COALESCE(TRY_CAST({expr} AS DOUBLE), "
                f"{d.epoch(f'TRY_CAST({expr} AS {zoned})')}) AS created_at"
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
# An instruction to reason stands at the start or the end of what the user asks (the end of a
# chat's JSON is its last message); reading only those ends keeps a 20 KB document from
# costing a regular-expression pass over all of it.
COT_TEXT = "lower(concat(substr(txt, 1, 600), substr(txt, greatest(length(txt) - 599, 601))))"


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
       ELSE (length(messages) - length(replace(messages, '"role":"user"', ''))) / 13
          + (length(messages) - length(replace(messages, '"role": "user"', ''))) / 14
  END AS turns,
  CASE WHEN {d.matches(COT_TEXT, COT_PATTERN)} THEN 1 ELSE 0 END AS cot,
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
