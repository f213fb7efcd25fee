"""Prompt sources: JSONL, CSV, Parquet, or a saved Hugging Face dataset folder.

Each row becomes a `PromptItem` with a stable id and a split: drawn from a seeded hash of the
prompt id, so the same prompt lands in the same split on every run and every machine, or read
from the row's own `split.field` column (a data set's published split). Rows of the transfer
set (`prompts.transfer_path`) are training prompts only: always the train split.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stillroom.config import PromptSource, SplitConfig
from stillroom.errors import InputError

Messages = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PromptItem:
    id: str
    prompt: str | None
    messages: Messages | None
    split: str
    fields: dict[str, Any] = field(default_factory=dict)
    where: str = field(default="", compare=False)  # "file:line" of the row, for messages

    @property
    def text(self) -> str:
        if self.messages is not None:
            return "\n".join(c for _, c in self.messages)
        return self.prompt or ""


@dataclass
class LoadReport:
    rows: int = 0
    skipped: list[str] = field(default_factory=list)  # "file:line: problem"
    transfer: int = 0  # usable rows of the transfer set (prompts.transfer_path)


def load_prompts(
    src: PromptSource,
    split: SplitConfig,
    *,
    skip_bad: bool = False,
    first: int | None = None,
) -> tuple[list[PromptItem], LoadReport]:
    """Read every row (or only up to the `first` N usable ones), then the transfer set's
    (`src.transfer_path`: train split, gold optional); a bad row raises InputError naming
    file:line, or with `skip_bad` is counted in the report and left out."""
    report = LoadReport()
    items: list[PromptItem] = []
    seen: set[str] = set()
    sources = [(src, False)]
    if src.transfer_path is not None:
        sources.append((src.model_copy(update={"path": src.transfer_path}), True))
    for source, transfer in sources:
        for where, row in _rows(source):
            if first is not None and len(items) >= first:
                break
            report.rows += 1
            try:
                item = _to_item(source, split, row, where, transfer=transfer)
                if item.id in seen:
                    raise InputError(
                        f"{where}: duplicate prompt id {item.id!r}; ids must be unique"
                        + (" across prompts.path and prompts.transfer_path" if transfer else "")
                    )
            except InputError as e:
                if not skip_bad:
                    raise
                report.skipped.append(str(e))
                continue
            seen.add(item.id)
            items.append(item)
            report.transfer += transfer
    if not items:
        raise InputError(
            f"{src.path}: no usable prompts ({report.rows} rows, {len(report.skipped)} bad)"
        )
    return items, report


def split_of(key: str, cfg: SplitConfig) -> str:
    h = hashlib.sha256(f"{cfg.seed}:{key}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    if u < cfg.train:
        return "train"
    if u < cfg.train + cfg.validation:
        return "validation"
    return "test"


def _format(src: PromptSource) -> str:
    if src.format != "auto":
        return src.format
    if src.path.is_dir():
        return "hf"
    suffix = src.path.suffix.lower()
    known = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
    if suffix not in known:
        raise InputError(
            f"{src.path}: cannot tell the format from {suffix!r}; set prompts.format to "
            "jsonl, csv, parquet or hf"
        )
    return known[suffix]


def _rows(src: PromptSource) -> Iterator[tuple[str, Any]]:
    if not src.path.exists():
        raise InputError(f"{src.path}: no such file; check prompts.path in the config")
    fmt = _format(src)
    if fmt == "jsonl":
        yield from _jsonl_rows(src.path)
    elif fmt == "csv":
        yield from _csv_rows(src.path)
    elif fmt == "parquet":
        yield from _arrow_rows(src.path, _read_parquet(src.path))
    else:
        yield from _arrow_rows(src.path, _read_hf_folder(src.path))


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                yield where, InputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})")


def _csv_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return
        width = len(reader.fieldnames)
        start = 2  # line 1 is the header
        for row in reader:
            where = f"{path}:{start}"
            start = reader.line_num + 1
            extra = row.pop(None, None)
            if extra is not None or any(v is None for v in row.values()):
                yield (
                    where,
                    InputError(
                        f"{where}: expected {width} columns as in the header; "
                        "quote fields that contain commas or newlines"
                    ),
                )
                continue
            yield where, row


def _read_parquet(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise InputError(f"{path}: cannot read as Parquet: {e}") from None


def _read_hf_folder(path: Path) -> Any:
    """A `Dataset.save_to_disk` folder: Arrow stream files listed in state.json."""
    import pyarrow as pa

    state = path / "state.json"
    if not state.exists():
        raise InputError(
            f"{path}: not a saved Hugging Face dataset (no state.json); for a DatasetDict "
            "point prompts.path at one split's folder, e.g. {path}/train"
        )
    files = [path / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
    tables = []
    for f in files:
        with pa.memory_map(str(f)) as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    return pa.concat_tables(tables)


def _arrow_rows(path: Path, table: Any) -> Iterator[tuple[str, Any]]:
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}:row {i}", row


def _to_item(
    src: PromptSource, split: SplitConfig, row: Any, where: str, *, transfer: bool = False
) -> PromptItem:
    if isinstance(row, InputError):
        raise row
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected an object with fields, got {type(row).__name__}")
    prompt, messages = _prompt_of(src, row, where)
    text = prompt if messages is None else json.dumps(messages)
    if src.id_field:
        if src.id_field not in row:
            raise InputError(f"{where}: no field {src.id_field!r} (prompts.id_field)")
        pid = str(row[src.id_field])
    else:
        pid = hashlib.sha256(str(text).encode()).hexdigest()[:16]
    missing = [k for k in src.keep_fields if k not in row]
    if missing and not transfer:  # a transfer row may lack gold and other kept fields
        raise InputError(f"{where}: no field {missing[0]!r} (listed in prompts.keep_fields)")
    kept = {k: row[k] for k in src.keep_fields if k in row}
    if transfer:
        part = "train"
    else:
        part = _split_column(split, row, where) if split.field else split_of(pid, split)
    return PromptItem(pid, prompt, messages, part, kept, where)


def _split_column(split: SplitConfig, row: dict[str, Any], where: str) -> str:
    assert split.field is not None
    if split.field not in row:
        raise InputError(
            f"{where}: no field {split.field!r} (split.field); give every row a split, or "
            "remove split.field to split by the seeded hash"
        )
    value = row[split.field]
    name = split.split_for(value)
    if name is None:
        raise InputError(
            f"{where}: split.field {split.field!r} is {value!r}, not a split; use train, "
            "validation or test (or train/training, val/valid/dev, testing), or map the value "
            f"in the config: split.names: {{{value}: test}}"
        )
    return name


def _prompt_of(src: PromptSource, row: dict[str, Any], where: str) -> tuple[str | None, Any]:
    present = ", ".join(sorted(map(str, row))) or "none"
    if src.field:
        value = row.get(src.field)
        if not isinstance(value, str) or not value.strip():
            problem = "missing" if src.field not in row else "empty or not text"
            raise InputError(
                f"{where}: field {src.field!r} is {problem} (fields present: {present}); "
                "set prompts.field or prompts.template"
            )
        return _maybe_chat(src, value)
    if src.template:
        try:
            return _maybe_chat(src, src.template.format_map(row))
        except KeyError as e:
            raise InputError(
                f"{where}: prompts.template uses {{{e.args[0]}}} but the row has no such field "
                f"(fields present: {present})"
            ) from None
    return None, _messages_of(src, row, where)


def _maybe_chat(src: PromptSource, text: str) -> tuple[str | None, Messages | None]:
    if src.system is None:
        return text, None
    return None, (("system", src.system), ("user", text))


def _messages_of(src: PromptSource, row: dict[str, Any], where: str) -> Messages:
    assert src.messages_field is not None
    raw = row.get(src.messages_field)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    ok = (
        isinstance(raw, list)
        and raw
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in raw
        )
    )
    if not ok:
        raise InputError(
            f"{where}: field {src.messages_field!r} must be a non-empty list of "
            '{"role": ..., "content": ...} objects (prompts.messages_field)'
        )
    assert isinstance(raw, list)
    msgs = tuple((m["role"], m["content"]) for m in raw)
    if src.system is not None:
        msgs = (("system", src.system), *msgs)
    return msgs
