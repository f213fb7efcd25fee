"""OpenTelemetry GenAI spans (JSONL) as the request log, staged to Parquet.

Each line is an OTLP/JSON trace export (`{"resourceSpans": [...]}`, what the collector's file
exporter writes), or one span: OTLP/JSON (`"attributes": [{"key", "value": {"stringValue":
...}}]`, `startTimeUnixNano`) or the flat form of the Python SDK's `span.to_json()`
(`"attributes": {...}`, `start_time` in ISO). Attributes follow the GenAI semantic
conventions:

  request log       span attribute (first present)
  account_id        user.id, enduser.id            (--map ATTRIBUTE=account_id for another)
  created_at        the span's start time
  model             gen_ai.request.model, gen_ai.response.model
  messages          gen_ai.system_instructions + gen_ai.input.messages (parts joined to text),
                    gen_ai.prompt (older), gen_ai.prompt.<i>.role/content (flattened)
  params            n: gen_ai.request.choice.count, temperature, top_p, max_tokens, seed,
                    stop: gen_ai.request.stop_sequences (all gen_ai.request.*); logprobs and
                    top_logprobs: gen_ai.request.logprobs / .top_logprobs (not standardised)
  prompt_tokens     gen_ai.usage.input_tokens (gen_ai.usage.prompt_tokens)
  completion_tokens gen_ai.usage.output_tokens (gen_ai.usage.completion_tokens)
  response_text     gen_ai.output.messages, gen_ai.completion (older)
  status, error     http.response.status_code, else the span status (error: 500); error.type
  client_addr       client.address
  user_agent        user_agent.original

A conversation is not an account (one account holds many), so gen_ai.conversation.id is not
a fallback: spans without a user are unattributed. Spans of other operations (embeddings,
tools, agents) and spans without gen_ai.* attributes are left out and counted.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stillroom.audit.source import Source
from stillroom.errors import InputError

ACCOUNT_ATTRS = ("user.id", "enduser.id")
INFERENCE_OPS = ("chat", "text_completion", "generate_content", "completion")
PARAM_ATTRS = {
    "n": "gen_ai.request.choice.count",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
    "stop": "gen_ai.request.stop_sequences",
    "logprobs": "gen_ai.request.logprobs",
    "top_logprobs": "gen_ai.request.top_logprobs",
}
COLUMNS = {  # the request log's columns this stage writes, with their Arrow types
    "id": "string",
    "created_at": "float64",
    "account_id": "string",
    "key_id": "string",
    "endpoint": "string",
    "model": "string",
    "messages": "string",
    "prompt": "string",
    "params": "string",
    "response_text": "string",
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
    "status": "int64",
    "error": "string",
    "latency_ms": "float64",
    "backend_ms": "float64",
    "client_addr": "string",
    "user_agent": "string",
    "watermark_key_id": "string",
}
CHUNK = 50_000


def first_record(src: Source) -> tuple[str, dict[str, Any] | None]:
    """The first line's JSON object (or None when it is not one), with its file:line."""
    for path in src.paths:
        with path.open(encoding="utf-8", errors="replace") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        return f"{path}:{i}", None
                    return f"{path}:{i}", obj if isinstance(obj, dict) else None
    return f"{src.paths[0]}:1", None


def looks_like(obj: dict[str, Any] | None) -> bool:
    """Whether a JSONL line is a trace export or a span (not a request-log row)."""
    if obj is None:
        return False
    if "resourceSpans" in obj:
        return True
    has_time = any(k in obj for k in ("startTimeUnixNano", "start_time"))
    return "attributes" in obj and has_time


