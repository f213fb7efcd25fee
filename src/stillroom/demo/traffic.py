"""The story's API traffic: ordinary users, and a distiller spread over several accounts.

Everything here goes through the gateway's real HTTP API with the official `openai` client,
so the request log the audit reads is the one a provider would have. Benign users ask what
people ask a small assistant, a few requests each, paced out over the harvest; the distiller
runs `stillroom harvest` with its calls dealt round-robin over its accounts (what a "hydra"
harvester does to stay under per-account limits).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import openai

from stillroom.teachers.base import Completion, TeacherKind, TeacherRequest

# Everyday requests; {w} is a WordNet headword, so users and the distiller share a vocabulary.
CHAT_ASKS = (
    "Can you suggest a name for my new {w} blog?",
    "Tell me one fun fact about {w}.",
    "How do you say {w} in French?",
    "Write a two-line poem about {w}.",
    "Is {w} a good topic for a school project?",
    "Give me three words that rhyme with {w}.",
    "What should I pack for a weekend trip?",
    "Help me write a polite email declining a meeting.",
    "What is a quick dinner I can cook in 15 minutes?",
    "Explain the offside rule in football simply.",
    "Suggest a stretching routine for the morning.",
    "How can I keep my houseplants alive in winter?",
)
DEV_PROMPTS = (
    "def parse_{w}(text):\n    ",
    "# Python: read a CSV file of {w} records and count rows\n",
    "SELECT name, COUNT(*) FROM {w} GROUP BY",
    "// JavaScript: debounce a function\nfunction debounce(",
    "Docstring for a function that validates a {w} id:\n",
)


AGENTS = (
    "OpenAI/Python 1.52.2",
    "OpenAI/Python 1.68.0",
    "OpenAI/NodeJS 4.56.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0 Safari/537.36",
)


@dataclass(frozen=True)
class User:
    name: str
    key: str
    kind: str  # "chat" or "developer"
    requests: int
    address: str  # sent as X-Forwarded-For, as a load balancer in front of the gateway would
    agent: str


def plan_users(names_keys: list[tuple[str, str]], low: int, high: int, seed: int) -> list[User]:
    """Two users in three chat, one in three a developer; each sends low..high requests
    from an address and client of its own (documentation ranges, RFC 5737)."""
    rng = random.Random(seed)
    return [
        User(
            name,
            key,
            "developer" if i % 3 == 2 else "chat",
            rng.randint(low, high),
            f"{rng.choice(('192.0.2', '203.0.113'))}.{rng.randint(1, 254)}",
            rng.choice(AGENTS),
        )
        for i, (name, key) in enumerate(names_keys)
    ]


def client_for(
    base_url: str, key: str, address: str, agent: str, timeout: float = 600.0
) -> openai.AsyncOpenAI:
    headers = {"X-Forwarded-For": address, "User-Agent": agent}
    return openai.AsyncOpenAI(
        base_url=base_url, api_key=key, max_retries=0, timeout=timeout, default_headers=headers
    )


async def run_users(
    base_url: str,
    model: str,
    users: list[User],
    words: list[str],
    span_s: float,
    seed: int,
    timeout: float = 600.0,
) -> dict[str, int]:
    """Every user's requests, spread at random over `span_s` seconds; status counts (a
    request past `timeout` seconds counts as "timeout")."""
    rng = random.Random(seed)
    statuses: dict[str, int] = {}

    async def one_user(user: User) -> None:
        client = client_for(base_url, user.key, user.address, user.agent, timeout)
        times = sorted(rng.uniform(0, span_s) for _ in range(user.requests))
        start = asyncio.get_running_loop().time()
        try:
            for at in times:
                await asyncio.sleep(max(0.0, start + at - asyncio.get_running_loop().time()))
                word = rng.choice(words)
                try:
                    if user.kind == "chat":
                        ask = rng.choice(CHAT_ASKS).format(w=word)
                        await client.chat.completions.create(
                            model=model,
                            messages=[{"role": "user", "content": ask}],
                            max_tokens=rng.choice((24, 32, 48)),
                            temperature=rng.choice((0.7, 1.0)),
                        )
                    else:
                        prompt = rng.choice(DEV_PROMPTS).format(w=word.replace(" ", "_"))
                        await client.completions.create(
                            model=model, prompt=prompt, max_tokens=24, temperature=0.2
                        )
                    statuses["200"] = statuses.get("200", 0) + 1
                except openai.APIStatusError as e:
                    statuses[str(e.status_code)] = statuses.get(str(e.status_code), 0) + 1
                except openai.APITimeoutError:  # a loaded machine: the user gives up, not the demo
                    statuses["timeout"] = statuses.get("timeout", 0) + 1
        finally:
            await client.close()

    await asyncio.gather(*(one_user(u) for u in users))
    return statuses


class RotatingTeacher:
    """The distiller's harvest teacher: each call goes out under the next account's key."""

    kind: TeacherKind = "api"

    def __init__(self, teachers: list[Any]) -> None:
        self.teachers = teachers
        self.model = teachers[0].model
        self.concurrency = teachers[0].concurrency
        self._next = 0

    async def complete(self, request: TeacherRequest) -> Completion:
        teacher = self.teachers[self._next % len(self.teachers)]
        self._next += 1
        result: Completion = await teacher.complete(request)
        return result

    @property
    def retries(self) -> int:
        return sum(int(getattr(t, "retries", 0)) for t in self.teachers)

    async def aclose(self) -> None:
        for t in self.teachers:
            await t.aclose()
