"""train-eval's parts that need no model: arms, controls, stamps, bootstrap, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from kocurate.errors import InputError
from kocurate.experiment import paired_bootstrap, parse_arms
from kocurate.experiment.arms import materialize_control
from kocurate.evaluate.metrics import macro_f1
from kocurate.experiment.arms import draw_seed
from kocurate.experiment.report import comparisons, render_markdown, write_report
from kocurate.experiment.config import ExperimentConfig, build_config, check_settings, eval_config, train_config
from kocurate.experiment.runner import ExperimentResult, Unit, read_stamped, run_experiment, write_stamped
from kocurate.records import load_records


def test_the_bootstrap_uses_the_evaluators_macro_f1():
    import kocurate.experiment.bootstrap as bootstrap

    assert not hasattr(bootstrap, "macro_f1")  # one home: kocurate.evaluate.metrics
    rng = np.random.default_rng(3)
    gold, a, b = rng.integers(0, 3, 50), rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    diff = paired_bootstrap(gold, a, b, metric="f1", samples=100)
    assert diff.delta == pytest.approx(macro_f1(gold.tolist(), a.tolist()) - macro_f1(gold.tolist(), b.tolist()))


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
    # a fresh draw per training seed, and two controls of one arm never share a draw
    seeds = [draw_seed("ctrl", s) for s in (1, 2, 3)] + [draw_seed("ctrl2", 1)]
    assert len(set(seeds)) == 4 and draw_seed("ctrl", 1) == draw_seed("ctrl", 1)


def test_stamped_results_detect_corruption_and_stale_keys(tmp_path):
    path = tmp_path / "scores.json"
    write_stamped(path, {"kobest_copa": {"0": {"metrics": {"f1": 0.5}}}}, key="k1")
    assert read_stamped(path, "k1")["kobest_copa"]["0"]["metrics"]["f1"] == 0.5
    assert read_stamped(path, "k2") is None  # config or data changed
    path.write_text(path.read_text().replace("0.5", "0.9"))
    assert read_stamped(path, "k1") is None  # edited or corrupt
    path.write_text("{not json")
    assert read_stamped(path, "k1") is None


def fake_result(tmp_path, *, tasks=("kobest_copa", "kobest_boolq"), seeds=(1, 2)) -> ExperimentResult:
    """A finished experiment without a model: full is right everywhere, sel on 3/4, ctrl and base guess."""
    config = ExperimentConfig(arms=["full=a", "sel=b", "ctrl=random:sel:full"], output=tmp_path, seeds=list(seeds),
                              bootstrap=200, train={"model": "tiny", "method": "lora"},
                              evaluate={"tasks": list(tasks), "shots": [0, 5]})
    arms = parse_arms(config.arms)
    gold = [0, 1] * 40
    preds = {"base": [1] * 80, "full": gold, "sel": gold[:60] + [1 - g for g in gold[60:]], "ctrl": [0] * 80}
    units = []
    for arm in arms:
        g, p = np.array(gold), np.array(preds[arm.name])
        scores = {task: {str(s): {"metrics": {"acc": float(np.mean(g == p)), "f1": float(f1_score(g, p, average="macro"))},
                                  "gold": gold, "pred": preds[arm.name]} for s in (0, 5)} for task in tasks}
        for seed in ([None] if arm.is_base else seeds):
            report = None if arm.is_base else {"tokens": 1000, "seconds": 2.0, "epochs": 1.0}
            units.append(Unit(arm.name, seed, tmp_path, train_report=report, scores={**scores, "_seconds": 1.5}))
    manifests = {"sel": {"inputs": [{"name": "ko", "kind": "file", "rows": 100, "fingerprint": "sha256:abc"}],
                         "steps": [{"name": "select", "rows_in": 100, "rows_out": 10, "params": {"ratio": 0.1}, "seconds": 3.5}]}}
    return ExperimentResult(config, arms, units, manifests, {"full": 100, "sel": 10, "ctrl": 10}, {"ctrl": len(seeds)})


def test_report_states_the_verdict_first(tmp_path):
    result = fake_result(tmp_path)
    comps = comparisons(result)
    pairs = {(c.arm, c.against, c.shots, c.task) for c in comps}
    assert ("sel", "ctrl", 0, "average") in pairs and ("sel", "full", 5, "kobest_copa") in pairs
    assert ("full", "base", 0, "average") in pairs and ("full", "ctrl", 0, "average") not in pairs
    full_vs_base = next(c for c in comps if (c.arm, c.against, c.shots, c.task) == ("full", "base", 0, "kobest_copa"))
    assert full_vs_base.difference.delta == pytest.approx(1.0 - f1_score(gold := [0, 1] * 40, [1] * 80, average="macro"))
    markdown = render_markdown(result, comps)
    verdict = markdown.split("## Verdict", 1)[1].split("##", 1)[0]
    assert markdown.index("## Verdict") < markdown.index("## Scores")
    claims = [line for line in verdict.splitlines() if line.startswith("- ")]
    assert len(claims) == 5 * 2  # (sel vs full, sel vs ctrl, 3 arms vs base) x 2 shot counts
    assert any(line.startswith("- sel vs full: KoBEST average F1 -0.") and "significantly worse" in line for line in claims)
    assert any(line.startswith("- sel vs ctrl: KoBEST average F1 +0.") and "significantly better" in line for line in claims)
    assert "ctrl: 2 draws" in markdown and "Holm" in markdown
    assert "| base (base model, no adapter) | 0.3333 | 0.3333 |" in markdown
    assert "| full | **1.0000** (best) | **1.0000** (best) |" in markdown
    assert "select: 100 -> 10 rows (ratio=0.1, 3.5 s)" in markdown
    cost = next(line for line in markdown.splitlines() if line.startswith("| sel |") and "2,000" not in line and "1,000" in line)
    assert cost == "| sel | 10 | 2 | 1,000 | 1.0 | 4.0 | 500.0 | 3.0 | 1 | 3.5 |"


def test_html_is_rendered_markdown_self_contained(tmp_path):
    result = fake_result(tmp_path)
    data = write_report(result, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "<table>" in page and "<strong>1.0000</strong>" in page and "`" not in page
    assert 'src="report-differences.png"' not in page and "<script" not in page and "http" not in page.split("<body>")[1]
    assert (tmp_path / "report-differences.png").read_bytes().startswith(b"\x89PNG")
    assert data["headline"] and data["holm_family"] == 10
    assert page.index(html_escape(data["headline"][0])) < page.index("Scores")


def html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=False)


@pytest.mark.parametrize("changes, message", [
    ({"seeds": ""}, "--seeds is empty"),
    ({"seeds": "1,1"}, "--seeds repeats 1"),
    ({"seeds": "1,x"}, "not a whole number"),
    ({"seeds": "-1"}, "0 or more"),
    ({"bootstrap": 0}, "--bootstrap 0"),
    ({"bootstrap": -5}, "--bootstrap -5"),
    ({"arms": []}, "no --arm"),
    ({"train": {}}, "--model is required"),
])
def test_bad_experiment_settings_are_one_line_errors(tmp_path, changes, message):
    settings = {"arms": ["a=x.jsonl"], "output": tmp_path / "o", "train": {"model": "m"}, **changes}
    with pytest.raises(InputError, match=message) as caught:
        ExperimentConfig(**settings)
    assert "\n" not in str(caught.value)


def test_config_file_sections_and_flags_on_top(tmp_path):
    config_file = tmp_path / "experiment.yaml"
    config_file.write_text(
        "model: tiny\narms: [full=a.jsonl, sel=b]\nseeds: [1, 2]\noutput: out\n"
        "train:\n  lora_r: 16\n  grad-accum: 4\n  template: koalpaca\n"
        "evaluate:\n  tasks: kobest_copa\n  shots: [0, 5]\n  batch_size: 8\n", encoding="utf-8")
    config = build_config(config_file, (), {"train_lora_r": 32, "eval_batch_size": None, "bootstrap": 500})
    assert config.arms == ["full=a.jsonl", "sel=b"] and config.seeds == [1, 2] and config.bootstrap == 500
    assert config.train == {"model": "tiny", "lora_r": 32, "grad_accum": 4, "template": "koalpaca"}
    assert config.evaluate["batch_size"] == 8 and config.tasks == ["kobest_copa"] and config.shots == [0, 5]
    assert build_config(config_file, ("x=c",), {}).arms == ["x=c"]
    config_file.write_text("model: tiny\narms: [a=b]\noutput: o\ntrain:\n  lora_rank: 4\n", encoding="utf-8")
    with pytest.raises(InputError, match="unknown setting 'lora_rank'"):
        build_config(config_file, (), {})
    config_file.write_text("model: tiny\narms: [a=b]\noutput: o\nepochz: 2\n", encoding="utf-8")
    with pytest.raises(InputError, match="unknown setting.*epochz.*sections train: and evaluate:"):
        build_config(config_file, (), {})


def test_train_settings_reach_the_trainer_and_the_evaluator(tmp_path):
    config = build_config(None, ("a=x.jsonl",), {"output": tmp_path, "train_model": "tiny", "train_lora_r": 4,
                                                 "train_grad_accum": 2, "train_load_in_4bit": True, "eval_batch_size": 3})
    trained = train_config(config, "x.jsonl", tmp_path / "adapter", seed=7)
    assert (trained.model, trained.lora_r, trained.grad_accum, trained.seed, trained.load_in_4bit) == ("tiny", 4, 2, 7, True)
    evaluated = eval_config(config, tmp_path / "adapter", tmp_path / "eval")
    assert (evaluated.model, evaluated.batch_size, evaluated.load_in_4bit, evaluated.seed) == ("tiny", 3, True, None)
    bad = build_config(None, ("a=x.jsonl",), {"output": tmp_path, "train_model": "tiny", "train_learning_rate": -1.0})
    with pytest.raises(InputError, match="--learning-rate"):
        check_settings(bad, parse_arms(bad.arms))


def test_output_inside_an_input_is_refused_before_anything_is_written(tmp_path):
    data = tmp_path / "selected"
    data.mkdir()
    _write(data / "rows.jsonl", 5)
    before = sorted(p.name for p in data.rglob("*"))
    config = ExperimentConfig(arms=[f"sel={data}"], output=data / "report", train={"model": "tiny"})
    with pytest.raises(InputError, match="inside the input"):
        run_experiment(config)
    assert sorted(p.name for p in data.rglob("*")) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    config = ExperimentConfig(arms=[f"sel={data}"], output=other, train={"model": "tiny"})
    with pytest.raises(InputError, match="holds no train-eval run"):
        run_experiment(config)
    assert [p.name for p in other.iterdir()] == ["mine.txt"]


def test_cli_refuses_bad_seeds_and_bootstrap_before_training(tmp_path):
    from click.testing import CliRunner

    from kocurate.cli import main

    _write(tmp_path / "full.jsonl", 5)
    for flags, message in ((["--seeds", ""], "--seeds is empty"), (["--seeds", "1,1"], "--seeds repeats 1"),
                           (["--bootstrap", "0"], "--bootstrap 0"), (["--bootstrap", "-3"], "--bootstrap -3")):
        out = tmp_path / "report"
        result = CliRunner().invoke(main, ["train-eval", "--model", str(tmp_path / "no-model"), "--arm",
                                           f"full={tmp_path / 'full.jsonl'}", "-o", str(out), *flags])
        assert result.exit_code != 0 and message in result.output
        assert "Traceback" not in result.output and not out.exists()


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
