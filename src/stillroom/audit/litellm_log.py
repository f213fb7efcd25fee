"""LiteLLM's spend log (`LiteLLM_SpendLogs`) as the request log, in SQL both engines run.

LiteLLM's proxy writes one row per call to its PostgreSQL table `LiteLLM_SpendLogs`. The
columns read here (names as LiteLLM's Prisma schema spells them):

  request_id, call_type, api_key (hashed key), team_id, "user", end_user   who and what
  "startTime", "endTime", request_duration_ms                               when
  model_group, model, prompt_tokens, completion_tokens, status              what it cost
  proxy_server_request (JSON)   the request body: messages or prompt, n, temperature, ...
  messages, response (JSON)     the messages (older releases) and the reply's choices
  request_tags (JSON list)      LiteLLM tags each call "User-Agent: <agent>" by default
  requester_ip_address, metadata (JSON)

The account is team_id, else user, else end_user, else the hashed api_key; `--map
COLUMN=account_id` names another column. LiteLLM keeps request bodies only when the proxy
runs with `store_prompts_in_spend_logs: true`; without them there is nothing to audit.
Calls that generate no text (embeddings, images, files, ...) are left out and counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stillroom.audit.source import check_mapped
from stillroom.errors import InputError

if TYPE_CHECKING:
    from stillroom.audit.engine import Dialect, SQLEngine

TABLE = "LiteLLM_SpendLogs"
MARKERS = ("request_id", "call_type", "startTime")  # with these and no created_at: LiteLLM
ACCOUNT_CHAIN = ("team_id", "user", "end_user", "api_key")
JSON_COLUMNS = ("proxy_server_request", "metadata", "messages", "response", "request_tags")
GENERATION_CALLS = (
    "completion",
    "acompletion",
    "text_completion",
    "atext_completion",
    "responses",
    "aresponses",
    "anthropic_messages",
)
# params keys -> the request body's fields, first present wins
BODY_PARAMS = {
    "n": ("n",),
    "temperature": ("temperature",),
    "top_p": ("top_p",),
    "max_tokens": ("max_tokens", "max_completion_tokens", "max_output_tokens"),
    "stop": ("stop",),
    "seed": ("seed",),
    "logprobs": ("logprobs",),
    "top_logprobs": ("top_logprobs",),
    "stream": ("stream",),
    "user": ("user",),
}
NO_TEXT_HINT = (
    "LiteLLM stores request bodies only with general_settings.store_prompts_in_spend_logs: "
    "true in the proxy's config; turn it on, then audit the calls logged after"
)


def looks_like(columns: list[str]) -> bool:
    """Whether a table with these columns is a LiteLLM spend log rather than a request log."""
    names = set(columns)
    return all(m in names for m in MARKERS) and "created_at" not in names


def check(label: str, have: list[tuple[str, str]], mapping: dict[str, str]) -> None:
    """Stop early, naming the LiteLLM columns that are missing and the fix."""
    names = {n for n, _ in have}
    check_mapped(label, names, mapping, "this LiteLLM spend log")
    targets = set(mapping.values())
    missing = []
    if "startTime" not in names and "created_at" not in targets:
        missing.append("startTime")
    if not any(c in names for c in ACCOUNT_CHAIN) and "account_id" not in targets:
        missing.append("one of " + ", ".join(ACCOUNT_CHAIN))
    if not ({"proxy_server_request", "messages"} & names) and not (
        {"messages", "prompt"} & targets
    ):
        missing.append("proxy_server_request or messages")
    if missing:
        raise InputError(
            f"{label}: this LiteLLM spend log ({TABLE}) lacks {'; '.join(missing)}; export the "
            'whole table (SELECT * FROM "LiteLLM_SpendLogs"), or --map another column to the '
            "request log's, e.g. --map start_time=created_at"
        )


def quote(d: Dialect, name: str) -> str:
    if d.name == "duckdb":
        return '"' + name.replace('"', '""') + '"'
    return "`" + name.replace("`", "``") + "`"


def _nested(typ: str) -> bool:
    """Whether a column of this type (DuckDB's or Spark's name) holds objects or lists."""
    return typ.lower().startswith(("struct", "map", "array", "list")) or typ.endswith("[]")


def json_text(d: Dialect, expr: str, typ: str) -> str:
    """A column as JSON text, whether it holds JSON text or a nested value."""
    if _nested(typ):
        return f"CAST({d.to_json(expr)} AS {d.string})"
    return f"CAST({expr} AS {d.string})"


def json_object(d: Dialect, pairs: list[tuple[str, str]]) -> str:
    """JSON text of an object built from SQL values (NULLs: null in DuckDB, absent in Spark)."""
    inner = ", ".join(f"'{k}', {v}" for k, v in pairs)
    if d.name == "duckdb":
        return f"CAST(json_object({inner}) AS VARCHAR)"
    return f"to_json(named_struct({inner}))"


def _field(d: Dialect, text: str, path: str) -> str:
    """A field of (valid) JSON text, as text; objects and lists come back as JSON text."""
    if d.name == "duckdb":
        return f"json_extract_string({text}, '$.{path}')"
    return f"get_json_object({text}, '$.{path}')"


def _choices(d: Dialect, text: str) -> str:
    """A JSON list of the reply's choices' texts (chat: message.content; completions: text)."""
    if d.name == "duckdb":
        shape = '{"choices":[{"message":{"content":"VARCHAR"},"text":"VARCHAR"}]}'
        return (
            f"CAST(to_json(list_transform(from_json({text}, '{shape}').choices, "
            "lambda c: COALESCE(c.message.content, c.text))) AS VARCHAR)"
        )
    shape = "choices ARRAY<STRUCT<message: STRUCT<content: STRING>, text: STRING>>"
    return (
        f"to_json(transform(from_json({text}, '{shape}').choices, "
        "c -> COALESCE(c.message.content, c.text)))"
    )


class _Cols:
    """The spend log's columns: quoted when present, NULL when this export lacks them."""

    def __init__(self, d: Dialect, have: list[tuple[str, str]]) -> None:
        self.d = d
        self.types = dict(have)

    def __call__(self, name: str) -> str:
        """The column, text "" as NULL (LiteLLM writes "" for an unknown team or user)."""
        if name not in self.types:
            return f"CAST(NULL AS {self.d.string})"
        q = quote(self.d, name)
        if self.types[name].lower().startswith(("varchar", "string", "text")):
            return f"NULLIF({q}, '')"
        return q

    def raw(self, name: str) -> str:
        """A column as it is, nested values and JSON as JSON text (for --map)."""
        typ = self.types[name]
        if _nested(typ) or typ.lower() == "json":
            return json_text(self.d, quote(self.d, name), typ)
        return quote(self.d, name)


