"""Export a run store to Parquet or JSONL, so its records can train anywhere else.

One row per completion: the prompt, the teacher's text and tokens, and the decoded top-k
signals (`topk_ids`, `topk_logprobs`: per generated token, the k candidates; `topk_rest`:
probability mass outside them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.harvest.signals import decode_topk
from stillroom.harvest.store import RunStore
from stillroom.reportkit.files import atomic_file


def export_rows(store: RunStore, split: str | None = None) -> Iterator[dict[str, Any]]:
    for rec in store.iter_records(split):
        request = json.loads(rec["request"])
        row: dict[str, Any] = {
            "key": rec["key"],
            "prompt_id": rec["prompt_id"],
            "sample_index": rec["sample_index"],
            "choice": rec["choice"],
            "split": rec["split"],
            "prompt": request.get("prompt"),
            "messages": json.dumps(request["messages"]) if "messages" in request else None,
            "fields": rec["fields"],
            "model": rec["model"],
            "text": rec["text"],
            "finish_reason": rec["finish_reason"],
            "prompt_tokens": rec["prompt_tokens"],
            "completion_tokens": rec["completion_tokens"],
            "cost_usd": rec["cost_usd"],
            "token_ids": _ints(rec["token_ids"]),
            "tokens": json.loads(rec["tokens"]) if rec["tokens"] else None,
            "token_logprobs": _floats(rec["token_logprobs"]),
            "token_table": json.loads(rec["token_table"]) if rec["token_table"] else None,
            "topk_ids": None,
            "topk_logprobs": None,
            "topk_rest": None,
        }
        if rec["topk"] is not None:
            sig = decode_topk(rec["topk"])
            row["topk_ids"] = sig.ids.tolist()
            lps = np.where(np.isfinite(sig.logprobs), sig.logprobs, np.nan)
            row["topk_logprobs"] = [[None if np.isnan(x) else float(x) for x in r] for r in lps]
            row["topk_rest"] = sig.rest_mass.tolist()
        yield row


def export_run(run_dir: Path, fmt: str, out: Path | None = None, split: str | None = None) -> Path:
    store = RunStore.open_run(run_dir)
    try:
        target = out or run_dir / f"export.{fmt}"
        with atomic_file(target) as tmp:  # never a half-written export under the real name
            if fmt == "jsonl":
                with tmp.open("w", encoding="utf-8") as f:
                    for row in export_rows(store, split):
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                _write_parquet(export_rows(store, split), tmp)
        return target
    finally:
        store.close()


def _write_parquet(rows: Iterator[dict[str, Any]], path: Path, batch: int = 2048) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    chunk: list[dict[str, Any]] = []
    try:
        for row in rows:
            chunk.append(row)
            if len(chunk) >= batch:
                writer = _flush(pa, pq, chunk, path, writer)
        if chunk or writer is None:
            writer = _flush(pa, pq, chunk, path, writer)
    finally:
        if writer is not None:
            writer.close()


def _flush(pa: Any, pq: Any, chunk: list[dict[str, Any]], path: Path, writer: Any) -> Any:
    table = pa.Table.from_pylist(chunk, schema=_schema(pa))
    if writer is None:
        writer = pq.ParquetWriter(path, table.schema, compression="zstd")
    writer.write_table(table)
    chunk.clear()
    return writer


def _schema(pa: Any) -> Any:  # built lazily: pyarrow loads only on export
    return pa.schema(
        [
            ("key", pa.string()),
            ("prompt_id", pa.string()),
            ("sample_index", pa.int32()),
            ("choice", pa.int32()),
            ("split", pa.string()),
            ("prompt", pa.string()),
            ("messages", pa.string()),
            ("fields", pa.string()),
            ("model", pa.string()),
            ("text", pa.string()),
            ("finish_reason", pa.string()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("cost_usd", pa.float64()),
            ("token_ids", pa.list_(pa.int32())),
            ("tokens", pa.list_(pa.string())),
            ("token_logprobs", pa.list_(pa.float32())),
            ("token_table", pa.list_(pa.string())),
            ("topk_ids", pa.list_(pa.list_(pa.int32()))),
            ("topk_logprobs", pa.list_(pa.list_(pa.float32()))),
            ("topk_rest", pa.list_(pa.float32())),
        ]
    )


def _ints(blob: bytes | None) -> list[int] | None:
    return None if blob is None else np.frombuffer(blob, "<i4").tolist()


def _floats(blob: bytes | None) -> list[float] | None:
    return None if blob is None else np.frombuffer(blob, "<f4").tolist()
