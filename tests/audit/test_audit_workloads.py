"""The production workloads of the traffic simulator: well-formed requests, defining traits."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from stillroom.audit.traffic import DAY, START, Persona, Req
from stillroom.audit.workloads import ORG_SIZES, WORKLOAD_MIX, WORKLOADS
from stillroom.serve.schemas import ChatRequest, CompletionRequest

DAYS = 3.0
Run = tuple[Persona, np.ndarray, list[Req]]


def persona(kind: str, seed: int, volume: float = 0.02, **extra: Any) -> Persona:
    acct = f"acct_{kind}_{seed}"
    return Persona(
        acct,
        acct,
        "benign",
        kind,
        [f"key_{seed}"],
        ["10.0.0.1"],
        ["OpenAI/Python 1.52.2"],
        random.Random(seed),
        {"volume": volume, **extra},
    )


def run(kind: str, seed: int = 0, days: float = DAYS, **kw: Any) -> Run:
    p = persona(kind, seed, **kw)
    times, reqs = WORKLOADS[kind](p, np.random.default_rng(seed), days)
    return p, times, reqs


def prompt_tokens(q: Req) -> int:  # as the simulator's log writer counts them
    return int(len(q.text) / 4) + 8 + q.history * 120 + (len(q.system) // 4 if q.system else 0)


def local_hours(times: np.ndarray, tz: float = 0.0) -> np.ndarray:
    return ((times - START) / 3600.0 + tz) % 24


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    return {kind: run(kind) for kind in WORKLOADS}  # no org, system or tz given


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_sorted_times_in_the_window_one_request_each(kind: str, runs: dict[str, Run]) -> None:
    _, times, reqs = runs[kind]
    assert len(times) == len(reqs) >= 2
    assert np.all(np.diff(times) >= 0)
    assert times[0] >= START and times[-1] < START + DAYS * DAY
    assert all(isinstance(q, Req) and q.completion_tokens >= 1 for q in reqs)
    assert all(len(q.text) + len(q.system or "") < 25_000 for q in reqs)


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_params_are_what_the_gateway_accepts_and_logs(kind: str, runs: dict[str, Run]) -> None:
    for q in runs[kind][2]:
        body = {"model": "stillroom-large", **q.params}
        if q.endpoint == "completions":
            parsed: Any = CompletionRequest.model_validate({**body, "prompt": q.text})
        else:
            assert q.endpoint == "chat.completions"
            msgs = [{"role": "system", "content": q.system}] if q.system else []
            msgs.append({"role": "user", "content": q.text})
            parsed = ChatRequest.model_validate({**body, "messages": msgs})
        logged = parsed.model_dump(exclude_none=True, exclude={"messages", "prompt", "model"})
        assert set(q.params) <= set(logged)
        assert q.status in (200, 400, 429, 500)


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_seeded(kind: str) -> None:
    a, b = run(kind, 3, days=1.5), run(kind, 3, days=1.5)
    assert np.array_equal(a[1], b[1])
    assert [(q.text, q.params, q.system) for q in a[2]] == [
        (q.text, q.params, q.system) for q in b[2]
    ]
    assert a[0].extra.get("model") == b[0].extra.get("model")


def test_the_mix_and_org_sizes_name_the_workloads() -> None:
    assert set(WORKLOAD_MIX) == set(WORKLOADS)
    assert sum(WORKLOAD_MIX.values()) == pytest.approx(0.25)
    assert set(ORG_SIZES) <= set(WORKLOADS)
    assert all(min(sizes) >= 1 for sizes in ORG_SIZES.values())


def test_volume_scales_the_request_count() -> None:
    small, large = run("moderation", 1, volume=0.01), run("moderation", 1, volume=0.04)
    assert 3.0 < len(large[2]) / len(small[2]) < 5.0


def test_support_bot_conversations_under_one_company_prompt() -> None:
    _, _, reqs = run("support_bot", 1, org="Northwind 7")
    _, _, other = run("support_bot", 2, org="Northwind 7")
    assert len({q.system for q in reqs + other}) == 1  # one org, one system prompt
    assert max(q.history for q in reqs) >= 3 and max(q.history for q in reqs) <= 6
    assert {q.params["temperature"] for q in reqs} <= {0.2, 0.3, 0.4, 0.5, 0.6, 0.7}
    assert all(300 <= q.params["max_tokens"] <= 800 for q in reqs)
    assert all(60 <= q.completion_tokens <= 250 for q in reqs)
    _, _, own = run("support_bot", 1, org="Northwind 7", system="You are Bob.")
    assert {q.system for q in own} == {"You are Bob."}


def test_translation_is_one_template_mostly_at_night() -> None:
    _, times, reqs = run("translation_pipeline", 2, tz=0.0)
    assert all(q.text.startswith("Translate the following") for q in reqs)
    assert all(q.params["temperature"] <= 0.3 for q in reqs)
    night = (local_hours(times) >= 0) & (local_hours(times) < 6)
    assert night.mean() > 0.5
    for q in reqs:  # a translation is about as long as its source
        source = len(q.text.split("\n\n", 1)[1]) / 4
        cap = q.params.get("max_tokens") or 10**9
        assert 0.8 * source - 1 <= q.completion_tokens <= min(cap, 1.5 * source + 1)


def test_labeling_is_greedy_short_and_over_distinct_items() -> None:
    kinds = set()
    for seed in range(6):
        _, times, reqs = run("labeling_job", seed)
        assert all(q.params["temperature"] == 0.0 and q.params["max_tokens"] <= 10 for q in reqs)
        assert len({q.text for q in reqs}) > 0.95 * len(reqs)
        assert np.median(np.diff(times)) < 1.0  # bursts
        kinds |= {(q.endpoint, bool(q.params.get("logprobs"))) for q in reqs}
    assert ("completions", True) in kinds


def test_eval_harnesses_send_the_same_public_items_in_bursts() -> None:
    texts = []
    for seed in range(4):
        _, times, reqs = run("eval_harness", seed, volume=0.05, org=f"Lab {seed}")
        texts.append({q.text for q in reqs})
        assert np.median(np.diff(times)) < 1.0
        for q in reqs:
            if q.params.get("max_tokens") == 1:  # multiple choice: scored by log-probs
                assert q.params.get("top_logprobs", 0) >= 5 or q.params.get("logprobs") == 5
    shared = [len(a & b) for i, a in enumerate(texts) for b in texts[i + 1 :]]
    assert max(shared) >= 50


def test_research_samples_many_times_over_a_small_pool() -> None:
    _, _, reqs = run("research_sampling", 4, volume=1.0)
    assert all(4 <= q.params["n"] <= 16 and q.params["temperature"] <= 1.5 for q in reqs)
    assert len({q.text for q in reqs}) <= 300 < len(reqs)


def test_rag_prompts_carry_long_retrieved_context() -> None:
    for seed in range(4):
        _, _, reqs = run("rag", seed)
        tokens = [prompt_tokens(q) for q in reqs]
        assert min(tokens) >= 500 and max(tokens) <= 3500
        assert all(q.text.startswith("Context:\n[1] ") and "Question: " in q.text for q in reqs)
        assert all(50 <= q.completion_tokens <= 300 for q in reqs)


def test_agent_steps_are_long_multi_turn_and_seconds_apart() -> None:
    _, times, reqs = run("agent", 5, volume=0.05)
    assert max(q.history for q in reqs) >= 2 and max(q.history for q in reqs) <= 12
    assert np.median([prompt_tokens(q) for q in reqs]) > 500
    assert (np.diff(times) < 60).mean() > 0.5
    assert all("Tools:" in (q.system or "") for q in reqs)


def test_moderation_labels_around_the_clock() -> None:
    _, times, reqs = run("moderation", 6, volume=0.1, tz=0.0)
    assert len({q.system for q in reqs}) == 1
    assert all(q.params["temperature"] == 0.0 and q.params["max_tokens"] <= 20 for q in reqs)
    per_hour = np.bincount(local_hours(times).astype(int), minlength=24)
    assert per_hour.min() > 0.3 * per_hour.max()


def test_summaries_of_long_documents_in_a_few_runs() -> None:
    _, times, reqs = run("batch_summarization", 7, days=7.0, volume=0.2)
    assert all(1000 <= prompt_tokens(q) <= 6100 for q in reqs)
    assert all(100 <= q.completion_tokens <= 400 for q in reqs)
    assert len({q.text.split("\n\n", 1)[0] for q in reqs}) == 1  # one template
    assert len(np.unique((times - START) // DAY)) <= 5


def test_ide_completion_is_code_from_one_codebase_in_working_hours() -> None:
    _, times, reqs = run("ide_completion", 8, days=7.0, volume=0.1, org="Hooli 3", tz=0.0)
    _, _, peer = run("ide_completion", 9, days=7.0, volume=0.1, org="Hooli 3", tz=0.0)
    assert all(q.endpoint == "completions" and q.params["stop"] for q in reqs)
    assert all(16 <= q.params["max_tokens"] <= 128 and q.params["temperature"] <= 0.2 for q in reqs)
    assert len({q.text for q in reqs}) > 0.8 * len(reqs)
    lines = {line for q in reqs for line in q.text.splitlines()}
    assert len(lines & {line for q in peer for line in q.text.splitlines()}) > 20
    weekday = ((times - START) // DAY) % 7 < 5
    assert weekday.mean() > 0.9
