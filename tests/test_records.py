"""The dataset-folder contract: loading, canonical columns, ids, presets, atomic writing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

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
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers and all(name.startswith((".out.tmp-", ".out.lock")) for name in leftovers)
    assert any(name.startswith(".out.tmp-") for name in leftovers)
    # the next run on that output cleans what the killed one left, and writes
    frame = pl.DataFrame({"id": ["a"], "instruction": ["가"], "input": [""], "output": ["나"], "source": ["s"]})
    write_dataset_folder(tmp_path / "out", frame, None, Manifest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


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


# ------------------------------------------------------------------------------ the output guard


def _frame():
    return pl.DataFrame({"id": ["a"], "instruction": ["가"], "input": [""], "output": ["나"], "source": ["s"]})


def test_second_concurrent_writer_gets_one_line_error(tmp_path):
    from kocurate.records import output_lock

    out = tmp_path / "out"
    with output_lock(out):  # another run holds the output (flock: a second open file conflicts even in one process)
        with pytest.raises(InputError, match=r"another kocurate run \(pid \d+\) is writing this output right now"):
            write_dataset_folder(out, _frame(), None, Manifest())
    assert not out.exists()
    write_dataset_folder(out, _frame(), None, Manifest())  # released: the next run writes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_lock_is_held_for_the_whole_pipeline_run(tmp_path):
    from kocurate.curate import Step, StepResult
    from kocurate.records import empty_removed

    out = tmp_path / "out"
    seen = []

    class Probe(Step):
        name = "probe"

        def run(self, frame, ctx):
            seen.append(sorted(p.name for p in tmp_path.iterdir()))
            with pytest.raises(InputError, match="another kocurate run"):
                write_dataset_folder(out, frame, None, Manifest())
            return StepResult(frame, empty_removed(frame))

    run_pipeline([load_records(write_jsonl(tmp_path / "rows.jsonl", ROWS))], [Probe()], out)
    assert any(name == ".out.lock" for name in seen[0]) and any(name.startswith(".out.tmp-") for name in seen[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "rows.jsonl"]


def test_overwrite_swaps_atomically_and_the_two_rename_fallback_recovers(tmp_path, monkeypatch):
    from kocurate.records import folder as folder_mod

    out = tmp_path / "out"
    write_dataset_folder(out, _frame(), None, Manifest())
    first = (out / "manifest.json").read_text()
    swapped = []
    real = folder_mod._exchange
    monkeypatch.setattr(folder_mod, "_exchange", lambda a, b: swapped.append((a, b)) or real(a, b))
    write_dataset_folder(out, _frame().with_columns(pl.lit("다").alias("output")), None, Manifest(), overwrite=True)
    assert swapped and pl.read_parquet(next((out / "data").glob("*.parquet")))["output"].to_list() == ["다"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "manifest.json").read_text() != first

    # where RENAME_EXCHANGE is missing: two renames; a run killed between them leaves .out.old-*
    # and no out, and the next run on that output puts the old folder back before anything else
    monkeypatch.setattr(folder_mod, "_exchange", lambda a, b: False)
    write_dataset_folder(out, _frame(), None, Manifest(), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    kept = (out / "manifest.json").read_text()
    out.rename(tmp_path / ".out.old-4242-abcdef")  # the state a kill between the renames leaves
    (tmp_path / ".out.tmp-4242-123456").mkdir()  # and the new folder it never moved
    with pytest.raises(InputError, match="pass --overwrite"):  # restored first, so the user's folder is refused, not lost
        write_dataset_folder(out, _frame(), None, Manifest())
    assert (out / "manifest.json").read_text() == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_exchange_swaps_two_folders(tmp_path):
    from kocurate.records.folder import _exchange

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not _exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here; the two-rename fallback is tested above")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_stale_temporaries_are_cleaned_and_sigterm_cleans_up(tmp_path):
    out = tmp_path / "out"
    (tmp_path / ".out.tmp-99999-dead00").mkdir()
    (tmp_path / ".out.tmp-99999-dead00" / "half.parquet").write_bytes(b"x")
    write_dataset_folder(out, _frame(), None, Manifest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    script = textwrap.dedent(
        f"""
        import time, polars as pl
        from kocurate.records import Manifest, write_dataset_folder
        frame = pl.DataFrame({{"id": ["a"], "instruction": ["가"], "input": [""], "output": ["나"], "source": ["s"]}})
        def slow_card(folder, manifest):
            print("writing", flush=True)
            time.sleep(60)
            return ""
        write_dataset_folder({str(tmp_path / "second")!r}, frame, None, Manifest(), render_card=slow_card)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.terminate()
    assert proc.wait(timeout=30) != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # SIGTERM removed the temporary and the lock


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_written_folders_and_files_respect_the_umask(tmp_path, mask):
    from kocurate.records import write_text_atomic

    old = os.umask(mask)
    try:
        out = write_dataset_folder(tmp_path / "deep" / "out", _frame(), None, Manifest())
        note = write_text_atomic(tmp_path / "note.txt", "안녕")
    finally:
        os.umask(old)
    want_dir, want_file = 0o777 & ~mask, 0o666 & ~mask
    assert (out.stat().st_mode & 0o777) == want_dir and ((out / "data").stat().st_mode & 0o777) == want_dir
    assert ((tmp_path / "deep").stat().st_mode & 0o777) == want_dir
    assert (next((out / "data").glob("*.parquet")).stat().st_mode & 0o777) == want_file
    assert (note.stat().st_mode & 0o777) == want_file


