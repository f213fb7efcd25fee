"""The steps of a trace: each test run against one suspect, its result as a dict with the
statement of what it proves. Heavy imports (torch, transformers) wait inside the steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from stillroom.trace.options import ServedBy, TraceMode, TraceOptions, is_api

Progress = Callable[[str], None]


def prompts_to_ask(o: TraceOptions, say: Progress) -> list[str]:
    """The prompt file's questions; a repeated question adds nothing but cost, so it is asked
    once, and said so."""
    from stillroom.config import PromptSource, SplitConfig
    from stillroom.errors import InputError
    from stillroom.harvest.prompts import load_prompts

    source = PromptSource(path=o.prompts, field=o.prompt_field)
    items, report = load_prompts(source, SplitConfig(), skip_bad=True)
    repeats = [s for s in report.skipped if "duplicate prompt id" in s]
    if len(repeats) < len(report.skipped):
        raise InputError(next(s for s in report.skipped if s not in repeats))
    if repeats:
        say(f"{o.prompts}: {len(repeats)} repeated prompts asked once")
    return [item.prompt or "" for item in items]


def read_served_checked(o: TraceOptions) -> tuple[list[Any], Any]:
    """(served answers, the key they carry or None): the log and the key are checked before
    any model loads."""
    from stillroom.trace.served import check_key, read_served
    from stillroom.watermark.key import load_key

    assert o.served is not None
    items = read_served(o.served, o.accounts, limit=o.served_limit or None)
    key = load_key(o.key_file) if o.key_file is not None else None
    check_key(items, key)
    return items, key


def served_answers(
    who: Any, o: TraceOptions, items: list[Any], key: Any, say: Progress
) -> dict[str, Any]:
    from stillroom.teachers.local import LocalTeacher
    from stillroom.trace import served as st
    from stillroom.trace.statements import served_statement

    say(f"served answers: {len(items)}; replaying each {o.twins}x with {o.replay}")
    fresh = st.twin_replays(
        items,
        lambda: LocalTeacher.load(o.replay, dtype=o.replay_dtype, batch_size=32, watermark=key),
        twins=o.twins,
        seed=o.seed,
        cache=o.replays,
    )
    if o.scoring == ServedBy.LIKELIHOOD:
        from stillroom.runtime.loading import load_tokenizer

        api, tok = None, None
        if is_api(o.suspect):  # prompt log-probs through the API (echo)
            from stillroom.trace.api_mass import LogprobsApi

            tok = load_tokenizer(o.tokenizer)
            api = LogprobsApi(o.suspect, o.model or "", o.api_key, tok)
        result = st.likelihood_test(
            o.suspect, items, fresh, accounts=o.accounts, baseline=o.baseline, api=api,
            tokenizer=tok,
        )  # fmt: skip
    else:
        from stillroom.runtime.loading import load_tokenizer

        result = st.answers_test(
            who, items, fresh, load_tokenizer(o.tokenizer), accounts=o.accounts, seed=o.seed
        )
    return asdict(result) | {"statement": served_statement(result)}


def look_line(look: Any) -> str:
    if hasattr(look, "tuples_scored"):
        return (
            f"  {look.queries}: {look.tuples_scored} tuples, {look.green} green, "
            f"p = {look.p_adjusted:.3g}"
        )
    return (
        f"  {look.queries}: {look.positions} positions, z = {look.z:.2f}, p = {look.p_adjusted:.3g}"
    )


# Gets the radioactivity result so far after each look (a dict marked "running").
Partial = Callable[[dict[str, Any]], None]


def running_result(o: TraceOptions, key_id: str, looks: list[Any]) -> dict[str, Any]:
    """What a look shows before the verdict: the looks so far, never a conclusion."""
    last = looks[-1]
    return {
        "running": True,
        "mode": o.mode.value,
        "key_id": key_id,
        "target_p": o.target_p,
        "queries": last.queries,
        "p_value": last.p_adjusted,
        "looks": [asdict(look) for look in looks],
        "statement": (
            f"Running: p = {last.p_adjusted:.3g} after {last.queries} (corrected for "
            f"{len(looks)} looks); not a verdict until the test stops."
        ),
    }


def radioactivity(
    who: Any, o: TraceOptions, asked: list[str], say: Progress, partial: Partial | None = None
) -> dict[str, Any]:
    from stillroom.runtime.loading import load_tokenizer
    from stillroom.trace.statements import mass_statement, statement
    from stillroom.watermark.key import load_key

    assert o.key_file is not None
    key = load_key(o.key_file)
    tok = load_tokenizer(o.tokenizer)
    model = getattr(who, "teacher", None)
    looks: list[Any] = []

    def show(look: Any) -> None:
        say(look_line(look))
        looks.append(look)
        if partial is not None:
            partial(running_result(o, key.key_id, looks))

    if o.mode == TraceMode.MASS:
        found = _mass(o, key, tok, asked, model, show, say)
        return asdict(found) | {"statement": mass_statement(found)}
    if o.mode == TraceMode.READ:
        from stillroom.trace.reading import read_mode_test

        result = read_mode_test(
            o.suspect, our_texts(o, say), key, tok, budget=o.budget, target_p=o.target_p,
            progress=show, model=model,
        )  # fmt: skip
    else:
        from stillroom.trace.radioactivity import radioactivity_test

        result = radioactivity_test(
            who, asked, key, tok, progress=show, budget=o.budget, target_p=o.target_p,
            max_tokens=o.max_tokens, temperature=o.temperature, seed=o.seed,
            progress_batch=lambda done, look: say(f"  answered {done} of {look} (next look)"),
        )  # fmt: skip
    return asdict(result) | {"statement": statement(result)}


def _mass(
    o: TraceOptions, key: Any, tok: Any, asked: list[str], model: Any, show: Any, say: Progress
) -> Any:
    """Green mass: on the weights here, or through the suspect's API log-probs (on our texts
    by echo, or on its answers to the prompts when no texts are given)."""
    from stillroom.teachers.local import LocalTeacher

    texts = our_texts(o, say) if o.texts is not None else None
    if not is_api(o.suspect):
        from stillroom.trace.mass import mass_test

        assert texts is not None  # checked with the other options
        return mass_test(
            o.suspect, texts, key, tok, baseline=o.baseline, budget=o.budget,
            target_p=o.target_p, model=model, progress=show,
        )  # fmt: skip
    from stillroom.trace.api_mass import LogprobsApi, api_mass_test

    assert o.model is not None  # checked when the suspect was opened
    api = LogprobsApi(o.suspect, o.model, o.api_key, tok, k=o.top_logprobs)
    base = LocalTeacher.load(o.baseline) if o.baseline is not None else None
    say(f"reading the top {o.top_logprobs} log-probs of {api.name}")
    return api_mass_test(
        api, key, tok, texts=texts, prompts=None if texts else asked, baseline_model=base,
        baseline=o.baseline, budget=o.budget, target_p=o.target_p, max_tokens=o.max_tokens,
        temperature=o.temperature, seed=o.seed, progress=show,
    )  # fmt: skip


def our_texts(o: TraceOptions, say: Progress) -> list[str]:
    from stillroom.jsonl_texts import jsonl_chunks

    assert o.texts is not None  # checked with the other options
    ours = [t for _, chunk in jsonl_chunks(o.texts, o.text_field) for t in chunk]
    say(f"reading {min(len(ours), o.budget)} of our texts")
    return ours


def output_match(who: Any, o: TraceOptions, asked: list[str], say: Progress) -> dict[str, Any]:
    from stillroom.runtime.loading import load_tokenizer
    from stillroom.trace import match
    from stillroom.trace.suspects import LazySuspect

    lazy = {n: LazySuspect(s, n, o.api_key) for n, s in {**o.candidates, **o.references}.items()}
    drawn = match.random_prompts(asked, o.match_prompts, o.seed)
    if len(drawn) < o.match_prompts:
        say(
            f"output match: only {len(drawn)} distinct prompts in {o.prompts}; more prompts "
            "give the test more power"
        )
    result = match.output_match_test(
        who,
        {n: lazy[n] for n in o.candidates},
        {n: lazy[n] for n in o.references},
        drawn,
        load_tokenizer(o.tokenizer),
        max_tokens=o.match_tokens,
        alpha=o.alpha,
        seed=o.seed,
        progress=lambda name: say(f"greedy answers: {name}"),
    )
    return asdict(result) | {"statement": match.statement(result)}


def identity(who: Any, seed: int) -> dict[str, Any]:
    from stillroom.trace.probes import identity_probes
    from stillroom.trace.report import identity_statement

    found = asdict(identity_probes(who, seed=seed))
    return found | {
        "queries": len(found["answers"]),
        "statement": identity_statement(found["claims"], len(found["answers"])),
    }
