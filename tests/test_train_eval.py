"""train-eval end to end on CPU: tiny GPT-NeoX, the Korean sample, the KoBEST fixture."""

from __future__ import annotations

import json

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
    args = ["train-eval", "--base", tiny_gpt_neox, "--arm", f"full={samples / 'ko_instructions.jsonl'}",
            "--arm", f"selected={selected}", "--arm", "control=random:selected:full", "--tasks", ",".join(TASKS),
            "--shots", "0,5", "--limit", "12", "--max-steps", "2", "--batch-size", "2", "--max-length", "96",
            "--data-dir", kobest_dir, "--bootstrap", "100", "-o", work / "report"]
    first = invoke(*args)
    return work / "report", args, first


def _adapter_mtimes(report):
    return {p: p.stat().st_mtime_ns for p in sorted(report.glob("arms/*/seed-*/adapter/adapter_model.safetensors"))}


def test_report_numbers_match_the_results_files(experiment):
    report, _, output = experiment
    data = json.loads((report / "report.json").read_text())
    assert list(data["scores"]) == ["base", "full", "selected", "control"]
    for arm in data["scores"]:
        folder = "eval-only" if arm == "base" else "seed-1"
        results = json.loads((report / "arms" / arm / folder / "eval" / "results.json").read_text())["results"]
        for task in TASKS:
            for shots in ("0", "5"):
                assert data["scores"][arm][task][shots] == pytest.approx(results[task][shots]["f1"], abs=1e-12)
    control = json.loads((report / "data" / "control" / "manifest.json").read_text())
    selected_rows = json.loads((report / "report.json").read_text())["cost"]
    rows = {c["arm"]: c["rows"] for c in selected_rows}
    assert control["rows"] == rows["selected"] == rows["control"] and rows["full"] > rows["selected"]
    against = {(c["arm"], c["against"]) for c in data["comparisons"]}
    assert {("selected", "base"), ("selected", "control"), ("full", "base")} <= against
    markdown = (report / "report.md").read_text()
    assert "| Arm | 0-shot | 5-shot |" in markdown and "### selected" in markdown and "select:" in markdown
    assert "data:image/png;base64," in (report / "report.html").read_text()
    assert "significantly better" in output


def test_rerun_trains_nothing_and_recomputes_a_corrupt_result(experiment):
    report, args, _ = experiment
    before = _adapter_mtimes(report)
    assert len(before) == 3
    again = invoke(*args)
    assert "training on" not in again and again.count("adapter reused") == 3 and "evaluating" not in again
    assert _adapter_mtimes(report) == before

    results = report / "arms" / "selected" / "seed-1" / "eval" / "results.json"
    results.write_text(results.read_text()[:100])  # a truncated, corrupt results file
    third = invoke(*args)
    assert "training on" not in third and "stale or corrupt" in third
    assert json.loads(results.read_text())["results"]  # recomputed and whole again