def stage(
    src: Source, workdir: Path, mapping: dict[str, str], converted: list[str]
) -> tuple[Source, dict[str, int]]:
    """Write the inference spans as a Parquet request log; return it and the garbage lines
    (not JSON, no span) by reason. Notes for the output go to `converted`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    where, obj = first_record(src)
    if not looks_like(obj):
        raise InputError(
            f'{where}: not an OpenTelemetry span: give OTLP/JSON lines ({{"resourceSpans": '
            '...} or one span with "attributes" and "startTimeUnixNano"), or drop --schema otel'
        )
    schema = pa.schema([(k, getattr(pa, t)()) for k, t in COLUMNS.items()])
    out = workdir / "staged_otel.parquet"
    tally = _Tally(mapping)
    rows: list[dict[str, Any]] = []
    with pq.ParquetWriter(out, schema) as writer:
        for span, resource in _spans(src, tally):
            row = _row(span, resource, mapping, tally)
            if row is not None:
                rows.append(row)
            if len(rows) >= CHUNK:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    tally.finish(src.label, converted)
    return Source(src.label, "parquet", [out], staged=src.staged, schema="stillroom"), dict(
        tally.garbage
    )


class _Tally:
    """What the stage saw: kept spans by account attribute, left-out spans, garbage lines."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping
        self.spans = 0
        self.kept: Counter[str] = Counter()
        self.left: Counter[str] = Counter()
        self.garbage: Counter[str] = Counter()
        self.seen: set[str] = set()  # mapped attributes found on some span

    def finish(self, label: str, converted: list[str]) -> None:
        unseen = [a for a in self.mapping if a not in self.seen]
        if unseen:
            raise InputError(
                f"{label}: --map names attribute {unseen[0]!r}, which no span has; map an "
                "attribute the spans carry, e.g. --map enduser.id=account_id"
            )
        if not self.kept:
            left = ", ".join(f"{k} {n:,}" for k, n in self.left.most_common()) or "none"
            raise InputError(
                f"{label}: no GenAI inference spans (gen_ai.operation.name chat or "
                f"text_completion with gen_ai.* attributes) among {self.spans:,} spans "
                f"(left out: {left}); export the spans of the model calls"
            )
        kept = sum(self.kept.values())
        converted.append(f"OpenTelemetry GenAI spans read as the request log: {kept:,} kept")
        order = [*(k for k, t in self.mapping.items() if t == "account_id"), *ACCOUNT_ATTRS]
        ranked = sorted(self.kept.items(), key=lambda kv: _rank(order, kv[0]))
        accounts = ", ".join(f"{k} {n:,}" for k, n in ranked)
        converted.append(f"account_id: span attribute {accounts} spans")
        if self.left:
            left = ", ".join(f"{k} {n:,}" for k, n in sorted(self.left.items()))
            converted.append(f"left out {sum(self.left.values()):,} other spans ({left})")


def _rank(order: list[str], key: str) -> int:
    return order.index(key) if key in order else len(order)


def _spans(src: Source, tally: _Tally) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(span, resource attributes) for every span in the files."""
    for path in src.paths:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    tally.garbage["span line not JSON"] += 1
                    continue
                if not isinstance(obj, dict):
                    tally.garbage["span line not a JSON object"] += 1
                elif "resourceSpans" in obj:
                    yield from _export_spans(obj)
                else:
                    res = obj.get("resource")
                    yield obj, _attrs(res.get("attributes")) if isinstance(res, dict) else {}


def _export_spans(obj: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for rs in _dicts(obj.get("resourceSpans")):
        res = rs.get("resource")
        resource = _attrs(res.get("attributes")) if isinstance(res, dict) else {}
        for ss in _dicts(rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans")):
            for span in _dicts(ss.get("spans")):
                yield span, resource


def _dicts(v: Any) -> list[dict[str, Any]]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _attrs(raw: Any) -> dict[str, Any]:
    """Attributes as {key: value}, from the flat form or OTLP's list of {key, value}."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list):
        return {
            kv["key"]: _any_value(kv.get("value"))
            for kv in raw
            if isinstance(kv, dict) and "key" in kv
        }
    return {}


