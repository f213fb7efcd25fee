"""The teacher section of a config: one model per `teacher.kind`, each with only its own keys.

Pydantic picks the model by `kind` (a discriminated union), so a key of another kind is an
unknown key here, reported with the kind it belongs to (`stillroom.config`). Readers ask
what a kind can do (`is_local`) or check its type, never compare kind strings.

A new kind is a model below (its own `kind` literal), added to `TeacherConfig`, and its
builder registered in `stillroom.teachers.BUILDERS`. It sits below `stillroom.config` and
`stillroom.teachers`, and imports neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_KIND = "local"  # a teacher section without `kind:`, as before kinds were models


class _TeacherBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Weights and tokenizer on this machine: calls cost no money, records carry the
    # teacher's own token ids, and a student (or eval) can load the teacher's folder.
    is_local: ClassVar[bool] = False


class ApiTeacherConfig(_TeacherBase):
    """Any OpenAI-compatible API (OpenAI, vLLM, llama.cpp, Ollama, `stillroom serve`)."""

    kind: Literal["api"] = "api"
    model: str = "gemma-3-270m"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    endpoint: Literal["chat", "completions"] = "chat"
    # Ask for token ids (vLLM's return_token_ids and return_tokens_as_token_ids; stillroom
    # serve answers both): the store then keeps ids as for a local teacher, so a student
    # sharing the served model's tokenizer trains with objective: logits.
    token_ids: bool = False
    # The served model's folder on this machine (config.json and tokenizer; weights only to
    # shrink a student from it): the reference a student's token ids are mapped to, so a
    # trimmed or pretrained student can be scored on-policy by the API by token id.
    folder: str | None = None
    concurrency: int = Field(32, ge=1, le=4096)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    max_retries: int = Field(6, ge=0, le=100)
    retry_backoff_s: float = Field(0.5, ge=0)
    timeout_s: float = Field(120.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        """An OpenAI-compatible API is reached over HTTP(S); anything else is a typo found
        before the first call, not an outage retried for minutes."""
        if url is None:
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"{url!r} is not an http:// or https:// URL; give the API's base URL, "
                "e.g. http://127.0.0.1:8000/v1"
            )
        return url

    def folder_problems(self) -> list[str]:
        """What is wrong with `folder`, known before any call: it must hold config.json."""
        if self.folder is None or (Path(self.folder) / "config.json").is_file():
            return []
        return [
            f"teacher.folder: {self.folder} has no config.json; point it at a local copy of "
            "the served model's folder (its config.json and tokenizer files)"
        ]


class LocalTeacherConfig(_TeacherBase):
    """A Hugging Face model folder (or the default teacher's name) run in this process."""

    is_local: ClassVar[bool] = True

    kind: Literal["local"] = "local"
    model: str = "gemma-3-270m"  # a model folder, or the default teacher's name
    batch_size: int = Field(16, ge=1, le=1024)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


TeacherConfig = Annotated[ApiTeacherConfig | LocalTeacherConfig, Field(discriminator="kind")]

# kind -> its model, read off the union so the two cannot disagree
TEACHER_KINDS: dict[str, type[_TeacherBase]] = {
    get_args(cls.model_fields["kind"].annotation)[0]: cls
    for cls in get_args(get_args(TeacherConfig)[0])
}


def kinds_with_key(key: str) -> list[str]:
    """The kinds that have `key`, for naming them when another kind is given it."""
    return [kind for kind, cls in TEACHER_KINDS.items() if key in cls.model_fields]
