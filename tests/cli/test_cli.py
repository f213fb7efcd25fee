"""The command line as a newcomer meets it: usage errors are one line and exit 2, a run
stopped at the budget exits 3, and option problems name the flags typed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stillroom.cli import main
from stillroom.testing.fake_openai import FakeServerConfig, start_fake_server
from tests.helpers.harvest import write_prompts


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the real entry point."""
    with pytest.raises(SystemExit) as done:
        main(args)
    code = done.value.code
    out, err = capsys.readouterr()
    return (code if isinstance(code, int) else 1), out, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["harvest"], "Missing argument"),
        (["harvest", "x.yaml", "--sett", "a=1"], "No such option: --sett"),
        (["harvset"], "No such command 'harvset'"),
        (["trace", "m", "--mode", "sing"], "'sing' is not one of"),
        (["trace", "m", "--served-by", "sideways"], "'sideways' is not one of"),
        (["audit", "log.parquet", "--fpr"], "requires an argument"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(args, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err
    assert "Traceback" not in err and "--help" in err


def test_input_errors_exit_2_naming_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["trace", str(tmp_path), "--key-file", "k.json", "--account", "a", "--mode", "read"]
    code, _, err = run_main(args, capsys)
    assert code == 2
    # every problem at once, each under the flag the user typed
    assert "2 problems" in err
    for flag in ("--texts", "--account"):
        assert f"- {flag}: " in err
    assert "--mode read reads texts" in err
    assert "add --served" in err and "{" not in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0 and "harvest" in out and "trace" in out


@pytest.mark.integration
def test_a_harvest_stopped_at_the_budget_exits_3(tmp_path: Path) -> None:
    with start_fake_server(FakeServerConfig(random_lengths=True)) as srv:
        config = {
            "name": "budget",
            "runs_dir": str(tmp_path / "runs"),
            "prompts": {"path": str(write_prompts(tmp_path / "p.jsonl", 200)), "field": "text",
                        "id_field": "id"},
            "teacher": {"kind": "api", "model": "fake-tiny", "base_url": srv.base_url,
                        "api_key_env": "STILLROOM_TEST_KEY", "concurrency": 4},
            "generation": {"max_tokens": 64, "seed": 1},
            "cost": {"input_per_1m": 1.0, "output_per_1m": 10.0},
        }  # fmt: skip
        path = tmp_path / "harvest.yaml"
        path.write_text(yaml.safe_dump(config))
        args = [sys.executable, "-m", "stillroom", "harvest", str(path), "--budget", "0.004"]
        env = os.environ | {"STILLROOM_TEST_KEY": "k"}
        done = subprocess.run([*args, "--quiet"], capture_output=True, text=True, env=env)
        assert done.returncode == 3, done.stderr
        assert "stopped at the budget" in done.stderr
        # finished: the budget not reached, exit 0
        done = subprocess.run(
            [*args[:-1], "100", "--quiet"], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr


def test_audit_options_that_cannot_work_together_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["audit", str(tmp_path / "log.parquet"), "--engine", "spark"]
    code, _, err = run_main([*args, "--state", "s.db", "--since", "10", "--until", "5"], capsys)
    assert code == 2 and "2 problems" in err
    assert "--state: keeps its tables in DuckDB: use --engine duckdb" in err
    assert "--until: comes before --since" in err


def _classify_config(tmp_path: Path, labels: list[str]) -> Path:
    from tests.helpers.tiny_models import make_tiny_lm

    items = tmp_path / "items.jsonl"
    with items.open("w") as f:
        for i in range(8):
            gold = ["cat", "dog", "fox"][i % 3]  # 'fox' is a label only when listed
            f.write(json.dumps({"id": f"i{i}", "text": f"the cat sat {i}", "gold": gold}) + "\n")
    config = {
        "name": "cli-checks",
        "runs_dir": str(tmp_path / "runs"),
        "prompts": {"path": str(items), "field": "text", "id_field": "id"},
        "teacher": {"kind": "local", "model": str(make_tiny_lm(tmp_path / "teacher"))},
        "task": {"kind": "classify", "labels": labels, "gold_field": "gold"},
        "train": {"objective": "labels"},
    }
    path = tmp_path / "classify.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_distill_lists_label_problems_before_any_teacher_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _classify_config(tmp_path, ["cat", "dog", "dog"])
    code, out, err = run_main(["distill", str(path), "--limit", "4", "--quiet"], capsys)
    assert code == 2 and not out
    assert "error: checks before the first teacher call: 2 problems" in err
    assert "task.labels: 'dog' is listed 2 times" in err
    assert f"'fox' is not one of task.labels, in 1 row ({tmp_path / 'items.jsonl'}:3)" in err
    assert not (tmp_path / "runs").exists()


def test_harvest_first_n_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _classify_config(tmp_path, ["cat", "dog", "fox"])
    code, out, err = run_main(["harvest", str(path), "--first", "5", "--dry-run"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["prompts"] == plan["calls_to_make"] == 5
    assert plan["output_tokens_max"] == 0  # classification generates nothing
