"""Where a log is: the files one SQL engine reads (ingest.py makes them, readers share them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Source:
    """Where the log is, as files one engine can read; `label` names it in messages."""

    label: str
    kind: str  # parquet | jsonl
    paths: list[Path]
    staged: Path | None = None  # a temporary folder we made and remove
    schema: str | None = None  # stillroom | litellm | otel; None: tell by the columns
