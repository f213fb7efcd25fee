"""`stillroom eval` on a generation task, end to end: a tiny local teacher's greedy harvest
with top-k signals, students trained or built from it, and the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from stillroom.config import HarvestConfig, validate_config
from stillroom.errors import ConfigError, StoreError
from stillroom.evaluate.metrics import corpus_chrf, exact_match
from stillroom.evaluate.report import write_report
from stillroom.evaluate.run import evaluate
from stillroom.evaluate.text import text_scores
from stillroom.harvest.runner import harvest
from stillroom.harvest.store import RunStore
from stillroom.student_config import StudentConfig
from stillroom.train.students import build_student, save_student
from stillroom.train.trainer import train
from tests.helpers.browser import CHROMIUM, PROBE, chromium, page_images
from tests.helpers.tiny_models import make_sharp_tiny_lm

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "and", "ran", "to", "big", "red"]
TIMING = {"timed_items": 4, "latency_items": 2, "batch": 8}  # keep the timing passes short


@pytest.fixture(scope="module")
def harvested(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny teacher answers 40 prompts greedily, 10 tokens with top-8 signals each; every
    row carries a gold answer."""
    root = tmp_path_factory.mktemp("eval_text")
    teacher_dir = make_sharp_tiny_lm(root / "teacher")
    prompts = root / "p.jsonl"
    with prompts.open("w") as f:
        for i in range(40):
            words = [WORDS[(i * j + j) % len(WORDS)] for j in range(1, 5)] + [str(i)]
            row = {"id": f"p{i}", "text": " ".join(words), "answer": " ".join(reversed(words))}
            f.write(json.dumps(row) + "\n")
    raw = {
        "name": "gen",
        "runs_dir": str(root / "runs"),
        "prompts": {"path": str(prompts), "field": "text", "id_field": "id",
                    "keep_fields": ["answer"]},
        "teacher": {"kind": "local", "model": str(teacher_dir), "batch_size": 16},
        "generation": {"max_tokens": 10, "top_logprobs": 8},
        "task": {"kind": "generate", "gold_field": "answer"},
        "split": {"train": 0.6, "validation": 0.1, "test": 0.3},
        "train": {"objective": "logits", "max_steps": 6, "batch_tokens": 512, "lr": 3e-3,
                  "warmup_steps": 1, "eval_every": 3, "checkpoint_every": 0, "threads": 1,
                  "student": {"init": "config", "layers": 1, "hidden_size": 32, "heads": 2,
                              "kv_heads": 1, "intermediate_size": 64}},
    }  # fmt: skip
    cfg = validate_config(raw, "test")
    assert harvest(cfg, show_progress=False).ok == 40
    return {"raw": raw, "teacher": teacher_dir}


def config(harvested: dict[str, Any], name: str, **task: Any) -> HarvestConfig:
    """A config for a run folder of its own, holding a copy of the one harvest."""
    raw = json.loads(json.dumps(harvested["raw"]))
    raw["task"].update(task)
    src = Path(raw["runs_dir"]) / raw["name"]
    raw["name"] = name
    cfg = validate_config(raw, "test")
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "harvest.sqlite", cfg.run_dir / "harvest.sqlite")
    return cfg


def stored_test_answers(cfg: HarvestConfig) -> tuple[list[str], list[str]]:
    """The teacher's test answers and gold texts, read straight from the store."""
    store = RunStore.open_run(cfg.run_dir)
    try:
        recs = list(store.iter_records("test"))
    finally:
        store.close()
    return [r["text"] for r in recs], [json.loads(r["fields"])["answer"] for r in recs]


@pytest.fixture(scope="module")
def trained(harvested: dict[str, Any]) -> tuple[HarvestConfig, dict[str, Any]]:
    """A 1-layer student distilled for 6 steps on the teacher's top-k, evaluated once."""
    cfg = config(harvested, "trained")
    train(cfg, quiet=True)
    return cfg, evaluate(cfg, **TIMING)


