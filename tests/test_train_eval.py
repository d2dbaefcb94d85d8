"""train-eval end to end on CPU: tiny GPT-NeoX, the Korean sample, the KoBEST fixture."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from kocurate.cli import main

TASKS = ["kobest_copa", "kobest_boolq"]


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, tiny_gpt_neox, samples, kobest_dir):
    work = tmp_path_factory.mktemp("train-eval")
    selected = work / "selected"
    invoke("select", samples / "ko_instructions.jsonl", "-o", selected, "--ratio", "0.1", "--method", "centroid",
           "--embedder", "lexical", "--length-groups", "2", "--clusters", "5")
    config = work / "experiment.yaml"
    # Settings from a config file (train: and evaluate: sections), arms and seeds from flags.
    config.write_text(f"train:\n  max_steps: 1\n  batch_size: 2\n  max_length: 128\n  lora_r: 4\n  template: koalpaca\n"
                      f"evaluate:\n  tasks: {','.join(TASKS)}\n  shots: [0]\n  limit: 8\n  data_dir: {kobest_dir}\n",
                      encoding="utf-8")
    args = ["train-eval", "--config", config, "--base", tiny_gpt_neox, "--arm", f"full={samples / 'ko_instructions.jsonl'}",
            "--arm", f"selected={selected}", "--arm", "control=random:selected:full", "--seeds", "1,2",
            "--bootstrap", "200", "-o", work / "report"]
    first = invoke(*args)
    return work / "report", args, first


def _adapter_mtimes(report):
    return {p: p.stat().st_mtime_ns for p in sorted(report.glob("arms/*/seed-*/adapter/adapter_model.safetensors"))}


def test_report_numbers_match_the_results_files(experiment):
    report, _, output = experiment
    data = json.loads((report / "report.json").read_text())
    assert list(data["scores"]) == ["base", "full", "selected", "control"]
    for arm in ("base", "full"):
        folders = ["eval-only"] if arm == "base" else ["seed-1", "seed-2"]
        for task in TASKS:
            for shots in ("0",):
                values = [json.loads((report / "arms" / arm / f / "eval" / "results.json").read_text())["results"][task][shots]["f1"]
                          for f in folders]
                assert data["scores"][arm][task][shots] == pytest.approx(sum(values) / len(values), abs=1e-12)
    rows = {c["arm"]: c["rows"] for c in data["cost"]}
    assert rows["selected"] == rows["control"] and rows["full"] > rows["selected"]
    # a fresh control draw per training seed, of the selected arm's size, recorded as such
    draws = [json.loads((report / "data" / "control" / f"seed-{s}" / "manifest.json").read_text()) for s in (1, 2)]
    assert [d["rows"] for d in draws] == [rows["selected"]] * 2 and draws[0]["seed"] != draws[1]["seed"]
    assert data["draws"] == {"control": 2}
    against = {(c["arm"], c["against"]) for c in data["comparisons"]}
    assert {("selected", "full"), ("selected", "control"), ("selected", "base"), ("full", "base"), ("control", "base")} == against
    markdown = (report / "report.md").read_text()
    assert markdown.index("## Verdict") < markdown.index("## Scores") and "### selected" in markdown and "select:" in markdown
    assert "control: 2 draws" in markdown
    page = (report / "report.html").read_text()
    assert "data:image/png;base64," in page and "`" not in page
    cost = {c["arm"]: c for c in data["cost"]}
    assert cost["full"]["tokens_per_run"] > 0 and cost["full"]["train_seconds"] > 0 and cost["base"]["eval_seconds"] > 0
    assert cost["selected"]["curation_steps"] >= 1


def test_the_terminal_states_the_same_verdict_as_the_report(experiment):
    report, _, output = experiment
    data = json.loads((report / "report.json").read_text())
    flat = " ".join(output.split())
    assert len(data["headline"]) == 5  # five comparisons at one shot count, KoBEST average
    for sentence in data["headline"]:
        assert " ".join(sentence.split()) in flat
    claims = [c for c in data["comparisons"] if c["headline"]]
    for sentence, claim in zip(data["headline"], claims):
        assert sentence.startswith(f"{claim['arm']} vs {claim['against']}: KoBEST average F1 {claim['delta']:+.3f} ")
        verdict = "significantly" if claim["significant"] else "not significant"
        assert verdict in sentence and f"differences of {claim['mdd']:.3f} or more" in sentence
    assert "Warning" not in output and (report / "train-eval.log").is_file()
    # one progress line per unit of work: 6 trainings and 7 evaluations
    assert re.search(r"\[13/13\] evaluated base", output)


def test_rerun_trains_nothing_and_recomputes_a_corrupt_result(experiment):
    report, args, _ = experiment
    before = _adapter_mtimes(report)
    assert len(before) == 6
    again = invoke(*args)
    assert "training on" not in again and again.count("adapter reused") == 6 and "evaluating" not in again
    assert "[13/13]" in again and "13 reused" in again
    assert _adapter_mtimes(report) == before

    results = report / "arms" / "selected" / "seed-1" / "eval" / "results.json"
    results.write_text(results.read_text()[:100])  # a truncated, corrupt results file
    third = invoke(*args)
    assert "training on" not in third and "stale or corrupt" in third and "12 reused" in third
    assert json.loads(results.read_text())["results"]  # recomputed and whole again
