"""`stillroom watermark keygen|detect`, a group the main command mounts.

Heavy imports (scipy, transformers) wait until `detect` runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from stillroom.cli.output import emit
from stillroom.errors import InputError
from stillroom.jsonl_texts import jsonl_chunks
from stillroom.runtime.gemma import DEFAULT_TEACHER

app = typer.Typer(
    name="watermark",
    help="Watermark keys, and detection of watermarked text (z-score, exact p-value).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# An argument with no whitespace and one of these endings is a file name, never text to score.
_FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".md")


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Where to write the key file (JSON, 0600).")],
    gamma: Annotated[float, typer.Option(help="Green fraction of the vocabulary.")] = 0.25,
    delta: Annotated[float, typer.Option(help="Logit bias added to green tokens.")] = 2.0,
    context_width: Annotated[
        int, typer.Option("--context-width", help="Previous tokens that seed the green list.")
    ] = 2,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key file.")] = False,
) -> None:
    """Make a new secret watermark key; prints its key_id (safe to log), never the secret.

    Example: stillroom watermark keygen --out wm.json --gamma 0.25 --delta 2
    """
    from stillroom.watermark.key import generate_key, save_key

    key = generate_key(gamma=gamma, delta=delta, context_width=context_width)
    save_key(key, out, overwrite=force)
    emit(
        {
            "key_id": key.key_id,
            "path": str(out),
            "gamma": key.gamma,
            "delta": key.delta,
            "context_width": key.context_width,
        }
    )


@app.command()
def detect(
    text_or_file: Annotated[
        str, typer.Argument(help="Text to score, a text file, a JSONL file, or - for stdin.")
    ],
    key_file: Annotated[Path, typer.Option("--key-file", help="The key that marked the text.")],
    tokenizer: Annotated[
        str, typer.Option(help="The teacher's tokenizer: a model folder, or gemma-3-270m.")
    ] = DEFAULT_TEACHER,
    jsonl_field: Annotated[
        str | None,
        typer.Option("--jsonl-field", help="Read a JSONL file and score this field of each row."),
    ] = None,
) -> None:
    """Score text for the watermark: tokens_scored, green, z, p_value (exact binomial), key_id.

    A small p_value (say below 1e-6) means the text was very likely generated with this key.
    A JSONL file gives one JSON line per row, with its line number.

    Example: stillroom watermark detect answer.txt --key-file wm.json
    Example: stillroom watermark detect harvest.jsonl --key-file wm.json --jsonl-field text
    """
    from stillroom.runtime.loading import load_tokenizer
    from stillroom.watermark.detect import detect_texts
    from stillroom.watermark.greenlist import GreenList
    from stillroom.watermark.key import load_key

    green_list = GreenList(load_key(key_file))
    tok = load_tokenizer(tokenizer)
    if jsonl_field is not None:
        path = Path(text_or_file)
        if not path.is_file():
            raise InputError(f"{path}: no such file; --jsonl-field reads a JSONL file")
        for lines, texts in jsonl_chunks(path, jsonl_field):
            for line, found in zip(lines, detect_texts(texts, green_list, tok), strict=True):
                emit({"line": line, **found.to_dict()}, indent=None)
        return
    text, source = _read_text(text_or_file)
    found = detect_texts([text], green_list, tok)[0]
    emit({"source": source, **found.to_dict()})


def _read_text(arg: str) -> tuple[str, str]:
    """(text, where it came from) for an argument that is text, a file name, or -."""
    if arg == "-":
        return sys.stdin.read(), "stdin"
    path = Path(arg)
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a long text is not a valid file name
        is_file = False
    if is_file:
        if path.suffix == ".jsonl":
            raise InputError(f"{path} is JSONL; name the field to score with --jsonl-field FIELD")
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot read it as UTF-8 text ({e})") from e
    if not any(c.isspace() for c in arg) and arg.endswith(_FILE_SUFFIXES):
        raise InputError(
            f"{arg}: no such file; give an existing file, or quote the text itself to score it"
        )
    return arg, "argument"
