"""Foreign logs into the audit: LiteLLM's spend log (PostgreSQL table, Parquet and JSONL
exports), OpenTelemetry GenAI spans (both attribute forms), sampling parameters kept in
separate columns; and bad input stopped with one line naming the place and the fix."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from stillroom.audit import ingest, text
from stillroom.audit.engine import DuckDBEngine, SQLEngine
from stillroom.audit.ingest import check_schema, parse_map
from stillroom.audit.run import Measured, measure
from stillroom.cli import app
from stillroom.errors import InputError

runner = CliRunner()
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
KEY = "88c1f0e2" * 8  # a hashed LiteLLM key: the account of a key with no team or user
# account -> (sampling parameters, who in LiteLLM's columns); six calls each
PLAN: dict[str, dict[str, Any]] = {
    "team-red": {
        "body": {"n": 4, "temperature": 0.0, "max_tokens": 1024, "logprobs": True,
                 "top_logprobs": 5},
        "who": {"team_id": "team-red", "user": "u-1", "api_key": "k" * 64},
    },
    "alice": {
        "body": {"n": 1, "temperature": 0.7, "max_tokens": 64},
        "who": {"team_id": None, "user": "alice", "api_key": "a" * 64},
    },
    "cust-9": {  # a text completion, log-probs the completions way (a count)
        "body": {"temperature": 1.2, "max_tokens": 16, "logprobs": 3},
        "who": {"team_id": "", "user": "", "end_user": "cust-9", "api_key": "c" * 64},
        "call_type": "atext_completion",
    },
    KEY: {  # the newer max_completion_tokens
        "body": {"n": 2, "max_completion_tokens": 512},
        "who": {"team_id": None, "user": "", "api_key": KEY},
    },
}  # fmt: skip
UA = ["User-Agent: python-httpx", "User-Agent: python-httpx/0.27.0"]


@pytest.fixture(scope="module")
def embedder() -> text.Embedder:
    return text.Embedder()


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def litellm_rows(store_prompts: bool = True) -> list[dict[str, Any]]:
    """Spend-log rows as LiteLLM writes them (JSON columns as Python values)."""
    rows = []
    for a, (acct, plan) in enumerate(PLAN.items()):
        call = plan.get("call_type", "acompletion")
        for i in range(6):
            t = T0 + 3600 * a + 60 * i
            prompt = f"question {i} from {acct}: what is {i} + {a}?"
            body: dict[str, Any] = {"model": "gpt-4o", **plan["body"]}
            body |= {"prompt": prompt} if "text" in call else {
                "messages": [{"role": "system", "content": "be brief"},
                             {"role": "user", "content": prompt}]}  # fmt: skip
            choice = {"text": "4"} if "text" in call else {"message": {"content": "4"}}
            rows.append({
                "request_id": f"chatcmpl-{a}-{i}", "call_type": call, "spend": 0.001,
                "total_tokens": 30 + i, "prompt_tokens": 10 + i, "completion_tokens": 20,
                "startTime": _when(t), "endTime": _when(t + 1.5), "model": "openai/gpt-4o",
                "model_group": "gpt-4o", "user": "", "metadata": {"status": "success"},
                "cache_hit": "False", "request_tags": UA if acct == "team-red" else [],
                "team_id": None, "end_user": None, "requester_ip_address": f"10.0.0.{a}",
                "messages": {}, "response": {"choices": [choice]} if store_prompts else {},
                "status": "failure" if (acct, i) == ("alice", 5) else "success",
                "proxy_server_request": body if store_prompts else {},
                **plan["who"],
            })  # fmt: skip
    rows.append({**rows[0], "request_id": "emb-1", "call_type": "aembedding"})
    return rows


# The table as LiteLLM's Prisma migrations create it (String: TEXT, DateTime: TIMESTAMP(3),
# Json: JSONB; camel-case names quoted)
SPEND_LOGS_DDL = """
CREATE TABLE "LiteLLM_SpendLogs" (
  "request_id" TEXT NOT NULL PRIMARY KEY, "call_type" TEXT NOT NULL,
  "api_key" TEXT NOT NULL DEFAULT '', "spend" DOUBLE PRECISION NOT NULL DEFAULT 0.0,
  "total_tokens" INTEGER NOT NULL DEFAULT 0, "prompt_tokens" INTEGER NOT NULL DEFAULT 0,
  "completion_tokens" INTEGER NOT NULL DEFAULT 0, "startTime" TIMESTAMP(3) NOT NULL,
  "endTime" TIMESTAMP(3) NOT NULL, "request_duration_ms" INTEGER,
  "completionStartTime" TIMESTAMP(3), "model" TEXT NOT NULL DEFAULT '',
  "model_id" TEXT DEFAULT '', "model_group" TEXT DEFAULT '',
  "custom_llm_provider" TEXT DEFAULT '', "api_base" TEXT DEFAULT '', "user" TEXT DEFAULT '',
  "metadata" JSONB DEFAULT '{}', "cache_hit" TEXT DEFAULT '', "cache_key" TEXT DEFAULT '',
  "request_tags" JSONB DEFAULT '[]', "team_id" TEXT, "organization_id" TEXT,
  "end_user" TEXT, "requester_ip_address" TEXT, "messages" JSONB DEFAULT '{}',
  "response" JSONB DEFAULT '{}', "session_id" TEXT, "status" TEXT,
  "mcp_namespaced_tool_name" TEXT, "agent_id" TEXT,
  "proxy_server_request" JSONB DEFAULT '{}'
)"""


def _measure(source: str, emb: text.Embedder, **kw: Any) -> tuple[Measured, SQLEngine]:
    """The audit's measurements of a log, and the log as ingest typed it (one row a request,
    read again into an engine the test keeps: measure removes its staged files)."""
    m = measure(source, embedder=emb, link=False, **kw)
    eng = DuckDBEngine()
    work = Path(tempfile.mkdtemp(prefix="stillroom-test-"))
    ingest.load(eng, ingest.resolve(source, work), kw.get("mapping") or {}, work)
    eng.materialize("typed", "SELECT * FROM src_typed")
    eng.materialize("log_rows", "SELECT * FROM log")
    shutil.rmtree(work)
    return m, eng


def check_litellm(m: Measured, eng: SQLEngine) -> None:
    u = m.units
    assert set(u) == set(PLAN)
    assert all(u[a]["requests"] == 6 for a in PLAN)
    red, alice, cust, key = u["team-red"], u["alice"], u["cust-9"], u[KEY]
    assert red["mean_n"] == 4 and red["frac_logprobs"] == 1 and red["mean_top_logprobs"] == 5
    assert red["mean_temperature"] == 0 and red["mean_log_max_tokens"] == math.log(1024)
    assert alice["mean_n"] == 1 and alice["frac_logprobs"] == 0
    assert alice["mean_temperature"] == pytest.approx(0.7)
    assert cust["frac_logprobs"] == 1 and cust["mean_top_logprobs"] == 3
    assert key["mean_n"] == 2 and key["mean_log_max_tokens"] == pytest.approx(math.log(512))
    assert red["prompt_tokens"] == sum(10 + i for i in range(6)) and red["completion_tokens"] == 120
    assert red["first_ts"] == T0 and red["last_ts"] == T0 + 300
    assert key["first_ts"] == T0 + 3 * 3600
    rows = eng.rows(
        "SELECT account_id, status, user_agent, client_addr, ts FROM log_rows ORDER BY ts"
    )
    assert [r["status"] for r in rows].count(500) == 1
    assert {r["user_agent"] for r in rows if r["account_id"] == "team-red"} == {
        "python-httpx/0.27.0"
    }
    assert rows[-1]["client_addr"] == "10.0.0.3"
    typed = eng.rows(
        "SELECT endpoint, messages, prompt, response_text, latency_ms, key_id FROM typed "
        "WHERE account_id = 'cust-9' LIMIT 1"
    )[0]
    assert typed["endpoint"] == "completions" and typed["prompt"].startswith("question 0")
    assert typed["response_text"] == '["4"]' and typed["latency_ms"] == pytest.approx(1500)
    chat = eng.rows(f"SELECT endpoint, messages, key_id FROM typed WHERE account_id = '{KEY}'")
    assert chat[0]["endpoint"] == "chat.completions" and chat[0]["key_id"] == KEY
    assert [m["role"] for m in json.loads(chat[0]["messages"])] == ["system", "user"]
    conv = "\n".join(m.stats.converted)
    assert "team_id 6, user 6, end_user 6, hashed api_key 6" in conv
    assert "left out 1 calls that generate no text (aembedding 1)" in conv
    assert m.stats.rows == 24 and m.stats.used == 24


def test_litellm_postgres_table_is_found_and_read(
    embedder: text.Embedder, pg_database: str
) -> None:
    url = pg_database
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text(SPEND_LOGS_DDL))
        table = sa.Table("LiteLLM_SpendLogs", sa.MetaData(), autoload_with=conn)
        conn.execute(table.insert(), litellm_rows())
    engine.dispose()
    m, eng = _measure(url, embedder)
    check_litellm(m, eng)
    eng.close()


def _export(rows: list[dict[str, Any]], path: Path) -> str:
    """A Parquet export: JSON columns as JSON text, times as timestamps (as psql or DuckDB's
    postgres scanner writes them); or JSONL with nested objects and ISO times."""
    json_cols = ("metadata", "messages", "response", "proxy_server_request", "request_tags")
    if path.suffix == ".parquet":
        out = [{k: json.dumps(v) if k in json_cols else v for k, v in r.items()} for r in rows]
        pq.write_table(pa.Table.from_pylist(out), path)
    else:
        with path.open("w") as f:
            for r in rows:
                iso = {k: r[k].isoformat() + "Z" for k in ("startTime", "endTime")}
                f.write(json.dumps({**r, **iso}) + "\n")
    return str(path)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_litellm_export_is_told_by_its_columns(
    suffix: str, tmp_path: Path, embedder: text.Embedder
) -> None:
    path = _export(litellm_rows(), tmp_path / f"spend{suffix}")
    m, eng = _measure(path, embedder)
    check_litellm(m, eng)
    eng.close()


def test_litellm_map_chooses_the_account_column(tmp_path: Path, embedder: text.Embedder) -> None:
    path = _export(litellm_rows(), tmp_path / "spend.parquet")
    m, eng = _measure(path, embedder, mapping=parse_map(["api_key=account_id"]), schema="litellm")
    eng.close()
    assert set(m.units) == {p["who"]["api_key"] for p in PLAN.values()}
    assert "account_id: column api_key (--map) 24 rows" in m.stats.converted


# --- OpenTelemetry GenAI spans ---------------------------------------------------------------

SPAN_PLAN = [  # (account attribute, value, n, temperature, max_tokens, logprobs, top_logprobs)
    ("user.id", "u-a", 3, 0.2, 400, True, 4),
    ("enduser.id", "u-b", 1, 1.0, 50, False, None),
]


def spans() -> list[tuple[dict[str, Any], float]]:
    """(flat attributes, start time) of inference spans, then of spans to leave out."""
    out = []
    for a, (attr, who, n, temp, mx, lp, tlp) in enumerate(SPAN_PLAN):
        for i in range(5):
            msgs = [{"role": "user", "parts": [{"type": "text", "content": f"q{i} of {who}"}]}]
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                "gen_ai.request.choice.count": n, "gen_ai.request.temperature": temp,
                "gen_ai.request.max_tokens": mx, "gen_ai.request.logprobs": lp,
                "gen_ai.usage.input_tokens": 7 + i, "gen_ai.usage.output_tokens": 40,
                "gen_ai.input.messages": json.dumps(msgs),
                "gen_ai.request.stop_sequences": ["\n\n"],
                "client.address": f"192.0.2.{a}", "user_agent.original": "OpenAI/Python 1.40",
                attr: who,
            }  # fmt: skip
            if tlp is not None:
                attrs["gen_ai.request.top_logprobs"] = tlp
            out.append((attrs, T0 + 600 * a + 10 * i))
    left = [
        {"gen_ai.operation.name": "embeddings", "user.id": "u-a"},
        {"http.request.method": "POST"},
        {"gen_ai.operation.name": "chat", "gen_ai.prompt": "hello"},  # no user
    ]
    return out + [(x, T0) for x in left]


def _otlp_value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}  # int64 as a JSON string, as OTLP/JSON writes it
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [_otlp_value(x) for x in v]}}
    return {"stringValue": v}


def otel_file(path: Path, form: str) -> str:
    lines = []
    for i, (attrs, t) in enumerate(spans()):
        if form == "flat":  # the Python SDK's span.to_json(), one line each
            iso = datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
            end = datetime.fromtimestamp(t + 2, UTC).isoformat().replace("+00:00", "Z")
            lines.append({"name": "chat gpt-4o", "context": {"span_id": f"0x{i:016x}"},
                          "start_time": iso, "end_time": end, "attributes": attrs,
                          "status": {"status_code": "UNSET"},
                          "resource": {"attributes": {"service.name": "app"}}})  # fmt: skip
        else:  # the collector's file exporter: one OTLP/JSON trace export per line
            kvs = [{"key": k, "value": _otlp_value(v)} for k, v in attrs.items()]
            span = {"traceId": "ab" * 16, "spanId": f"{i:016x}", "name": "chat gpt-4o",
                    "startTimeUnixNano": str(int(t * 1e9)),
                    "endTimeUnixNano": str(int((t + 2) * 1e9)), "attributes": kvs}  # fmt: skip
            lines.append({"resourceSpans": [{"resource": {"attributes": []},
                                             "scopeSpans": [{"spans": [span]}]}]})  # fmt: skip
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    return str(path)


@pytest.mark.parametrize("form", ["flat", "otlp"])
def test_otel_spans_in_both_attribute_forms(
    form: str, tmp_path: Path, embedder: text.Embedder
) -> None:
    m, eng = _measure(otel_file(tmp_path / "spans.jsonl", form), embedder)
    a, b = m.units["u-a"], m.units["u-b"]
    assert set(m.units) == {"u-a", "u-b"} and a["requests"] == b["requests"] == 5
    assert a["mean_n"] == 3 and a["frac_logprobs"] == 1 and a["mean_top_logprobs"] == 4
    assert a["mean_temperature"] == pytest.approx(0.2) and b["frac_logprobs"] == 0
    assert a["mean_log_max_tokens"] == pytest.approx(math.log(400))
    assert a["prompt_tokens"] == sum(7 + i for i in range(5)) and a["completion_tokens"] == 200
    assert a["first_ts"] == T0 and b["first_ts"] == T0 + 600 and b["last_ts"] == T0 + 640
    assert a["addresses"] == 1 and a["user_agents"] == 1
    row = eng.rows("SELECT messages, latency_ms FROM typed WHERE account_id = 'u-a'")[0]
    eng.close()
    assert json.loads(row["messages"]) == [{"role": "user", "content": "q0 of u-a"}]
    assert row["latency_ms"] == pytest.approx(2000)
    s = m.stats
    assert s.garbage == {"span line not JSON": 1} and s.unattributed == 1 and s.used == 10
    conv = "\n".join(s.converted)
    assert "user.id 5, enduser.id 5, none (unattributed) 1" in conv
    assert "left out 2 other spans (embeddings 1, not GenAI 1)" in conv


def test_otel_account_from_another_attribute(tmp_path: Path, embedder: text.Embedder) -> None:
    path = otel_file(tmp_path / "spans.jsonl", "otlp")
    m, eng = _measure(path, embedder, mapping=parse_map(["client.address=account_id"]))
    eng.close()
    assert set(m.units) == {"192.0.2.0", "192.0.2.1"}


# --- sampling parameters in separate columns --------------------------------------------------


def separate_columns(path: Path, names: dict[str, str] | None = None, accounts: int = 12) -> str:
    """A log with n, temperature, max_tokens, logprobs, top_logprobs as columns, no params."""
    rows = []
    for a in range(accounts):
        for i in range(4):
            rows.append({"created_at": T0 + 3600 * a + 60 * i, "account_id": f"acct{a}",
                         "messages": json.dumps([{"role": "user", "content": f"{a} {i}?"}]),
                         "n": 1 + a % 3, "temperature": a / 10, "max_tokens": 100 + a,
                         "logprobs": a % 2 == 0, "top_logprobs": a % 2 * 0 + (a % 4),
                         "prompt_tokens": 5, "completion_tokens": 9})  # fmt: skip
    renamed = [{(names or {}).get(k, k): v for k, v in r.items()} for r in rows]
    pq.write_table(pa.Table.from_pylist(renamed), path)
    return str(path)


def check_params(m: Measured) -> None:
    for a in range(12):
        f = m.units[f"acct{a}"]
        assert f["mean_n"] == 1 + a % 3 and f["mean_temperature"] == pytest.approx(a / 10)
        assert f["mean_log_max_tokens"] == pytest.approx(math.log(100 + a))
        assert f["frac_logprobs"] == (a % 2 == 0)
        if a % 2 == 0:
            assert f["mean_top_logprobs"] == a % 4


def test_params_assembled_from_columns_named_like_them(
    tmp_path: Path, embedder: text.Embedder
) -> None:
    m, eng = _measure(separate_columns(tmp_path / "log.parquet"), embedder)
    eng.close()
    check_params(m)
    assert (
        "params: JSON built from columns n, temperature, max_tokens, logprobs, top_logprobs "
        "(unasked; the log has no params column)" in m.stats.converted
    )


def test_params_assembled_with_map_through_the_cli(tmp_path: Path) -> None:
    names = {"n": "choices", "temperature": "temp", "max_tokens": "limit",
             "logprobs": "lp", "top_logprobs": "k", "created_at": "ts"}  # fmt: skip
    path = separate_columns(tmp_path / "log.parquet", names)
    maps = ["choices=params.n", "temp=params.temperature", "limit=params.max_tokens",
            "lp=params.logprobs", "k=params.top_logprobs", "ts=created_at"]  # fmt: skip
    args = ["audit", path, "--format", "json", "--fpr", "0.1", "--no-links"]
    res = runner.invoke(app, [*args, *(x for m in maps for x in ("--map", m))])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)["input"]
    assert got["rows"] == got["used"] == 48
    assert any("params: JSON built from columns choices, temp" in c for c in got["converted"])


LOG_COLUMNS = (
    "account_id, key_id, ts, n, temperature, max_tokens, logprobs, top_logprobs, "
    "prompt_tokens, completion_tokens, status, client_addr, user_agent, turns"
)


def _typed_log(source: str, engine: SQLEngine, mapping: dict[str, str], work: Path) -> Any:
    ingest.load(engine, ingest.resolve(source, work), mapping, work)
    return engine.rows(f"SELECT {LOG_COLUMNS} FROM log ORDER BY account_id, ts")


@pytest.mark.integration
def test_spark_builds_the_same_log_as_duckdb(tmp_path: Path) -> None:
    """Params from separate columns (--map) and LiteLLM's spend log (JSONL, staged by DuckDB
    for Spark) give the same typed rows on both engines."""
    pytest.importorskip("pyspark")
    from stillroom.audit.engine import SparkEngine

    names = {"temperature": "temp", "max_tokens": "limit"}
    spark = SparkEngine()
    for source, mapping in (
        (separate_columns(tmp_path / "cols.parquet", names),
         parse_map(["temp=params.temperature", "limit=params.max_tokens", "n=params.n",
                    "logprobs=params.logprobs", "top_logprobs=params.top_logprobs"])),
        (_export(litellm_rows(), tmp_path / "spend.jsonl"), {}),
    ):  # fmt: skip
        duck = DuckDBEngine()
        want = _typed_log(source, duck, mapping, tmp_path)
        duck.close()
        got = _typed_log(source, spark, mapping, tmp_path)
        assert len(got) == len(want) > 0
        assert got == want


# --- bad input --------------------------------------------------------------------------------


def test_bad_options_are_refused_before_reading() -> None:
    with pytest.raises(InputError, match="--schema 'csv': use auto, stillroom, litellm, otel"):
        check_schema("csv")
    with pytest.raises(InputError, match="'temp' is not a sampling parameter.*params.KEY"):
        parse_map(["t=params.temp"])


def test_a_database_without_a_known_log_names_both_tables(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE things (x)").connection.commit()
    with pytest.raises(InputError, match="no `requests` table .* no `LiteLLM_SpendLogs` table"):
        measure(str(path))


def test_litellm_problems_name_the_column_or_the_setting(
    tmp_path: Path, embedder: text.Embedder
) -> None:
    rows = [{k: v for k, v in r.items() if k != "startTime"} for r in litellm_rows()]
    path = _export(rows, tmp_path / "no_time.parquet")
    with pytest.raises(InputError, match=r"lacks startTime; export the whole table"):
        measure(path, schema="litellm")
    bare = _export(litellm_rows(store_prompts=False), tmp_path / "bare.parquet")
    with pytest.raises(InputError, match="store_prompts_in_spend_logs: true"):
        measure(bare, embedder=embedder)
    with pytest.raises(InputError, match="--map names column 'nope'.*its columns are"):
        measure(bare, mapping=parse_map(["nope=account_id"]))


def test_otel_problems_name_the_line_or_the_attribute(tmp_path: Path) -> None:
    parquet = separate_columns(tmp_path / "log.parquet", accounts=1)
    with pytest.raises(InputError, match="spans are read from JSONL"):
        measure(parquet, schema="otel")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"created_at": 1.0, "account_id": "a"}) + "\n")
    with pytest.raises(InputError, match=rf"{rows}:1: not an OpenTelemetry span"):
        measure(str(rows), schema="otel")
    spans_path = otel_file(tmp_path / "spans.jsonl", "otlp")
    with pytest.raises(InputError, match="attribute 'tenant.id', which no span has"):
        measure(spans_path, mapping=parse_map(["tenant.id=account_id"]))
    none = tmp_path / "tools.jsonl"
    none.write_text(json.dumps({"attributes": {"gen_ai.operation.name": "execute_tool"},
                                "startTimeUnixNano": "1"}) + "\n")  # fmt: skip
    with pytest.raises(InputError, match=r"no GenAI inference spans .*execute_tool 1"):
        measure(str(none))


def test_params_column_and_params_maps_conflict_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "both.parquet"
    row = {"created_at": 1.0, "account_id": "a", "params": "{}", "prompt": "p", "temp": 0.5}
    pq.write_table(pa.Table.from_pylist([row]), path)
    res = runner.invoke(app, ["audit", str(path), "--map", "temp=params.temperature"])
    assert res.exit_code != 0 and isinstance(res.exception, InputError)
    assert "has a params column too" in str(res.exception)
    assert "\n" not in str(res.exception)


def test_user_turns_are_counted_in_either_json_spacing(tmp_path: Path) -> None:
    """A chat's user turns, whether its JSON was written with spaces after the colons
    (Python's json.dumps) or without them (most other writers)."""
    one = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    two = [*one, {"role": "assistant", "content": "a"}, {"role": "user", "content": "r"}]
    texts = [json.dumps(one), json.dumps(two), json.dumps(one, separators=(",", ":")),
             json.dumps(two, separators=(",", ":"))]  # fmt: skip
    path = tmp_path / "log.parquet"
    columns = {"created_at": [1.0e9 + i for i in range(4)], "account_id": ["a"] * 4,
               "params": ["{}"] * 4, "messages": texts}  # fmt: skip
    pq.write_table(pa.table(columns), path)
    engine = DuckDBEngine()
    ingest.load(engine, ingest.resolve(str(path), tmp_path), {}, tmp_path)
    got = [r["turns"] for r in engine.rows("SELECT turns FROM log ORDER BY ts")]
    assert got == [1, 2, 1, 2]
