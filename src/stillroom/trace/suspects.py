"""A suspect model to question: an OpenAI-compatible endpoint (black box) or an HF folder."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol


class Suspect(Protocol):
    name: str

    def answer(
        self, prompts: list[str], *, max_tokens: int, temperature: float, seed: int
    ) -> list[str]: ...


class LocalSuspect:
    """Open weights: a model folder, run here with the same sampling loop as the teacher."""

    def __init__(self, folder: str, batch_size: int = 16) -> None:
        from stillroom.teachers.local import LocalTeacher

        self.teacher = LocalTeacher.load(folder, batch_size=batch_size)
        self.name = folder

    def answer(
        self, prompts: list[str], *, max_tokens: int, temperature: float, seed: int
    ) -> list[str]:
        from stillroom.teachers.base import GenerationParams, TeacherRequest

        chat = getattr(self.teacher.tokenizer, "chat_template", None) is not None
        params = GenerationParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
        requests = [
            TeacherRequest(None, (("user", p),), params)
            if chat
            else TeacherRequest(p, None, params)
            for p in prompts
        ]
        return [c.choices[0].text for c in self.teacher.generate(requests)]


class ApiSuspect:
    """Black box: any OpenAI-compatible chat endpoint."""

    def __init__(
        self, base_url: str, model: str, api_key: str | None, concurrency: int = 8
    ) -> None:
        self.base_url, self.api_key = base_url, api_key or "none"
        self.model = model
        self.name = f"{model} at {base_url}"
        self.concurrency = concurrency

    def answer(
        self, prompts: list[str], *, max_tokens: int, temperature: float, seed: int
    ) -> list[str]:
        return asyncio.run(self._answer(prompts, max_tokens, temperature, seed))

    async def _answer(
        self, prompts: list[str], max_tokens: int, temperature: float, seed: int
    ) -> list[str]:
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=4)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(i: int, prompt: str) -> str:
            async with sem:
                reply: Any = await client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=seed + i,
                )
                return str(reply.choices[0].message.content or "")

        try:
            return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))
        finally:
            await client.close()


def open_suspect(spec: str, *, model: str | None, api_key: str | None) -> Suspect:
    """A folder path is open weights; an http(s) URL is an API (needs --model)."""
    from stillroom.errors import InputError

    if spec.startswith(("http://", "https://")):
        if not model:
            raise InputError(f"suspect {spec} is an API: name the model to ask with --model")
        return ApiSuspect(spec, model, api_key)
    if Path(spec).is_dir() or spec in ("gemma-3-270m", "default"):
        return LocalSuspect(spec)
    raise InputError(
        f"suspect {spec!r} is neither a model folder nor an http(s) URL; give a folder saved "
        "with save_pretrained, or the base URL of an OpenAI-compatible API"
    )


class LazySuspect:
    """A candidate or reference model, loaded only while it answers: comparing several
    model folders never holds more than one of them (and the suspect) in memory."""

    def __init__(self, spec: str, name: str, api_key: str | None) -> None:
        self.spec, self.name, self.api_key = spec, name, api_key

    def answer(
        self, prompts: list[str], *, max_tokens: int, temperature: float, seed: int
    ) -> list[str]:
        # An API is asked for the model called NAME, as --candidate NAME=URL says.
        model = open_suspect(self.spec, model=self.name, api_key=self.api_key)
        return model.answer(prompts, max_tokens=max_tokens, temperature=temperature, seed=seed)


def parse_named(specs: list[str], option: str) -> dict[str, str]:
    """['a=models/a', 'b=http://host/v1'] -> {'a': 'models/a', 'b': 'http://host/v1'}."""
    from stillroom.errors import InputError

    out: dict[str, str] = {}
    for spec in specs:
        name, sep, where = (part.strip() for part in spec.partition("="))
        if not sep or not name or not where:
            raise InputError(
                f"{option} {spec!r}: give NAME=FOLDER_OR_URL, e.g. {option} gemma=models/gemma"
            )
        if name in out:
            raise InputError(f"{option} {name!r} is given twice; give each model its own name")
        out[name] = where
    return out
