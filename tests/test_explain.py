"""`kocurate explain`: the library returns every removal with both whole rows and its signals;
the CLI shows them, titles the order it used, and refuses a negative --limit in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kocurate.cli import main
from kocurate.curate.explain import ORDERS, explain_folder
from kocurate.errors import InputError

LONG = ("잘 익은 김치와 돼지고기를 냄비에 넣고 충분히 볶은 다음 물을 붓고 두부와 대파를 넣어 한소끔 더 끓이면 "
        "깊은 맛이 납니다. 마지막에 고춧가루로 색을 냅니다.")
ROWS = [
    {"id": "r1", "instruction": "김치찌개를 맛있게 끓이는 방법을 알려 주세요.", "input": "", "output": LONG},
    {"id": "r2", "instruction": "김치찌개를 맛있게 끓이는 법을 알려 줘.", "input": "", "output": LONG},
    {"id": "r3", "instruction": "김치찌개를  맛있게 끓이는 방법을 알려 주세요.", "input": "", "output": LONG},
    {"id": "r4", "instruction": "된장찌개를 맛있게 끓이는 방법을 알려 주세요.", "input": "", "output": "멸치 육수에 된장을 풀고 두부를 넣어 끓입니다."},
]


def _dedup(tmp_path: Path, *extra) -> Path:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["dedup", str(src), "-o", str(out), "--embedder", "lexical", "--no-cache", *extra])
    assert result.exit_code == 0, result.output
    return out


def test_explain_returns_whole_rows_and_every_signal(tmp_path):
    out = _dedup(tmp_path)
    report = explain_folder(out)
    assert report.total == 2 and {c[0] for c in report.counts} == {"exact-dedup", "semantic-dedup"}
    by_id = {r.id: r for r in report.removals}
    near = by_id["r2"]
    assert near.step == "semantic-dedup" and near.dup_of == "r1" and near.rule == "row"
    assert near.row["output"] == LONG and near.twin["output"] == LONG  # whole, not cut
    assert near.twin["instruction"] == ROWS[0]["instruction"]
    sig = near.signals
    assert sig["duplicate"] and sig["cosine"] == pytest.approx(near.score, abs=1e-3)
    assert sig["output_overlap"] == 1.0 and sig["numbers_same"] and 0 < sig["prompt_overlap"] < 1
    exact = by_id["r3"]
    assert exact.step == "exact-dedup" and exact.twin is not None and exact.rule == "exact"


def test_order_and_step_filter(tmp_path):
    out = _dedup(tmp_path)
    assert explain_folder(out, order="input").title.endswith("(input order)")
    assert "lowest score first" in explain_folder(out).title
    scores = [r.score for r in explain_folder(out, order="highest").removals]
    assert scores == sorted(scores, reverse=True)
    only = explain_folder(out, step="semantic-dedup")
    assert [r.id for r in only.removals] == ["r2"]
    with pytest.raises(InputError, match="no rows removed by step 'decontaminate'; steps there: exact-dedup, semantic-dedup"):
        explain_folder(out, step="decontaminate")
    assert explain_folder(out, limit=0).removals == [] and explain_folder(out, limit=0).total == 2
    assert set(ORDERS) == {"lowest", "highest", "input"}


def test_instruction_rule_removals_are_labelled(tmp_path):
    out = _dedup(tmp_path, "--rule", "instruction")
    rules = {r.id: r.rule for r in explain_folder(out).removals}
    assert rules.get("r2") == "instruction" or rules.get("r3") == "exact"


def test_cli_shows_both_whole_rows_and_the_signals(tmp_path):
    out = _dedup(tmp_path)
    shown = CliRunner().invoke(main, ["explain", str(out), "--order", "input"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    # table cells wrap: read the removed and the kept column apart, without spaces
    left, right = [], []
    for line in shown.output.splitlines():
        cells = line.split("│")
        if len(cells) == 5:
            left.append(cells[2])
            right.append(cells[3])
    left, right = ("".join("".join(side).split()) for side in (left, right))
    assert "input order" in text and "input similarity" not in text
    assert "마지막에고춧가루로색을냅니다." in left and "마지막에고춧가루로색을냅니다." in right  # whole outputs
    assert "…" not in shown.output
    assert "김치찌개를맛있게끓이는법을알려줘." in left and "kept: r1" in text
    assert "signals: cosine" in text and "output n-gram 1.00" in text and "rule: row" in text


@pytest.mark.parametrize("limit", ["-1", "-20"])
def test_negative_limit_is_refused_in_one_line(tmp_path, limit):
    out = _dedup(tmp_path)
    shown = CliRunner().invoke(main, ["explain", str(out), "--limit", limit])
    assert shown.exit_code == 2 and "--limit" in shown.output and "Traceback" not in shown.output
    assert len([line for line in shown.output.splitlines() if line.strip()]) == 1


def test_not_a_dataset_folder(tmp_path):
    with pytest.raises(InputError, match="not a kocurate dataset folder"):
        explain_folder(tmp_path)