def generation_filter(d: Dialect, have: list[tuple[str, str]]) -> str:
    """SQL: the row is a call that generates text (or its call_type is unknown)."""
    if "call_type" not in dict(have):
        return "TRUE"
    calls = ", ".join(f"'{c}'" for c in GENERATION_CALLS)
    col = quote(d, "call_type")
    return f"({col} IS NULL OR {col} IN ({calls}))"


def account_expr(c: _Cols) -> str:
    return f"COALESCE({', '.join(c(k) for k in ACCOUNT_CHAIN)})"


def adapt_sql(d: Dialect, have: list[tuple[str, str]], mapping: dict[str, str]) -> str:
    """SELECT the request log's columns from the spend log `src_file` (text calls only)."""
    c = _Cols(d, have)
    inner = "".join(
        f", {_valid(d, json_text(d, quote(d, k), c.types[k]))} AS _j_{k}"
        for k in JSON_COLUMNS
        if k in c.types
    )
    body = _Body(d, "proxy_server_request" in c.types)
    meta, msgs = _j(c, "metadata"), _j(c, "messages")
    status = c("status") if "status" in c.types else _field(d, meta, "status")
    cols = {
        "id": f"CAST({c('request_id')} AS {d.string})",
        "created_at": c("startTime"),
        "account_id": account_expr(c),
        "key_id": c("api_key"),
        "endpoint": _endpoint(c),
        "model": f"COALESCE({c('model_group')}, {c('model')})",
        # the messages column when it holds a list (older releases), else the body's
        # messages, else the Responses API's input when it is a list
        "messages": f"CASE WHEN {msgs} LIKE '[%' AND {msgs} <> '[]' THEN {msgs} "
        f"WHEN {body.text('messages')} LIKE '[%' THEN {body.text('messages')} "
        f"WHEN {body.text('input')} LIKE '[%' THEN {body.text('input')} END",
        "prompt": f"COALESCE({body.text('prompt')}, CASE WHEN NOT ({body.text('input')} "
        f"LIKE '[%') THEN {body.text('input')} END)",
        "params": _params(d, body, mapping, c),
        "response_text": _choices(d, _j(c, "response")),
        "prompt_tokens": c("prompt_tokens"),
        "completion_tokens": c("completion_tokens"),
        "status": f"CASE lower({status}) WHEN 'failure' THEN 500 WHEN 'success' THEN 200 END",
        "error": f"CASE WHEN lower({status}) = 'failure' THEN COALESCE("
        f"{_field(d, meta, 'error_information.error_message')}, 'failure') END",
        "latency_ms": _latency(d, c),
        "client_addr": f"COALESCE({c('requester_ip_address')}, "
        f"{_field(d, meta, 'requester_ip_address')})",
        "user_agent": _user_agent(d, _j(c, "request_tags"), meta),
    }
    for old, new in mapping.items():
        if new in cols:
            cols[new] = c.raw(old)
    select = ", ".join(f"{expr} AS {name}" for name, expr in cols.items())
    where = generation_filter(d, have)
    return (
        f"SELECT {select} FROM (SELECT *{body.parsed()} FROM "
        f"(SELECT *{inner} FROM src_file WHERE {where}) l0) l1"
    )


