"""Ten ordinary API workloads for the traffic simulator, shaped like real customers' traffic.

Each is a `traffic.Behaviour`: choices from `p.rng`, timing from `g`, counts through
`scaled_count` (times the volume factor) and for the whole window, as in personas.py.
Requests per account at volume 1 over 7 days (median; range):

- support_bot: ~30k (10k-90k). A chat widget answers every customer of a company all day.
- translation_pipeline: ~8k (1.5k-40k). Each source text goes out once per target language.
- labeling_job: ~8k (1k-60k). A dataset labelled once or twice, in a few bursts.
- eval_harness: whole benchmarks, 1-4 runs of a 1-3 benchmark suite: ~1k-25k.
- research_sampling: ~1.5k (200-8k) calls, each with n = 4-16 samples.
- rag: ~4k (500-25k). An internal or customer-facing knowledge assistant.
- agent: ~3k (400-25k) steps of multi-step tasks.
- moderation: ~22k (8k-80k). Every post of a community, around the clock.
- batch_summarization: ~900 (150-4k) long documents, in a few runs a week.
- ide_completion: ~4k (1.5k-20k) per developer: hundreds of completions a working day.

With `WORKLOAD_MIX` (25% of benign accounts) 1,000 accounts get ~1.6M requests from these
workloads, beside ~0.9M from the four personas (and the distillers').

Everything org-wide (system prompt, product, knowledge base, codebase, time zone, settings,
model) comes from a random source seeded by the workload and the org's name, so the accounts
of one org agree with no further coordination. Keys read from `p.extra`, all optional: "org"
(the company's name; otherwise one of the account's own), "system" (a system prompt for the
org's support_bot, rag, agent or moderation accounts), "tz" (the org's UTC offset, hours),
"volume" (via `scaled_count`). Production deployments pin one model: they set
`p.extra["model"]` with setdefault (a population builder may choose it first), which the
log writer puts on every row.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from stillroom.audit.traffic import (
    BENCHMARKS,
    CHAT_PREFIX,
    CHAT_SUFFIX,
    DAY,
    FILLER,
    ITEMS_PER_BENCH,
    MODELS,
    START,
    TOPIC_NAMES,
    TOPIC_WORDS,
    Behaviour,
    Persona,
    Req,
    bench_item,
    filler_doc,
    sample_status,
    sampling_params,
    scaled_count,
    steady_times,
    token_count,
)
from stillroom.audit.workload_vocab import (
    CODE,
    COMPANIES,
    CONSUMER,
    CONTENT,
    COUNTRIES,
    DOC_KINDS,
    FOLLOWUPS,
    LABEL_TASKS,
    LABELS,
    LANGS,
    OFFICE,
    OPENERS,
    POLICY,
    PRODUCTS,
    QUESTIONS,
    RESEARCH_FRAMES,
    SURFACES,
    TASKS,
    TOOLS,
    TZS,
)

# --- timing: offsets in seconds from START; `_finish` wraps them into the window ----------

Load = tuple[np.ndarray, float]  # relative load by local hour, weekend factor
Thread = tuple[float, int, float]  # mean and most requests per thread, mean gap (s)


def _hourly(
    g: np.random.Generator, n: int, days: float, tz: float, shape: np.ndarray, weekend: float
) -> np.ndarray:
    """n Poisson arrivals following a local hour-of-day load, scaled by `weekend` on Sat/Sun."""
    span = days * DAY
    edges = np.arange(0.0, span, 3600.0)
    width = np.minimum(3600.0, span - edges)
    local = edges / 3600.0 + tz  # START is a Monday, 00:00 UTC
    w = np.interp(local % 24, np.arange(25), np.append(shape, shape[0]))
    w = w * np.where((local // 24) % 7 >= 5, weekend, 1.0) * width
    counts = g.multinomial(n, w / w.sum())
    return np.repeat(edges, counts) + g.uniform(0.0, 1.0, n) * np.repeat(width, counts)


def _threads(
    g: np.random.Generator, n: int, days: float, tz: float, load: Load, shape: Thread
) -> tuple[np.ndarray, list[int]]:
    """n requests in threads (conversations, agent tasks, typing bursts), thread by thread.

    Threads start following the local-hour `load` (shape, weekend factor) and hold about
    `mean_len` requests (at most `max_len`) some `gap` seconds apart (a user reading, a tool).
    """
    mean_len, max_len, gap = shape
    lens = np.minimum(g.geometric(1.0 / mean_len, n), max_len)
    k = int(np.searchsorted(np.cumsum(lens), n)) + 1
    lens = lens[:k]
    lens[-1] -= lens.sum() - n
    starts = _hourly(g, k, days, tz, *load)
    steps = g.gamma(2.0, gap / 2.0, n)
    first = np.cumsum(lens) - lens
    steps[first] = 0.0
    cum = np.cumsum(steps)
    return np.repeat(starts, lens) + cum - np.repeat(cum[first], lens), lens.tolist()


def _batches(
    g: np.random.Generator, sizes: list[int], starts: list[float], rate: float, cv: float
) -> np.ndarray:
    """Scripted runs: sizes[k] requests from starts[k] on at `rate` per second, in order."""
    parts = [
        steady_times(g, k, s, s + k / rate, cv) for k, s in zip(sizes, starts, strict=True) if k
    ]
    return np.concatenate(parts) if parts else np.zeros(0)


def _split(g: np.random.Generator, n: int, k: int) -> list[int]:
    """n requests over k runs of uneven size."""
    return [int(x) for x in g.multinomial(n, g.dirichlet(np.full(k, 4.0)))]


def _finish(offsets: np.ndarray, reqs: list[Req], days: float) -> tuple[np.ndarray, list[Req]]:
    """Wrap offsets into [START, START + days) and sort, keeping each request with its time."""
    span = days * DAY
    t = np.mod(np.asarray(offsets, dtype=float), span)
    order = np.argsort(t, kind="stable")
    times = np.minimum(t[order] + START, np.nextafter(START + span, -np.inf))
    return times, [reqs[i] for i in order.tolist()]


# --- organisations --------------------------------------------------------------------------


def _org(p: Persona, kind: str) -> tuple[str, random.Random, float]:
    """The account's org, a random source for its org-wide choices, and its UTC offset."""
    org = p.extra.get("org") or f"{p.rng.choice(COMPANIES)} {p.rng.randint(1, 999)}"
    o = random.Random(f"{kind}:{org}")
    tz = float(p.extra.get("tz", o.choice(TZS)))
    return str(org), o, tz


