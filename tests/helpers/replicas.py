"""Several `stillroom serve` processes on one gateway database, as replicas behind a load
balancer would run: for the replica tests and benchmark."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx

from tests.helpers.serve import free_port

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def burst(roots: list[str], key: str | None, n: int) -> list[httpx.Response]:
    """`n` chat requests at once, dealt round-robin to the replicas."""
    async with httpx.AsyncClient(timeout=30) as client:
        calls = [
            client.post(
                f"{roots[i % len(roots)]}/v1/chat/completions", json=CHAT, headers=auth(key)
            )
            for i in range(n)
        ]
        return list(await asyncio.gather(*calls))


@contextmanager
def fake_upstream(latency: float = 0.0) -> Iterator[str]:
    """The fake OpenAI server in its own process (so it takes no GIL from the clients);
    yield its base URL once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stillroom.testing.fake_openai", "--latency", str(latency)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@contextmanager
def gateway_process(upstream: str, db: str, *flags: str) -> Iterator[str]:
    """`python -m stillroom serve --upstream ... --db ...` on a free port; yield its root URL
    once /health answers."""
    with gateway_popen(upstream, db, *flags) as (root, _):
        yield root


@contextmanager
def gateway_popen(
    upstream: str, db: str, *flags: str
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`gateway_process`, also yielding the process (its pid, for /proc)."""
    port = free_port()
    args = ["serve", "--upstream", upstream, "--db", db, "--port", str(port), *flags]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stillroom", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    root = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(root, proc)
        yield root, proc
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


@contextmanager
def gateway_processes(n: int, upstream: str, db: str, *flags: str) -> Iterator[list[str]]:
    """`n` gateway processes, the same flags each; yield their root URLs."""
    with ExitStack() as stack:
        yield [stack.enter_context(gateway_process(upstream, db, *flags)) for _ in range(n)]


def _wait_healthy(root: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited: {proc.communicate()[1][-2000:]}")
        try:
            if httpx.get(f"{root}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the gateway did not start within 60 s")