class _Body:
    """The request body's (proxy_server_request's) fields. DuckDB parses each row's body
    once, for a list of paths (four times faster than a parse per field)."""

    TEXTS = ("messages", "prompt", "input")
    VALUES = tuple(dict.fromkeys(f for fields in BODY_PARAMS.values() for f in fields))

    def __init__(self, d: Dialect, present: bool) -> None:
        self.d, self.present = d, present

    def parsed(self) -> str:
        """Columns for the query under the one that reads fields ("" when none are needed)."""
        if not (self.present and self.d.name == "duckdb"):
            return ""
        values = ", ".join(f"'$.{f}'" for f in self.VALUES)
        texts = ", ".join(f"'$.{f}'" for f in self.TEXTS)
        return (
            f", json_extract(_j_proxy_server_request, [{values}]) AS _bv"
            f", json_extract_string(_j_proxy_server_request, [{texts}]) AS _bt"
        )

    def value(self, field: str) -> str:
        """A field as a value for a JSON object (JSON null as absent)."""
        if not self.present:
            return "NULL"
        if self.d.name == "duckdb":
            return f"NULLIF(_bv[{self.VALUES.index(field) + 1}], 'null')"
        return f"get_json_object(_j_proxy_server_request, '$.{field}')"

    def text(self, field: str) -> str:
        """A field as text (lists and objects as JSON text)."""
        if not self.present:
            return f"CAST(NULL AS {self.d.string})"
        if self.d.name == "duckdb":
            return f"_bt[{self.TEXTS.index(field) + 1}]"
        return f"get_json_object(_j_proxy_server_request, '$.{field}')"


def _valid(d: Dialect, text: str) -> str:
    """JSON text, or NULL when it is not JSON (DuckDB's JSON functions raise on bad text)."""
    if d.name == "duckdb":
        return f"CASE WHEN json_valid({text}) THEN {text} END"
    return text


def _j(c: _Cols, name: str) -> str:
    return f"_j_{name}" if name in c.types else f"CAST(NULL AS {c.d.string})"


