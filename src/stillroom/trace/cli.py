"""`stillroom trace SUSPECT`: did this model learn from our outputs? A verdict with p-values."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from stillroom.teachers.gemma import DEFAULT_TEACHER


def trace(
    suspect: Annotated[
        str, typer.Argument(help="A model folder, or an OpenAI-compatible base URL.")
    ],
    key_file: Annotated[
        Path | None, typer.Option(help="The watermark key our outputs carried (radioactivity).")
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="Radioactivity: 'generate' (score its answers), 'read' (its argmax on our "
            "texts) or 'mass' (its whole next-token distribution on unwatermarked texts)."
        ),
    ] = "generate",
    texts: Annotated[
        Path | None,
        typer.Option(
            help="--mode read: JSONL of the teacher's answers, watermarked or not; --mode "
            "mass: unwatermarked ones."
        ),
    ] = None,
    text_field: Annotated[str, typer.Option(help="--mode read/mass: the text field.")] = "text",
    baseline: Annotated[
        str | None,
        typer.Option(
            help="--mode mass: a model folder (or gemma-3-270m) that never saw watermarked "
            "text, the teacher for one; its predictions are subtracted, for more power."
        ),
    ] = None,
    served: Annotated[
        str | None,
        typer.Option(
            help="Served-answer test: the gateway database (SQLite file or URL) that logged "
            "what we served; with --account."
        ),
    ] = None,
    account: Annotated[
        list[str] | None,
        typer.Option(help="--served: whose answers to test, a name or id (repeat)."),
    ] = None,
    replay: Annotated[
        str,
        typer.Option(
            help="--served: the gateway's model, to draw a fresh twin of each served answer "
            "(watermarked with --key-file if the served ones were)."
        ),
    ] = DEFAULT_TEACHER,
    replay_dtype: Annotated[
        str, typer.Option(help="--served: the precision the gateway ran its model at.")
    ] = "float32",
    replays: Annotated[
        Path | None,
        typer.Option(help="--served: keep the twins in this JSONL file and reuse them."),
    ] = None,
    served_limit: Annotated[
        int, typer.Option(help="--served: test at most this many served answers (0: all).")
    ] = 0,
    served_by: Annotated[
        str | None,
        typer.Option(
            help="--served: 'likelihood' (open weights, the default for a folder) or "
            "'answers' (its greedy answers, the only way for an API)."
        ),
    ] = None,
    candidate: Annotated[
        list[str] | None,
        typer.Option(help="Possible parent NAME=FOLDER_OR_URL (repeat); an API is asked NAME."),
    ] = None,
    reference: Annotated[
        list[str] | None,
        typer.Option(help="Comparable non-parent NAME=FOLDER_OR_URL (repeat)."),
    ] = None,
    prompts: Annotated[
        Path, typer.Option(help="JSONL or text file of prompts to ask the suspect.")
    ] = Path("examples/prompts/questions.jsonl"),
    field: Annotated[str, typer.Option(help="The prompt field of each row.")] = "question",
    model: Annotated[str | None, typer.Option(help="API suspects: the model name.")] = None,
    api_key_env: Annotated[
        str, typer.Option(help="API suspects: env var of the key.")
    ] = "OPENAI_API_KEY",
    tokenizer: Annotated[
        str, typer.Option(help="The watermarked teacher's tokenizer (folder or name).")
    ] = DEFAULT_TEACHER,
    budget: Annotated[int, typer.Option(help="Most queries (or texts read) to spend.")] = 2000,
    target_p: Annotated[float, typer.Option(help="Stop once the p-value is below this.")] = 1e-6,
    max_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 128,
    match_prompts: Annotated[int, typer.Option(help="Output match: random prompts.")] = 200,
    match_tokens: Annotated[int, typer.Option(help="Output match: tokens per answer.")] = 32,
    alpha: Annotated[float, typer.Option(help="Output match: name a parent below this.")] = 0.01,
    radioactivity: Annotated[
        bool,
        typer.Option(help="With --key-file, test radioactivity (off: the key only marks replays)."),
    ] = True,
    probes: Annotated[bool, typer.Option(help="Also ask who made it.")] = True,
    html: Annotated[Path | None, typer.Option(help="Also write an HTML report here.")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Test whether SUSPECT learned from outputs watermarked with KEY_FILE (radioactivity),
    which candidate it derives from (output match), and ask it who made it. Prints the
    verdict as JSON; --html writes it for people too.

    Example: stillroom trace runs/rival/student --key-file wm.json --budget 2000

    Example: stillroom trace runs/rival/student --key-file wm.json --mode read --texts ours.jsonl

    Example: stillroom trace runs/rival/student --key-file wm.json --mode mass
    --texts plain.jsonl --baseline gemma-3-270m

    Example: stillroom trace runs/rival/student --served gateway.sqlite --account nimbus-1
    --key-file wm.json --baseline gemma-3-270m

    Example: stillroom trace URL --model rival-1 --candidate ours=gemma-3-270m
    --reference a=models/a --reference b=models/b --html trace.html
    """
    from stillroom.config import PromptSource, SplitConfig
    from stillroom.errors import InputError
    from stillroom.harvest.prompts import load_prompts
    from stillroom.trace.suspects import LazySuspect, open_suspect, parse_named

    cands = parse_named(candidate or [], "--candidate")
    refs = parse_named(reference or [], "--reference")
    if key_file is None and not cands and served is None:
        raise InputError(
            "nothing to test: give --key-file (radioactivity), --served and --account "
            "(served answers) and/or --candidate and --reference (output match)"
        )
    if mode not in ("generate", "read", "mass"):
        raise InputError(f"--mode {mode!r}: use 'generate', 'read' or 'mass'")
    if mode != "generate" and texts is None and radioactivity:
        raise InputError(
            f"--mode {mode} needs texts to read: give --texts FILE (teacher answers, JSONL)"
        )
    if mode != "generate" and radioactivity and suspect.startswith(("http://", "https://")):
        raise InputError(
            f"--mode {mode} needs the suspect's weights; for an API suspect use --mode generate"
        )
    if baseline is not None and mode != "mass" and served is None:
        raise InputError("--baseline is for --mode mass or --served; drop it or add one of them")
    api_suspect = suspect.startswith(("http://", "https://"))
    served_by = served_by or ("answers" if api_suspect else "likelihood")
    if served_by not in ("likelihood", "answers"):
        raise InputError(f"--served-by {served_by!r}: use 'likelihood' or 'answers'")
    if served_by == "likelihood" and api_suspect:
        raise InputError(
            "--served-by likelihood needs the suspect's weights; for an API suspect use "
            "--served-by answers"
        )
    if baseline is not None and served is not None and served_by == "answers" and mode != "mass":
        raise InputError(
            "--baseline nets out another model's likelihood; --served-by answers has none: "
            "drop --baseline"
        )
    if account and served is None:
        raise InputError("--account picks whose served answers to test: add --served LOG")
    api_key = os.environ.get(api_key_env)
    asked: list[str] = []
    if cands or (key_file is not None and radioactivity and mode == "generate"):
        # A repeated question adds nothing but cost: it is asked once, and said so.
        items, report = load_prompts(PromptSource(path=prompts, field=field), SplitConfig(),
                                     skip_bad=True)  # fmt: skip
        repeats = [s for s in report.skipped if "duplicate prompt id" in s]
        if len(repeats) < len(report.skipped):
            raise InputError(next(s for s in report.skipped if s not in repeats))
        if repeats:
            sys.stderr.write(f"{prompts}: {len(repeats)} repeated prompts asked once\n")
        asked = [item.prompt or "" for item in items]
    served_items, served_key = None, None
    if served is not None:  # the log and the key are checked before any model loads
        from stillroom.trace.served import check_key, read_served
        from stillroom.watermark.key import load_key

        served_items = read_served(served, account or [], limit=served_limit or None)
        served_key = load_key(key_file) if key_file is not None else None
        check_key(served_items, served_key)
    who = open_suspect(suspect, model=model, api_key=api_key)
    verdict: dict[str, Any] = {"suspect": getattr(who, "name", suspect)}
    if served_items is not None:
        verdict["served"] = _served(
            who, suspect, served_items, account or [], served_key, replay, replay_dtype, replays,
            served_by, baseline, tokenizer, seed=seed,
        )  # fmt: skip
    if key_file is not None and radioactivity:
        verdict["radioactivity"] = _radioactivity(
            who, suspect, key_file, mode, texts, text_field, asked, tokenizer, baseline,
            budget=budget, target_p=target_p, max_tokens=max_tokens, seed=seed,
        )  # fmt: skip
    if cands:
        lazy = {n: LazySuspect(s, n, api_key) for n, s in {**cands, **refs}.items()}
        verdict["output_match"] = _output_match(
            who, {n: lazy[n] for n in cands}, {n: lazy[n] for n in refs}, asked, tokenizer,
            match_prompts=match_prompts, match_tokens=match_tokens, alpha=alpha, seed=seed,
        )  # fmt: skip
    if probes:
        from stillroom.trace.probes import identity_probes
        from stillroom.trace.report import identity_statement

        found = asdict(identity_probes(who, seed=seed))
        verdict["identity"] = found | {
            "queries": len(found["answers"]),
            "statement": identity_statement(found["claims"], len(found["answers"])),
        }
    if html is not None:
        from stillroom.trace.report import write_html

        write_html(verdict, html)
        sys.stderr.write(f"report: {html}\n")
    sys.stdout.write(json.dumps(verdict, indent=2) + "\n")


