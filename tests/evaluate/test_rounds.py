"""Models served in processes of their own and timed in interleaved rounds: the figures
each round gives, the memory a model's process holds, and errors coming back whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stillroom.errors import StoreError
from stillroom.evaluate.rounds import Timed, serve_and_time, time_in_rounds
from stillroom.evaluate.served import LabelStudent
from stillroom.evaluate.workers import ModelSpec, workers
from stillroom.student_config import StudentConfig
from stillroom.train.students import build_student, save_student
from tests.helpers.tiny_models import make_sharp_tiny_lm

TEXTS = [f"the {w} sat on the mat {i}" for i, w in enumerate(["cat", "dog", "fox"] * 8)]


def build(root: Path, name: str, layers: int, hidden: int, intermediate: int) -> Path:
    teacher = root / "teacher"
    if not teacher.is_dir():
        make_sharp_tiny_lm(teacher)
    cfg = StudentConfig(init="config", layers=layers, hidden_size=hidden, heads=4, kv_heads=2,
                        intermediate_size=intermediate, trim_vocab=False)  # fmt: skip
    save_student(build_student(cfg, teacher), root / name)
    return root / name


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer student with about 64 MB of float32 weights."""
    return build(tmp_path_factory.mktemp("rounds"), "student", 4, 512, 2048)


@pytest.fixture(scope="module")
def small(student: Path) -> Path:
    """A 1-layer student of the same kind, under 1 MB of weights."""
    return build(student.parent, "small", 1, 64, 128)


def spec(folder: Path) -> ModelSpec:
    return ModelSpec(LabelStudent, (folder, "float32", [" cat", " dog"], TEXTS, 8), code_of=folder)


def test_two_copies_timed_in_rounds_and_their_memory(student: Path, small: Path) -> None:
    specs = {"a": spec(student), "b": spec(student), "small": spec(small)}
    logps, eff = serve_and_time(specs, dict.fromkeys(specs, TEXTS), batch=8, latency_items=6)
    # The same model in two processes: the same answers, up to the float noise of kernels
    # that may split their work differently when the machine is busy.
    assert logps["a"].shape == (len(TEXTS), 2)
    np.testing.assert_allclose(logps["a"], logps["b"], atol=1e-4)
    for e in eff.values():
        assert e["passes"] >= 5 and e["items_timed"] == len(TEXTS)
        assert len(e["turn_rates"]) == e["rounds"]  # paired with the others' by round
        assert 0 < e["throughput_min"] <= e["throughput_items_per_s"] <= e["throughput_max"]
        assert (
            e["latency_ms_min"] <= e["latency_ms_p50"] <= e["latency_ms_p95"] <= e["latency_ms_max"]
        )
    big = eff["a"]
    assert big["weights_mb"] == pytest.approx(_file_mb(student), rel=0.01)
    assert big["peak_rss_mb"] >= big["weights_mb"]  # every weight is counted
    # Beyond the weights each process holds the same small things (tokenizer, runtime
    # buffers, batches of 8 short texts): what the big model costs more is its weights.
    more = big["peak_rss_mb"] - eff["small"]["peak_rss_mb"]
    assert more == pytest.approx(big["weights_mb"] - eff["small"]["weights_mb"], rel=0.2)
    assert eff["b"]["peak_rss_mb"] == pytest.approx(big["peak_rss_mb"], rel=0.1)


def test_models_take_turns_until_each_has_its_passes(student: Path, small: Path) -> None:
    """Each model works through its own length-sorted batches; every round gives each its
    turn, until the slowest has its passes and time and every latency item is timed."""
    short = [t.split(" on ")[0] for t in TEXTS]  # the same items, in another form
    with workers({"big": spec(student), "small": spec(small)}) as running:
        timed = time_in_rounds(running, {"big": TEXTS, "small": short}, batch=8,
                               latency_items=7, min_passes=2, min_timed_s=0.5)  # fmt: skip
    big, small_ = timed["big"], timed["small"]
    assert big.rounds == small_.rounds  # a turn each, every round
    assert big.sizes == small_.sizes == [8, 8, 8]
    for t in (big, small_):
        assert len(t.passes) >= 2 and t.timed_s >= 0.5 and all(r > 0 for r in t.passes)
        assert len(t.latencies) == 7  # one a round while any is left
        assert len(t.passes) == t.position // 3
        assert len(t.turns) == t.rounds and all(r > 0 for r in t.turns)  # a rate per turn
    # turns last about as long for both: the small model's hold more batches
    assert small_.position > big.position


def test_a_failed_load_comes_back_as_its_own_error(tmp_path: Path) -> None:
    with (
        pytest.raises(StoreError, match="is not a stillroom student"),
        workers({"broken": spec(tmp_path)}),
    ):
        pass


def _file_mb(folder: Path) -> float:
    """The float32 weights' size as the file stores them."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "np") as f:
        return sum(4 * int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()) / 1e6  # noqa: SIM118


def test_a_turns_rate_counts_the_batches_it_ran_wrapping_around() -> None:
    t = Timed([16, 16, 4], position=2)
    t.record([0.5, 1.0], float("nan"))  # batch 2 (4 items), then batch 0 (16): wraps
    assert t.turns == [20 / 1.5] and t.position == 4
    assert t.passes == [4 / 0.5]  # the pass that ended with batch 2
    t.record([2.0], 12.0)  # batch 1 alone
    assert t.turns[-1] == 16 / 2.0 and t.latencies == [12.0] and t.rounds == 2