def test_write_text_atomic_keeps_mode_and_cleans_dead_temporaries(tmp_path):
    from kocurate.records import write_json_atomic, write_text_atomic

    path = tmp_path / "report.json"
    path.write_text("old")
    os.chmod(path, 0o640)
    (tmp_path / ".report.json.tmp-99999-dead00").write_text("half")  # a dead writer's temporary
    write_json_atomic(path, {"점수": 1})
    assert json.loads(path.read_text()) == {"점수": 1} and (path.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    with pytest.raises(InputError, match="is a file, so no folder can be made under it"):
        write_text_atomic(path / "inner.txt", "x")


def test_output_under_a_file_or_in_an_unwritable_folder_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="afile is a file, so no folder can be made under it"):
        write_dataset_folder(tmp_path / "afile" / "out", _frame(), None, Manifest())
    # /sys refuses new folders even to root, so this fails whoever runs the tests
    with pytest.raises(InputError, match=r"\(permission denied\); choose another -o"):
        write_dataset_folder("/sys/kocurate-test/out", _frame(), None, Manifest())


# ------------------------------------------------------------------------------ inputs: Hub revisions, bad rows


def test_hub_commit_comes_from_the_local_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from kocurate.records.load import hub_commit

    sha, tag = "a" * 40, "b" * 40
    refs = tmp_path / "hub" / "datasets--someone--ko-set" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(sha)
    (refs / "v1").write_text(tag)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_commit("someone/ko-set") == sha and hub_commit("someone/ko-set", "v1") == tag
    assert hub_commit("someone/ko-set", "c" * 40) == "c" * 40
    assert hub_commit("someone/other") == "unresolved" and hub_commit("someone/ko-set", "v2") == "unresolved"


def test_hub_input_records_revision_and_commit(tmp_path, monkeypatch):
    import datasets
    from huggingface_hub import constants

    calls = []

    def fake_load(hub_id, split=None, revision=None, **kwargs):
        calls.append((hub_id, split, revision))
        return datasets.Dataset.from_dict({"instruction": ["가"], "output": ["나"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = load_records("someone/ko-set", revision="v1")
    assert calls == [("someone/ko-set", "train", "v1")]
    assert (loaded.info.revision, loaded.info.commit) == ("v1", "unresolved")
    assert loaded.info.fingerprint == "hub:someone/ko-set@unresolved"  # never datasets' internal fingerprint
    (tmp_path / "hub" / "datasets--someone--ko-set" / "refs").mkdir(parents=True)
    (tmp_path / "hub" / "datasets--someone--ko-set" / "refs" / "v1").write_text("d" * 40)
    out = tmp_path / "out"
    run_pipeline([load_records("someone/ko-set", revision="v1")], [], out)
    recorded = json.loads((out / "manifest.json").read_text())["inputs"][0]
    assert recorded["commit"] == "d" * 40 and recorded["revision"] == "v1" and recorded["fingerprint"].endswith("d" * 40)


def test_progress_lines_when_output_is_not_a_terminal(capsys):
    from kocurate.curate.pipeline import progress_lines

    ctx = RunContext(show_progress=True)
    assert list(ctx.track(range(20), "embedding", total=20)) == list(range(20))
    quick = capsys.readouterr().err.splitlines()  # a quick loop: only its last line
    assert len(quick) == 1 and quick[0].startswith("embedding: 20/20 (100%)") and quick[0].endswith("done")
    assert list(progress_lines(range(20), "embedding", 20, min_gap=0.0)) == list(range(20))
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("embedding: 2/20 (10%)") and err[-1].startswith("embedding: 20/20 (100%)")
    assert err[-1].endswith("done") and len(err) == 10
    assert list(RunContext(show_progress=False).track(range(3), "quiet")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_pipeline_logs_each_step_when_output_is_not_a_terminal(tmp_path, capsys):
    source = load_records(write_jsonl(tmp_path / "rows.jsonl", ROWS))
    run_pipeline([source], [], tmp_path / "out", ctx=RunContext(show_progress=True))
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "step 1/1 drop-empty: 4 rows in" and err[1].startswith("step 1/1 drop-empty: 2 rows out (")
    run_pipeline([source], [], tmp_path / "quiet", ctx=RunContext(show_progress=False))
    assert capsys.readouterr().err == ""


def test_library_callers_get_the_renderer_they_pass(tmp_path):
    out = tmp_path / "out"
    run_pipeline([load_records(write_jsonl(tmp_path / "rows.jsonl", ROWS))], [], out,
                 ctx=RunContext(render_card=lambda folder, manifest: f"---\nlicense: mit\n---\n# {manifest['rows']} rows\n"))
    assert (out / "README.md").read_text().endswith("# 2 rows\n")
