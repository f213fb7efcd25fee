"""Building blocks of simulated API traffic: vocabularies, timing models, one request.

Every persona, workload and distiller strategy (personas.py, workloads.py, distillers.py)
draws from the same vocabularies, models, user agents and parameter ranges, so that nothing
in a row names who sent it; simulate.py writes their requests as the gateway's log.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DAY = 86400.0
START = 1772409600.0  # 2026-03-02 00:00 UTC, a Monday
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


def hex_id(rng: random.Random, n: int = 16) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def random_ip(rng: random.Random) -> str:
    return (
        f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    )


def pick_words(rng: random.Random, topic: str, k: int) -> list[str]:
    return rng.sample(TOPIC_WORDS[topic], k)


def filler_doc(rng: random.Random, topics: list[str], n_words: int) -> str:
    vocab = [w for t in topics for w in TOPIC_WORDS[t]]
    return " ".join(
        rng.choice(vocab) if rng.random() < 0.6 else rng.choice(FILLER) for _ in range(n_words)
    )


def bench_item(bench: str, i: int) -> tuple[str, str]:
    """The i-th item of a public benchmark: the same text for every evaluator (and seed)."""
    r = random.Random(f"{bench}:{i}")
    topic = TOPIC_NAMES[i % len(TOPIC_NAMES)]
    a, b, c, d = pick_words(r, topic, 4)
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


def cot_question(rng: random.Random, topic: str) -> str:
    a, b = pick_words(rng, topic, 2)
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


def human_sessions(
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


def steady_times(rng: np.random.Generator, n: int, t0: float, t1: float, cv: float) -> np.ndarray:
    """A script at a constant rate: gamma gaps with the given coefficient of variation."""
    shape = 1.0 / max(cv, 0.05) ** 2
    gaps = rng.gamma(shape, 1.0 / shape, n)
    times = np.cumsum(gaps)
    return t0 + (times - times[0]) / max(times[-1] - times[0], 1e-9) * (t1 - t0)


def burst_times(
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
        parts.append(steady_times(rng, int(size), t0, t0 + size / rate, cv))
    return np.sort(np.concatenate(parts) % (days * DAY) + START)


def diurnal_times(
    rng: np.random.Generator, n: int, days: float, tz: float, depth: float
) -> np.ndarray:
    """Event-driven traffic around the clock, heavier in the working day (Poisson-like)."""
    t = rng.uniform(0, days * DAY, n * 3)
    local_h = ((t / 3600.0) + tz) % 24
    w = 1 - depth + depth * np.exp(-((local_h - 14) ** 2) / 18)
    keep = t[rng.uniform(0, 1, t.size) < w][:n]
    return np.sort(keep) + START


# --- requests ------------------------------------------------------------------------------


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


ERRORS = {
    429: "rate limit exceeded: requests per minute",
    400: "invalid request",
    500: "backend failed",
}


def sample_status(rng: random.Random, p429: float) -> int:
    u = rng.random()
    return 429 if u < p429 else 400 if u < p429 + 0.002 else 500 if u < p429 + 0.003 else 200


def sampling_params(
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


def scaled_count(p: Persona, n: float) -> int:
    """A persona's request count, times the simulation's volume factor."""
    return max(2, int(n * p.extra.get("volume", 1.0)))


def token_count(rng: random.Random, mu: float, sigma: float, cap: int | None) -> int:
    t = max(1, int(rng.lognormvariate(mu, sigma)))
    return min(t, cap) if cap else t


Behaviour = Callable[[Persona, np.random.Generator, float], tuple[np.ndarray, list[Req]]]
