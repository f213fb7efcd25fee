"""JSONL reading: texts of a file's field in chunks, with file:line for every bad row; the
lines of JSONL text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from stillroom.errors import InputError

# Texts handed on at a time (one tokenizer call each for the watermark's detector).
CHUNK = 256


def jsonl_lines(text: str) -> list[tuple[int, str]]:
    """(line number from 1, line) of each non-blank line of JSONL text, split at newlines
    only. `str.splitlines` also splits at U+2028, U+0085 and other breaks that
    `json.dumps(ensure_ascii=False)` leaves raw inside a string, so a model's answer holding
    one would cut its row in two."""
    return [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]


def jsonl_chunks(path: Path, field: str) -> Iterator[tuple[list[int], list[str]]]:
    """(line numbers, texts) of a JSONL file, CHUNK rows at a time; blank lines skipped."""
    lines: list[int] = []
    texts: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as f:  # a bad byte costs one char
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{number}: not valid JSON ({e.msg})") from None
            value = row.get(field) if isinstance(row, dict) else None
            if not isinstance(value, str):
                raise InputError(
                    f"{path}:{number}: no text field {field!r}; "
                    + (f"the row has {sorted(row)}" if isinstance(row, dict) else "not an object")
                    + "; name the field that holds the text"
                )
            lines.append(number)
            texts.append(value)
            if len(texts) == CHUNK:
                yield lines, texts
                lines, texts = [], []
    if texts:
        yield lines, texts
