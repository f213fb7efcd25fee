"""Request bodies of the OpenAI-compatible endpoints, validated by pydantic.

Ranges follow OpenAI's documented limits, so a client that works against OpenAI works here,
and one that sends what OpenAI would refuse gets the same kind of 400.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 16
MAX_STOP = 4


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200)
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    # vLLM's extension: each choice also carries its token ids and its prompt's.
    return_token_ids: bool | None = None

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, v: str | list[str] | None) -> str | list[str] | None:
        if v is not None and (v == "" or (isinstance(v, list) and any(s == "" for s in v))):
            raise ValueError("stop sequences must be non-empty strings")
        return v

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # vLLM's extension: tokens in log-probs as "token_id:N", so a client gets exact ids
    # (decoded strings collide: several ids can decode to the same text).
    return_tokens_as_token_ids: bool | None = None

    @model_validator(mode="after")
    def _logprobs_needed(self) -> ChatRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def wants_logprobs(self) -> bool:
        return self.logprobs

    def ids_as_tokens(self) -> bool:
        return bool(self.return_tokens_as_token_ids)

    def top_k(self) -> int:
        return (self.top_logprobs or 0) if self.logprobs else 0


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(_Sampling):
    # Text, several texts, or (as OpenAI and vLLM accept) token ids: one list, or several.
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=MAX_N)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_N)]
    )
    # OpenAI caps this at 5; 20 is vLLM's default cap, and what chat's top_logprobs allows.
    logprobs: int | None = Field(None, ge=0, le=20)
    # With echo the reply starts with the prompt, and with logprobs it carries the model's
    # log-prob of every prompt token (the first has none) and the top alternatives: the
    # model's distribution over a given text. max_tokens 0 then scores the prompt only.
    echo: bool = False
    max_tokens: int | None = Field(None, ge=0)
    return_tokens_as_token_ids: bool | None = None

    @model_validator(mode="after")
    def _zero_tokens_only_with_echo(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens 0 generates nothing; it needs echo: true")
        return self

    def prompts(self) -> list[str]:
        """The text prompts (none when the prompt is token ids)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        return [p for p in self.prompt if isinstance(p, str)]

    def token_prompts(self) -> list[list[int]] | None:
        """The prompts as token id lists, when they were sent as ids."""
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], str):
            return None
        if isinstance(self.prompt[0], int):
            return [[int(i) for i in self.prompt]]
        return [list(p) for p in self.prompt]

    def token_limit(self) -> int | None:
        return self.max_tokens

    def wants_logprobs(self) -> bool:
        return self.logprobs is not None

    def ids_as_tokens(self) -> bool:
        return bool(self.return_tokens_as_token_ids)

    def top_k(self) -> int:
        return self.logprobs or 0
