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
    key_file: Annotated[Path, typer.Option(help="The watermark key our outputs carried.")],
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
    budget: Annotated[int, typer.Option(help="Most queries to spend.")] = 2000,
    target_p: Annotated[float, typer.Option(help="Stop once the p-value is below this.")] = 1e-6,
    max_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 128,
    probes: Annotated[bool, typer.Option(help="Also ask who made it.")] = True,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Test whether SUSPECT learned from outputs watermarked with KEY_FILE (radioactivity),
    and ask it who made it. Prints the verdict as JSON.

    Example: stillroom trace runs/rival/student --key-file wm.json --budget 2000
    """
    from stillroom.config import PromptSource, SplitConfig
    from stillroom.harvest.prompts import load_prompts
    from stillroom.trace.probes import identity_probes
    from stillroom.trace.radioactivity import radioactivity_test
    from stillroom.trace.suspects import open_suspect
    from stillroom.watermark.detect import load_tokenizer
    from stillroom.watermark.key import load_key

    key = load_key(key_file)
    items, _ = load_prompts(PromptSource(path=prompts, field=field), SplitConfig())
    texts = [item.prompt or "" for item in items]
    tok = load_tokenizer(tokenizer)
    who = open_suspect(suspect, model=model, api_key=os.environ.get(api_key_env))

    def show(look: Any) -> None:
        sys.stderr.write(
            f"  {look.queries} queries: {look.tuples_scored} tuples, "
            f"{look.green} green, p = {look.p_adjusted:.3g}\n"
        )

    result = radioactivity_test(
        who,
        texts,
        key,
        tok,
        budget=budget,
        target_p=target_p,
        max_tokens=max_tokens,
        seed=seed,
        progress=show,
    )
    verdict: dict[str, Any] = {"radioactivity": asdict(result), "statement": statement(result)}
    if probes:
        verdict["identity"] = asdict(identity_probes(who, seed=seed))
    sys.stdout.write(json.dumps(verdict, indent=2) + "\n")


def statement(r: Any) -> str:
    """What the radioactivity result proves, and what it does not, in plain words."""
    if r.stopped == "significant":
        return (
            f"After {r.queries} queries, {r.green} of {r.tuples_scored} distinct (context, token) "
            f"pairs in the suspect's answers are green for key {r.key_id} ({r.green_rate:.1%} vs "
            f"{r.gamma:.0%} by chance): p = {r.p_value:.2g}, corrected for {len(r.looks)} looks. "
            "A model that never saw text watermarked with this key would show this with at most "
            "that probability. It shows the suspect learned from such text; it does not show how "
            "it obtained it, nor how much of its training data it was."
        )
    return (
        f"After {r.queries} queries, no evidence at p < {r.target_p:g} (p = {r.p_value:.2g}, "
        f"{r.green} of {r.tuples_scored} pairs green vs {r.gamma:.0%} expected). This does not "
        "show the suspect never saw our outputs: little watermarked data, a different domain, "
        "or filtering can leave too weak a trace for this budget."
    )