def _show(look: Any) -> None:
    sys.stderr.write(
        f"  {look.queries}: {look.tuples_scored} tuples, {look.green} green, "
        f"p = {look.p_adjusted:.3g}\n"
    )


def _radioactivity(
    who: Any,
    spec: str,
    key_file: Path,
    mode: str,
    texts: Path | None,
    text_field: str,
    asked: list[str],
    tokenizer: str,
    baseline: str | None,
    **opts: Any,
) -> dict[str, Any]:
    from stillroom.trace.radioactivity import radioactivity_test
    from stillroom.watermark.detect import load_tokenizer
    from stillroom.watermark.key import load_key

    key = load_key(key_file)
    tok = load_tokenizer(tokenizer)
    if mode == "mass":
        from stillroom.trace.mass import mass_test

        ours = _texts(texts, text_field, opts["budget"])
        found = mass_test(
            spec,
            ours,
            key,
            tok,
            baseline=baseline,
            budget=opts["budget"],
            target_p=opts["target_p"],
            model=getattr(who, "teacher", None),
        )
        return asdict(found) | {"statement": mass_statement(found)}
    if mode == "read":
        from stillroom.trace.reading import read_mode_test

        ours = _texts(texts, text_field, opts["budget"])
        result = read_mode_test(
            spec,
            ours,
            key,
            tok,
            budget=opts["budget"],
            target_p=opts["target_p"],
            progress=_show,
            model=getattr(who, "teacher", None),
        )
    else:
        result = radioactivity_test(who, asked, key, tok, progress=_show, **opts)
    return asdict(result) | {"statement": statement(result)}


