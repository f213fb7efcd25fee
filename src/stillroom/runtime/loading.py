"""From a model name or folder to a loaded model and tokenizer; no weights load for a tokenizer.

Nothing here imports torch at module level: the watermark detector needs only a tokenizer.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from stillroom.errors import InputError, StillroomError, TeacherFatalError
from stillroom.runtime.gemma import (
    DEFAULT_TEACHER,
    DEFAULT_TEACHER_ALIASES,
    assemble_gguf,
    cache_root_dir,
    default_teacher_dir,
)

# The weight types a model may load in (names of torch dtypes).
DTYPES = ("float32", "bfloat16", "float16")


def resolve_model(path_or_name: str) -> tuple[str | Path, str]:
    """(what to pass to from_pretrained, the model name requests are keyed by)."""
    if path_or_name in DEFAULT_TEACHER_ALIASES:
        return default_teacher_dir(), DEFAULT_TEACHER
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TeacherFatalError(
                f"{path} has no config.json, so it is not a Hugging Face model folder; give "
                f"a folder saved with save_pretrained, or {DEFAULT_TEACHER!r}"
            )
        return path, path_or_name
    hub_id = path_or_name.count("/") == 1 and not path_or_name.startswith((".", "/", "~"))
    if hub_id:  # a hub name: usable only if already in the local Hugging Face cache
        return path_or_name, path_or_name
    raise TeacherFatalError(
        f"no model folder at {path.resolve()}; give the path of a Hugging Face model folder, "
        f"or {DEFAULT_TEACHER!r} for the built-in offline teacher"
    )


def load_lm(path_or_name: str, *, dtype: str = "float32") -> tuple[Any, Any, str]:
    """(causal LM, tokenizer, model name) of a model folder, a cached hub name, or the
    built-in teacher ("gemma-3-270m" / "default")."""
    if dtype not in DTYPES:
        raise TeacherFatalError(f"dtype {dtype!r} is not supported; use one of {list(DTYPES)}")
    source, name = resolve_model(path_or_name)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(
            source, dtype=getattr(torch, dtype), local_files_only=True
        )
    except (OSError, ValueError) as e:
        raise TeacherFatalError(
            f"could not load teacher {path_or_name!r} from {source}: {e}. Give a folder "
            "saved with save_pretrained (config.json, weights, tokenizer), or "
            f"{DEFAULT_TEACHER!r} for the built-in offline teacher"
        ) from e
    return lm, tokenizer, name


@lru_cache(maxsize=4)
def load_tokenizer(name_or_dir: str = DEFAULT_TEACHER) -> Any:
    """The tokenizer of a model, resolved as `load_lm` resolves it; no weights load.

    The built-in Gemma's tokenizer comes from its converted cache folder; before that folder
    exists it is read from the GGUF itself (~15 s, once per process) rather than converting
    the whole model just to tokenize.
    """
    from transformers import AutoTokenizer

    if name_or_dir in DEFAULT_TEACHER_ALIASES:
        cached = cache_root_dir() / DEFAULT_TEACHER
        if not (cached / "config.json").is_file():
            return _gguf_tokenizer()
    try:
        source, _ = resolve_model(name_or_dir)
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except StillroomError as e:
        raise InputError(f"tokenizer: {e}") from e
    except (OSError, ValueError) as e:
        raise InputError(
            f"could not load a tokenizer from {name_or_dir!r}: {e}. Give the teacher's model "
            "folder (with its tokenizer files), or 'gemma-3-270m' for the built-in teacher"
        ) from e


def _gguf_tokenizer() -> Any:
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        gguf = assemble_gguf(Path(tmp))
        return AutoTokenizer.from_pretrained(
            gguf.parent, gguf_file=gguf.name, local_files_only=True
        )


def eos_ids(lm: Any, tokenizer: Any) -> frozenset[int]:
    """Every id that ends a sequence: the generation config's (Gemma: <eos>, <end_of_turn>)
    and the tokenizer's."""
    found: set[int] = set()
    for source in (getattr(lm, "generation_config", None), lm.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(int(v) for v in value)
    return frozenset(found)


def pad_id(tokenizer: Any, eos_token_ids: frozenset[int]) -> int:
    """The id padding is written with: the tokenizer's, else an EOS id (masked out anyway)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return min(eos_token_ids) if eos_token_ids else 0  # masked out anyway; any valid id does
