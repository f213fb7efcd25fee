"""Labeled API traffic in the gateway's request-log schema, for tests and benchmarks.

Benign personas: chat users, developers, enterprise batch pipelines (templated, high volume,
around the clock) and benchmark evaluators (broad topics, log-probs, n > 1, step-by-step
prompts, shared public templates): the last two are the hard negatives. Distiller
strategies: bulk harvest, low-and-slow, hydra (one actor, many accounts), chain-of-thought
extraction, and harvest mixed into an otherwise benign developer account.

Nothing in a row names its persona: every persona draws from the same vocabularies, models,
user agents and parameter ranges, and the distributions overlap feature by feature (enterprise
pipelines are as regular and as voluminous as bulk harvesters; evaluators use log-probs, n > 1
and step-by-step prompts like distillers; low-and-slow accounts send as few requests as
developers). Labels go to a separate file. Simulated replies are abbreviated to their first
words (`completion_tokens` carries the real length), which keeps 10M rows on disk small.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.serve.db import requests as requests_table

DAY = 86400.0
START = 1772409600.0  # 2026-03-02 00:00 UTC, a Monday
BENIGN_MIX = {"chat_user": 0.55, "developer": 0.25, "enterprise_batch": 0.10, "evaluator": 0.10}
STRATEGIES = ("bulk_harvest", "low_and_slow", "hydra", "cot_extraction", "mixed_harvest")
MODELS = ("stillroom-large", "stillroom-large", "stillroom-mini")
SDK_AGENTS = (
    "OpenAI/Python 1.40.0",
    "OpenAI/Python 1.52.2",
    "OpenAI/Python 1.68.0",
    "OpenAI/NodeJS 4.56.0",
    "python-httpx/0.27.0",
    "langchain-openai/0.2.1",
)
BROWSER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
)

TOPICS: dict[str, str] = {
    "cooking": "recipe sourdough braise marinade saute risotto spices oven pastry broth garlic",
    "programming": "python function recursion compiler pointer async thread regex api database",
    "finance": "mortgage dividend inflation portfolio bond interest budget taxes equity loan",
    "medicine": "symptom diagnosis vaccine antibiotic dosage cholesterol insulin allergy fever",
    "law": "contract tenant liability copyright lawsuit statute plaintiff custody patent",
    "sports": "marathon football tennis training stamina tournament coach sprint league",
    "travel": "itinerary passport visa hostel airline luggage museum beach backpacking",
    "music": "chord guitar melody piano rhythm symphony lyrics tempo harmony orchestra",
    "physics": "quantum momentum entropy gravity relativity photon friction velocity energy",
    "history": "empire revolution medieval dynasty treaty colonial pharaoh renaissance war",
    "biology": "cell protein enzyme evolution species genome mitochondria bacteria neuron",
    "chemistry": "molecule reaction catalyst acid oxidation polymer electron bond solvent",
    "mathematics": "integral matrix probability theorem derivative prime polynomial vector",
    "gardening": "tomato compost soil pruning seedlings perennial mulch fertilizer orchid",
    "cars": "engine brakes transmission tire battery hybrid mileage clutch diesel",
    "fashion": "dress fabric sneakers tailoring denim wardrobe jacket silk accessories",
    "movies": "director screenplay thriller actor sequel cinematography premiere comedy",
    "pets": "puppy kitten veterinarian leash aquarium parrot grooming litter hamster",
    "parenting": "toddler bedtime tantrum homework daycare teenager diaper allowance",
    "fitness": "workout squat protein cardio stretching dumbbell yoga calories muscle",
    "astronomy": "galaxy telescope nebula planet comet orbit supernova asteroid eclipse",
    "economics": "supply demand tariff recession monetary labor market elasticity gdp",
    "psychology": "anxiety memory motivation cognitive habit therapy emotion behavior",
    "philosophy": "ethics metaphysics stoicism epistemology virtue utilitarian free will",
    "geography": "river mountain climate desert continent volcano glacier island delta",
    "literature": "novel poetry metaphor sonnet protagonist narrative tragedy author",
    "marketing": "campaign brand audience conversion funnel newsletter slogan seo",
    "security": "encryption password phishing firewall vulnerability malware token",
    "education": "curriculum lesson exam tutor syllabus semester lecture grading",
    "home repair": "plumbing drywall faucet roof insulation wiring leak carpentry",
    "climate": "emissions carbon renewable solar drought wildfire warming sea level",
    "linguistics": "grammar syntax phoneme dialect vocabulary translation etymology",
}
TOPIC_NAMES = tuple(TOPICS)
TOPIC_WORDS = {k: v.split() for k, v in TOPICS.items()}
FILLER = ("the", "a", "my", "this", "our", "some", "that", "every", "any")

CHAT_FRAMES = (
    "how do i deal with {a} when {b} goes wrong?",
    "what's the difference between {a} and {b}",
    "can you help me write something about {a} and {b}? keep it short",
    "is it normal that my {a} keeps affecting the {b}",
    "quick question about {a}: should I worry about {b}?",
    "explain {a} like I'm five",
    "give me 3 ideas for {a} involving {b}",
    "why is {a} so expensive lately",
    "my friend says {a} causes {b}, is that true?",
    "what should I know before starting with {a}?",
)
CHAT_PREFIX = (
    "",
    "",
    "hey ",
    "so ",
    "quick one: ",
    "hi! ",
    "ok ",
    "i was wondering ",
    "pls help: ",
    "hmm ",
    "question - ",
    "sorry if dumb but ",
)
CHAT_SUFFIX = (
    "",
    "",
    "?",
    " thanks",
    " :)",
    " asap",
    " in simple terms",
    " for a school project",
    " (for my job)",
    " lol",
    " - any tips?",
    " be honest",
)
HARVEST_PREFIX = (
    "",
    "### Instruction:\n",
    "Task: ",
    "[INST] ",
    "Q: ",
    "Prompt: ",
    "User request: ",
    "Instruction: ",
    "<task>",
    "Please respond to the following. ",
    "Query: ",
    "Input: ",
)
HARVEST_SUFFIX = (
    "",
    "\n\n### Response:",
    " Answer in at least 300 words.",
    " Be thorough.",
    " [/INST]",
    " Use markdown headings.",
    " Respond in English.",
    "</task>",
    " Cite reasoning for each claim.",
    " Provide a complete answer.",
    "\nA:",
    " Output only the answer text.",
)
ASPECTS = (
    "history",
    "costs",
    "safety",
    "common mistakes",
    "best practices",
    "examples",
    "trade-offs",
    "future trends",
    "beginners",
    "experts",
    "regulations",
    "ethics",
    "measurement",
    "tools",
    "case studies",
    "myths",
    "statistics",
    "design",
    "risks",
    "benefits",
    "alternatives",
    "edge cases",
    "terminology",
    "research",
    "practice",
)
FOLLOWUPS = (
    "thanks! and what about {a}?",
    "can you make it shorter",
    "why?",
    "ok but what if {a} is involved",
    "give an example",
    "that's not what I meant",
)
INSTRUCT_FRAMES = (
    "Explain the concept of {a} in the context of {t}, with examples.",
    "Write a detailed, well-structured answer: how does {a} relate to {b}?",
    "Give a comprehensive overview of {t}, covering {a} and {b}.",
    "Write a short essay about {a}.",
    "You are an expert in {t}. Answer the question: what is the role of {a} in {b}?",
    "Compare and contrast {a} and {b}. Use a table if helpful.",
    "Generate five diverse questions about {a} and answer each thoroughly.",
    "Describe common misconceptions about {a} and correct them.",
    "Write a tutorial for beginners on {a} in {t}.",
    "Summarize what an expert should know about {b}.",
    "Rewrite the following text to be clearer: {a} {b} {c} matters because {t} changes.",
    "Answer as helpfully as possible: why does {a} affect {b}?",
)
COT_FRAMES = (
    "Think step by step and show all of your reasoning before the final answer. {q}",
    "{q} Let's think step by step.",
    "Solve the following problem. Explain your reasoning in detail, then give the answer. {q}",
    "{q} Walk through your chain of thought carefully before answering.",
    "Reason carefully, step by step, and verify each step: {q}",
)
DEV_FRAMES = (
    "Write a python function that parses {a} records and returns {b}.",
    "Why does my code raise KeyError when reading {a}?",
    "test",
    "hello",
    "Convert this JSON about {a} to YAML: {{'name': '{b}', 'id': {n}}}",
    "Refactor this SQL: SELECT * FROM {a} WHERE {b} = {n}",
    "Write unit tests for a {a} parser.",
    "what does this regex match: ^{a}[0-9]+$",
)
ENTERPRISE_TEMPLATES = (
    (
        "You are a support triage assistant for {org}.",
        "Classify the following customer message as billing, technical, account or other. "
        "Reply with one word.\n\nMessage: {doc}",
    ),
    (
        "You are {org}'s document assistant.",
        "Summarize the following document in three bullet points.\n\nDocument:\n{doc}",
    ),
    (
        "You extract structured data for {org}.",
        "Extract name, date, amount and category as JSON from this invoice text:\n{doc}",
    ),
    (
        "You moderate user content for {org}.",
        "Does the following post violate the policy? Answer yes or no.\n\nPost: {doc}",
    ),
    (
        "You translate product listings for {org}.",
        "Translate this product description into German:\n{doc}",
    ),
)
BENCHMARKS = ("mcq", "math_cot", "code", "chat_bench")
ITEMS_PER_BENCH = {"mcq": 3000, "math_cot": 1200, "code": 160, "chat_bench": 80}


@dataclass
class Persona:
    """One simulated account: who it is (label only) and how it behaves."""

    account_id: str
    actor_id: str
    label: str  # "benign" | "distiller"
    kind: str  # persona or strategy
    keys: list[str]
    addrs: list[str]
    agents: list[str]
    rng: random.Random
    extra: dict[str, Any] = field(default_factory=dict)


def _hex(rng: random.Random, n: int = 16) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _ip(rng: random.Random) -> str:
    return (
        f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    )


def _words(rng: random.Random, topic: str, k: int) -> list[str]:
    return rng.sample(TOPIC_WORDS[topic], k)


def _doc(rng: random.Random, topics: list[str], n_words: int) -> str:
    vocab = [w for t in topics for w in TOPIC_WORDS[t]]
    return " ".join(
        rng.choice(vocab) if rng.random() < 0.6 else rng.choice(FILLER) for _ in range(n_words)
    )


def bench_item(bench: str, i: int) -> tuple[str, str]:
    """The i-th item of a public benchmark: the same text for every evaluator (and seed)."""
    r = random.Random(f"{bench}:{i}")
    topic = TOPIC_NAMES[i % len(TOPIC_NAMES)]
    a, b, c, d = _words(r, topic, 4)
    if bench == "mcq":
        opts = "\n".join(
            f"{x}. {w}" for x, w in zip("ABCD", r.sample(TOPIC_WORDS[topic], 4), strict=True)
        )
        return (
            f"The following are multiple choice questions about {topic}.\n\n"
            f"Which of these is most closely related to {a} and {b}?\n{opts}\nAnswer:",
            topic,
        )
    if bench == "math_cot":
        x, y = r.randint(2, 99), r.randint(2, 99)
        return (
            f"Q: A {a} costs {x} dollars and a {b} costs {y} dollars. How much do 3 of "
            f"each cost?\nA: Let's think step by step.",
            topic,
        )
    if bench == "code":
        return (f'def {a}_{b}(items):\n    """Return the {c} of every {d} in items."""\n', topic)
    return (f"As an expert in {topic}, explain {a} versus {b} to a curious student.", topic)


def _cot_question(rng: random.Random, topic: str) -> str:
    a, b = _words(rng, topic, 2)
    x, y = rng.randint(2, 999), rng.randint(2, 999)
    q = rng.choice(
        (
            f"If {x} units of {a} combine with {y} units of {b}, what is the total and why?",
            f"Why does {a} lead to {b} in {topic}? Consider at least two causes.",
            f"A {a} grows by {x % 40 + 2}% a year from {y}. What is it after 5 years?",
            f"Prove or refute: every {a} in {topic} implies some {b}.",
        )
    )
    return rng.choice(COT_FRAMES).format(q=q)


# --- timing --------------------------------------------------------------------------------


def _sessions(
    rng: np.random.Generator, n: int, days: float, tz: float, mean_turns: float
) -> np.ndarray:
    """Human use: sessions in local daytime, turns a think-time apart."""
    out: list[float] = []
    while len(out) < n:
        day = rng.integers(0, int(days))
        hour = np.clip(rng.normal(14.5, 3.5), 7, 23.5)
        t = START + day * DAY + (hour - tz) * 3600.0
        for _ in range(max(1, int(rng.geometric(1 / mean_turns)))):
            out.append(t)
            t += 8.0 + rng.gamma(1.5, 35.0)
    return np.sort(np.asarray(out[:n]) % (days * DAY) + START)


def _steady(rng: np.random.Generator, n: int, t0: float, t1: float, cv: float) -> np.ndarray:
    """A script at a constant rate: gamma gaps with the given coefficient of variation."""
    shape = 1.0 / max(cv, 0.05) ** 2
    gaps = rng.gamma(shape, 1.0 / shape, n)
    times = np.cumsum(gaps)
    return t0 + (times - times[0]) / max(times[-1] - times[0], 1e-9) * (t1 - t0)


def _runs(
    rng: np.random.Generator,
    n: int,
    days: float,
    n_runs: int,
    rate: float,
    cv: float,
    hours: tuple[float, float] | None = None,
) -> np.ndarray:
    """Bursts of scripted work (eval runs, nightly batches) at `rate` requests/s."""
    sizes = rng.multinomial(n, np.ones(n_runs) / n_runs)
    parts = []
    for k, size in enumerate(sizes):
        if size == 0:
            continue
        if hours is None:
            t0 = START + rng.uniform(0, days * DAY - size / rate)
        else:
            day = k % int(days)
            t0 = START + day * DAY + rng.uniform(*hours) * 3600.0
        parts.append(_steady(rng, int(size), t0, t0 + size / rate, cv))
    return np.sort(np.concatenate(parts) % (days * DAY) + START)


def _diurnal(rng: np.random.Generator, n: int, days: float, tz: float, depth: float) -> np.ndarray:
    """Event-driven traffic around the clock, heavier in the working day (Poisson-like)."""
    t = rng.uniform(0, days * DAY, n * 3)
    local_h = ((t / 3600.0) + tz) % 24
    w = 1 - depth + depth * np.exp(-((local_h - 14) ** 2) / 18)
    keep = t[rng.uniform(0, 1, t.size) < w][:n]
    return np.sort(keep) + START


# --- requests ------------------------------------------------------------------------------

# The gateway's own log schema, so simulated logs are exactly what `serve` writes.
COLUMNS = tuple(c.name for c in requests_table.columns)


@dataclass
class Req:
    """What a persona decides for one request; the writer turns it into a log row."""

    text: str  # the (last) user turn, or the completion prompt
    params: dict[str, Any]
    completion_tokens: int
    system: str | None = None
    history: int = 0  # earlier user/assistant exchanges sent along (chat)
    endpoint: str = "chat.completions"
    status: int = 200


class _Sink:
    """Columns of rows, flushed to one Parquet file in row groups."""

    def __init__(self, path: Path, seed: int, rows_per_group: int = 250_000) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema(
            [
                ("id", pa.string()),
                ("created_at", pa.float64()),
                ("account_id", pa.string()),
                ("key_id", pa.string()),
                ("endpoint", pa.string()),
                ("model", pa.string()),
                ("messages", pa.string()),
                ("prompt", pa.string()),
                ("params", pa.string()),
                ("response_text", pa.string()),
                ("prompt_tokens", pa.int64()),
                ("completion_tokens", pa.int64()),
                ("status", pa.int64()),
                ("error", pa.string()),
                ("latency_ms", pa.float64()),
                ("backend_ms", pa.float64()),
                ("client_addr", pa.string()),
                ("user_agent", pa.string()),
                ("watermark_key_id", pa.string()),
            ]
        )
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        self.rows_per_group = rows_per_group
        self.n = 0
        self.prefix = f"req_{seed % 65536:04x}"

    def add(self, p: Persona, times: np.ndarray, reqs: list[Req]) -> None:
        c = self.cols
        r = p.rng
        hist_cache: dict[int, list[dict[str, str]]] = {}
        for t, q in zip(times.tolist(), reqs, strict=True):
            self.n += 1
            n = int(q.params.get("n", 1))
            ok = q.status == 200
            ct = q.completion_tokens * n if ok else 0
            pt = (
                int(len(q.text) / 4) + 8 + q.history * 120 + (len(q.system) // 4 if q.system else 0)
            )
            c["id"].append(f"{self.prefix}{self.n:020x}")
            c["created_at"].append(t)
            c["account_id"].append(p.account_id)
            c["key_id"].append(p.keys[0] if len(p.keys) == 1 else r.choice(p.keys))
            c["endpoint"].append(q.endpoint)
            c["model"].append(p.extra.get("model") or r.choice(MODELS))
            if q.endpoint == "chat.completions":
                if q.history not in hist_cache:
                    hist_cache[q.history] = [
                        m
                        for k in range(q.history)
                        for m in (
                            {"role": "user", "content": f"earlier question {k}"},
                            {"role": "assistant", "content": "earlier answer"},
                        )
                    ]
                msgs = ([{"role": "system", "content": q.system}] if q.system else []) + [
                    *hist_cache[q.history],
                    {"role": "user", "content": q.text},
                ]
                c["messages"].append(json.dumps(msgs, ensure_ascii=False, separators=(",", ":")))
                c["prompt"].append(None)
            else:
                c["messages"].append(None)
                c["prompt"].append(q.text)
            c["params"].append(json.dumps(q.params, separators=(",", ":")))
            c["response_text"].append(
                json.dumps(["Here is a response about " + q.text[:24]] * n) if ok else None
            )
            c["prompt_tokens"].append(pt)
            c["completion_tokens"].append(ct)
            c["status"].append(q.status)
            c["error"].append(None if ok else _ERRORS.get(q.status, "upstream error"))
            backend = (40.0 + ct * 12.0 * r.uniform(0.8, 1.3)) if ok else 0.0
            c["latency_ms"].append(backend + r.uniform(1.0, 6.0))
            c["backend_ms"].append(backend if ok else None)
            c["client_addr"].append(p.addrs[0] if len(p.addrs) == 1 else r.choice(p.addrs))
            c["user_agent"].append(p.agents[0] if len(p.agents) == 1 else r.choice(p.agents))
            c["watermark_key_id"].append("wm_main" if ok else None)
        if len(c["id"]) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        if not self.cols["id"]:
            return
        table = self.pa.table(self.cols, schema=self.schema)
        self.writer.write_table(table)
        self.cols = {c: [] for c in COLUMNS}

    def close(self) -> None:
        self.flush()
        self.writer.close()


_ERRORS = {
    429: "rate limit exceeded: requests per minute",
    400: "invalid request",
    500: "backend failed",
}


def _status(rng: random.Random, p429: float) -> int:
    u = rng.random()
    return 429 if u < p429 else 400 if u < p429 + 0.002 else 500 if u < p429 + 0.003 else 200


def _params(
    n: int = 1,
    temperature: float | None = None,
    max_tokens: int | None = None,
    logprobs: int = 0,
    stream: bool = False,
    top_p: float | None = None,
    chat: bool = True,
) -> dict[str, Any]:
    """What the gateway logs: the request's sampling fields, defaults included, None dropped."""
    d: dict[str, Any] = {"n": n}
    if temperature is not None:
        d["temperature"] = temperature
    if top_p is not None:
        d["top_p"] = top_p
    if max_tokens is not None:
        d["max_tokens"] = max_tokens
    d["stream"] = stream
    if chat:
        d["logprobs"] = logprobs > 0
        if logprobs > 0:
            d["top_logprobs"] = logprobs
    else:
        if logprobs > 0:
            d["logprobs"] = logprobs
        d["echo"] = False
    return d


