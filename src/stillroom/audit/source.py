"""Where a log is: the files one SQL engine reads (ingest.py makes them, readers share them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stillroom.errors import InputError


@dataclass
class Source:
    """Where the log is, as files one engine can read; `label` names it in messages."""

    label: str
    kind: str  # parquet | jsonl
    paths: list[Path]
    staged: Path | None = None  # a temporary folder we made and remove
    schema: str | None = None  # stillroom | litellm | otel; None: tell by the columns


def check_mapped(label: str, names: Iterable[str], mapping: dict[str, str], what: str) -> None:
    """Stop, naming the columns, when `--map` names a column `what` (the log) does not have."""
    present = set(names)
    for old in mapping:
        if old not in present:
            raise InputError(
                f"{label}: --map names column {old!r}, which {what} does not have; "
                f"its columns are {', '.join(sorted(present))}"
            )