def test_trained_student_scored_against_gold_and_teacher(
    trained: tuple[HarvestConfig, dict[str, Any]],
) -> None:
    cfg, first = trained
    teacher_text, gold = stored_test_answers(cfg)
    assert first["task"] == {"kind": "generate", "n_test": len(gold), "metric": "chrf",
                             "quality_against": "gold", "gold_field": "answer"}  # fmt: skip
    assert len(gold) >= 8
    models = first["models"]
    assert set(models) == {"teacher", "student", "copy_input", "most_common"}
    # The teacher's quality is its stored answers against gold, computed independently here.
    assert models["teacher"]["quality"] == {
        "exact_match": round(exact_match(teacher_text, gold), 4),
        "chrf": round(corpus_chrf(teacher_text, gold), 2),
    }
    student = models["student"]
    assert 0 <= student["quality"]["chrf"] <= 100
    assert 0 <= student["fidelity"]["agreement"] <= 1
    assert 0 <= student["fidelity"]["chrf_to_teacher"] <= 100
    assert student["fidelity"]["kl"] > 0  # a 1-layer student trained 6 steps is not the teacher
    assert student["efficiency"]["params"] < models["teacher"]["efficiency"]["params"]
    eff = student["efficiency"]
    assert 0 < eff["throughput_min"] <= eff["throughput_items_per_s"] <= eff["throughput_max"]
    assert eff["passes"] >= 5 and eff["weights_mb"] > 0 and eff["peak_rss_mb"] > 0
    assert "the student keeps" in first["headline"] and "chrF against gold" in first["headline"]
    lead = first["verdict"]["teacher_clear_of_floor"]
    assert first["headline"].startswith("the student keeps" if lead else "the teacher is not")
    shown = first["examples"][0]
    assert set(shown) == {"prompt", "gold", "teacher", "student"}
    assert (shown["teacher"], shown["gold"]) == (teacher_text[0], gold[0])


def test_a_second_eval_of_the_same_student_gives_the_same_metrics(
    trained: tuple[HarvestConfig, dict[str, Any]],
) -> None:
    cfg, first = trained
    second = evaluate(cfg, **TIMING)
    for role in ("teacher", "student"):
        assert second["models"][role]["quality"] == first["models"][role]["quality"]
        assert second["models"][role]["fidelity"] == first["models"][role]["fidelity"]
    assert second["examples"] == first["examples"]


def test_trivial_answers_are_scored_beside_the_models(
    trained: tuple[HarvestConfig, dict[str, Any]],
) -> None:
    """Copying the prompt, and always the train split's most common gold text, scored like
    the models; the verdict measures the teacher against the better of the two."""
    cfg, result = trained
    _, gold = stored_test_answers(cfg)
    prompts = [json.loads(r["request"])["prompt"] for r in _test_rows(cfg)]
    models = result["models"]
    assert models["copy_input"]["quality"] == text_scores(prompts, gold)
    common = models["most_common"]["name"].removeprefix("always answering ")[1:-1]
    assert common in {json.loads(r["fields"])["answer"] for r in _rows(cfg, "train")}
    assert models["most_common"]["quality"] == text_scores([common] * len(gold), gold)
    floor = result["verdict"]["floor"]
    assert models[floor]["quality"]["chrf"] == max(
        models[k]["quality"]["chrf"] for k in ("copy_input", "most_common")
    )
    assert models[floor]["name"] in result["headline"]


def _rows(cfg: HarvestConfig, split: str) -> list[dict[str, Any]]:
    store = RunStore.open_run(cfg.run_dir)
    try:
        return list(store.iter_records(split))
    finally:
        store.close()


def _test_rows(cfg: HarvestConfig) -> list[dict[str, Any]]:
    return _rows(cfg, "test")


def test_report_for_a_text_task(
    trained: tuple[HarvestConfig, dict[str, Any]], tmp_path: Path
) -> None:
    _, result = trained
    paths = write_report(tmp_path, result)
    md = paths["md"].read_text()
    assert "| chrF |" in md and "| exact match |" in md and "| chrF against teacher |" in md
    assert "| served in | float32 | float32 | — | — |" in md  # trivial answers run on nothing
    assert "metric: chrF against the gold text (answer)" in md
    assert {p.stem for p in paths["plots"]} == {"quality_cost", "training_curves"}  # no confusion
    assert "## Examples" in md and "| student |" in md
    assert "harvest with generation.top_logprobs" not in md  # KL was measured
    html = paths["html"].read_text()
    assert 'id="confusion"' not in html and html.count("<img ") == 2


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs headless Chromium at /usr/bin/chromium: apt-get install -y chromium",
)
def test_text_report_renders_in_headless_chromium(
    trained: tuple[HarvestConfig, dict[str, Any]], tmp_path: Path
) -> None:
    html_path = write_report(tmp_path, trained[1])["html"]
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text(encoding="utf-8").replace("</body>", PROBE))
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()).stdout
    images = page_images(dom).images
    assert sorted(img["alt"] for img in images) == ["Quality against cost", "Training curves"]
    for img in images:
        assert img["data-loaded"] == "true", img["alt"]
        width, height = map(int, img["data-rect"].split(",")[2:])
        assert width > 300 and height > 200, img["alt"]


