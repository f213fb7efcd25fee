import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stillroom.config import PromptSource, SplitConfig
from stillroom.errors import InputError
from stillroom.harvest.prompts import load_prompts, split_of

SPLIT = SplitConfig()


def jsonl(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_jsonl_with_template_keep_fields_and_ids(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [json.dumps({"id": i, "q": f"q{i}", "y": i % 2}) for i in range(5)])
    src = PromptSource(path=path, template="Question: {q}", id_field="id", keep_fields=["y"])
    items, report = load_prompts(src, SPLIT)
    assert [i.prompt for i in items] == [f"Question: q{i}" for i in range(5)]
    assert [i.id for i in items] == ["0", "1", "2", "3", "4"]
    assert items[3].fields == {"y": 1}
    assert report.rows == 5 and not report.skipped


def test_malformed_jsonl_row_names_file_and_line(tmp_path: Path) -> None:
    path = jsonl(tmp_path, ['{"text": "a"}', '{"text": "b"', '{"text": "c"}'])
    with pytest.raises(InputError, match=r"p.jsonl:2: not valid JSON"):
        load_prompts(PromptSource(path=path, field="text"), SPLIT)


def test_skip_bad_counts_and_reports(tmp_path: Path) -> None:
    path = jsonl(tmp_path, ['{"text": "a"}', "oops", '{"other": 1}', '{"text": "d"}'])
    items, report = load_prompts(PromptSource(path=path, field="text"), SPLIT, skip_bad=True)
    assert [i.prompt for i in items] == ["a", "d"]
    assert len(report.skipped) == 2
    assert "p.jsonl:3: field 'text' is missing (fields present: other)" in report.skipped[1]


def test_csv_ragged_row_names_line(tmp_path: Path) -> None:
    p = tmp_path / "p.csv"
    p.write_text('text,label\n"hello, world",a\nbroken\n"multi\nline",b\n')
    with pytest.raises(InputError, match=r"p.csv:3: expected 2 columns"):
        load_prompts(PromptSource(path=p, field="text"), SPLIT)
    items, _ = load_prompts(
        PromptSource(path=p, field="text", keep_fields=["label"]), SPLIT, skip_bad=True
    )
    assert [i.prompt for i in items] == ["hello, world", "multi\nline"]
    assert items[1].fields == {"label": "b"}


def test_parquet_and_hf_dataset_folder(tmp_path: Path) -> None:
    table = pa.table({"text": ["x", "y", "z"], "label": [0, 1, 2]})
    pq.write_table(table, tmp_path / "p.parquet")
    items, _ = load_prompts(PromptSource(path=tmp_path / "p.parquet", field="text"), SPLIT)
    assert [i.prompt for i in items] == ["x", "y", "z"]

    # The layout `datasets.Dataset.save_to_disk` writes: Arrow stream files + state.json.
    folder = tmp_path / "ds"
    folder.mkdir()
    arrow = str(folder / "data-00000-of-00001.arrow")
    with pa.OSFile(arrow, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    state = {"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}
    (folder / "state.json").write_text(json.dumps(state))
    items, _ = load_prompts(PromptSource(path=folder, field="text", keep_fields=["label"]), SPLIT)
    assert [(i.prompt, i.fields["label"]) for i in items] == [("x", 0), ("y", 1), ("z", 2)]


def test_chat_messages_and_system(tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    path = jsonl(tmp_path, [json.dumps({"m": msgs}), json.dumps({"m": "nope"})])
    src = PromptSource(path=path, messages_field="m", system="be brief")
    with pytest.raises(InputError, match="p.jsonl:2: field 'm' must be a non-empty list"):
        load_prompts(src, SPLIT)
    items, _ = load_prompts(src, SPLIT, skip_bad=True)
    assert items[0].messages == (("system", "be brief"), ("user", "hi"))


def test_split_is_stable_and_near_its_fractions() -> None:
    cfg = SplitConfig(train=0.8, validation=0.1, test=0.1, seed=3)
    splits = [split_of(str(i), cfg) for i in range(20000)]
    assert splits == [split_of(str(i), cfg) for i in range(20000)]
    share = splits.count("train") / len(splits)
    assert 0.78 < share < 0.82
    assert splits != [split_of(str(i), SplitConfig(seed=4)) for i in range(20000)]


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file; check prompts.path"):
        load_prompts(PromptSource(path=tmp_path / "none.jsonl", field="t"), SPLIT)
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(InputError, match="set prompts.format"):
        load_prompts(PromptSource(path=tmp_path / "p.txt", field="t"), SPLIT)


def test_split_field_keeps_the_data_sets_own_split(tmp_path: Path) -> None:
    parts = ["train", "Validation", "dev", "TEST", "heldout", "training"]
    path = jsonl(tmp_path, [json.dumps({"t": f"x{i}", "fold": p}) for i, p in enumerate(parts)])
    split = SplitConfig(field="fold", names={"heldout": "test"})
    items, _ = load_prompts(PromptSource(path=path, field="t"), split)
    assert [i.split for i in items] == [
        "train",
        "validation",
        "validation",
        "test",
        "test",
        "train",
    ]
    assert items[2].where == f"{path}:3"


def test_an_unknown_or_missing_split_value_names_file_line_and_fix(tmp_path: Path) -> None:
    path = jsonl(tmp_path, ['{"t": "a", "fold": "train"}', '{"t": "b", "fold": "exam"}'])
    with pytest.raises(InputError) as info:
        load_prompts(PromptSource(path=path, field="t"), SplitConfig(field="fold"))
    assert str(info.value).startswith(f"{path}:2: split.field 'fold' is 'exam', not a split")
    assert "split.names: {exam: test}" in str(info.value)
    path = jsonl(tmp_path, ['{"t": "a", "fold": "train"}', '{"t": "b"}'])
    with pytest.raises(InputError, match=r"p.jsonl:2: no field 'fold' \(split.field\)"):
        load_prompts(PromptSource(path=path, field="t"), SplitConfig(field="fold"))


def test_first_keeps_only_the_first_usable_rows(tmp_path: Path) -> None:
    path = jsonl(tmp_path, ['{"t": "a"}', "oops", '{"t": "c"}', '{"t": "d"}'])
    items, report = load_prompts(PromptSource(path=path, field="t"), SPLIT, skip_bad=True, first=2)
    assert [i.prompt for i in items] == ["a", "c"]
    assert report.rows == 3


def test_transfer_rows_join_train_and_need_no_gold(tmp_path: Path) -> None:
    main = jsonl(tmp_path, [json.dumps({"id": f"m{i}", "q": f"q{i}", "y": "a"}) for i in range(40)])
    extra = tmp_path / "extra.jsonl"
    extra.write_text("".join(json.dumps({"id": f"t{i}", "q": f"t{i}"}) + "\n" for i in range(30)))
    src = PromptSource(path=main, field="q", id_field="id", keep_fields=["y"],
                       transfer_path=extra)  # fmt: skip
    items, report = load_prompts(src, SplitConfig(train=0.5, validation=0.25, test=0.25))
    transfer = [i for i in items if i.id.startswith("t")]
    assert len(items) == 70 and report.transfer == 30 and report.rows == 70
    assert {i.split for i in transfer} == {"train"} and all(i.fields == {} for i in transfer)
    # the main file's rows keep their seeded split, some of them held out
    held = {i.split for i in items if i.id.startswith("m")}
    assert held == {"train", "validation", "test"}
    # a main row missing a kept field is still an error; an id in both files is too
    main.write_text(json.dumps({"id": "t0", "q": "q", "y": "a"}) + "\n")
    with pytest.raises(InputError, match=r"extra.jsonl:1: duplicate prompt id 't0'.*transfer"):
        load_prompts(src, SPLIT)
    main.write_text(json.dumps({"id": "m0", "q": "q"}) + "\n")
    with pytest.raises(InputError, match=r"p.jsonl:1: no field 'y'"):
        load_prompts(src, SPLIT)


def test_transfer_path_resolves_against_the_config(tmp_path: Path) -> None:
    from stillroom.config import load_config

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(
        "name: t\nprompts: {path: data/p.jsonl, field: q, transfer_path: data/x.jsonl}\n"
    )
    cfg = load_config(cfg_path)
    assert cfg.prompts.transfer_path == tmp_path / "data" / "x.jsonl"
