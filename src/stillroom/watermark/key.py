"""The watermark key: a 32-byte secret and the three numbers that shape the green list.

A key file is JSON, readable by its owner only (mode 0600), written to a temporary name and
renamed (or hard-linked, when it must not replace a file), so a crash never leaves half a key:

    {"format": "stillroom-watermark-key", "version": 1, "key_id": "3f9a0c41d2e7",
     "secret": "<64 hex digits>", "gamma": 0.25, "delta": 2.0, "context_width": 2}

`key_id` is a digest of the secret and the parameters: safe to log and print, and checked on
load, so a hand-edited gamma or delta cannot pass for the key that marked the text.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stillroom.errors import InputError

FORMAT = "stillroom-watermark-key"
VERSION = 1
SECRET_BYTES = 32
# A wider context makes the list harder to learn from outputs but easier to break by edits;
# past a few tokens every paraphrase breaks it, so larger widths are refused as a likely typo.
MAX_CONTEXT_WIDTH = 8


@dataclass(frozen=True)
class WatermarkKey:
    secret: bytes  # 32 random bytes: whoever holds them can detect, and forge, the mark
    gamma: float = 0.25  # fraction of the vocabulary that is green after each context
    delta: float = 2.0  # logit bias added to green tokens while sampling
    context_width: int = 2  # how many previous tokens seed the green list

    def __post_init__(self) -> None:
        problem = _problem(self.secret, self.gamma, self.delta, self.context_width)
        if problem:
            raise InputError(f"watermark key: {problem}")

    @property
    def key_id(self) -> str:
        """12 hex digits naming this key (secret and parameters); reveals nothing of it."""
        material = json.dumps(
            [self.secret.hex(), self.gamma, self.delta, self.context_width]
        ).encode()
        return hashlib.blake2b(material, digest_size=6, person=b"stillroom-keyid").hexdigest()

    def __repr__(self) -> str:  # never print the secret by accident (logs, tracebacks)
        return (
            f"WatermarkKey(key_id={self.key_id!r}, gamma={self.gamma}, delta={self.delta}, "
            f"context_width={self.context_width})"
        )


def generate_key(
    *, gamma: float = 0.25, delta: float = 2.0, context_width: int = 2
) -> WatermarkKey:
    """A fresh key with a random secret from the OS's CSPRNG."""
    return WatermarkKey(secrets.token_bytes(SECRET_BYTES), gamma, delta, context_width)


def save_key(key: WatermarkKey, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write `key` to `path` (mode 0600, atomically); refuse an existing file unless told."""
    path = Path(path)
    data = {
        "format": FORMAT,
        "version": VERSION,
        "key_id": key.key_id,
        "secret": key.secret.hex(),
        "gamma": key.gamma,
        "delta": key.delta,
        "context_width": key.context_width,
    }
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist; create it first")
    # mkstemp creates the file 0600, so the secret is never readable by others, even briefly.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:  # link fails if the name exists: no window where a check could go stale
                os.link(tmp, path)
            except FileExistsError:
                raise InputError(
                    f"{path} already exists; choose another file, or overwrite it on purpose "
                    "(--force): text marked with the old key can then no longer be detected"
                ) from None
            finally:
                os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_key(path: str | Path) -> WatermarkKey:
    """Read a key file; every problem names the file, the field and the fix."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(
            f"{name}: no such key file; make one with `stillroom watermark keygen --out {name}`"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{name}: cannot read the key file ({e}); check its permissions") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{name}:{e.lineno}: not valid JSON ({e.msg}); a key file is the JSON object "
            "`stillroom watermark keygen` writes"
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"{name}: holds a JSON {type(data).__name__}, not a key object")
    if "format" not in data:
        raise InputError(
            f"{name}: no 'format' field, so not a key file `stillroom watermark keygen` wrote; "
            f"make one with `stillroom watermark keygen --out {name}`"
        )
    if data["format"] != FORMAT:
        raise InputError(
            f"{name}: format is {data['format']!r}, not {FORMAT!r}; this is not a "
            "stillroom watermark key file"
        )
    if data.get("version") != VERSION:
        raise InputError(
            f"{name}: version is {data.get('version')!r}; this stillroom reads version "
            f"{VERSION}, so upgrade stillroom to read this key"
        )
    fields = _fields(name, data)
    problem = _problem(*fields)
    if problem:
        raise InputError(f"{name}: {problem}")
    key = WatermarkKey(*fields)
    if "key_id" in data and data["key_id"] != key.key_id:
        raise InputError(
            f"{name}: key_id is {data['key_id']!r} but the secret and parameters give "
            f"{key.key_id!r}; the file was edited. Restore the original key file: detection "
            "needs the exact secret, gamma and context_width that marked the text"
        )
    return key


def _fields(name: str, data: dict[str, Any]) -> tuple[bytes, float, float, int]:
    for field in ("secret", "gamma", "delta", "context_width"):
        if field not in data:
            raise InputError(f"{name}: the field {field!r} is missing; restore the key file")
    raw = data["secret"]
    try:
        secret = bytes.fromhex(raw) if isinstance(raw, str) else None
    except ValueError:
        secret = None
    if secret is None:
        raise InputError(
            f"{name}: secret is not a hex string; give the {2 * SECRET_BYTES} hex digits "
            "keygen wrote"
        )
    numbers: list[float] = []
    for field in ("gamma", "delta"):
        value = data[field]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{name}: {field} is {value!r}; give a number")
        numbers.append(float(value))
    width = data["context_width"]
    if isinstance(width, bool) or not isinstance(width, int):
        raise InputError(f"{name}: context_width is {width!r}; give a whole number of tokens")
    return secret, numbers[0], numbers[1], width


def _problem(secret: bytes, gamma: float, delta: float, context_width: int) -> str | None:
    """What is wrong with these key fields, as 'field is X; fix', or None."""
    if len(secret) != SECRET_BYTES:
        return (
            f"secret is {len(secret)} bytes; give {SECRET_BYTES} random bytes "
            f"({2 * SECRET_BYTES} hex digits), e.g. from `stillroom watermark keygen`"
        )
    if not (isinstance(gamma, int | float) and 0.0 < gamma < 1.0):
        return f"gamma is {gamma}; give a fraction between 0 and 1 (e.g. 0.25)"
    if not (isinstance(delta, int | float) and math.isfinite(delta) and delta > 0.0):
        return f"delta is {delta}; give a positive logit bias (e.g. 2.0)"
    if not (isinstance(context_width, int) and 1 <= context_width <= MAX_CONTEXT_WIDTH):
        return (
            f"context_width is {context_width}; give a whole number from 1 to {MAX_CONTEXT_WIDTH}"
        )
    return None
