"""A local model served from a child process, so the caller's event loop never waits on it.

In one process, a model's forward pass holds the GIL for much of its Python-level work
(module calls, the sampling loop), and an asyncio server sharing that process waits up to a
GIL switch interval (5 ms) at every hand-off: the gateway's own per-request overhead grew to
tens of milliseconds at load. Here the model runs in a spawned process that owns the torch
threads; this side keeps the tokenizer (to check each request before it joins a batch) and
the micro-batching queue, and a worker thread waits on the pipe with the GIL released.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import threading
from multiprocessing.connection import Connection
from typing import Any

from stillroom.errors import TeacherFatalError
from stillroom.runtime.prompt_logprobs import TextLogprobs
from stillroom.teachers.base import Completion, TeacherRequest
from stillroom.teachers.batching import QueuedTeacher
from stillroom.watermark.key import WatermarkKey

_START_TIMEOUT_S = 600.0  # a first start may convert the built-in model
_NICENESS = 5


class ProcessTeacher(QueuedTeacher):
    """`LocalTeacher.load(...)` in a child process, answering batches sent over a pipe."""

    def __init__(
        self,
        path_or_name: str,
        *,
        dtype: str = "float32",
        batch_size: int = 16,
        gather_s: float = 0.002,
        watermark: WatermarkKey | None = None,
        threads: int | None = None,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")  # a forked torch runtime can deadlock
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(
            target=_serve,
            args=(child, path_or_name, dtype, batch_size, watermark, threads),
            name="stillroom-model",
            daemon=True,  # never outlives the server
        )
        self._process.start()
        child.close()
        if not self._conn.poll(_START_TIMEOUT_S):
            self._process.kill()
            raise TeacherFatalError(f"the model process did not start in {_START_TIMEOUT_S:.0f} s")
        kind, payload = _receive(self._conn, self._process)
        if kind == "error":
            self._process.join()
            raise payload
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(payload["tokenizer_dir"], local_files_only=True)
        super().__init__(
            tokenizer,
            name=payload["name"],
            batch_size=batch_size,
            gather_s=gather_s,
            eos_token_ids=frozenset(payload["eos_token_ids"]),
            max_positions=payload["max_positions"],
        )
        self.watermark = watermark
        self.vocab_size: int = payload["vocab_size"]
        self._pipe_lock = threading.Lock()  # one batch in flight: the model runs one at a time

    def answer(self, requests: list[TeacherRequest]) -> list[Completion]:
        return list(self._call("answer", requests))

    def prompt_logprobs(self, prompts: list[str], k: int) -> list[TextLogprobs]:
        """LocalTeacher.prompt_logprobs in the child: what `echo` with `logprobs` returns."""
        return list(self._call("prompt_logprobs", (prompts, k)))

    def sequence_logprobs(self, sequences: list[list[int]], k: int) -> list[TextLogprobs]:
        """LocalTeacher.sequence_logprobs in the child: token-id prompts scored as given."""
        return list(self._call("sequence_logprobs", (sequences, k)))

    def _call(self, op: str, payload: Any) -> Any:
        with self._pipe_lock:
            if not self._process.is_alive():
                raise TeacherFatalError(
                    f"the model process has exited (code {self._process.exitcode}); "
                    "restart the server"
                )
            self._conn.send((op, payload))
            kind, result = _receive(self._conn, self._process)
        if kind == "error":
            raise result
        return result

    def close(self) -> None:
        """Stop the model process (idempotent)."""
        if self._process.is_alive():
            # The child may be gone already.
            with self._pipe_lock, contextlib.suppress(OSError):
                self._conn.send(("stop", None))
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._conn.close()

    async def aclose(self) -> None:
        await super().aclose()
        self.close()


def _receive(conn: Connection, process: Any) -> tuple[str, Any]:
    try:
        kind, payload = conn.recv()
        return str(kind), payload
    except EOFError:
        process.join(timeout=5)
        raise TeacherFatalError(
            f"the model process died (exit code {process.exitcode}); see its error above, "
            "then restart the server"
        ) from None


def _portable(error: BaseException) -> BaseException:
    """The error itself if it survives pickling, else a TeacherFatalError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return TeacherFatalError(f"{type(error).__name__}: {error}")
    return error


def _serve(
    conn: Connection,
    path_or_name: str,
    dtype: str,
    batch_size: int,
    watermark: WatermarkKey | None,
    threads: int | None,
) -> None:
    """The child: load the model, say what the parent needs, then answer until told to stop."""
    import torch

    from stillroom.runtime.loading import resolve_model
    from stillroom.teachers.local import LocalTeacher

    if threads is not None:
        torch.set_num_threads(threads)
    # Below the server's priority: its event loop's short bursts of work are scheduled ahead
    # of a forward pass, and the model still has every cycle the server leaves idle.
    with contextlib.suppress(OSError):
        os.nice(_NICENESS)
    try:
        teacher = LocalTeacher.load(
            path_or_name, dtype=dtype, batch_size=batch_size, watermark=watermark
        )
        source, _ = resolve_model(path_or_name)
    except Exception as e:
        conn.send(("error", _portable(e)))
        return
    conn.send(
        (
            "ready",
            {
                "name": teacher.model,
                "tokenizer_dir": str(source),
                "eos_token_ids": sorted(teacher.eos_token_ids),
                "max_positions": teacher.max_positions,
                "vocab_size": teacher.vocab_size,
            },
        )
    )
    while True:
        try:
            kind, payload = conn.recv()
        except EOFError:  # the parent is gone
            return
        if kind == "stop":
            return
        ops = {"answer": lambda p: teacher.answer(p),
               "prompt_logprobs": lambda p: teacher.prompt_logprobs(*p),
               "sequence_logprobs": lambda p: teacher.sequence_logprobs(*p)}  # fmt: skip
        try:
            conn.send(("ok", ops[kind](payload)))
        except Exception as e:  # the batch's callers get the error; the model goes on
            conn.send(("error", _portable(e)))
