"""Each model eval times lives in a process of its own, loaded once and driven over a pipe.

Why a process per model:

- Memory. A model's cost is the memory its process holds while it serves: the weights as
  loaded, the activations of its largest batch, the tokenizer and the runtime's buffers.
  The child records its resident size with torch imported and nothing loaded, loads the
  model, hands back what loading freed (copies made to change precision, the file's pages
  read once), resets the kernel's peak counter (VmHWM) and reports the peak above that
  first level after serving. Measured from inside one shared process instead, the figure
  is the *rise* of its resident size, which misses whatever the process already held (a
  model loaded second reuses pages the first one freed, and can look almost free).
- Timing. All models are loaded at once and each is idle while another runs, so rounds
  can interleave them (evaluate/rounds.py) and a busy machine slows them alike; no model
  runs in the shadow of another's allocations or thread pools.

A `ModelSpec` names a module-level loader (pickled by reference into a fresh interpreter)
and its arguments; the loader returns a `Served`: `run(chunk)` serves one batch, `predict()`
returns what quality is scored on, `info` the model's size.
"""

from __future__ import annotations

import os
import pickle
import select
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stillroom.evaluate.efficiency import (
    PeakMemory,
    peak_rss_mb,
    release_freed_memory,
    reset_peak_rss,
    rss_mb,
)

START_TIMEOUT_S = 1800.0  # a large teacher on a slow disk still loads within this


class Served(Protocol):
    info: dict[str, Any]  # params, disk_mb, dtype, weights_mb

    def run(self, chunk: Sequence[Any]) -> Any: ...

    def predict(self) -> Any: ...


@dataclass(frozen=True)
class ModelSpec:
    load: Callable[..., Served]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    # A Hugging Face folder whose architecture's code is imported before memory is counted
    # (transformers imports a model type's code on its first load).
    code_of: Path | None = None


class WorkerError(RuntimeError):
    """A model's process failed in a way that cannot be sent back as the error itself."""


class Worker:
    """One model in its own process; `call` runs a command there and returns its answer.

    The child is a fresh interpreter (`python -m stillroom.evaluate.workers`), not a fork:
    forking a process with torch's thread pools running can hang, and multiprocessing's
    spawn would import the caller's main script again. Messages are pickled over two pipes
    of their own, so nothing the child prints can mix with them.
    """

    def __init__(self, spec: ModelSpec) -> None:
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        command = [sys.executable, "-m", "stillroom.evaluate.workers", str(down_r), str(up_w)]
        # The child's own output goes to stderr: stdout is the CLI's data.
        self._proc = subprocess.Popen(command, pass_fds=(down_r, up_w), env=env,
                                      stdin=subprocess.DEVNULL, stdout=2)  # fmt: skip
        os.close(down_r)
        os.close(up_w)
        self._to, self._from = os.fdopen(down_w, "wb"), os.fdopen(up_r, "rb")
        self._send(spec)
        self.info: dict[str, Any] = {}

    def ready(self) -> dict[str, Any]:
        """Wait for the model to load; its size and the memory loading it left held."""
        if not select.select([self._from], [], [], START_TIMEOUT_S)[0]:
            raise WorkerError(f"a model did not load within {START_TIMEOUT_S:.0f} s")
        self.info = self._answer()
        return self.info

    def call(self, command: str, *args: Any) -> Any:
        self._send((command, args))
        return self._answer()

    def close(self) -> None:
        with suppress(OSError):  # the child already gone
            self._send(("stop", ()))
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for f in (self._to, self._from):
            with suppress(OSError):
                f.close()

    def _send(self, message: Any) -> None:
        pickle.dump(message, self._to)
        self._to.flush()

    def _answer(self) -> Any:
        try:
            status, value = pickle.load(self._from)
        except EOFError:
            code = self._proc.wait()
            raise WorkerError(f"a model's process exited with code {code}") from None
        if status == "error":
            raise value
        return value


@contextmanager
def workers(specs: dict[str, ModelSpec]) -> Iterator[dict[str, Worker]]:
    """Start every model's process (they load side by side) and stop them all at the end."""
    with ExitStack() as stack:
        started: dict[str, Worker] = {}
        for role, spec in specs.items():
            started[role] = Worker(spec)
            stack.callback(started[role].close)
        for w in started.values():
            w.ready()
        yield started


# ---------------------------------------------------------------- inside the child


