"""`stillroom demo` end to end at a tiny scale: a tiny served model, real gateway processes,
real HTTP traffic, harvest, training, audit, trace and the report in headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from matplotlib import image as mpimg

from stillroom.demo.story import Scale, run_demo
from stillroom.serve.db import open_db, requests
from tests.helpers.browser import CHROMIUM, chromium
from tests.helpers.tiny_models import make_wordy_tiny_lm

WORDS = ["cat", "dog", "tree", "river", "stone", "cloud", "apple", "violin", "lamp", "road"]
TINY = Scale(
    benign_users=14,
    benign_requests=(1, 3),
    distiller_accounts=2,
    distill_prompts=40,
    max_tokens=64,  # longer answers than the users ask for, as in the full story
    train_steps=6,
    trace_budget=100,
    harvest_rate=20.0,
)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("demo")
    teacher = make_wordy_tiny_lm(tmp / "teacher")
    task = tmp / "words.jsonl"
    task.write_text(
        "".join(
            json.dumps({"id": f"w{i}", "headword": f"{WORDS[i % 10]} {i}"}) + "\n"
            for i in range(300)
        )
    )
    out = tmp / "story"
    return out, run_demo(out, scale=TINY, model=str(teacher), task_file=task, say=lambda m: None)


def test_every_stage_ran_through_the_real_gateway(story: tuple[Path, dict]) -> None:
    out, s = story
    cast = json.loads((out / "cast.json").read_text())
    assert (out / "cast.json").stat().st_mode & 0o077 == 0  # it holds API keys
    with open_db(str(out / "gateway.sqlite")).connect() as conn:
        rows = conn.execute(sa.select(requests.c.account_id, requests.c.status)).all()
    by_name = [cast["ids"][a] for a, _ in rows]
    distiller_rows = sum(1 for n in by_name if n.startswith("nimbus"))
    assert distiller_rows == s["traffic"]["distiller"]["ok"] == TINY.distill_prompts
    # the distiller's calls were dealt over both of its accounts
    assert {n for n in by_name if n.startswith("nimbus")} == {"nimbus-1", "nimbus-2"}
    assert sum(1 for n in by_name if n.startswith("user")) == s["traffic"]["benign_requests"]
    assert s["control_harvest"]["ok"] == TINY.distill_prompts
    for name in ("distiller", "control"):
        assert s["students"][name]["steps"] == TINY.train_steps
        assert (out / name / "student" / "config.json").is_file()
        trace = s["traces"][name]
        assert 0.0 <= trace["p_value"] <= 1.0 and 0 < trace["queries"] <= TINY.trace_budget
    units = s["audit"]["units"]
    assert sorted(a for u in units for a in u["accounts"]) == sorted(
        cast["benign"] + cast["distiller"]
    )
    # The distiller's accounts, 20 templated requests each, are the log's most anomalous
    # (whether joined as one actor or scored apart), ahead of every ordinary user.
    ranked = sorted(units, key=lambda u: -u["score"])
    top = [u for u in ranked if u["role"] == "distiller"]
    assert ranked[: len(top)] == top
    assert {a for u in top for a in u["accounts"]} == {"nimbus-1", "nimbus-2"}


def test_the_story_points_at_the_distillers_case_in_the_console(
    story: tuple[Path, dict],
) -> None:
    out, s = story
    cast = json.loads((out / "cast.json").read_text())
    query = sa.text(
        "SELECT c.id, a.account_id FROM audit_cases c "
        "JOIN audit_unit_accounts a ON a.unit = c.unit AND a.run_id = c.last_run"
    )
    with open_db(str(out / "gateway.sqlite")).connect() as conn:
        members = conn.execute(query).all()
    cases = {case for case, account in members if cast["ids"][account].startswith("nimbus")}
    # The audit stored its run; the case named is the one holding the distiller's accounts.
    flagged = {a for a in s["audit"]["flagged"] if a.startswith("nimbus")}
    if flagged:
        assert s["audit"]["console_case"] in cases
    else:
        assert s["audit"]["console_case"] is None and not cases


def test_a_rerun_resumes_without_new_traffic(story: tuple[Path, dict]) -> None:
    out, s = story
    db = str(out / "gateway.sqlite")
    with open_db(db).connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(requests)).scalar()
    again = run_demo(out, scale=TINY, model="unused-when-done", say=lambda m: None)
    with open_db(db).connect() as conn:
        after = conn.execute(sa.select(sa.func.count()).select_from(requests)).scalar()
    assert after == before
    assert again["traces"] == s["traces"] and again["audit"] == s["audit"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium")
def test_the_story_report_renders_with_every_figure(
    story: tuple[Path, dict], tmp_path: Path
) -> None:
    _out, s = story
    html = Path(s["report"]).read_text(encoding="utf-8")
    assert "A distillation, found and traced" in html
    figures = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"', html)
    assert figures == ["Traffic through the gateway", "Audit scores",
                       "Did the student learn from our outputs?"]  # fmt: skip
    shot = tmp_path / "story.png"
    chromium(tmp_path, f"--screenshot={shot}", Path(s["report"]).as_uri())
    rgb = (mpimg.imread(shot)[..., :3] * 255).round().astype(np.uint8)
    # the first 3000 px of the page hold drawn figures: many distinct colours
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 200