def _endpoint(c: _Cols) -> str:
    call = c("call_type")
    return (
        f"CASE WHEN {call} LIKE '%text_completion' THEN 'completions' "
        f"WHEN {call} LIKE '%responses' THEN 'responses' "
        f"WHEN {call} = 'anthropic_messages' THEN 'messages' ELSE 'chat.completions' END"
    )


def _params(d: Dialect, body: _Body, mapping: dict[str, str], c: _Cols) -> str:
    """params as JSON text: the body's sampling fields (first present of each key's)."""
    values = {
        key: f"COALESCE({', '.join(body.value(f) for f in fields)})"
        for key, fields in BODY_PARAMS.items()
    }
    for old, new in mapping.items():
        if new.startswith("params."):
            values[new.removeprefix("params.")] = c.raw(old)
    return json_object(d, list(values.items()))


def _latency(d: Dialect, c: _Cols) -> str:
    """request_duration_ms (newer releases), else endTime - startTime."""
    parts = []
    if "request_duration_ms" in c.types:
        parts.append(f"CAST({c('request_duration_ms')} AS DOUBLE)")
    if "endTime" in c.types and "startTime" in c.types:
        end = d.epoch(f"TRY_CAST({c('endTime')} AS TIMESTAMP)")
        start = d.epoch(f"TRY_CAST({c('startTime')} AS TIMESTAMP)")
        parts.append(f"({end} - {start}) * 1000e0")
    return f"COALESCE({', '.join(parts)})" if parts else "CAST(NULL AS DOUBLE)"


def _user_agent(d: Dialect, tags: str, meta: str) -> str:
    """The full agent from LiteLLM's "User-Agent: <agent>" tags (it also tags the product
    alone, before the first slash), else metadata.user_agent."""
    full = f"NULLIF(regexp_extract({tags}, '\"User-Agent: ([^\"]*/[^\"]*)\"', 1), '')"
    any_ = f"NULLIF(regexp_extract({tags}, '\"User-Agent: ([^\"]*)\"', 1), '')"
    return f"COALESCE({full}, {any_}, {_field(d, meta, 'user_agent')})"


def describe(engine: SQLEngine, have: list[tuple[str, str]], mapping: dict[str, str]) -> list[str]:
    """Lines for the output's `converted` list: where accounts came from, what was left out."""
    d = engine.dialect
    c = _Cols(d, have)
    mapped = next((old for old, new in mapping.items() if new == "account_id"), None)
    chain = (mapped,) if mapped else tuple(k for k in ACCOUNT_CHAIN if k in c.types)
    whens = " ".join(
        f"WHEN {c.raw(k) if k == mapped else c(k)} IS NOT NULL THEN '{i}'"
        for i, k in enumerate(chain)
    )
    call = c("call_type")
    rows = engine.rows(
        f"SELECT k, count(*) AS n FROM (SELECT CASE WHEN {generation_filter(d, have)} THEN "
        f"concat('a:', COALESCE(CASE {whens} END, 'none')) "
        f"ELSE concat('c:', COALESCE({call}, '')) END AS k FROM src_file) t GROUP BY k"
    )
    counts = {str(r["k"]): int(r["n"]) for r in rows}
    words = [f"column {mapped} (--map)"] if mapped else [_WORDS.get(k, k) for k in chain]
    accounts = [f"{w} {counts[f'a:{i}']:,}" for i, w in enumerate(words) if f"a:{i}" in counts]
    if "a:none" in counts:
        accounts.append(f"none (unattributed) {counts['a:none']:,}")
    out = [f"LiteLLM spend log ({TABLE}) read as the request log"]
    out.append(f"account_id: {', '.join(accounts)} rows")
    left = {k[2:]: n for k, n in counts.items() if k[:2] == "c:"}
    if left:
        calls = ", ".join(f"{k or '?'} {n:,}" for k, n in sorted(left.items()))
        out.append(f"left out {sum(left.values()):,} calls that generate no text ({calls})")
    return out


_WORDS = {"api_key": "hashed api_key"}
