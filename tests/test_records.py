"""The dataset-folder contract: loading, canonical columns, ids, presets, atomic writing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import polars as pl
import pytest

from kocurate.curate import DropEmpty, RunContext, run_pipeline
from kocurate.errors import InputError
from kocurate.records import Manifest, load_records, parse_mapping, write_dataset_folder

ROWS = [
    {"instruction": "김치찌개를 맛있게 끓이는 방법을 알려 주세요.", "input": "", "output": "잘 익은 김치와 돼지고기를 먼저 볶은 뒤 물을 붓고 끓입니다."},
    {"instruction": "다음 문장을 존댓말로 바꿔 주세요.", "input": "밥 먹었어?", "output": "진지 드셨어요?"},
    {"instruction": "   ", "input": "", "output": "질문이 비어 있는 행입니다."},
    {"instruction": "광합성이 무엇인지 설명해 주세요.", "input": None, "output": " \n "},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_loads_with_canonical_columns_and_derived_ids(tmp_path):
    loaded = load_records(write_jsonl(tmp_path / "my_set.jsonl", ROWS))
    frame = loaded.frame
    assert frame.columns[:5] == ["id", "instruction", "input", "output", "source"]
    assert frame["id"].to_list() == [f"my_set-{i:06d}" for i in range(4)]
    assert frame["source"].unique().to_list() == ["my_set"]
    assert frame["input"][3] == ""  # null input becomes empty text
    assert loaded.info.fingerprint.startswith("sha256:") and loaded.info.rows == 4


def test_source_ids_are_kept_and_must_be_unique(tmp_path):
    rows = [dict(r, id=f"q{i}") for i, r in enumerate(ROWS)]
    assert load_records(write_jsonl(tmp_path / "a.jsonl", rows)).frame["id"].to_list() == ["q0", "q1", "q2", "q3"]
    rows[2]["id"] = "q0"
    with pytest.raises(InputError, match=r"id 'q0' is not unique \(rows 1 and 3\)"):
        load_records(write_jsonl(tmp_path / "b.jsonl", rows))


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "가", "output": "나"}\n{"instruction": "다", \n', encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_records(path)
    assert str(err.value).startswith(f"{path}:2: malformed JSON line")


def test_non_utf8_text_names_the_line(tmp_path):
    path = tmp_path / "cp949.jsonl"
    path.write_bytes('{"instruction": "a", "output": "b"}\n'.encode() + '{"instruction": "한국어", "output": "b"}\n'.encode("cp949"))
    with pytest.raises(InputError, match=r"cp949.jsonl:2: not UTF-8 text .* re-save the file as UTF-8"):
        load_records(path)


def test_missing_column_lists_found_columns_and_suggests_map(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "서울은 어디에 있나요?", "answer": "한반도 중부에 있습니다."}])
    with pytest.raises(InputError) as err:
        load_records(path)
    message = str(err.value)
    assert "missing required column 'instruction'" in message and "question, answer" in message and "--map" in message
    frame = load_records(path, mapping=parse_mapping("instruction=question,output=answer")).frame
    assert frame["instruction"][0] == "서울은 어디에 있나요?" and frame["output"][0] == "한반도 중부에 있습니다."


def test_bad_map_spec_is_one_line(tmp_path):
    with pytest.raises(InputError, match="CANONICAL=COLUMN"):
        parse_mapping("instruction")


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_other_file_types(tmp_path, suffix):
    frame = pl.DataFrame({"instruction": ["한글 맞춤법을 알려 주세요.", "부산의 명소는?"], "output": ["띄어쓰기에 유의합니다.", "해운대가 유명합니다."]})
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        frame.write_csv(path)
    elif suffix == ".parquet":
        frame.write_parquet(path)
    else:
        path.write_text(json.dumps(frame.to_dicts(), ensure_ascii=False), encoding="utf-8")
    loaded = load_records(path)
    assert loaded.frame["output"].to_list() == frame["output"].to_list()


def test_cot_collection_preset_builds_output_from_rationale_and_target(tmp_path):
    rows = [{"source": "사과 3개와 배 2개는 모두 몇 개인가?", "rationale": "3 더하기 2는 5이다.", "target": "5", "task": "ko_arith", "type": "CoT"}]
    frame = load_records(write_jsonl(tmp_path / "cot.jsonl", rows), preset="cot-collection").frame
    row = frame.row(0, named=True)
    assert row["instruction"] == rows[0]["source"]
    assert row["output"] == "3 더하기 2는 5이다. [RESULT] 5"
    assert row["source"] == "cot-collection" and row["task"] == "ko_arith" and row["type"] == "CoT"


def test_unknown_preset_lists_known_ones(tmp_path):
    with pytest.raises(InputError, match="unknown preset 'alpaka'; known presets: open-platypus"):
        load_records(write_jsonl(tmp_path / "a.jsonl", ROWS), preset="alpaka")


def test_hub_id_offline_says_how_to_pass_a_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(InputError) as err:
        load_records("no-such-owner/no-such-dataset-kocurate")
    message = str(err.value)
    assert "\n" not in message and "pass the local path" in message


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        load_records(tmp_path / "nothing.jsonl")


def test_pipeline_writes_hub_folder_that_datasets_loads(tmp_path):
    import datasets

    source = load_records(write_jsonl(tmp_path / "rows.jsonl", ROWS))
    out = tmp_path / "out"
    result = run_pipeline([source], [], out, ctx=RunContext(seed=7))
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "manifest.json", "removed"]
    assert (out / "data" / "train-00000-of-00001.parquet").is_file()
    kept = datasets.load_dataset(str(out), split="train")
    assert kept.num_rows == 2 and kept["id"] == result.kept["id"].to_list()
    removed = datasets.load_dataset(str(out), "removed", split="train")
    assert sorted(removed["id"]) == ["rows-000002", "rows-000003"]
    assert set(removed["reason"]) == {"empty"} and set(removed["step"]) == {"drop-empty"}
    assert sorted(removed["detail"]) == ["empty instruction", "empty output"]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["rows"] == 2 and manifest["removed_rows"] == 2
    assert manifest["inputs"][0]["fingerprint"] == source.info.fingerprint and manifest["inputs"][0]["rows"] == 4
    step = manifest["steps"][0]
    assert (step["name"], step["rows_in"], step["rows_out"], step["removed"]) == ("drop-empty", 4, 2, {"empty": 2})
    assert step["tool_version"] and "seconds" in step and step["params"] == {"columns": ["instruction", "output"]}


def test_chained_folder_keeps_history_and_removed_rows(tmp_path):
    first = tmp_path / "first"
    run_pipeline([load_records(write_jsonl(tmp_path / "rows.jsonl", ROWS))], [], first)
    second = tmp_path / "second"
    result = run_pipeline([load_records(first)], [DropEmpty()], second)
    manifest = json.loads((second / "manifest.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == ["drop-empty", "drop-empty"]
    assert manifest["inputs"][0]["name"] == "rows"  # the original input, not the folder
    assert result.removed.height == 2  # carried over from the first folder


def test_output_equal_to_or_inside_input_is_refused(tmp_path):
    folder = tmp_path / "set"
    run_pipeline([load_records(write_jsonl(tmp_path / "rows.jsonl", ROWS))], [], folder)
    for out in (folder, folder / "inner"):
        with pytest.raises(InputError, match="over or inside the input"):
            run_pipeline([load_records(folder)], [], out, overwrite=True)


def test_existing_output_needs_overwrite(tmp_path):
    source = load_records(write_jsonl(tmp_path / "rows.jsonl", ROWS))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("사용자 파일")
    with pytest.raises(InputError, match="pass --overwrite"):
        run_pipeline([source], [], out)
    assert (out / "keep.txt").read_text() == "사용자 파일"
    run_pipeline([source], [], out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()


def test_failed_write_leaves_no_folder(tmp_path):
    frame = load_records(write_jsonl(tmp_path / "rows.jsonl", ROWS)).frame

    def broken_card(folder, manifest):
        raise RuntimeError("card failed")

    with pytest.raises(RuntimeError):
        write_dataset_folder(tmp_path / "out", frame, None, Manifest(), render_card=broken_card)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_killed_write_leaves_no_output_folder(tmp_path):
    """SIGKILL in the middle of writing: the output folder must not exist (only a hidden temp folder may)."""
    script = textwrap.dedent(
        f"""
        import time, polars as pl
        from kocurate.records import Manifest, write_dataset_folder
        frame = pl.DataFrame({{"id": ["a"], "instruction": ["가"], "input": [""], "output": ["나"], "source": ["s"]}})
        def slow_card(folder, manifest):
            print("writing", flush=True)
            time.sleep(60)
            return ""
        write_dataset_folder({str(tmp_path / "out")!r}, frame, None, Manifest(), render_card=slow_card)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (tmp_path / "out").exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(name.startswith(".out.tmp-") for name in leftovers)


def test_empty_file_is_one_line(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match=r"empty.jsonl: empty file \(no rows\)"):
        load_records(path)


def test_missing_local_file_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="data/foo.jsonl: no such file or folder"):
        load_records("data/foo.jsonl")


def test_corrupt_shard_and_manifest_are_one_line_errors(tmp_path):
    folder = tmp_path / "set"
    run_pipeline([load_records(write_jsonl(tmp_path / "rows.jsonl", ROWS))], [], folder)
    (folder / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"manifest.json:1: malformed manifest"):
        load_records(folder)
    (folder / "manifest.json").unlink()
    (folder / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(InputError, match="not a readable parquet file"):
        load_records(folder)


def test_folder_fingerprint_is_the_same_with_or_without_its_manifest(tmp_path):
    folder = tmp_path / "set"
    result = run_pipeline([load_records(write_jsonl(tmp_path / "rows.jsonl", ROWS))], [], folder)
    with_manifest = load_records(folder).info.fingerprint
    (folder / "manifest.json").unlink()
    assert load_records(folder).info.fingerprint == with_manifest == result.manifest.data_fingerprint