def _n(p: Persona, n: float) -> int:
    """A persona's request count, times the simulation's volume factor."""
    return max(2, int(n * p.extra.get("volume", 1.0)))


def _tokens(rng: random.Random, mu: float, sigma: float, cap: int | None) -> int:
    t = max(1, int(rng.lognormvariate(mu, sigma)))
    return min(t, cap) if cap else t


# --- personas ------------------------------------------------------------------------------

Behaviour = Callable[[Persona, np.random.Generator, float], tuple[np.ndarray, list[Req]]]


def chat_user(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = _n(p, np.clip(r.lognormvariate(3.6, 1.0), 3, 1500))
    topics = r.sample(TOPIC_NAMES, r.randint(2, 4))
    temp = r.choice((None, None, 0.7, 1.0))
    cap = r.choice((None, None, 512, 1024))
    stream = r.random() < 0.7
    times = _sessions(g, n, days, r.uniform(-8, 9), 3.0)
    reqs = []
    for _ in range(n):
        t = r.choice(topics)
        a, b = _words(r, t, 2)
        hist = 0 if r.random() < 0.45 else r.randint(1, 4)
        text = (r.choice(FOLLOWUPS) if hist else r.choice(CHAT_FRAMES)).format(a=a, b=b)
        text = r.choice(CHAT_PREFIX) + text + r.choice(CHAT_SUFFIX)
        reqs.append(
            Req(
                text,
                _params(1, temp, cap, 0, stream),
                _tokens(r, 5.3, 0.6, cap),
                history=hist,
                status=_status(r, 0.002),
            )
        )
    return times, reqs


def developer(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = _n(p, np.clip(r.lognormvariate(5.0, 1.1), 5, 20000))
    return _sessions(g, n, days, r.uniform(-8, 9), 6.0), _dev_reqs(p, n)


def _dev_reqs(p: Persona, n: int) -> list[Req]:
    r = p.rng
    topics = ["programming", *r.sample(TOPIC_NAMES, r.randint(1, 3))]
    app = f"You are the assistant inside {p.extra.get('org', 'acme')}'s {r.choice(topics)} app."
    tests_logprobs = r.random() < 0.3
    multi_n = r.random() < 0.15
    reqs = []
    for _ in range(n):
        t = r.choice(topics)
        a, b = _words(r, t, 2)
        if r.random() < 0.5:
            text, system = r.choice(DEV_FRAMES).format(a=a, b=b, n=r.randint(1, 999)), None
        else:
            text, system = r.choice(CHAT_FRAMES).format(a=a, b=b), app
        cap = r.choice((None, 256, 1024, 4096))
        lp = r.randint(1, 5) if tests_logprobs and r.random() < 0.3 else 0
        nn = r.randint(2, 5) if multi_n and r.random() < 0.2 else 1
        temp = r.choice((None, 0.0, 0.2, 0.7, 1.0))
        reqs.append(
            Req(
                text,
                _params(nn, temp, cap, lp, r.random() < 0.3),
                _tokens(r, 5.0, 0.9, cap),
                system=system,
                history=0 if r.random() < 0.7 else r.randint(1, 3),
                status=_status(r, 0.005),
            )
        )
    return reqs


def enterprise_batch(
    p: Persona, g: np.random.Generator, days: float
) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = _n(p, np.clip(r.lognormvariate(8.6, 0.9), 800, 120000))
    kind = p.extra.get("template", r.randrange(len(ENTERPRISE_TEMPLATES)))
    system, frame = ENTERPRISE_TEMPLATES[kind]
    system = system.format(org=p.extra.get("org", "Acme"))
    topics = r.sample(TOPIC_NAMES, r.randint(1, 2))
    doc_len, out_mu, cap = [
        (30, 0.5, 5),
        (250, 4.6, 300),
        (60, 3.9, 200),
        (40, 0.3, 3),
        (80, 4.6, 400),
    ][kind]
    lp = r.randint(1, 5) if r.random() < 0.3 and kind in (0, 3) else 0
    nn = 3 if r.random() < 0.1 else 1
    if r.random() < 0.5:
        times = _runs(g, n, days, int(days), r.uniform(2, 10), 0.3, hours=(0.5, 3.5))
    else:
        times = _diurnal(g, n, days, r.uniform(-8, 9), r.uniform(0.2, 0.7))
    reqs = []
    for _ in range(n):
        text = frame.format(doc=_doc(r, topics, max(5, int(r.gauss(doc_len, doc_len / 3)))))
        reqs.append(
            Req(
                text,
                _params(nn, 0.0, cap, lp),
                _tokens(r, out_mu, 0.4, cap),
                system=system,
                status=_status(r, 0.01),
            )
        )
    return times, reqs


def evaluator(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    runs = r.randint(1, 6)
    reqs: list[Req] = []
    sizes = []
    for _ in range(runs):
        for bench in r.sample(BENCHMARKS, r.randint(1, 3)):
            total = ITEMS_PER_BENCH[bench]
            items = range(_n(p, min(total, r.choice((total, total, 500)))))
            sizes.append(len(items))
            for i in items:
                reqs.append(_bench_req(r, bench, i))
    times = _runs(g, len(reqs), days, len(sizes), r.uniform(3, 15), 0.4)
    return times, reqs  # runs are contiguous in `reqs`, and times are sorted: runs stay whole


def _bench_req(r: random.Random, bench: str, i: int) -> Req:
    text, _ = bench_item(bench, i)
    if bench == "mcq":
        return Req(text, _params(1, 0.0, 1, 5, chat=False), 1, endpoint="completions")
    if bench == "math_cot":
        return Req(text, _params(1, 0.0, 512), _tokens(r, 5.3, 0.3, 512))
    if bench == "code":
        return Req(
            text,
            _params(r.choice((10, 20)), 0.8, 512, top_p=0.95, chat=False),
            _tokens(r, 4.8, 0.4, 512),
            endpoint="completions",
        )
    return Req(text, _params(1, 0.7, 1024), _tokens(r, 5.9, 0.4, 1024))


# --- distillers ----------------------------------------------------------------------------


def _harvest_style(r: random.Random, cot: bool = False) -> dict[str, Any]:
    """One actor's harvesting habits; each is also some benign persona's habit."""
    return {
        "temp": r.choice((0.0, 0.7, 1.0, None)),
        "cap": r.choice((1024, 2048, 4096, None)) if not cot else r.choice((2048, 4096, 8192)),
        "logprobs": r.choice((5, 10, 20)) if r.random() < 0.5 else 0,
        "n": r.randint(2, 4) if r.random() < 0.3 else 1,
        "topics": list(TOPIC_NAMES)
        if r.random() < 0.6
        else r.sample(TOPIC_NAMES, r.randint(12, 24)),
        "system": r.choice((None, "You are a helpful assistant.", "You are an expert tutor.")),
        "cot": cot,
        "frames": r.sample(INSTRUCT_FRAMES, r.randint(4, 7)),
        "wrap": (r.choice(HARVEST_PREFIX), r.choice(HARVEST_SUFFIX)),
    }


def _harvest_reqs(r: random.Random, n: int, s: dict[str, Any], p429: float) -> list[Req]:
    reqs = []
    for _ in range(n):
        u = r.random()
        topic = r.choice(s["topics"])
        if (s["cot"] and u < 0.8) or (not s["cot"] and u < 0.12):
            text = _cot_question(r, topic)
        elif u < 0.92:
            a, b, c = _words(r, topic, 3)
            text = r.choice(s["frames"]).format(a=a, b=b, c=c, t=topic)
            text += f" Focus on {r.choice(ASPECTS)} and {r.choice(ASPECTS)}."
        else:  # seed prompts lifted from public benchmarks, as evaluators send them
            bench = r.choice(("mcq", "math_cot", "chat_bench"))
            text = bench_item(bench, r.randrange(ITEMS_PER_BENCH[bench]))[0]
        text = s["wrap"][0] + text + s["wrap"][1]
        mu = 6.6 if s["cot"] else 6.1
        reqs.append(
            Req(
                text,
                _params(s["n"], s["temp"], s["cap"], s["logprobs"]),
                _tokens(r, mu, 0.5, s["cap"]),
                system=s["system"],
                status=_status(r, p429),
            )
        )
    return reqs


def bulk_harvest(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = _n(p, np.clip(r.lognormvariate(10.0, 0.6), 6000, 150000))
    if r.random() < 0.6:
        times = _steady(g, n, START, START + days * DAY, r.uniform(0.3, 1.2))
    else:
        times = _diurnal(g, n, days, r.uniform(-8, 9), r.uniform(0.2, 0.6))
    return times, _harvest_reqs(r, n, _harvest_style(r), r.uniform(0.0, 0.08))


def low_and_slow(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = _n(p, r.randint(150, 1500))
    if r.random() < 0.5:
        times = _steady(g, n, START, START + days * DAY, r.uniform(0.8, 1.3))
    else:  # mimics a person: daytime sessions
        times = _sessions(g, n, days, r.uniform(-8, 9), 4.0)
    style = _harvest_style(r)
    style["n"] = 1
    style["logprobs"] = style["logprobs"] if r.random() < 0.6 else 0
    return times, _harvest_reqs(r, n, style, 0.001)


def cot_extraction(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = _n(p, np.clip(r.lognormvariate(8.3, 0.7), 600, 40000))
    if r.random() < 0.5:
        times = _steady(g, n, START, START + days * DAY, r.uniform(0.4, 1.2))
    else:
        times = _runs(g, n, days, r.randint(3, 10), r.uniform(0.2, 2.0), 0.6)
    return times, _harvest_reqs(r, n, _harvest_style(r, cot=True), 0.02)


def hydra_member(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = _n(p, r.randint(200, 2500))
    shifts: list[tuple[float, float]] = p.extra["shifts"]
    lens = np.array([b - a for a, b in shifts])
    counts = g.multinomial(n, lens / lens.sum())
    times = np.sort(
        np.concatenate([g.uniform(a, b, k) for (a, b), k in zip(shifts, counts, strict=True)])
    )
    return times, _harvest_reqs(r, n, p.extra["style"], 0.01)


def mixed_harvest(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    t1, q1 = developer(p, g, days)
    n = _n(p, r.randint(800, 6000))
    t2 = _runs(g, n, days, r.randint(1, 3), r.uniform(0.3, 3.0), 0.6)
    q2 = _harvest_reqs(r, n, _harvest_style(r), 0.02)
    order = np.argsort(np.concatenate([t1, t2]), kind="stable")
    times = np.concatenate([t1, t2])[order]
    reqs = [(q1 + q2)[i] for i in order.tolist()]
    return times, reqs


BEHAVIOURS: dict[str, Behaviour] = {
    "chat_user": chat_user,
    "developer": developer,
    "enterprise_batch": enterprise_batch,
    "evaluator": evaluator,
    "bulk_harvest": bulk_harvest,
    "low_and_slow": low_and_slow,
    "hydra": hydra_member,
    "cot_extraction": cot_extraction,
    "mixed_harvest": mixed_harvest,
}


# --- population ----------------------------------------------------------------------------


def population(accounts: int, seed: int, days: float = 7.0) -> list[Persona]:
    """Who is in the simulated log: benign personas and distiller actors, shuffled."""
    r = random.Random(seed)
    per = max(1, round(accounts / 125))
    out: list[Persona] = []

    def make(kind: str, label: str, actor: str | None = None, **extra: Any) -> Persona:
        acct = "acct_" + _hex(r)
        keys = ["key_" + _hex(r) for _ in range(r.choice((1, 1, 1, 2, 3)))]
        rng = random.Random(r.getrandbits(64))
        agents = [r.choice(SDK_AGENTS + BROWSER_AGENTS)]
        return Persona(acct, actor or acct, label, kind, keys, [_ip(r)], agents, rng, extra)

    for kind in ("bulk_harvest", "low_and_slow", "cot_extraction", "mixed_harvest"):
        for _ in range(per):
            p = make(kind, "distiller")
            p.agents = [r.choice(SDK_AGENTS)]
            out.append(p)
    for _ in range(per):
        actor = "actor_" + _hex(r, 8)
        style = _harvest_style(r)
        style["n"] = 1
        agent = r.choice((*SDK_AGENTS, f"harvest-client/{r.randint(1, 9)}.{r.randint(0, 9)}"))
        pool = [_ip(r) for _ in range(r.randint(2, 4))] if r.random() < 0.6 else None
        shifts = []
        for _ in range(r.randint(3, 7)):
            a = START + r.uniform(0, days * DAY - 10 * 3600)
            shifts.append((a, a + r.uniform(3, 10) * 3600))
        for _ in range(r.randint(8, 20)):
            p = make("hydra", "distiller", actor, style=style, shifts=shifts)
            p.agents = [agent]
            p.addrs = [r.choice(pool)] if pool else [_ip(r)]
            out.append(p)
    n_benign = max(0, accounts - len(out))
    kinds = list(BENIGN_MIX)
    counts = np.random.default_rng(seed).multinomial(n_benign, list(BENIGN_MIX.values()))
    for kind, count in zip(kinds, counts.tolist(), strict=True):
        k = 0
        while k < count:
            if kind in ("developer", "enterprise_batch"):  # an org: 1-3 accounts, one NAT
                org = r.choice(("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay"))
                org = f"{org} {r.randint(1, 999)}"
                size = min(count - k, r.choice((1, 1, 1, 2, 3)))
                nat = _ip(r)
                template = r.randrange(len(ENTERPRISE_TEMPLATES))
                for _ in range(size):
                    p = make(kind, "benign", org=org, template=template)
                    p.addrs = [nat]
                    out.append(p)
                k += size
            else:
                p = make(kind, "benign")
                if kind == "chat_user":
                    p.addrs = [_ip(r) for _ in range(r.randint(1, 3))]
                out.append(p)
                k += 1
    r.shuffle(out)
    return out


def simulate(
    out: Path,
    *,
    accounts: int = 1000,
    seed: int = 0,
    days: float = 7.0,
    volume: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write DIR/requests.parquet (the log), DIR/labels.parquet and DIR/manifest.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    people = population(accounts, seed, days)
    tmp = out / "requests.parquet.tmp"
    sink = _Sink(tmp, seed)
    g = np.random.default_rng(seed + 7)
    per_kind: dict[str, int] = {}
    for k, p in enumerate(people):
        p.extra["volume"] = volume
        times, reqs = BEHAVIOURS[p.kind](p, g, days)
        sink.add(p, times, reqs)
        per_kind[p.kind] = per_kind.get(p.kind, 0) + len(reqs)
        if progress:
            progress(k + 1, len(people))
    sink.close()
    tmp.replace(out / "requests.parquet")
    labels = pa.table(
        {
            "account_id": [p.account_id for p in people],
            "actor_id": [p.actor_id for p in people],
            "label": [p.label for p in people],
            "kind": [p.kind for p in people],
        }
    )
    pq.write_table(labels, out / "labels.parquet")
    manifest = {
        "seed": seed,
        "accounts": len(people),
        "requests": sink.n,
        "days": days,
        "requests_by_kind": per_kind,
        "accounts_by_kind": {k: sum(p.kind == k for p in people) for k in BEHAVIOURS},
        "log": str(out / "requests.parquet"),
        "labels": str(out / "labels.parquet"),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def iter_labels(path: Path) -> Iterator[dict[str, str]]:
    import pyarrow.parquet as pq

    yield from pq.read_table(path).to_pylist()
