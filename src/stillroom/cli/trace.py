"""`stillroom trace SUSPECT`: did this model learn from our outputs? A verdict with p-values."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from stillroom.cli.options import parse_options
from stillroom.cli.output import emit, say
from stillroom.errors import InputError
from stillroom.runtime.gemma import DEFAULT_TEACHER
from stillroom.trace.options import DEFAULT_QUESTIONS, ServedBy, TraceMode
from stillroom.trace.suspects import parse_named

# Option names of the library whose flag is not simply `--option-name`.
FLAGS = {
    "accounts": "--account",
    "candidates": "--candidate",
    "references": "--reference",
    "prompt_field": "--field",
}


def trace(  # long: typer reads the options from this signature
    suspect: Annotated[
        str, typer.Argument(help="A model folder, or an OpenAI-compatible base URL.")
    ],
    key_file: Annotated[
        Path | None,
        typer.Option(
            rich_help_panel="Radioactivity (--key-file)",
            help="The watermark key our outputs carried (radioactivity).",
        ),
    ] = None,
    mode: Annotated[
        TraceMode,
        typer.Option(
            rich_help_panel="Radioactivity (--key-file)",
            help="Radioactivity: 'generate' (score its answers), 'read' (its argmax on our "
            "texts) or 'mass' (its whole next-token distribution on unwatermarked texts).",
        ),
    ] = TraceMode.GENERATE,
    texts: Annotated[
        Path | None,
        typer.Option(
            rich_help_panel="Radioactivity (--key-file)",
            help="--mode read: JSONL of the teacher's answers, watermarked or not; --mode "
            "mass: unwatermarked ones.",
        ),
    ] = None,
    text_field: Annotated[
        str,
        typer.Option(
            rich_help_panel="Radioactivity (--key-file)", help="--mode read/mass: the text field."
        ),
    ] = "text",
    baseline: Annotated[
        str | None,
        typer.Option(
            rich_help_panel="Radioactivity (--key-file)",
            help="--mode mass: a model folder (or gemma-3-270m) that never saw watermarked "
            "text, the teacher for one; its predictions are subtracted, for more power.",
        ),
    ] = None,
    served: Annotated[
        str | None,
        typer.Option(
            rich_help_panel="Served answers (--served)",
            help="Served-answer test: the gateway database (SQLite file or URL) that logged "
            "what we served; with --account.",
        ),
    ] = None,
    account: Annotated[
        list[str] | None,
        typer.Option(
            rich_help_panel="Served answers (--served)",
            help="--served: whose answers to test, a name or id (repeat).",
        ),
    ] = None,
    replay: Annotated[
        str,
        typer.Option(
            rich_help_panel="Served answers (--served)",
            help="--served: the gateway's model, to draw a fresh twin of each served answer "
            "(watermarked with --key-file if the served ones were).",
        ),
    ] = DEFAULT_TEACHER,
    replay_dtype: Annotated[
        str,
        typer.Option(
            rich_help_panel="Served answers (--served)",
            help="--served: the precision the gateway ran its model at.",
        ),
    ] = "float32",
    replays: Annotated[
        Path | None,
        typer.Option(
            rich_help_panel="Served answers (--served)",
            help="--served: keep the twins in this JSONL file and reuse them.",
        ),
    ] = None,
    twins: Annotated[
        int,
        typer.Option(
            rich_help_panel="Served answers (--served)",
            help="--served: fresh twins drawn for each served answer (1-16). More twins "
            "make the test stronger, up to 1.41x its z at one twin; each costs a replay and "
            "a suspect read per answer.",
        ),
    ] = 3,
    served_limit: Annotated[
        int,
        typer.Option(
            rich_help_panel="Served answers (--served)",
            help="--served: test at most this many served answers (0: all).",
        ),
    ] = 0,
    served_by: Annotated[
        ServedBy | None,
        typer.Option(
            rich_help_panel="Served answers (--served)",
            help="--served: 'likelihood' (its log-probs of each answer: open weights, the "
            "default for a folder, or an API that echoes prompt log-probs) or 'answers' (its "
            "greedy answers, the default for an API).",
        ),
    ] = None,
    candidate: Annotated[
        list[str] | None,
        typer.Option(
            rich_help_panel="Output match (--candidate)",
            help="Possible parent NAME=FOLDER_OR_URL (repeat); an API is asked NAME.",
        ),
    ] = None,
    reference: Annotated[
        list[str] | None,
        typer.Option(
            rich_help_panel="Output match (--candidate)",
            help="Comparable non-parent NAME=FOLDER_OR_URL (repeat).",
        ),
    ] = None,
    prompts: Annotated[
        Path,
        typer.Option(
            rich_help_panel="Suspect and prompts",
            help="JSONL or text file of prompts to ask the suspect (default: 310 varied "
            "questions shipped with stillroom).",
        ),
    ] = DEFAULT_QUESTIONS,
    field: Annotated[
        str,
        typer.Option(rich_help_panel="Suspect and prompts", help="The prompt field of each row."),
    ] = "question",
    model: Annotated[
        str | None,
        typer.Option(rich_help_panel="Suspect and prompts", help="API suspects: the model name."),
    ] = None,
    api_key_env: Annotated[
        str,
        typer.Option(
            rich_help_panel="Suspect and prompts", help="API suspects: env var of the key."
        ),
    ] = "OPENAI_API_KEY",
    tokenizer: Annotated[
        str,
        typer.Option(
            rich_help_panel="Radioactivity (--key-file)",
            help="The watermarked teacher's tokenizer (folder or name).",
        ),
    ] = DEFAULT_TEACHER,
    budget: Annotated[
        int,
        typer.Option(
            rich_help_panel="Radioactivity (--key-file)",
            help="Most queries (or texts read) to spend.",
        ),
    ] = 2000,
    target_p: Annotated[
        float,
        typer.Option(
            rich_help_panel="Radioactivity (--key-file)",
            help="Stop once the p-value is below this.",
        ),
    ] = 1e-6,
    max_tokens: Annotated[
        int, typer.Option(rich_help_panel="Radioactivity (--key-file)", help="Tokens per answer.")
    ] = 128,
    top_logprobs: Annotated[
        int,
        typer.Option(
            rich_help_panel="Radioactivity (--key-file)",
            help="--mode mass on an API suspect: the top log-probs asked for at each token "
            "(OpenAI and vLLM allow up to 20).",
        ),
    ] = 20,
    temperature: Annotated[
        float,
        typer.Option(
            rich_help_panel="Radioactivity (--key-file)",
            help="The suspect samples its answers at this temperature (generate mode).",
        ),
    ] = 0.8,
    match_prompts: Annotated[
        int,
        typer.Option(
            rich_help_panel="Output match (--candidate)", help="Output match: random prompts."
        ),
    ] = 200,
    match_tokens: Annotated[
        int,
        typer.Option(
            rich_help_panel="Output match (--candidate)", help="Output match: tokens per answer."
        ),
    ] = 32,
    alpha: Annotated[
        float,
        typer.Option(
            rich_help_panel="Output match (--candidate)",
            help="Output match: name a parent below this.",
        ),
    ] = 0.01,
    radioactivity: Annotated[
        bool,
        typer.Option(
            rich_help_panel="Radioactivity (--key-file)",
            help="With --key-file, test radioactivity (off: the key only marks replays).",
        ),
    ] = True,
    probes: Annotated[
        bool, typer.Option(rich_help_panel="Suspect and prompts", help="Also ask who made it.")
    ] = True,
    html: Annotated[
        Path | None,
        typer.Option(
            rich_help_panel="Suspect and prompts",
            help="Also write an HTML report here, rewritten after every look.",
        ),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            rich_help_panel="Suspect and prompts",
            help="Also write the verdict as JSON here, rewritten after every look, so a run "
            "cut off keeps what it found.",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(rich_help_panel="Suspect and prompts", help="Sampling seed.")
    ] = 0,
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
    from stillroom.reportkit.files import write_atomic
    from stillroom.trace.options import TraceOptions
    from stillroom.trace.run import Verdict, run_trace

    options = parse_options(
        TraceOptions,
        FLAGS,
        suspect=suspect, key_file=key_file, radioactivity=radioactivity, mode=mode,
        texts=texts, text_field=text_field, baseline=baseline, served=served,
        accounts=account or [], replay=replay, replay_dtype=replay_dtype, replays=replays,
        twins=twins, served_limit=served_limit, served_by=served_by,
        candidates=parse_named(candidate or [], "--candidate"),
        references=parse_named(reference or [], "--reference"), prompts=prompts,
        prompt_field=field, model=model, api_key=os.environ.get(api_key_env),
        tokenizer=tokenizer, budget=budget, target_p=target_p, max_tokens=max_tokens,
        temperature=temperature, top_logprobs=top_logprobs, match_prompts=match_prompts,
        match_tokens=match_tokens, alpha=alpha, probes=probes, seed=seed,
    )  # fmt: skip
    for path in (html, json_out):
        if path is not None and not path.parent.is_dir():
            raise InputError(f"{path}: folder {path.parent} does not exist; create it first")

    def keep(verdict: Verdict) -> None:
        """The verdict so far, to the files asked for (each written whole, then renamed)."""
        data = verdict.as_dict()
        if json_out is not None:
            write_atomic(json_out, json.dumps(data, indent=2, default=str) + "\n")
        if html is not None:
            from stillroom.trace.report import write_html

            write_html(data, html)

    verdict = run_trace(options, progress=say, checkpoint=keep)
    keep(verdict)
    for path in (json_out, html):
        if path is not None:
            say(f"written: {path}")
    emit(verdict.as_dict())