def test_a_student_identical_to_the_teacher_agrees_with_it_exactly(
    harvested: dict[str, Any],
) -> None:
    """Every layer kept, the full vocabulary: greedy answers equal the teacher's greedy
    harvest, and the KL to its top-k is zero; quality equals the teacher's."""
    cfg = config(harvested, "identical")
    same = build_student(StudentConfig(init="shrink", keep_every=1, trim_vocab=False),
                         harvested["teacher"])  # fmt: skip
    save_student(same, cfg.run_dir / "student")
    result = evaluate(cfg, **TIMING)
    teacher, student = result["models"]["teacher"], result["models"]["student"]
    assert student["fidelity"]["agreement"] == 1.0
    assert student["fidelity"]["chrf_to_teacher"] == 100.0
    assert student["fidelity"]["kl"] == pytest.approx(0.0, abs=1e-3)
    assert student["quality"] == teacher["quality"]
    assert "the student keeps 100.0% of the teacher's chrF against gold" in result["headline"]


def test_without_gold_quality_is_fidelity_to_the_teacher(harvested: dict[str, Any]) -> None:
    cfg = config(harvested, "nogold", gold_field=None)
    half = build_student(StudentConfig(init="shrink", keep_every=2, trim_vocab=False),
                         harvested["teacher"])  # fmt: skip
    save_student(half, cfg.run_dir / "student")
    result = evaluate(cfg, **TIMING)
    assert result["task"]["quality_against"] == "teacher"
    teacher, student = result["models"]["teacher"], result["models"]["student"]
    assert teacher["quality"] == {"exact_match": 1.0, "chrf": 100.0}
    assert student["quality"]["exact_match"] == student["fidelity"]["agreement"]
    assert student["quality"]["chrf"] == student["fidelity"]["chrf_to_teacher"]
    assert any("quality is fidelity to the teacher" in n for n in result["notes"])
    assert "chrF against the teacher's answers" in result["headline"]


def test_config_problems_name_the_key_and_the_fix(harvested: dict[str, Any]) -> None:
    raw = json.loads(json.dumps(harvested["raw"]))
    raw["prompts"]["keep_fields"] = []
    raw["generation"]["max_tokens"] = None
    with pytest.raises(ConfigError) as err:
        evaluate(validate_config(raw, "test"), **TIMING)
    text = str(err.value)
    assert "task.gold_field: 'answer' is not in prompts.keep_fields" in text
    assert "add 'answer' to prompts.keep_fields" in text
    assert "generation.max_tokens" in text and "set a number" in text


def test_a_harvest_without_the_gold_field_stored_says_so(harvested: dict[str, Any]) -> None:
    cfg = config(harvested, "otherfield", gold_field="source")
    cfg.prompts.keep_fields.append("source")  # listed now, but not when the run was harvested
    with pytest.raises(StoreError, match="no 'source' field stored"):
        evaluate(cfg, **TIMING)


def test_distill_runs_a_generation_task_to_its_report(harvested: dict[str, Any]) -> None:
    """`stillroom distill` on the stored harvest: nothing is asked again, the student trains,
    eval and the report follow."""
    from stillroom.distill import distill

    cfg = config(harvested, "distilled")
    out = distill(cfg, show_progress=False)
    assert out["eval"]["harvest"]["calls"] == 40
    assert {k for k, m in out["eval"]["models"].items() if m["role"] != "trivial"} == {
        "teacher",
        "student",
        "baseline",  # the same student trained on the gold answers alone
    }
    assert {"student_over_baseline", "student_over_baseline_exact_match"} <= set(
        out["eval"]["verdict"]
    )
    assert out["headline"] == out["eval"]["headline"]
    assert "the student keeps" in out["headline"]
    saved = json.loads((cfg.run_dir / "eval.json").read_text())
    assert saved["models"]["student"]["quality"] == out["eval"]["models"]["student"]["quality"]
    assert Path(out["report"]).is_file() and not (cfg.run_dir / "plots/confusion.png").exists()


def test_the_gold_baseline_learns_each_gold_answer_and_its_end(harvested: dict[str, Any]) -> None:
    from stillroom.distill import gold_baseline
    from stillroom.train.trainer import Trainer

    cfg = gold_baseline(config(harvested, "gold-baseline"))
    assert (cfg.train.objective, cfg.train.targets) == ("sequence", "gold")
    trainer = Trainer(cfg, quiet=True)
    tok = trainer.student.tokenizer
    store = RunStore.open_run(cfg.run_dir)
    try:
        recs = list(store.iter_records("train"))
    finally:
        store.close()
    examples = list(trainer._examples("train"))
    assert len(examples) == len(recs) >= 20
    for ex, rec in zip(examples, recs, strict=True):  # both in key order
        answer = ex.input_ids[ex.start :]
        assert int(answer[-1]) == tok.eos_token_id  # no stop string: it learns to end on EOS
        assert tok.decode(answer[:-1]).strip() == json.loads(rec["fields"])["answer"]
        assert tok.decode(answer[:-1]) != rec["text"]  # not the teacher's answer


