"""The steps of a trace: each test run against one suspect, its result as a dict with the
statement of what it proves. Heavy imports (torch, transformers) wait inside the steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from stillroom.trace.options import ServedBy, TraceMode, TraceOptions

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

    say(f"served answers: {len(items)}; replaying each with {o.replay}")
    fresh = st.replays(
        items,
        lambda: LocalTeacher.load(o.replay, dtype=o.replay_dtype, batch_size=32, watermark=key),
        seed=o.seed,
        cache=o.replays,
    )
    if o.scoring == ServedBy.LIKELIHOOD:
        result = st.likelihood_test(
            o.suspect, items, fresh, accounts=o.accounts, baseline=o.baseline
        )
    else:
        from stillroom.runtime.loading import load_tokenizer

        result = st.answers_test(
            who, items, fresh, load_tokenizer(o.tokenizer), accounts=o.accounts, seed=o.seed
        )
    return asdict(result) | {"statement": served_statement(result)}


def look_line(look: Any) -> str:
    return (
        f"  {look.queries}: {look.tuples_scored} tuples, {look.green} green, "
        f"p = {look.p_adjusted:.3g}"
    )


def radioactivity(who: Any, o: TraceOptions, asked: list[str], say: Progress) -> dict[str, Any]:
    from stillroom.runtime.loading import load_tokenizer
    from stillroom.trace.statements import mass_statement, statement
    from stillroom.watermark.key import load_key

    assert o.key_file is not None
    key = load_key(o.key_file)
    tok = load_tokenizer(o.tokenizer)
    model = getattr(who, "teacher", None)
    if o.mode == TraceMode.MASS:
        from stillroom.trace.mass import mass_test

        found = mass_test(
            o.suspect, our_texts(o, say), key, tok, baseline=o.baseline, budget=o.budget,
            target_p=o.target_p, model=model,
        )  # fmt: skip
        return asdict(found) | {"statement": mass_statement(found)}

    def show(look: Any) -> None:
        say(look_line(look))

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
        )  # fmt: skip
    return asdict(result) | {"statement": statement(result)}


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
