"""`stillroom trace` end to end on tiny model folders: JSON verdict, HTML report, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import markupsafe
import pytest
from typer.testing import CliRunner

from stillroom.cli import app
from stillroom.errors import InputError
from stillroom.teachers.local import LocalTeacher
from stillroom.trace.suspects import LocalSuspect
from stillroom.watermark.key import WatermarkKey, save_key
from tests.helpers.tiny_models import SENTENCES, make_tiny_lm, make_wordy_tiny_lm

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trace_cli")
    key = WatermarkKey(b"c" * 32, delta=3.0)
    save_key(key, root / "wm.json")
    teacher = make_wordy_tiny_lm(root / "teacher")
    for name, seed in (("a", 1), ("r1", 2), ("r2", 3)):
        make_tiny_lm(root / name, seed=seed)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"question": s}) + "\n" for s in SENTENCES))
    writer = LocalSuspect.__new__(LocalSuspect)
    writer.teacher = LocalTeacher.load(str(teacher), batch_size=16, watermark=key)
    ours = writer.answer(SENTENCES * 2, max_tokens=24, temperature=1.0, seed=0)
    texts = root / "ours.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in ours))
    return {"root": root, "teacher": teacher, "prompts": prompts, "texts": texts}


def test_read_mode_output_match_and_html_in_one_verdict(world: dict[str, Path]) -> None:
    root = world["root"]
    html = root / "report.html"
    res = runner.invoke(
        app,
        [
            "trace", str(world["teacher"]), "--key-file", str(root / "wm.json"),
            "--mode", "read", "--texts", str(world["texts"]),
            "--candidate", f"a={root / 'a'}", "--candidate", f"self={world['teacher']}",
            "--reference", f"r1={root / 'r1'}", "--reference", f"r2={root / 'r2'}",
            "--prompts", str(world["prompts"]), "--tokenizer", str(world["teacher"]),
            "--match-prompts", "24", "--match-tokens", "8", "--html", str(html),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    verdict = json.loads(res.stdout)
    radio = verdict["radioactivity"]
    assert radio["mode"] == "read" and radio["queries"] == 24 and radio["tuples_scored"] > 0
    assert "predictions on 24 of our texts" in radio["statement"]
    matched = verdict["output_match"]
    assert matched["prompts"] == 12  # all the distinct prompts there are (24 asked for)
    assert matched["parent"] == "self"  # the suspect itself
    assert verdict["identity"]["queries"] == 5 and verdict["identity"]["statement"]
    page = html.read_text()
    shown = str(markupsafe.escape(radio["statement"]))  # as the page escapes it
    for part in ("Radioactivity", "Output match", "Identity probes", shown, "5 queries"):
        assert part in page
    assert page.count('src="data:image/png;base64,') == 2  # p against queries, match rates
    assert not re.search(r'(src|href)="https?:', page)  # self-contained
    assert html.with_name(".report.html.tmp").exists() is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to test"),
        (["--key-file", "wm.json", "--mode", "read"], "--texts"),
        (["--key-file", "wm.json", "--baseline", "b"], "--mode mass"),
        (["--candidate", "nameless"], "NAME=FOLDER_OR_URL"),
    ],
)
def test_user_errors_say_what_to_give(
    world: dict[str, Path], args: list[str], message: str
) -> None:
    res = runner.invoke(app, ["trace", str(world["teacher"]), *args])
    assert isinstance(res.exception, InputError) and message in str(res.exception)


def test_read_mode_refuses_an_api_suspect() -> None:
    res = runner.invoke(
        app, ["trace", "http://127.0.0.1:9/v1", "--key-file", "k", "--mode", "read",
              "--texts", "t.jsonl"],
    )  # fmt: skip
    assert isinstance(res.exception, InputError) and "weights" in str(res.exception)


def test_generating_mode_alone_with_its_figure(world: dict[str, Path]) -> None:
    root = world["root"]
    html = root / "gen.html"
    res = runner.invoke(
        app,
        [
            "trace", str(world["teacher"]), "--key-file", str(root / "wm.json"),
            "--prompts", str(world["prompts"]), "--tokenizer", str(world["teacher"]),
            "--budget", "60", "--max-tokens", "8", "--no-probes", "--html", str(html),
            "--json", str(root / "gen.json"),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    verdict = json.loads(res.stdout)
    assert json.loads((root / "gen.json").read_text()) == verdict
    assert set(verdict) == {"suspect", "radioactivity"}
    radio = verdict["radioactivity"]
    assert radio["mode"] == "generate" and [lk["queries"] for lk in radio["looks"]] == [50, 60]
    assert "answers to 60 queries" in radio["statement"]
    page = html.read_text()
    assert page.count('src="data:image/png;base64,') == 1 and "Output match" not in page


def test_named_models_parse_and_refuse_duplicates() -> None:
    from stillroom.trace.suspects import parse_named

    got = parse_named(["a=models/a", "b = http://h/v1"], "--reference")
    assert got == {"a": "models/a", "b": "http://h/v1"}
    with pytest.raises(InputError, match="given twice"):
        parse_named(["a=x", "a=y"], "--candidate")


def test_reading_alone_needs_no_prompts(world: dict[str, Path]) -> None:
    root = world["root"]
    res = runner.invoke(
        app,
        [
            "trace", str(world["teacher"]), "--key-file", str(root / "wm.json"),
            "--mode", "read", "--texts", str(world["texts"]), "--no-probes",
            "--prompts", str(root / "no-such-file.jsonl"), "--tokenizer", str(world["teacher"]),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["radioactivity"]["queries"] == 24


def test_every_look_is_kept_while_the_test_runs(world: dict[str, Path]) -> None:
    """A run cut off after its first look still leaves that look, marked as running, in a
    page that renders."""
    from stillroom.trace.options import TraceOptions
    from stillroom.trace.report import write_html
    from stillroom.trace.run import Verdict, run_trace

    root = world["root"]
    options = TraceOptions(
        suspect=str(world["teacher"]), key_file=root / "wm.json", prompts=world["prompts"],
        tokenizer=str(world["teacher"]), budget=60, max_tokens=8, probes=False,
    )  # fmt: skip
    kept: list[dict] = []

    def keep(v: Verdict) -> None:
        kept.append(json.loads(json.dumps(v.as_dict(), default=str)))

    final = run_trace(options, checkpoint=keep).as_dict()
    running = [k["radioactivity"] for k in kept if k["radioactivity"].get("running")]
    assert [r["queries"] for r in running] == [50, 60]
    assert running[0]["looks"][0]["p_adjusted"] == final["radioactivity"]["looks"][0]["p_adjusted"]
    assert "not a verdict" in running[0]["statement"]
    assert not kept[-1]["radioactivity"].get("running")  # the last one is the verdict
    page = write_html(kept[0], root / "running.html").read_text()
    assert "running: not a verdict" in page and 'src="data:image/png;base64,' in page
