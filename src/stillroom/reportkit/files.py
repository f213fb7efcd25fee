"""Crash-safe writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def atomic_file(path: Path, *, private: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `path` to write by name (parquet, torch.save, a stream); on a
    clean exit flush it to disk and rename it over `path`, on an error remove it. `private`
    creates it 0600 before any byte is written (secrets, API keys)."""
    path = Path(path)
    # Beside the target, so the rename stays on one filesystem and is atomic.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666))
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_atomic(path: Path, data: bytes | str, *, private: bool = False) -> None:
    """Write `data` (text as UTF-8) to `path` through a flushed temp file and a rename."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_file(path, private=private) as tmp, tmp.open("wb") as f:
        f.write(raw)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; some filesystems cannot sync a folder, which is fine."""
    with suppress(OSError):
        _fsync(folder)
