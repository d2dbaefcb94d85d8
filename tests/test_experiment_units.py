"""train-eval's parts that need no model: arms, controls, stamps, bootstrap, report."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score

from kocurate.errors import InputError
from kocurate.experiment import paired_bootstrap, parse_arms
from kocurate.experiment.arms import materialize_control
from kocurate.experiment.bootstrap import macro_f1
from kocurate.experiment.runner import ExperimentResult, TrainEvalConfig, Unit, read_stamped, write_stamped
from kocurate.experiment.report import comparisons, render_html, render_markdown
from kocurate.records import load_records


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(3)
    for _ in range(20):
        gold, pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
        labels = np.unique(np.concatenate([gold, pred]))
        assert macro_f1(gold, pred, labels) == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-12)


def test_bootstrap_interval_finds_a_real_gap_and_not_a_null_one():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 400)
    good = np.where(rng.random(400) < 0.9, gold, 1 - gold)
    coin = rng.integers(0, 2, 400)
    diff = paired_bootstrap(gold, good, coin, metric="acc", samples=500)
    assert diff.significant and diff.low > 0.2 and diff.low <= diff.delta <= diff.high
    same = paired_bootstrap(gold, good, good.copy(), metric="f1", samples=200)
    assert same.delta == 0 and not same.significant


def test_bootstrap_over_seeds_uses_the_mean():
    gold = np.array([0, 1, 0, 1])
    a = np.array([[0, 1, 0, 1], [0, 1, 1, 1]])  # acc 1.0 and 0.75
    b = np.array([[1, 0, 1, 0]])
    assert paired_bootstrap(gold, a, b, metric="acc", samples=50).delta == pytest.approx(0.875)


@pytest.mark.parametrize("arms, message", [
    (["full"], "not NAME=DATA"),
    (["base=x.jsonl"], "not 'base'"),
    (["a=x.jsonl", "a=y.jsonl"], "used twice"),
    (["c=random:nope", "a=x.jsonl"], "'nope' is not a data arm"),
    (["c=random:"], "random:SIZE_ARM"),
])
def test_bad_arms_are_one_line_errors(arms, message):
    with pytest.raises(InputError, match=message):
        parse_arms(arms)


def test_arms_put_base_first_and_parse_controls():
    arms = parse_arms(["full=a.jsonl", "sel=b", "ctrl=random:sel:full"])
    assert [a.name for a in arms] == ["base", "full", "sel", "ctrl"]
    assert arms[0].is_base and arms[3].is_control and (arms[3].random_of, arms[3].pool) == ("sel", "full")


def _write(path, n):
    rows = [{"instruction": f"질문 {i}번: 한국의 전통 음식 {i}가지를 알려 주세요.", "output": f"답변 {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_random_control_has_the_size_of_its_arm_and_is_seeded(tmp_path):
    loaded = {"full": load_records(_write(tmp_path / "full.jsonl", 50)), "sel": load_records(_write(tmp_path / "sel.jsonl", 7))}
    arm = parse_arms(["full=x", "sel=y", "ctrl=random:sel"])[3]
    first = load_records(materialize_control(arm, loaded, tmp_path / "c1", seed=5)).frame
    again = load_records(materialize_control(arm, loaded, tmp_path / "c2", seed=5)).frame
    other = load_records(materialize_control(arm, loaded, tmp_path / "c3", seed=6)).frame
    assert first.height == 7 and set(first["id"]) <= set(loaded["full"].frame["id"])
    assert first["id"].to_list() == again["id"].to_list() and first["id"].to_list() != other["id"].to_list()


def test_stamped_results_detect_corruption_and_stale_keys(tmp_path):
    path = tmp_path / "scores.json"
    write_stamped(path, {"kobest_copa": {"0": {"metrics": {"f1": 0.5}}}}, key="k1")
    assert read_stamped(path, "k1")["kobest_copa"]["0"]["metrics"]["f1"] == 0.5
    assert read_stamped(path, "k2") is None  # config or data changed
    path.write_text(path.read_text().replace("0.5", "0.9"))
    assert read_stamped(path, "k1") is None  # edited or corrupt
    path.write_text("{not json")
    assert read_stamped(path, "k1") is None


def _fake_result(tmp_path) -> ExperimentResult:
    config = TrainEvalConfig(base="tiny", arms=["full=a", "sel=b", "ctrl=random:sel:full"], output_dir=tmp_path,
                             tasks=["kobest_copa"], shots=[0, 5], bootstrap=100)
    arms = parse_arms(config.arms)
    gold = [0, 1] * 20
    preds = {"base": [1] * 40, "full": gold, "sel": gold[:30] + [1 - g for g in gold[30:]], "ctrl": [0] * 40}
    units = []
    for arm in arms:
        g, p = np.array(gold), np.array(preds[arm.name])
        scores = {"kobest_copa": {str(s): {"metrics": {"acc": float(np.mean(g == p)), "f1": float(f1_score(g, p, average="macro"))},
                                            "gold": gold, "pred": preds[arm.name]} for s in (0, 5)}}
        units.append(Unit(arm.name, None if arm.is_base else 1, tmp_path, {"tokens": 1000, "seconds": 2.0}, scores))
    manifests = {"sel": {"inputs": [{"name": "ko", "kind": "file", "rows": 100, "fingerprint": "sha256:abc"}],
                         "steps": [{"name": "select", "rows_in": 100, "rows_out": 10, "params": {"ratio": 0.1}}]}}
    return ExperimentResult(config, arms, units, manifests, {"full": 100, "sel": 10, "ctrl": 10})


def test_report_compares_with_base_and_control(tmp_path):
    result = _fake_result(tmp_path)
    comps = comparisons(result)
    pairs = {(c.arm, c.against, c.shots) for c in comps}
    assert ("sel", "ctrl", 0) in pairs and ("sel", "base", 5) in pairs and ("full", "base", 0) in pairs
    assert ("full", "ctrl", 0) not in pairs  # ctrl is sel's control, not full's
    full_vs_base = next(c for c in comps if (c.arm, c.against, c.shots) == ("full", "base", 0))
    assert full_vs_base.difference.delta == pytest.approx(1.0 - f1_score([0, 1] * 20, [1] * 40, average="macro"))
    assert full_vs_base.difference.significant
    markdown = render_markdown(result, comps)
    assert "| Arm | 0-shot | 5-shot |" in markdown and "| full | 1.0000 | 1.0000 |" in markdown
    assert "select: 100 -> 10 rows (ratio=0.1)" in markdown
    page = render_html(markdown, b"\x89PNG")
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and "<td>full</td>" in page


def test_random_control_is_redrawn_when_its_pool_changes(tmp_path):
    loaded = {"full": load_records(_write(tmp_path / "full.jsonl", 50)), "sel": load_records(_write(tmp_path / "sel.jsonl", 7))}
    arm = parse_arms(["full=x", "sel=y", "ctrl=random:sel"])[3]
    folder = materialize_control(arm, loaded, tmp_path / "ctrl", seed=5)
    first = load_records(folder).frame["instruction"].to_list()
    rows = [{"instruction": f"새 질문 {i}: 제주도의 특산물을 알려 주세요.", "output": f"답 {i}"} for i in range(50)]
    (tmp_path / "full.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    loaded["full"] = load_records(tmp_path / "full.jsonl")
    redrawn = load_records(materialize_control(arm, loaded, tmp_path / "ctrl", seed=5)).frame["instruction"].to_list()
    assert redrawn != first and all(text.startswith("새 질문") for text in redrawn)