def _pin(p: Persona, o: random.Random) -> None:
    """A production deployment calls one model (the org's choice)."""
    p.extra.setdefault("model", o.choice(MODELS))


def _between(r: random.Random, mu: float, sigma: float, lo: float, hi: float) -> float:
    return float(np.clip(r.lognormvariate(mu, sigma), lo, hi))


def _req(
    r: random.Random, text: str, params: dict[str, Any], out: int, system: str | None = None,
    history: int = 0, completions: bool = False, p429: float = 0.003,
) -> Req:  # fmt: skip
    endpoint = "completions" if completions else "chat.completions"
    return Req(text, params, out, system, history, endpoint, sample_status(r, p429))


def _chunks(o: random.Random, topics: list[str], k: int, lo: int, hi: int) -> list[str]:
    """A pool of passages (a knowledge base, tool outputs, a document's paragraphs)."""
    return [filler_doc(o, topics, o.randint(lo, hi)) for _ in range(k)]


# --- workloads ------------------------------------------------------------------------------


def _support_system(org: str, product: str, o: random.Random) -> str:
    things = PRODUCTS[product].split()
    vocab = things + list(FILLER)
    faq = "\n".join(
        f"- {o.choice(things)}: " + " ".join(o.choice(vocab) for _ in range(o.randint(12, 30)))
        for _ in range(o.randint(6, 16))
    )
    return (
        f"You are {o.choice(('Ava', 'Max', 'Nova', 'Leo'))}, the support assistant for {org}'s "
        f"{product}. Be friendly and brief; only answer questions about {org}.\nPolicies:\n"
        f"- Refunds within {o.choice((14, 30, 60))} days of delivery.\n"
        "- Never ask for full card numbers or passwords.\n"
        "- Reply ESCALATE for legal threats, safety issues, or a second request for a human.\n"
        f"- Human agents: {o.randint(7, 9)}:00-{o.randint(17, 21)}:00 local time.\nFAQ:\n{faq}"
    )


