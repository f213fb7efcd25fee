"""A suspect model to question: an OpenAI-compatible endpoint (black box) or an HF folder."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol


class Suspect(Protocol):
    name: str

    def answer(
        self, prompts: list[str], *, max_tokens: int, temperature: float, seed: int
    ) -> list[str]: ...


class LocalSuspect:
    """Open weights: a model folder, run here with the same sampling loop as the teacher.

    Two roles, each loaded on first use: `teacher` is the model as asked for (`dtype`,
    `batch_size`; float32 by default), which whoever reads the suspect's log-probs uses (the
    mass and read traces); `answer` samples from a copy loaded for speed:

    - in bfloat16 where the CPU computes in it natively (avx512_bf16 / AMX), else as
      `dtype`: the 262k-wide output layer is most of each step, and bfloat16 halves the bytes
      it reads (~3x faster here). Rounding the suspect's logits does not depend on any key,
      so a trace's null holds; answers are still drawn from the suspect's own distribution at
      the requested temperature, as a bfloat16 deployment of it would give them;
    - 64 answers at a time, keeping no log-probs (only the text is read);
    - on `threads` torch threads (None: as torch is set). One by default: a step is hundreds
      of small ops on (batch, hidden) tensors that gain little from more threads, and when
      another process holds a core every op waits for the descheduled thread (on a busy
      2-core machine, two threads took 4x the CPU time and the wall time).

    Built around an already loaded `teacher` (folder None), it answers with that teacher.
    """

    folder: str | None = None
    threads: int | None = 1
    _teacher: Any = None
    _answerer: Any = None

    def __init__(
        self,
        folder: str,
        batch_size: int = 16,
        dtype: str = "float32",
        *,
        answer_batch: int = 64,
        answer_dtype: str | None = None,
        threads: int | None = 1,
    ) -> None:
        from stillroom.runtime.loading import resolve_model

        resolve_model(folder)  # a folder that is not a model fails now, before any question
        self.folder, self.name, self.threads = folder, folder, threads
        self._loads = {
            "teacher": (batch_size, dtype),
            "answerer": (answer_batch, answer_dtype or suspect_dtype(dtype)),
        }

    @property
    def teacher(self) -> Any:
        """The model as asked for: a LocalTeacher, loaded on first use."""
        if self._teacher is None:
            self._teacher = self._load("teacher")
        return self._teacher

    @teacher.setter
    def teacher(self, loaded: Any) -> None:
        self._teacher, self._answerer = loaded, None

    @property
    def answerer(self) -> Any:
        """The LocalTeacher that samples the answers (see the class docstring)."""
        if self.folder is None:
            return self.teacher
        if self._answerer is None:
            self._answerer = self._load("answerer")
        return self._answerer

    @property
    def batch_size(self) -> int:
        """How many answers are sampled at once: a caller's natural unit of progress."""
        return int(self.answerer.batch_size)

    def _load(self, role: str) -> Any:
        from stillroom.teachers.local import LocalTeacher

        assert self.folder is not None
        batch_size, dtype = self._loads[role]
        return LocalTeacher.load(self.folder, batch_size=batch_size, dtype=dtype)

    def answer(
        self, prompts: list[str], *, max_tokens: int, temperature: float, seed: int
    ) -> list[str]:
        from stillroom.teachers.base import GenerationParams, TeacherRequest

        model = self.answerer
        chat = getattr(model.tokenizer, "chat_template", None) is not None
        params = GenerationParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
        requests = [
            TeacherRequest(None, (("user", p),), params)
            if chat
            else TeacherRequest(p, None, params)
            for p in prompts
        ]
        with torch_threads(self.threads):
            done = model.generate(requests, logprobs=False)
        return [c.choices[0].text for c in done]


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `count` for the block, then restored."""
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def suspect_dtype(otherwise: str = "float32") -> str:
    """bfloat16 where this CPU has native bfloat16 arithmetic, else `otherwise`."""
    import torch

    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        native = False
    return "bfloat16" if native else otherwise


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