class _Child:
    def __init__(self, served: Served, base_mb: float) -> None:
        self.served, self.base_mb = served, base_mb
        self.sampler: PeakMemory | None = None
        self.batches: list[Sequence[Any]] = []
        self.singles: Sequence[Any] = ()

    def predict(self) -> Any:
        return self.served.predict()

    def calibrate(self, batches: list[Sequence[Any]], singles: Sequence[Any]) -> list[float]:
        """Keep the batches to time and the items to time alone; warm up on each batch
        once (first calls at a new shape are not the steady state): seconds each."""
        self.batches, self.singles = batches, singles
        spent = []
        for chunk in batches:
            start = time.perf_counter()
            self.served.run(chunk)
            spent.append(time.perf_counter() - start)
        return spent

    def slice(self, first: int, seconds: float, single: int | None) -> tuple[list[float], float]:
        """Batches first, first + 1, ... (wrapping around) until `seconds` are spent, one
        at least: seconds each; then item `single` alone: ms (nan for none). A turn lasts
        as long for every model, so each starts as many turns with caches another model
        has just used."""
        spent: list[float] = []
        while not spent or sum(spent) < seconds:
            start = time.perf_counter()
            self.served.run(self.batches[(first + len(spent)) % len(self.batches)])
            spent.append(time.perf_counter() - start)
        if single is None:
            return spent, float("nan")
        start = time.perf_counter()
        self.served.run([self.singles[single]])
        return spent, (time.perf_counter() - start) * 1e3

    def memory(self) -> tuple[float, float]:
        """Resident MB above the level before the model was loaded: the peak while serving,
        and what is held now, after serving."""
        release_freed_memory()
        held = rss_mb() - self.base_mb
        if self.sampler is not None:
            return self.sampler.peak - self.base_mb, held
        return (peak_rss_mb() or rss_mb()) - self.base_mb, held


def child_main(down: int, up: int) -> None:
    """The child's side: load the model the first message names, then answer commands."""
    with os.fdopen(down, "rb") as inbox, os.fdopen(up, "wb") as outbox:

        def send(message: Any) -> None:
            pickle.dump(message, outbox)
            outbox.flush()

        try:
            spec = pickle.load(inbox)
            child = _load(spec)
            send(("ok", child.served.info | {"loaded_mb": rss_mb() - child.base_mb}))
            while True:
                command, args = pickle.load(inbox)
                if command == "stop":
                    return
                send(("ok", getattr(child, command)(*args)))
        except EOFError:
            return  # the parent is gone
        except BaseException as exc:  # every failure goes back to the parent
            send(("error", _sendable(exc)))


def _load(spec: ModelSpec) -> _Child:
    """Load the model, counting its memory from the level of a process with its code
    imported (the spec's module, unpickled already) and torch's runtime started."""
    _warm_runtime()
    if spec.code_of is not None and (spec.code_of / "config.json").is_file():
        _import_code(spec.code_of)  # without one, the loader says what is wrong
    base = rss_mb()
    served = spec.load(*spec.args, **spec.kwargs)
    release_freed_memory()
    child = _Child(served, base)
    if not reset_peak_rss():  # no VmHWM reset here: sample the peak from now on
        child.sampler = PeakMemory().__enter__()
        child.sampler.base = base
    return child


def _warm_runtime() -> None:
    """Start what torch starts on first use, whatever the model: its thread pool and the
    math libraries' buffers, which would otherwise be counted as the first model's."""
    import torch

    x = torch.randn(64, 512)
    for dtype in (torch.float32, torch.bfloat16):
        torch.nn.functional.linear(x.to(dtype), x.to(dtype)).softmax(-1)


def _import_code(folder: Path) -> None:
    """Import everything loading `folder` imports, by building its architecture on the meta
    device (no memory for weights) and touching the tokenizer classes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        AutoModelForCausalLM.from_config(config)
    import transformers.processing_utils  # noqa: F401  # what AutoTokenizer imports lazily


def _sendable(exc: BaseException) -> BaseException:
    """The error itself when it survives pickling (a StillroomError keeps its type for the
    CLI), else a WorkerError carrying its traceback."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return WorkerError("".join(traceback.format_exception(exc)))
    return exc


if __name__ == "__main__":
    # Run under its package name, so the errors it sends back unpickle in the parent.
    from stillroom.evaluate.workers import child_main

    child_main(int(sys.argv[1]), int(sys.argv[2]))