def test_a_transfer_set_teaches_the_student_but_not_the_baseline(
    harvested: dict[str, Any], tmp_path: Path
) -> None:
    """Prompts without gold (prompts.transfer_path) are answered by the teacher and join
    the train split: the distilled student learns from them, the gold-only baseline cannot,
    and nothing scores them."""
    from stillroom.distill import gold_baseline
    from stillroom.train.trainer import Trainer

    extra = tmp_path / "transfer.jsonl"
    extra.write_text("".join(
        json.dumps({"id": f"x{i}", "text": " ".join([*WORDS[i % 7 : i % 7 + 3], f"x{i}"])}) + "\n"
        for i in range(12)
    ))  # fmt: skip
    raw = json.loads(json.dumps(harvested["raw"]))
    raw["name"] = "with-transfer"
    raw["prompts"]["transfer_path"] = str(extra)
    cfg = validate_config(raw, "test")
    assert harvest(cfg, show_progress=False).ok == 52
    labelled = config(harvested, "without-transfer")
    train_rows = {cfg.run_dir: 0, labelled.run_dir: 0}
    for run in train_rows:
        store = RunStore.open_run(run)
        try:
            train_rows[run] = len(list(store.iter_records("train")))
            if run == cfg.run_dir:
                test_ids = {r["prompt_id"] for r in store.iter_records("test")}
                assert not any(i.startswith("x") for i in test_ids)
        finally:
            store.close()
    assert train_rows[cfg.run_dir] == train_rows[labelled.run_dir] + 12
    student = list(Trainer(cfg, quiet=True)._examples("train"))
    baseline = list(Trainer(gold_baseline(cfg), quiet=True)._examples("train"))
    assert len(student) == train_rows[cfg.run_dir]
    assert len(baseline) == train_rows[labelled.run_dir]  # transfer rows have no gold
    from stillroom.evaluate.inputs import training_set_note

    note = training_set_note(cfg)
    assert note is not None and f"{train_rows[cfg.run_dir]:,} train-split prompts, 12 of" in note
    assert training_set_note(labelled) is None  # every prompt has gold: nothing to say
    gold_only = gold_baseline(cfg)
    gold_only.prompts.transfer_path = None
    gold_only.name = "no-gold-at-all"
    gold_only.prompts.keep_fields = []
    gold_only.run_dir.mkdir(parents=True)
    shutil.copyfile(cfg.run_dir / "harvest.sqlite", gold_only.run_dir / "harvest.sqlite")
    store = RunStore.open_run(gold_only.run_dir)
    try:
        store.db.execute("UPDATE calls SET fields = '{}'")  # every row's gold gone
    finally:
        store.close()
    with pytest.raises(StoreError, match=r"no training examples.*task.gold_field is filled"):
        train(gold_only, quiet=True)


def test_gold_targets_need_a_gold_field_and_sequence_training(harvested: dict[str, Any]) -> None:
    raw = json.loads(json.dumps(harvested["raw"]))
    raw["train"]["targets"] = "gold"
    with pytest.raises(ConfigError, match=r"train.targets: gold .* train.objective: sequence"):
        validate_config(raw, "test")
    raw["train"]["objective"] = "sequence"
    validate_config(raw, "test")
    raw["task"]["gold_field"] = None
    with pytest.raises(ConfigError, match=r"needs task.kind: generate, task.gold_field"):
        validate_config(raw, "test")


def test_a_baseline_with_more_exact_answers_leads_the_headline() -> None:
    from stillroom.evaluate.text import text_headline

    models = {
        "teacher": {"name": "teacher", "quality": {"chrf": 57.2, "exact_match": 0.09}},
        "student": {"name": "student", "quality": {"chrf": 50.9, "exact_match": 0.047}},
        "baseline": {"name": "baseline", "quality": {"chrf": 32.8, "exact_match": 0.107}},
        "copy_input": {"name": "copying the input", "quality": {"chrf": 30.2}},
    }
    verdict = {
        "metric": "chrf", "floor": "copy_input", "teacher_clear_of_floor": True,
        "student_clear_of_floor": True, "distillation_paid": True,
        "student_over_baseline": {"diff": 17.3, "low": 15.0, "high": 19.5},
        "student_over_baseline_exact_match": {"diff": -0.06, "low": -0.08, "high": -0.04},
    }  # fmt: skip
    headline = text_headline(models, verdict, "gold")
    assert headline.startswith(
        "the gold-only baseline gets more answers exactly right than the student "
        "(10.7% vs 4.7%, ahead by 6.0%, 95% interval 4.0% to 8.0%); the student keeps"
    )
    assert "beats the gold-only baseline's 32.8 by 17.3 chrF points" in headline
    verdict["student_over_baseline_exact_match"] = {"diff": -0.01, "low": -0.03, "high": 0.01}
    assert text_headline(models, verdict, "gold").startswith("the student keeps")
