"""Mass mode on tiny real models: a student of our watermarked texts puts more probability on
green tokens of fresh, unwatermarked texts; models that never saw the key are not convicted,
over many keys; watermarked texts are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from stillroom.cli import app
from stillroom.errors import InputError
from stillroom.teachers.local import LocalTeacher
from stillroom.trace.mass import (
    combine,
    green_bits,
    mass_test,
    merge,
    read_distributions,
    score,
)
from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey, save_key
from tests.helpers.tiny_models import watermarked_student

KEY = WatermarkKey(b"m" * 32, delta=3.0, context_width=1)


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return watermarked_student(tmp_path_factory.mktemp("mass"), KEY)


def test_a_student_of_our_texts_is_caught_on_unwatermarked_ones(setting: dict) -> None:
    root, plain, tok = setting["root"], setting["plain"], setting["tokenizer"]
    alone = mass_test(str(root / "student"), plain, KEY, tok, budget=64)
    # Significant at the first planned look (50 texts), so it stops there.
    assert alone.mode == "mass" and alone.queries == 50 and alone.positions > 1000
    assert [look.queries for look in alone.looks] == [50]
    assert alone.p_value < 1e-6 and alone.green_mass > KEY.gamma + 0.01, alone
    assert alone.p_bound >= alone.p_value  # the bound is never the smaller
    netted = mass_test(
        str(root / "student"), plain, KEY, tok, budget=64, baseline=str(root / "teacher")
    )
    assert netted.p_value < 1e-6 and netted.baseline_green_mass is not None
    # The baseline never saw the key: its green mass is about gamma.
    assert abs(netted.baseline_green_mass - KEY.gamma) < 0.05, netted


def test_the_teacher_without_the_key_is_not_convicted(setting: dict) -> None:
    r = mass_test(str(setting["root"] / "teacher"), setting["plain"], KEY, setting["tokenizer"])
    assert r.positions > 1000 and r.p_value > 0.01, r


def test_null_p_values_over_many_keys_are_uniform(setting: dict) -> None:
    # The models read once; every key re-scores the same weights. Neither the teacher nor a
    # differently seeded copy of it saw any of these keys.
    root, tok = setting["root"], setting["tokenizer"]
    teacher = LocalTeacher.load(str(root / "teacher"))
    ours, seqs = read_distributions(teacher, setting["plain"], tok, 1)
    student = LocalTeacher.load(str(root / "student"))
    theirs, _ = read_distributions(student, setting["plain"], tok, 1, positions_of=seqs)
    keys = [WatermarkKey(np.random.default_rng(i).bytes(32), context_width=1) for i in range(120)]
    for rows, c in (combine(ours, None), combine(theirs, ours)):
        p = np.array([score(c, green_bits(GreenList(k), rows), k.gamma).p_value for k in keys])
        assert stats.kstest(p, "uniform").pvalue > 0.001, np.sort(p)[:10]
        assert np.mean(p <= 0.01) <= 0.05
    # ... while the student, against the key it learned from, stands out.
    rows, c = combine(theirs, ours)
    assert score(c, green_bits(GreenList(KEY), rows), KEY.gamma).p_value < 1e-6


def test_reads_merged_look_like_one_read(setting: dict) -> None:
    teacher = LocalTeacher.load(str(setting["root"] / "teacher"))
    texts, tok = setting["plain"][:20], setting["tokenizer"]
    whole, _ = read_distributions(teacher, texts, tok, 1)
    first, _ = read_distributions(teacher, texts[:7], tok, 1)
    rest, _ = read_distributions(teacher, texts[7:], tok, 1)
    parts = merge(merge(None, first), rest)
    assert (parts.rows == whole.rows).all() and np.allclose(parts.prob, whole.prob)
    assert (parts.contexts == whole.contexts).all() and (parts.counts == whole.counts).all()


def test_a_null_run_stays_sequentially_honest(setting: dict) -> None:
    """Looks double up to the budget, and the verdict's p is the last look's p times the
    looks taken."""
    r = mass_test(str(setting["root"] / "teacher"), setting["plain"], KEY, setting["tokenizer"])
    assert [look.queries for look in r.looks] == [50, 64]  # all 64 texts, in two looks
    assert r.p_value == min(1.0, r.looks[-1].p_value * 2) and r.stopped == "budget"


def test_watermarked_texts_are_refused(setting: dict) -> None:
    with pytest.raises(InputError, match="carry this key's watermark"):
        mass_test(str(setting["root"] / "student"), setting["texts"], KEY, setting["tokenizer"])


def test_the_cli_gives_the_verdict_and_report(setting: dict, tmp_path: Path) -> None:
    root = setting["root"]
    save_key(KEY, tmp_path / "wm.json")
    texts = tmp_path / "plain.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in setting["plain"]))
    html = tmp_path / "trace.html"
    res = CliRunner().invoke(
        app,
        [
            "trace", str(root / "student"), "--key-file", str(tmp_path / "wm.json"),
            "--mode", "mass", "--texts", str(texts), "--baseline", str(root / "teacher"),
            "--tokenizer", str(root / "teacher"), "--no-probes", "--html", str(html),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    radio = json.loads(res.stdout)["radioactivity"]
    assert radio["mode"] == "mass" and radio["stopped"] == "significant"
    assert radio["baseline"] == str(root / "teacher") and "p = " in radio["statement"]
    page = html.read_text()
    assert "green mass" in page and "Chernoff" in page