def _served(
    who: Any,
    spec: str,
    items: list[Any],
    accounts: list[str],
    key: Any,
    replay_model: str,
    dtype: str,
    cache: Path | None,
    served_by: str,
    baseline: str | None,
    tokenizer: str,
    *,
    seed: int,
) -> dict[str, Any]:
    from stillroom.teachers.local import LocalTeacher
    from stillroom.trace import served as st

    sys.stderr.write(f"served answers: {len(items)}; replaying each with {replay_model}\n")
    fresh = st.replays(
        items,
        lambda: LocalTeacher.load(replay_model, dtype=dtype, batch_size=32, watermark=key),
        seed=seed,
        cache=cache,
    )
    if served_by == "likelihood":
        result = st.likelihood_test(spec, items, fresh, accounts=accounts, baseline=baseline)
    else:
        from stillroom.watermark.detect import load_tokenizer

        result = st.answers_test(
            who, items, fresh, load_tokenizer(tokenizer), accounts=accounts, seed=seed
        )
    return asdict(result) | {"statement": served_statement(result)}


def _texts(texts: Path | None, field: str, budget: int) -> list[str]:
    from stillroom.watermark.cli import jsonl_chunks

    assert texts is not None  # checked with the other options
    ours = [t for _, chunk in jsonl_chunks(texts, field) for t in chunk]
    sys.stderr.write(f"reading {min(len(ours), budget)} of our texts\n")
    return ours


