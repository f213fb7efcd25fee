"""Micro-batching for teachers that answer a list of requests at once.

`complete` is the async, one-request API a server or a harvest calls concurrently; the queue
here gathers those calls into batches for the subclass's synchronous `answer` (run in a
thread), and checks each request against the tokenizer first, so a bad request fails its own
caller and not the batch it would have joined. `LocalTeacher` runs the model in this process;
`ProcessTeacher` runs it in a child process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from stillroom.errors import TeacherFatalError
from stillroom.teachers.base import Completion, TeacherKind, TeacherRequest


@dataclass
class _Pending:
    request: TeacherRequest
    future: asyncio.Future[Completion]
    submitted: float


class QueuedTeacher:
    """A tokenizer, a request queue and `complete`; subclasses give `answer`."""

    kind: TeacherKind = "local"

    def __init__(
        self,
        tokenizer: Any,
        *,
        name: str,
        batch_size: int,
        gather_s: float,
        eos_token_ids: frozenset[int],
        max_positions: int | None,
    ) -> None:
        if batch_size < 1:
            raise TeacherFatalError(f"batch_size is {batch_size}; give a batch_size of 1 or more")
        self.tokenizer = tokenizer
        self.model = name
        self.batch_size = batch_size
        self.concurrency = 2 * batch_size
        # How long the micro-batcher waits for concurrent callers before starting a batch.
        self.gather_s = gather_s
        self.eos_token_ids = eos_token_ids
        self.max_positions = max_positions
        self._tokenizer_lock = threading.Lock()  # fast tokenizers can't encode concurrently
        self._queue: list[_Pending] = []
        self._worker: asyncio.Task[None] | None = None

    def answer(self, requests: list[TeacherRequest]) -> list[Completion]:
        """Every request's completion, in order (blocking; runs in a worker thread)."""
        raise NotImplementedError

    async def complete(self, request: TeacherRequest) -> Completion:
        """Queue one request; concurrent callers with equal params share a `generate` batch."""
        self._encode(request)  # a bad request fails its own caller, not a whole batch
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Completion] = loop.create_future()
        worker = self._worker
        if worker is None or worker.done() or worker.get_loop() is not loop:
            # Entries of a closed event loop can never be answered; forget them.
            self._queue = [p for p in self._queue if p.future.get_loop() is loop]
            self._worker = loop.create_task(self._serve_queue())
        self._queue.append(_Pending(request, future, time.perf_counter()))
        return await future

    async def _serve_queue(self) -> None:
        batch: list[_Pending] = []
        try:
            while self._queue:
                await asyncio.sleep(self.gather_s)  # let callers that arrive together batch
                batch = self._take_batch()
                if batch:
                    await self._run_batch(batch)
        except asyncio.CancelledError:  # the event loop is going away: nobody waits forever
            for p in batch + self._queue:
                p.future.cancel()
            raise

    async def _run_batch(self, batch: list[_Pending]) -> None:
        try:
            results = await asyncio.to_thread(self.answer, [p.request for p in batch])
        except Exception as e:  # the batch's callers get the error; the queue goes on
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        now = time.perf_counter()
        for p, completion in zip(batch, results, strict=True):
            completion.latency_s = now - p.submitted  # queueing included, as an API's
            if not p.future.done():
                p.future.set_result(completion)

    def _take_batch(self) -> list[_Pending]:
        """The oldest request plus the next ones with equal params (seeds aside), up to
        batch_size rows."""
        self._queue = [p for p in self._queue if not p.future.done()]  # cancelled callers
        if not self._queue:
            return []
        first = self._queue[0].request
        kind = (first.params.batch_key(), first.candidates)
        batch: list[_Pending] = []
        rest: list[_Pending] = []
        for p in self._queue:
            fits = not batch or (len(batch) + 1) * first.params.n <= self.batch_size
            same = (p.request.params.batch_key(), p.request.candidates) == kind
            (batch if same and fits else rest).append(p)
        self._queue = rest
        return batch

    async def aclose(self) -> None:
        """Answer what is queued; the model stays loaded for the synchronous methods."""
        worker = self._worker
        if worker and not worker.done() and worker.get_loop() is asyncio.get_running_loop():
            await worker
        self._worker = None

    # ---- tokenization -------------------------------------------------------------

    def _encode(self, request: TeacherRequest) -> list[int]:
        """Prompt token ids: a plain prompt as is, chat messages through the chat template."""
        if request.messages is not None:
            if getattr(self.tokenizer, "chat_template", None) is None:
                raise TeacherFatalError(
                    f"teacher {self.model!r} has no chat template, so it cannot take chat "
                    "messages; send plain prompts, or add a chat_template to its tokenizer",
                    status=400,
                )
            messages = [{"role": role, "content": content} for role, content in request.messages]
            with self._tokenizer_lock:
                text = self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            ids = self._encode_text(text, special=False)  # the template wrote <bos>
        elif request.prompt is not None:
            ids = self._encode_text(request.prompt, special=True)
        else:
            raise TeacherFatalError(
                "a request needs a prompt or messages; it had neither", status=400
            )
        if not ids:
            raise TeacherFatalError("the prompt is empty; give some text to continue", status=400)
        if self.max_positions is not None and len(ids) >= self.max_positions:
            raise TeacherFatalError(
                f"the prompt is {len(ids)} tokens but {self.model!r} reads at most "
                f"{self.max_positions}; shorten the prompt",
                status=400,
            )
        return ids

    def _encode_text(self, text: str, *, special: bool) -> list[int]:
        with self._tokenizer_lock:
            return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def _decode_text(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))
