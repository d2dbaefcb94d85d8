"""cap: the CoT-Collection recipe (at most N rows per task, seeded), its table and its errors."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from kocurate.cli import main
from kocurate.curate import RunContext
from kocurate.curate.cap import Cap
from kocurate.errors import InputError

SIZES = {"요약": 100, "번역": 101, "질의응답": 250, "감성분석": 7}


def cot_rows(sizes=SIZES) -> list[dict]:
    rows = []
    for task, n in sizes.items():
        for i in range(n):
            rows.append({"source": f"{task} 문제 {i}번: 다음 글을 읽고 답하시오.", "rationale": f"{task}의 근거 {i}",
                         "target": f"답 {i}", "task": task, "type": "CoT"})
    return rows


def cot_frame(sizes=SIZES) -> pl.DataFrame:
    rows = cot_rows(sizes)
    return pl.DataFrame([{"id": f"{r['task']}-{i}", "instruction": r["source"], "input": "",
                          "output": f"{r['rationale']} [RESULT] {r['target']}", "source": "cot", "task": r["task"]}
                         for i, r in enumerate(rows)])


def test_small_tasks_stay_whole_large_ones_keep_exactly_n():
    result = Cap(per_task=100).run(cot_frame(), RunContext(seed=42))
    counts = dict(result.kept.group_by("task").len().iter_rows())
    assert counts == {"요약": 100, "번역": 100, "질의응답": 100, "감성분석": 7}
    assert result.stats["per_task"]["번역"] == [101, 100] and result.stats["tasks_capped"] == 2
    assert result.removed.height == 1 + 150
    assert set(result.removed["reason"]) == {"over-cap"}
    assert result.removed.filter(pl.col("task") == "번역")["detail"][0] == "task 번역 over 100 rows"


def test_sample_is_seeded_and_independent_of_other_tasks():
    a = Cap(per_task=10).run(cot_frame(), RunContext(seed=1)).kept
    b = Cap(per_task=10).run(cot_frame(), RunContext(seed=1)).kept
    c = Cap(per_task=10).run(cot_frame(), RunContext(seed=2)).kept
    alone = Cap(per_task=10).run(cot_frame({"질의응답": 250}), RunContext(seed=1)).kept
    assert a["id"].to_list() == b["id"].to_list() != c["id"].to_list()
    pick = lambda f: f.filter(pl.col("task") == "질의응답")["instruction"].to_list()  # noqa: E731
    assert pick(a) == pick(alone)


def test_kept_rows_keep_input_order():
    kept = Cap(per_task=5).run(cot_frame(), RunContext()).kept
    order = {rid: i for i, rid in enumerate(cot_frame()["id"])}
    positions = [order[r] for r in kept["id"]]
    assert positions == sorted(positions)


def test_missing_task_column_lists_the_columns():
    with pytest.raises(InputError, match=r"no task column 'category'; columns: id, instruction, input, output, source, task; "
                                         r"pass --task-column NAME"):
        Cap(task_column="category").run(cot_frame(), RunContext())


def test_per_task_must_be_positive():
    with pytest.raises(InputError, match="--per-task 0 must be at least 1"):
        Cap(per_task=0)


def test_cli_cap_with_the_cot_preset_prints_before_and_after(tmp_path):
    src = tmp_path / "ko_cot.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in cot_rows()), encoding="utf-8")
    out = tmp_path / "capped"
    res = CliRunner().invoke(main, ["cap", str(src), "--preset", "cot-collection", "-o", str(out), "--per-task", "100"])
    assert res.exit_code == 0, res.output
    assert "tasks: 4 (2 capped at 100)" in res.output
    assert "rows before" in res.output and "458" in res.output and "307" in res.output
    kept = pl.read_parquet(next((out / "data").glob("*.parquet")))
    assert kept.height == 307 and kept["output"][0].endswith("[RESULT] 답 0")


def test_cli_cap_missing_column_is_one_line(tmp_path):
    src = tmp_path / "plain.jsonl"
    src.write_text(json.dumps({"instruction": "안녕", "output": "네"}, ensure_ascii=False), encoding="utf-8")
    res = CliRunner().invoke(main, ["cap", str(src), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no task column 'task'; columns: id, instruction, input, output, source" in res.output
    # progress lines ("step 2/2 cap: ...") come first when stderr is no terminal; the error is one line
    lines = [line for line in res.output.splitlines() if line.strip() and not line.startswith("step ")]
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_null_task_rows_counts_rows_without_a_task():
    frame = cot_frame({"요약": 5, "번역": 3})
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) < 2).then(None).otherwise(pl.col("task")).alias("task"))
    result = Cap(per_task=100).run(frame, RunContext(seed=42))
    assert result.stats["null_task_rows"] == 2
    assert Cap(per_task=100).run(cot_frame({"요약": 5}), RunContext()).stats["null_task_rows"] == 0