def _say_greedy(name: str) -> None:
    sys.stderr.write(f"greedy answers: {name}\n")


def _output_match(
    who: Any,
    cands: dict[str, Any],
    refs: dict[str, Any],
    asked: list[str],
    tokenizer: str,
    *,
    match_prompts: int,
    match_tokens: int,
    alpha: float,
    seed: int,
) -> dict[str, Any]:
    from stillroom.trace import match
    from stillroom.watermark.detect import load_tokenizer

    drawn = match.random_prompts(asked, match_prompts, seed)
    if len(drawn) < match_prompts:
        sys.stderr.write(
            f"output match: only {len(drawn)} distinct prompts in --prompts; more prompts "
            "give the test more power\n"
        )
    result = match.output_match_test(
        who,
        cands,
        refs,
        drawn,
        load_tokenizer(tokenizer),
        max_tokens=match_tokens,
        alpha=alpha,
        seed=seed,
        progress=_say_greedy,
    )
    return asdict(result) | {"statement": match.statement(result)}


def statement(r: Any) -> str:
    """What the radioactivity result proves, and what it does not, in plain words."""
    if r.mode == "read":
        where = f"the suspect's next-token predictions on {r.queries} of our texts"
    else:
        where = f"the suspect's answers to {r.queries} queries"
    if r.stopped == "significant":
        return (
            f"In {where}, {r.green} of {r.tuples_scored} distinct (context, token) pairs are "
            f"green for key {r.key_id} ({r.green_rate:.1%} vs {r.gamma:.0%} by chance): "
            f"p = {r.p_value:.2g}, corrected for {len(r.looks)} looks. A model that never saw "
            "text watermarked with this key would show this with at most that probability. It "
            "shows the suspect learned from such text; it does not show how it obtained it, "
            "nor how much of its training data it was."
        )
    return (
        f"In {where}, no evidence at p < {r.target_p:g} (p = {r.p_value:.2g}, {r.green} of "
        f"{r.tuples_scored} pairs green vs {r.gamma:.0%} expected). This does not show the "
        "suspect never saw our outputs: little watermarked data, a different domain, or "
        "filtering can leave too weak a trace for this budget."
    )


def mass_statement(r: Any) -> str:
    """What the green-mass result proves, and what it does not, in plain words."""
    against = f", net of the baseline {r.baseline}'s" if r.baseline else ""
    where = (
        f"Reading {r.queries} unwatermarked texts ({r.positions:,} positions), the suspect put "
        f"{r.green_mass:.1%} of its probability on tokens green for key {r.key_id} "
        f"({r.gamma:.0%} by chance{against}): z = {r.z:.2f}"
    )
    if r.stopped == "significant":
        return (
            f"{where}, p = {r.p_value:.2g} (at most {r.p_bound:.2g} with no approximation). "
            "A model that never saw text watermarked with this key would score this high with "
            "at most that probability. It shows the suspect learned from such text; it does "
            "not show how it obtained it, nor how much of its training data it was."
        )
    return (
        f"{where}, p = {r.p_value:.2g}: no evidence at p < {r.target_p:g}. This does not show "
        "the suspect never saw our outputs: a small watermarked share of its data can leave "
        "too weak a trace."
    )


def served_statement(r: Any) -> str:
    """What the served-answer result proves, and what it does not, in plain words."""
    how = (
        "found it likelier" + (f", net of {r.baseline}," if r.baseline else "")
        if r.scoring == "likelihood"
        else "answered closer to it"
    )
    where = (
        f"Of {r.pairs} answers served to {', '.join(r.accounts)}, each paired with a fresh "
        f"answer to the same request, the suspect {how} than its twin in {r.wins} "
        f"(z = {r.z:.2f}, p = {r.p_value:.2g}, at most {r.p_bound:.2g} with no approximation)"
    )
    if r.p_value < 1e-3:
        return (
            f"{where}. A model that never trained on those served answers prefers them over "
            "equally likely twins this strongly with at most that probability. It shows the "
            "suspect learned from what these accounts received; it does not show how much of "
            "its training data that was, nor who trained it."
        )
    return (
        f"{where}: no strong evidence. This does not show the suspect never saw them: a "
        "small share of its data, or a model that learned little from each answer, leaves "
        "too weak a trace."
    )
