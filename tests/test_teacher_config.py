"""The teacher section as one model per kind: each kind takes only its own keys, a key of
another kind is reported with both kinds, and `--set teacher.x=y` works on either."""

from pathlib import Path

import pytest

from stillroom.config import CostConfig, load_config, validate_config
from stillroom.errors import ConfigError
from stillroom.prices import price_for
from stillroom.teacher_config import TEACHER_KINDS, ApiTeacherConfig, LocalTeacherConfig
from stillroom.teachers import BUILDERS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

API = """\
name: demo
prompts:
  path: prompts.jsonl
  field: text
teacher:
  kind: api
  model: gpt-4o-mini
  base_url: http://127.0.0.1:1/v1
  batch_size: 8
  dtype: bfloat16
generation:
  max_tokens: -1
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates_as_its_kind(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg.teacher, TEACHER_KINDS[cfg.teacher.kind])


def test_a_key_of_another_kind_names_the_key_and_both_kinds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, API))
    problems = info.value.problems
    assert problems == [
        "teacher.batch_size (line 9): does not apply to teacher.kind: api "
        "(only to teacher.kind: local)",
        "teacher.dtype (line 10): does not apply to teacher.kind: api "
        "(only to teacher.kind: local)",
        "generation.max_tokens (line 12): Input should be greater than or equal to 1",
    ]


def test_api_keys_under_a_local_teacher_and_misspellings(tmp_path: Path) -> None:
    raw = {
        "name": "x",
        "prompts": {"path": "p.jsonl", "field": "text"},
        "teacher": {"kind": "local", "concurrency": 4, "batchsize": 8, "dtype": "int4"},
    }
    with pytest.raises(ConfigError) as info:
        validate_config(raw, "test")
    text = "\n".join(info.value.problems)
    assert "teacher.concurrency: does not apply to teacher.kind: local (only to " in text
    assert "teacher.batchsize: unknown key" in text
    assert "teacher.dtype: Input should be" in text


def test_an_unknown_kind_lists_the_kinds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, API.replace("kind: api", "kind: rest")))
    assert "teacher.kind (line 6): unknown teacher kind 'rest'; use one of: api, local" in str(
        info.value
    )


def test_overrides_reach_either_kind(tmp_path: Path) -> None:
    good = API.replace("  batch_size: 8\n  dtype: bfloat16\n", "").replace("-1", "32")
    cfg = load_config(write(tmp_path, good), ["teacher.concurrency=4", "teacher.timeout_s=9"])
    assert isinstance(cfg.teacher, ApiTeacherConfig)
    assert (cfg.teacher.concurrency, cfg.teacher.timeout_s) == (4, 9.0)
    local = ["teacher.kind=local", "teacher.base_url=null", "teacher.batch_size=2"]
    with pytest.raises(ConfigError, match=r"teacher.base_url \(line 8\): does not apply"):
        load_config(write(tmp_path, good), local)
    cfg = load_config(write(tmp_path, good.replace("  base_url: http://127.0.0.1:1/v1\n", "")),
                      ["teacher.kind=local", "teacher.batch_size=2"])  # fmt: skip
    assert isinstance(cfg.teacher, LocalTeacherConfig) and cfg.teacher.batch_size == 2
    with pytest.raises(
        ConfigError, match="teacher.batch_size: does not apply to teacher.kind: api"
    ):
        load_config(write(tmp_path, good), ["teacher.batch_size=2"])


def test_no_kind_or_no_section_is_the_local_default() -> None:
    base = {"name": "x", "prompts": {"path": "p.jsonl", "field": "text"}}
    assert isinstance(validate_config(base, "t").teacher, LocalTeacherConfig)
    cfg = validate_config({**base, "teacher": {"model": "m", "dtype": "float16"}}, "t")
    assert isinstance(cfg.teacher, LocalTeacherConfig) and cfg.teacher.dtype == "float16"


def test_every_kind_has_a_builder_and_a_price_rule() -> None:
    assert set(BUILDERS) == set(TEACHER_KINDS)
    assert price_for("gpt-4o-mini", "local", CostConfig()).free
    assert not price_for("gpt-4o-mini", "api", CostConfig()).free


def test_a_base_url_that_is_not_http_is_a_config_error_before_any_call(tmp_path: Path) -> None:
    api = API.replace("  batch_size: 8\n  dtype: bfloat16\n", "").replace("-1", "32")
    for bad in ("ftp://127.0.0.1:1/v1", "127.0.0.1:8000/v1"):
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, api.replace("http://127.0.0.1:1/v1", bad)))
        assert "teacher.base_url (line 8)" in str(info.value) and "http://" in str(info.value)
    assert load_config(write(tmp_path, api)).teacher.kind == "api"
