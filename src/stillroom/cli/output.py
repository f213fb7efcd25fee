"""What every command shares: data as JSON on stdout, messages on stderr, times and secrets
read from options."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stillroom.errors import InputError


def emit(data: Any, *, indent: int | None = 2) -> None:
    """Data for scripts: JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=indent, default=str) + "\n")


def say(message: str) -> None:
    """Words for people: one line on stderr."""
    sys.stderr.write(message + "\n")


def parse_when(value: str | None, option: str) -> float | None:
    """Epoch seconds from a number or an ISO date/time (UTC unless it says otherwise)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{option} {value!r}: give epoch seconds or an ISO time, e.g. 2026-03-02T00:00"
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def read_secret(path: Path | None, what: str) -> str | None:
    """A secret kept in a file (never on the command line, where `ps` shows it)."""
    if path is None:
        return None
    try:
        value = path.read_text().strip()
    except OSError as e:
        raise InputError(f"{path}: cannot read the {what} ({e.strerror}); check the path") from None
    if not value:
        raise InputError(f"{path}: the {what} file is empty; put the {what} in it")
    return value