def support_bot(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    """A company's support widget: one system prompt, customers' conversations all day."""
    r = p.rng
    org, o, tz = _org(p, "support_bot")
    product = o.choice(list(PRODUCTS))
    things = PRODUCTS[product].split()
    system = p.extra.get("system") or _support_system(org, product, o)
    temp, cap = round(o.uniform(0.2, 0.7), 1), o.choice((300, 400, 500, 600, 800))
    stream, tag_user = o.random() < 0.7, o.random() < 0.5  # `user`: end-customer id
    _pin(p, o)
    n = scaled_count(p, _between(r, 10.3, 0.6, 10_000, 90_000))
    offsets, lens = _threads(g, n, days, tz, (CONSUMER, 0.8), (2.5, 7, 45.0))
    reqs = []
    for size in lens:
        user = f"cust_{r.getrandbits(40):010x}"
        for turn in range(size):
            fill = {"order": f"#{r.randint(100000, 999999)}", "thing": r.choice(things)}
            fill |= {"product": product, "country": r.choice(COUNTRIES)}
            text = r.choice(FOLLOWUPS if turn else OPENERS).format(**fill)
            params = sampling_params(1, temp, cap, 0, stream)
            if tag_user:
                params["user"] = user
            reply = int(np.clip(r.lognormvariate(4.8, 0.45), 60, 250))
            text = r.choice(CHAT_PREFIX) + text + r.choice(CHAT_SUFFIX)
            reqs.append(_req(r, text, params, reply, system, turn))
    return _finish(offsets, reqs, days)


def translation_pipeline(
    p: Persona, g: np.random.Generator, days: float
) -> tuple[np.ndarray, list[Req]]:
    """One template over a company's texts, each into every target language; mostly nightly."""
    r = p.rng
    _, o, tz = _org(p, "translation_pipeline")
    langs = o.sample(LANGS, o.randint(2, 10))
    kind = o.choice(list(CONTENT))
    topics = o.sample(TOPIC_NAMES, 2)
    temp, cap = o.choice((0.0, 0.0, 0.1, 0.2, 0.3)), o.choice((None, 2048, 4096))
    system = o.choice((None, "You are a professional translator. Return only the translation."))
    frame = (
        "Translate the following {kind} into {lang}. Keep HTML tags, placeholders such as "
        "{{name}} and line breaks unchanged.\n\n{text}"
    )
    _pin(p, o)
    n = scaled_count(p, _between(r, 9.0, 0.8, 1500, 40_000))
    reqs: list[Req] = []
    while len(reqs) < n:
        text = filler_doc(r, topics, r.randint(*CONTENT[kind]))
        for lang in langs:  # target languages often take more tokens than English
            out = max(1, int(len(text) / 4 * r.uniform(0.9, 1.4)))
            out = min(out, cap) if cap else out
            prompt = frame.format(kind=kind, lang=lang, text=text)
            reqs.append(_req(r, prompt, sampling_params(1, temp, cap), out, system))
    reqs = reqs[:n]
    nightly = int(n * o.uniform(0.6, 0.9))  # the catalogue sync; the rest is on demand
    nights = max(1, math.ceil(days))
    start = (o.uniform(0.5, 2.0) - tz) * 3600.0
    rate = nightly / nights / (o.uniform(2.0, 3.5) * 3600.0)
    starts = [d * DAY + start for d in range(nights)]
    t_night = _batches(g, _split(g, nightly, nights), starts, rate, 0.3)
    t_day = _hourly(g, n - nightly, days, tz, OFFICE, 0.2)
    return _finish(np.concatenate([t_night, t_day]), reqs, days)


def labeling_job(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    """Zero-temperature labels for many short distinct items, with log-probs, in bursts."""
    r = p.rng
    _, o, tz = _org(p, "labeling_job")
    instr, field = r.choice(LABEL_TASKS)
    topics = r.sample(TOPIC_NAMES, r.randint(1, 3))
    shots = "".join(
        f"{field}: {filler_doc(r, topics, r.randint(8, 20))}\nLabel: {r.choice(LABELS)}\n\n"
        for _ in range(r.choice((0, 0, 3, 5)))
    )
    completions = r.random() < 0.7  # scoring scripts often use the legacy endpoint
    cap, lp = r.randint(1, 10), r.choice((0, 1, 1, 2, 5, 5))
    _pin(p, o)
    n = scaled_count(p, _between(r, 9.0, 0.9, 1000, 60_000))
    reqs = []
    for _ in range(n):
        item = filler_doc(r, topics, r.randint(6, 45))
        if r.random() < 0.3:
            item = f"{item} (order {r.randint(1000, 99999)})"
        out = min(cap, r.choice((1, 1, 1, 2, 3)))
        params = sampling_params(1, 0.0, cap, lp, chat=not completions)
        if completions:
            text = f"{instr}\n\n{shots}{field}: {item}\nLabel:"
            reqs.append(_req(r, text, params, out, completions=True, p429=0.01))
        else:
            reqs.append(_req(r, f"{shots}{field}: {item}", params, out, instr, p429=0.01))
    runs = r.randint(1, 6)
    starts = _hourly(g, runs, days, tz, OFFICE, 0.1).tolist()
    return _finish(_batches(g, _split(g, n, runs), starts, r.uniform(3, 25), 0.3), reqs, days)


def _shots(bench: str, k: int) -> str:
    """k worked examples from the benchmark's public dev split (the same for every harness)."""
    if bench not in ("mcq", "math_cot") or not k:
        return ""
    total = ITEMS_PER_BENCH[bench]
    key = "ABCD" if bench == "mcq" else "0123456789"
    ans = (random.Random(f"{bench}:dev:{j}").choice(key) for j in range(k))
    return "".join(f"{bench_item(bench, total + j)[0]} {a}\n\n" for j, a in enumerate(ans))


def _harness_req(bench: str, i: int, prefix: str, style: dict[str, int], r: random.Random) -> Req:
    text = prefix + bench_item(bench, i)[0]
    if bench == "mcq":  # score the answer letter by its log-prob
        if style["chat"]:
            return Req(text, sampling_params(1, 0.0, 1, style["top"]), 1)
        return Req(text, sampling_params(1, 0.0, 1, 5, chat=False), 1, endpoint="completions")
    if bench == "math_cot":
        return Req(
            text, sampling_params(1, 0.0, style["cap"]), token_count(r, 5.3, 0.35, style["cap"])
        )
    if bench == "code":  # pass@k: n samples per problem
        n = style["n"]
        params = sampling_params(n, 0.8 if n > 1 else 0.0, 512, top_p=0.95, chat=False)
        params["stop"] = ["\ndef ", "\nclass ", "\nif __name__", "\nprint("]
        return Req(text, params, token_count(r, 4.6, 0.5, 512), endpoint="completions")
    return Req(text, sampling_params(1, 0.0, 1024), token_count(r, 5.9, 0.4, 1024))


def eval_harness(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    """Whole public benchmarks in dataset order, one contiguous burst per run."""
    r = p.rng
    _, o, _tz = _org(p, "eval_harness")  # the harness config is the team's
    chosen = o.sample(BENCHMARKS, o.randint(1, 3))
    suite = [b for b in BENCHMARKS if b in chosen]
    style = {"chat": int(o.random() < 0.5), "top": o.choice((5, 10, 20))}
    style |= {"cap": o.choice((512, 1024)), "n": o.choice((1, 5, 10))}
    k_shot = o.choice((0, 0, 5))
    reqs: list[Req] = []
    sizes = []
    for _ in range(r.randint(1, 4)):  # one run per model or checkpoint under test
        before = len(reqs)
        for bench in suite:
            prefix = _shots(bench, k_shot)
            total = ITEMS_PER_BENCH[bench]
            items = range(min(total, scaled_count(p, total)))  # a smaller volume stops early
            reqs += [_harness_req(bench, i, prefix, style, r) for i in items]
        sizes.append(len(reqs) - before)
    starts = [float(x) for x in g.uniform(0.0, days * DAY, len(sizes))]
    return _finish(_batches(g, sizes, starts, r.uniform(4, 20), 0.4), reqs, days)


def research_sampling(
    p: Persona, g: np.random.Generator, days: float
) -> tuple[np.ndarray, list[Req]]:
    """Experiments over a small prompt pool: many samples per prompt, temperature sweeps."""
    r = p.rng
    _, _o, tz = _org(p, "research_sampling")
    topics = r.sample(TOPIC_NAMES, r.randint(1, 6))
    pool = []
    for t in (r.choice(topics) for _ in range(r.randint(20, 300))):
        a, b = r.sample(TOPIC_WORDS[t], 2)
        nums = {"x": r.randint(2, 99), "y": r.randint(2, 99), "k": r.randint(2, 9)}
        pool.append(r.choice(RESEARCH_FRAMES).format(a=a, b=b, t=t, **nums))
    n = scaled_count(p, _between(r, 7.3, 0.8, 200, 8000))
    reqs: list[Req] = []
    sizes = []
    while len(reqs) < n:  # one experiment: prompts x temperatures x repeats
        prompts = r.sample(pool, r.randint(min(10, len(pool)), len(pool)))
        temps = r.choice(([0.7], [1.0], [0.5, 1.0, 1.5], [0.3, 0.7, 1.0, 1.3], [1.2]))
        nn, lp = r.choice((4, 5, 8, 10, 16)), r.choice((0, 0, 0, 1, 5))
        cap, base = r.choice((256, 512, 1024, 2048)), r.random() < 0.3
        before = len(reqs)
        for temp in temps:
            for _ in range(r.randint(1, 5)):
                for text in prompts[: n - len(reqs)]:
                    out = token_count(r, 5.0, 0.7, cap)
                    params = sampling_params(nn, temp, cap, lp, chat=not base)
                    reqs.append(_req(r, text, params, out, completions=base, p429=0.01))
        sizes.append(len(reqs) - before)
    starts = _hourly(g, len(sizes), days, tz, OFFICE, 0.3).tolist()
    return _finish(_batches(g, sizes, starts, r.uniform(0.2, 3.0), 0.5), reqs, days)


def rag(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    """Questions answered from retrieved passages of one knowledge base, in the working day."""
    r = p.rng
    org, o, tz = _org(p, "rag")
    topics = o.sample(TOPIC_NAMES, o.randint(1, 2))
    k = o.randint(3, 8)  # the retriever's top-k and chunk size are fixed by its config
    words = int(np.clip(o.uniform(80, 220), 350 / k, 1500 / k))
    kb = _chunks(o, topics, o.randint(150, 400), int(words * 0.85), int(words * 1.15))
    system = p.extra.get("system") or (
        f"You are {org}'s knowledge assistant. Answer only from the numbered passages in the "
        "context and cite them like [2]. If the answer is not there, say you don't know."
    )
    temp, cap = o.choice((0.0, 0.1, 0.2, 0.3)), o.choice((300, 500, 800, 1000))
    stream, public = o.random() < 0.6, o.random() < 0.4
    _pin(p, o)
    n = scaled_count(p, _between(r, 8.3, 0.9, 500, 25_000))
    vocab = [w for t in topics for w in TOPIC_WORDS[t]]
    reqs = []
    for _ in range(n):
        near = r.randrange(len(kb))  # neighbouring chunks of one source document
        hits = [(near + d) % len(kb) for d in r.sample(range(-8, 9), k)]
        context = "\n\n".join(f"[{j + 1}] {kb[h]}" for j, h in enumerate(hits))
        question = r.choice(QUESTIONS).format(a=r.choice(vocab), b=r.choice(vocab))
        hist = 0 if r.random() < 0.7 else r.randint(1, 2)
        out = int(np.clip(r.lognormvariate(4.9, 0.5), 50, 300))
        text = f"Context:\n{context}\n\nQuestion: {question}"
        reqs.append(_req(r, text, sampling_params(1, temp, cap, 0, stream), out, system, hist))
    load = (CONSUMER, 0.8) if public else (OFFICE, 0.15)
    return _finish(_hourly(g, n, days, tz, *load), reqs, days)


def agent(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    """Tool-using tasks: growing transcripts of tool results, a JSON tool call per step."""
    r = p.rng
    org, o, tz = _org(p, "agent")
    tools = o.sample(list(TOOLS), o.randint(3, 8))
    system = p.extra.get("system") or (
        f"You are {org}'s operations agent. At each step reply with one JSON object: "
        '{"tool": name, "arguments": {...}} to call a tool, or {"final_answer": text}.\n\n'
        "Tools:\n" + "\n".join(f"- {t}: {TOOLS[t]}" for t in tools)
    )
    topics = o.sample(TOPIC_NAMES, 2)
    results = _chunks(o, topics, 120, 40, 140)
    temp, cap = o.choice((0.0, 0.0, 0.2, 0.5, None)), o.choice((None, 1024, 2048, 4096))
    react, demo = o.random() < 0.4, o.choice((0, 2))  # ReAct stop word; few-shot exchanges
    load: Load = (1.0 - 0.3 * (1.0 - OFFICE), 1.0) if o.random() < 0.4 else (OFFICE, 0.2)
    _pin(p, o)
    n = scaled_count(p, _between(r, 8.0, 0.9, 400, 25_000))
    offsets, lens = _threads(g, n, days, tz, load, (5.0, 11, 8.0))
    vocab = [w for t in topics for w in TOPIC_WORDS[t]]
    reqs = []
    for size in lens:
        for step in range(size):
            if step == 0:
                text = r.choice(TASKS).format(a=r.choice(vocab), b=r.choice(vocab))
            else:
                found = ", ".join(f'"{c}"' for c in r.sample(results, r.randint(1, 8)))
                text = f'Observation ({r.choice(tools)}): {{"results": [{found}]}}'
            last = step == size - 1
            out = token_count(r, 5.2, 0.5, cap) if last else token_count(r, 3.7, 0.4, cap)
            params = sampling_params(1, temp, cap)
            if react:
                params["stop"] = ["Observation:"]
            hist = min(12, demo + step)
            reqs.append(_req(r, text, params, out, system, hist))
    return _finish(offsets, reqs, days)


def moderation(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    """Every post of a community checked against one policy: short labels, day and night."""
    r = p.rng
    org, o, tz = _org(p, "moderation")
    surface = o.choice(SURFACES)
    as_json = o.random() < 0.4
    answer = '{"flagged": bool, "category": label}' if as_json else "one label, or 'allowed'"
    rules = "\n".join(
        f"- {c}: {filler_doc(o, o.sample(TOPIC_NAMES, 2), o.randint(15, 40))}" for c in POLICY
    )
    system = p.extra.get("system") or (
        f"You moderate {org}'s {surface}. Policy:\n{rules}\nReply with {answer} and nothing else."
    )
    cap = o.randint(12, 20) if as_json else o.randint(1, 5)
    lp = o.choice((0, 0, 1, 5)) if not as_json else 0  # label scores for thresholds
    depth = o.uniform(0.15, 0.4)  # users post at every hour; the daytime peak is shallow
    topics = o.sample(TOPIC_NAMES, 4)
    _pin(p, o)
    n = scaled_count(p, _between(r, 10.0, 0.7, 8000, 80_000))
    reqs = []
    for _ in range(n):
        post = r.choice(CHAT_PREFIX) + filler_doc(r, topics, r.randint(4, 60))
        if r.random() < 0.2:
            post = f"@user{r.randint(1, 99999)} {post}"
        out = r.randint(8, cap) if as_json else r.randint(1, cap)
        text = f"Content:\n{post}{r.choice(CHAT_SUFFIX)}"
        reqs.append(_req(r, text, sampling_params(1, 0.0, cap, lp), out, system))
    times = _hourly(g, n, days, tz, 1.0 - depth * (1.0 - CONSUMER), 1.15)
    return _finish(times, reqs, days)


def batch_summarization(
    p: Persona, g: np.random.Generator, days: float
) -> tuple[np.ndarray, list[Req]]:
    """Long documents summarised with one template, in a few scheduled runs a week."""
    r = p.rng
    _, o, tz = _org(p, "batch_summarization")
    kind = o.choice(DOC_KINDS)
    audience = o.choice(("executives", "the legal team", "on-call engineers", "analysts"))
    frame = (
        f"Summarize the following {kind} for {audience} in {o.randint(3, 8)} bullet points. "
        "Keep names, figures and dates exact.\n\n"
    )
    paragraphs = _chunks(r, r.sample(TOPIC_NAMES, 2), r.randint(60, 120), 40, 120)
    temp, cap = o.choice((0.0, 0.2, 0.3)), o.choice((512, 1024))
    _pin(p, o)
    n = scaled_count(p, _between(r, 6.8, 0.8, 150, 4000))
    reqs = []
    for _ in range(n):
        size = int(r.uniform(1000, 6000) * 4) - len(frame)  # prompt tokens ~ characters / 4
        doc = f"{kind.title()} {r.randint(1000, 99999)}, {r.randint(1, 28)}/{r.randint(1, 12)}"
        while len(doc) < size:
            doc += "\n\n" + r.choice(paragraphs)
        out = int(np.clip(r.lognormvariate(5.4, 0.4), 100, 400))
        reqs.append(_req(r, frame + doc[:size], sampling_params(1, temp, cap), out, p429=0.01))
    n_days = max(1, math.ceil(days))
    runs = min(n_days, max(1, round(days / 7 * r.randint(2, 5))))
    hour = o.choice((1.0, 2.0, 6.0, 22.0))  # overnight, or before the working day
    starts = [d * DAY + (hour - tz) * 3600.0 for d in sorted(r.sample(range(n_days), runs))]
    return _finish(_batches(g, _split(g, n, runs), starts, r.uniform(0.3, 2.0), 0.4), reqs, days)


def _codebase(o: random.Random, topic: str) -> tuple[list[list[str]], list[str]]:
    """An org's repository in one language: files of code lines, and the stop sequences."""
    lang = o.choice(list(CODE))
    header, templates, stops = CODE[lang]
    words = TOPIC_WORDS["programming"] + TOPIC_WORDS[topic]
    proj = o.choice(words)
    files = []
    for _ in range(o.randint(10, 30)):
        path = f"{proj}/{o.choice(words)}_{o.choice(words)}"
        lines = [header.format(path=path)]
        for _ in range(o.randint(60, 250)):
            a, b, c, d = o.sample(words, 4)
            fill = {"a": a, "b": b, "c": c, "d": d, "A": a.title(), "B": b.title()}
            lines.append(o.choice(templates).format(proj=proj, n=o.randint(1, 60), **fill))
        files.append(lines)
    return files, stops


def ide_completion(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    """An editor plugin completing code as a developer types: bursts in working hours."""
    r = p.rng
    _, o, tz = _org(p, "ide_completion")
    files, stops = _codebase(o, o.choice(TOPIC_NAMES))
    mine = r.sample(files, min(len(files), r.randint(3, 12)))  # this developer's part
    window, temp = o.randint(30, 150), o.choice((0.0, 0.0, 0.1, 0.2))
    single, multi, stream = o.choice((16, 24, 32)), o.choice((64, 96, 128)), o.random() < 0.5
    p.extra.setdefault("model", "stillroom-mini")  # latency matters more than quality here
    n = scaled_count(p, _between(r, 8.3, 0.6, 1500, 20_000))
    offsets, _ = _threads(g, n, days, tz, (OFFICE, 0.05), (10.0, 60, 3.0))
    reqs = []
    lines, cur = mine[0], 1
    for _ in range(n):
        cur += r.randint(0, 3)  # typing moves the cursor on; sometimes to another file
        if cur >= len(lines) or r.random() < 0.05:
            lines = r.choice(mine)
            cur = r.randint(1, len(lines) - 1)
        line = lines[cur]
        before = lines[max(1, cur - window) : cur]  # the plugin's context window
        text = "\n".join([lines[0], *before, line[: r.randint(0, len(line))]])
        many = r.random() < 0.3
        cap = multi if many else single
        params = sampling_params(1, temp, cap, 0, stream, chat=False)
        params["stop"] = stops if many else ["\n"]
        out = token_count(r, 3.6 if many else 2.2, 0.6, cap)
        reqs.append(_req(r, text, params, out, completions=True, p429=0.002))
    return _finish(offsets, reqs, days)


# fmt: off
WORKLOADS: dict[str, Behaviour] = {
    f.__name__: f
    for f in (support_bot, translation_pipeline, labeling_job, eval_harness, research_sampling,
              rag, agent, moderation, batch_summarization, ide_completion)
}
# Share of all benign accounts (the personas of personas.PERSONA_MIX take the other 75%).
# Heavy deployments (support, moderation) are few accounts; many teams run RAG and agents.
WORKLOAD_MIX: dict[str, float] = {
    "support_bot": 0.015, "translation_pipeline": 0.02, "labeling_job": 0.025,
    "eval_harness": 0.02, "research_sampling": 0.03, "rag": 0.04, "agent": 0.035,
    "moderation": 0.015, "batch_summarization": 0.02, "ide_completion": 0.03,
}
# Accounts per organisation (one NAT address, one p.extra["org"]); other workloads: one each.
# An IDE plugin gives each developer a seat; a support bot may run per region or brand.
ORG_SIZES: dict[str, tuple[int, ...]] = {
    "ide_completion": (2, 3, 5, 8, 12, 20), "support_bot": (1, 1, 1, 2, 3),
    "rag": (1, 1, 2, 3), "agent": (1, 1, 2, 4), "moderation": (1, 1, 2),
}
# fmt: on