def _any_value(v: Any) -> Any:
    """An OTLP AnyValue as a Python value (int64 values arrive as JSON strings)."""
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return _int(v["intValue"])
    if "doubleValue" in v:
        return _cast(v["doubleValue"], "float64")
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        inner = v["arrayValue"]
        return [_any_value(x) for x in inner.get("values") or []] if isinstance(inner, dict) else []
    if "kvlistValue" in v:
        inner = v["kvlistValue"]
        return _attrs(inner.get("values")) if isinstance(inner, dict) else {}
    if "bytesValue" in v:
        try:
            return base64.b64decode(v["bytesValue"]).hex()
        except (ValueError, TypeError):
            return None
    return None


def _row(
    span: dict[str, Any], resource: dict[str, Any], mapping: dict[str, str], tally: _Tally
) -> dict[str, Any] | None:
    """One request-log row from an inference span; None (and counted) for any other span."""
    tally.spans += 1
    a = {**resource, **_attrs(span.get("attributes")), **_event_attrs(span)}
    op = a.get("gen_ai.operation.name")
    if not any(str(k).startswith("gen_ai.") for k in a):
        tally.left["not GenAI"] += 1
        return None
    if op is not None and op not in INFERENCE_OPS:
        tally.left[str(op)] += 1
        return None
    messages, prompt = _input(a, op)
    if op is None and messages is None and prompt is None and "gen_ai.request.model" not in a:
        tally.left["GenAI, no model call"] += 1  # e.g. an agent's or a workflow's span
        return None
    tally.seen.update(k for k in mapping if k in a)
    start, end = _time(span, "start"), _time(span, "end")
    row: dict[str, Any] = {
        "id": _first(a, "gen_ai.response.id") or _span_id(span),
        "created_at": start,
        "account_id": None,
        "endpoint": "completions"
        if op in ("text_completion", "completion")
        else "chat.completions",
        "model": _first(a, "gen_ai.request.model", "gen_ai.response.model"),
        "messages": messages,
        "prompt": prompt,
        "params": None,
        "response_text": _output(a),
        "prompt_tokens": _int(_first(a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")),
        "completion_tokens": _int(
            _first(a, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
        ),
        "latency_ms": (end - start) * 1000 if start is not None and end is not None else None,
        "client_addr": _text(a.get("client.address")),
        "user_agent": _text(a.get("user_agent.original")),
    }
    row["status"], row["error"] = _status(span, a)
    params = {k: a[attr] for k, attr in PARAM_ATTRS.items() if a.get(attr) is not None}
    chain = tuple(k for k, t in mapping.items() if t == "account_id") or ACCOUNT_ATTRS
    account = next((k for k in chain if a.get(k) not in (None, "")), None)
    for attr, target in mapping.items():
        if a.get(attr) is None:
            continue
        if target.startswith("params."):
            params[target.removeprefix("params.")] = a[attr]
        else:
            row[target] = _cast(a[attr], COLUMNS.get(target, "string"))
    if account is not None:
        row["account_id"] = _text(a[account])
    row["params"] = json.dumps(params)
    tally.kept[account or "none (unattributed)"] += 1
    return row


def _event_attrs(span: dict[str, Any]) -> dict[str, Any]:
    """gen_ai.prompt / gen_ai.completion recorded on span events (older conventions)."""
    out: dict[str, Any] = {}
    for ev in span.get("events") or []:
        if isinstance(ev, dict):
            for k, v in _attrs(ev.get("attributes")).items():
                if k in ("gen_ai.prompt", "gen_ai.completion"):
                    out.setdefault(k, v)
    return out


def _first(a: dict[str, Any], *keys: str) -> Any:
    return next((a[k] for k in keys if a.get(k) is not None), None)


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else json.dumps(v)


def _int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _cast(v: Any, arrow: str) -> Any:
    if arrow == "int64":
        return _int(v)
    if arrow == "float64":
        try:
            return float(v)
        except (TypeError, ValueError):
            return None
    return _text(v)


def _span_id(span: dict[str, Any]) -> str | None:
    ctx = span.get("context")
    sid = span.get("spanId") or (ctx.get("span_id") if isinstance(ctx, dict) else None)
    return str(sid) if sid else None


def _time(span: dict[str, Any], which: str) -> float | None:
    """Epoch seconds from `{which}TimeUnixNano` (OTLP) or `{which}_time` (ISO, Python SDK)."""
    nanos = span.get(f"{which}TimeUnixNano")
    if nanos not in (None, "", 0, "0"):
        try:
            return int(nanos) / 1e9
        except (TypeError, ValueError):
            return None
    iso = span.get(f"{which}_time")
    if isinstance(iso, str):
        try:
            when = datetime.fromisoformat(iso)
        except ValueError:
            return None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return None


def _parts_text(parts: Any) -> str:
    """The text of a GenAI message's parts ([{type: text, content}]), or of plain content."""
    if isinstance(parts, str):
        return parts
    if isinstance(parts, list):
        return "".join(
            str(p.get("content") or p.get("text") or "")
            for p in parts
            if isinstance(p, dict) and p.get("type", "text") == "text"
        )
    return ""


def _as_messages(v: Any) -> list[dict[str, str]] | None:
    """[{role, content}] from the GenAI form ([{role, parts}]) or OpenAI's; None otherwise."""
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            return None
    if not isinstance(v, list) or not all(isinstance(m, dict) and "role" in m for m in v):
        return None
    return [
        {"role": str(m["role"]), "content": _parts_text(m.get("parts", m.get("content")))}
        for m in v
    ]


def _flattened(a: dict[str, Any], prefix: str) -> list[dict[str, str]]:
    """OpenLLMetry's flattened form: gen_ai.prompt.0.role, gen_ai.prompt.0.content, ..."""
    out = []
    i = 0
    while f"{prefix}.{i}.content" in a or f"{prefix}.{i}.role" in a:
        role = a.get(f"{prefix}.{i}.role") or "user"
        out.append({"role": str(role), "content": _parts_text(a.get(f"{prefix}.{i}.content"))})
        i += 1
    return out


def _input(a: dict[str, Any], op: Any) -> tuple[str | None, str | None]:
    """(messages JSON, prompt) of a span."""
    msgs = _as_messages(a.get("gen_ai.input.messages")) or _flattened(a, "gen_ai.prompt")
    old = a.get("gen_ai.prompt")
    if not msgs and old is not None:
        msgs = _as_messages(old) or []
        if not msgs:
            text = _parts_text(old) if not isinstance(old, str) else old
            if op in ("text_completion", "completion"):
                return None, text
            msgs = [{"role": "user", "content": text}]
    system = a.get("gen_ai.system_instructions")
    if msgs and system is not None:
        sys_parts = system
        if isinstance(system, str):
            try:
                sys_parts = json.loads(system)
            except json.JSONDecodeError:
                sys_parts = system
        msgs = [{"role": "system", "content": _parts_text(sys_parts)}, *msgs]
    return (json.dumps(msgs) if msgs else None), None


def _output(a: dict[str, Any]) -> str | None:
    """A JSON list of the choices' texts."""
    msgs = _as_messages(a.get("gen_ai.output.messages")) or _flattened(a, "gen_ai.completion")
    if not msgs and a.get("gen_ai.completion") is not None:
        old = a["gen_ai.completion"]
        msgs = _as_messages(old) or [{"role": "assistant", "content": _parts_text(old)}]
    return json.dumps([m["content"] for m in msgs]) if msgs else None


def _status(span: dict[str, Any], a: dict[str, Any]) -> tuple[int, str | None]:
    """The HTTP status answered (200, or 500 for an error span) and the error, if any."""
    code = _int(a.get("http.response.status_code"))
    raw = span.get("status")
    st: dict[str, Any] = raw if isinstance(raw, dict) else {}
    err = st.get("code", st.get("status_code"))
    failed = err in (2, "2", "STATUS_CODE_ERROR", "ERROR", "StatusCode.ERROR")
    message = st.get("message") or st.get("description") or _text(a.get("error.type"))
    if code is None:
        code = 500 if failed or a.get("error.type") is not None else 200
    return code, (message if code >= 400 else None)
