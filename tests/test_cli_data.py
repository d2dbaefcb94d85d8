"""The CLI's foundation: fast start, one-line errors, inspect and normalize."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from kocurate.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"instruction": "제주도 여행 일정을 짜 주세요.", "input": "", "output": "첫째 날은 성산일출봉을 둘러봅니다.", "task": "여행"},
    {"instruction": "제주도 여행 일정을 짜 주세요.", "input": "", "output": "둘째 날에는 한라산에 오릅니다.", "task": "여행"},
    {"instruction": "Python으로 리스트를 정렬하는 법은?", "input": "", "output": "sorted() 함수를 씁니다.", "task": "코딩"},
    {"instruction": "", "input": "", "output": "빈 질문", "task": "코딩"},
]


def test_help_imports_no_model_libraries():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from kocurate.cli import main\n"
        "result = CliRunner().invoke(main, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "for name in main.list_commands(None):\n"
        "    assert CliRunner().invoke(main, [name, '--help']).exit_code == 0, name\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'sentence_transformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"kocurate --help imported {out}"


def test_inspect_json_counts(tmp_path):
    result = run("inspect", write_jsonl(tmp_path / "rows.jsonl", ROWS), "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["rows"] == 4 and stats["exact_duplicates"] == 0 and stats["same_prompt_different_output"] == 1
    assert stats["by_task"] == {"여행": 2, "코딩": 2} and stats["tasks"] == 2
    instruction = next(c for c in stats["text"] if c["column"] == "instruction")
    assert instruction["empty"] == 1 and instruction["max_chars"] == max(len(r["instruction"]) for r in ROWS)
    assert 0.5 < instruction["hangul_share"] < 1.0  # "Python" and "sorted" are not Hangul


def test_inspect_prints_tables(tmp_path):
    result = run("inspect", write_jsonl(tmp_path / "rows.jsonl", ROWS))
    assert result.exit_code == 0 and "text columns" in result.output and "rows per task" in result.output


def test_normalize_writes_folder_and_summary(tmp_path):
    out = tmp_path / "out"
    result = run("normalize", write_jsonl(tmp_path / "rows.jsonl", ROWS), "-o", out)
    assert result.exit_code == 0, result.output
    assert "drop-empty" in result.output and "empty: 1" in result.output
    assert json.loads((out / "manifest.json").read_text())["rows"] == 3


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "가", "output": "나"}\nnot json\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["normalize", str(bad), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:2: malformed JSON line")
    assert not (tmp_path / "o").exists()


def test_normalize_refuses_to_write_over_its_input(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    first = tmp_path / "first"
    assert run("normalize", path, "-o", first).exit_code == 0
    before = sorted(p.name for p in first.rglob("*"))
    result = CliRunner().invoke(main, ["normalize", str(first), "-o", str(first), "--overwrite"])
    assert result.exit_code == 2 and "over or inside the input" in result.output
    assert sorted(p.name for p in first.rglob("*")) == before


def test_normalize_hub_id_with_revision_records_the_commit(tmp_path, monkeypatch):
    import datasets
    from huggingface_hub import constants

    asked = []

    def fake_load(hub_id, split=None, revision=None, **kwargs):
        asked.append((hub_id, split, revision))
        return datasets.Dataset.from_dict({"instruction": ["질문"], "output": ["답"]})

    refs = tmp_path / "hub" / "datasets--someone--ko-set" / "refs"
    refs.mkdir(parents=True)
    (refs / "v2").write_text("e" * 40)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["normalize", "someone/ko-set", "--revision", "v2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert asked == [("someone/ko-set", "train", "v2")]
    recorded = json.loads((out / "manifest.json").read_text())["inputs"][0]
    assert (recorded["revision"], recorded["commit"]) == ("v2", "e" * 40)
    assert "hub @ eeeeeeeeeeee" in (out / "README.md").read_text()  # the card names the commit


def test_inspect_counts_duplicates_with_the_dedup_key(tmp_path):
    """One definition of "the same row": inspect and exact dedup agree on the same rows."""
    import polars as pl

    from kocurate.curate.dedup import ExactDedup
    from kocurate.curate.step import RunContext
    from kocurate.records import load_records
    from kocurate.stats import describe

    rows = [
        {"instruction": "서울의 인구는?", "input": "", "output": "약 940만 명입니다."},
        {"instruction": "서울의  인구는?", "input": "", "output": "약 940만 명입니다."},   # spacing only
        {"instruction": "서울의 인구는?", "input": "", "output": "950만 명쯤입니다."},      # another answer
        {"instruction": "부산의 인구는?", "input": "", "output": "약 330만 명입니다."},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    frame = load_records(path).frame
    stats = describe(frame)
    removed = ExactDedup().run(frame, RunContext()).removed.height
    assert stats.exact_duplicates == removed == 1
    assert stats.same_prompt_different_output == 1
    assert isinstance(frame, pl.DataFrame)
