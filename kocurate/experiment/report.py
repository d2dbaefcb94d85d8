"""The train-eval report: the verdict first, then score tables, per-task differences, cost, provenance.

Writes report.md (with report-differences.png beside it), report.html (self-contained) and
report.json (every number, for scripts).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..records.folder import write_bytes_atomic, write_text_atomic
from .arms import BASE
from .html import render_html
from .plots import difference_plot
from .runner import ExperimentResult
from .verdict import AVERAGE, Comparison, Results, Scored, Wording, average_name, compare, headline, plan

PLOT = "report-differences.png"


def collect(result: ExperimentResult) -> Results:
    """Per arm, task and shot count: gold, every unit's predictions and the evaluator's metric."""
    metric = result.config.metric
    out: Results = {}
    for arm in result.arms:
        units = result.units_of(arm.name)
        for task in result.config.tasks:
            for k in result.config.shots:
                cells = [u.scores[task][str(k)] for u in units]
                if any(metric not in c["metrics"] for c in cells):
                    raise InputError(f"{task} reports no {metric}; rerun with --metric acc (its scores are kept)")
                out.setdefault(arm.name, {}).setdefault(task, {})[k] = Scored(
                    gold=cells[0]["gold"], preds=[c["pred"] for c in cells],
                    scores=[c["metrics"][metric] for c in cells])
    return out


def comparisons(result: ExperimentResult) -> list[Comparison]:
    config = result.config
    pairs = plan(result.arms, result.data_rows)
    return compare(collect(result), pairs, config.tasks, config.shots, metric=config.metric,
                   samples=config.bootstrap, seed=0)


def arm_score(result: ExperimentResult, arm: str, task: str, shots: int, metric: str) -> tuple[float, float]:
    """Mean and standard deviation over the arm's units; `task` may be AVERAGE (mean over tasks per unit)."""
    tasks = result.config.tasks if task == AVERAGE else [task]
    values = [float(np.mean([u.scores[t][str(shots)]["metrics"][metric] for t in tasks])) for u in result.units_of(arm)]
    return float(np.mean(values)), float(np.std(values)) if len(values) > 1 else 0.0


def curation_cost(manifest: dict) -> tuple[int, float]:
    steps = manifest.get("steps") or []
    return len(steps), float(sum(float(s.get("seconds") or 0.0) for s in steps if isinstance(s, dict)))


def cost_rows(result: ExperimentResult) -> list[dict]:
    rows = []
    for arm in result.arms:
        units = result.units_of(arm.name)
        reports = [u.train_report or {} for u in units if not arm.is_base]
        train_seconds = sum(float(r.get("seconds") or 0.0) for r in reports)
        tokens = sum(int(r.get("tokens") or 0) for r in reports)
        eval_seconds = sum(float((u.scores or {}).get("_seconds") or 0.0) for u in units)
        steps, curation_seconds = curation_cost(result.manifests.get(arm.name, {}))
        rows.append({
            "arm": arm.name, "rows": result.data_rows.get(arm.name, 0), "seeds": len(reports),
            "tokens_per_run": round(tokens / len(reports)) if reports else 0,
            "epochs": round(float(np.mean([float(r.get("epochs") or 0.0) for r in reports])), 3) if reports else 0.0,
            "train_seconds": round(train_seconds, 3),
            "tokens_per_second": round(tokens / train_seconds, 1) if train_seconds else None,
            "eval_seconds": round(eval_seconds, 2),
            "curation_steps": steps, "curation_seconds": round(curation_seconds, 1),
        })
    return rows


def provenance(manifest: dict) -> list[str]:
    lines = [f"input {i.get('name')} ({i.get('kind')}, {i.get('rows')} rows, {str(i.get('fingerprint', ''))[:19]})"
             for i in manifest.get("inputs", []) if isinstance(i, dict)]
    for step in manifest.get("steps", []):
        if not isinstance(step, dict):
            continue
        params = ", ".join(f"{k}={v}" for k, v in (step.get("params") or {}).items())
        seconds = f", {float(step['seconds']):.1f} s" if step.get("seconds") is not None else ""
        lines.append(f"{step.get('name')}: {step.get('rows_in')} -> {step.get('rows_out')} rows ({params}{seconds})")
    return lines


# ---------------------------------------------------------------------------------------------


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def _score_table(result: ExperimentResult, scope: str) -> list[str]:
    config = result.config
    head = " | ".join(f"{k}-shot" for k in config.shots)
    lines = [f"| Arm | {head} |", "| --- |" + " --- |" * len(config.shots)]
    table = {arm.name: [arm_score(result, arm.name, scope, k, config.metric) for k in config.shots] for arm in result.arms}
    best = [max(table, key=lambda name: table[name][j][0]) for j in range(len(config.shots))]
    for arm in result.arms:
        cells = []
        for j, (mean, std) in enumerate(table[arm.name]):
            text = f"{mean:.4f}" + (f" ± {std:.4f}" if std else "")
            cells.append(f"**{text}** (best)" if best[j] == arm.name else text)
        label = f"{arm.name} (base model, no adapter)" if arm.is_base else arm.name
        lines.append(f"| {_cell(label)} | " + " | ".join(cells) + " |")
    return lines


def _method(result: ExperimentResult, comps: list[Comparison]) -> list[str]:
    config = result.config
    claims = sum(c.headline for c in comps)
    draws = ", ".join(f"{name}: {n} draw{'s' if n != 1 else ''}" for name, n in result.draws.items())
    seeds = len(config.seeds)
    lines = [
        f"Every claim above compares two arms on the same test examples (paired bootstrap, {config.bootstrap:,} resamples; "
        f"each resample also redraws the {seeds} training seed{'s' if seeds != 1 else ''} of each arm"
        + (" and with them the random controls' rows" if result.draws else "") + "). "
        f"p-values are two-sided, from the bootstrap standard error; Holm's correction for multiple comparisons runs "
        f"over the {claims} headline claim{'s' if claims != 1 else ''}; per-task rows below are not adjusted.",
        "",
        "The detectable difference is the smallest true difference a two-sided test at 5% finds with 80% power, given "
        "the test sizes and the observed rate at which the two arms disagree (exact for accuracy, an approximation for F1).",
    ]
    if result.draws:
        lines += ["", f"Random controls are drawn afresh for every training seed ({draws})."]
    return lines


def render_markdown(result: ExperimentResult, comps: list[Comparison]) -> str:
    config = result.config
    wording = Wording(config.metric, config.tasks)
    metric = "macro F1" if config.metric == "f1" else "accuracy"
    lines = [f"# train-eval: {config.model}", "", "## Verdict", ""]
    lines += [f"- {s}" for s in headline(comps, wording)] or ["- (no comparisons: add a data arm)"]
    lines += ["", *_method(result, comps), "", f"![Differences with 95% intervals; zero marked]({PLOT})", ""]
    method = config.train.get("method") or "lora"
    protocol = config.evaluate.get("protocol") or "harness"
    lines += [f"## Scores ({metric}, mean ± sd over seeds)", "",
              f"PEFT method {method}; protocol {protocol}; seeds {', '.join(map(str, config.seeds))}. "
              "Bold: the best arm in each column.", ""]
    scopes = ([AVERAGE] if len(config.tasks) > 1 else []) + list(config.tasks)
    for scope in scopes:
        lines += [f"### {average_name(config.tasks) if scope == AVERAGE else scope}", "", *_score_table(result, scope), ""]
    per_task = [c for c in comps if c.task != AVERAGE and not c.headline]
    if per_task:
        lines += ["## Differences per task (not adjusted for multiple comparisons)", "",
                  "| Comparison | Task | Shots | Difference [95% CI] | p | Detectable | Significant |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for c in per_task:
            lines.append(f"| {_cell(c.arm)} vs {_cell(c.against)} | {c.task} | {c.shots} | {c.difference} | "
                         f"{c.difference.p_value:.3f} | {c.mdd:.3f} | {'yes' if c.significant else 'no'} |")
        lines.append("")
    lines += ["## Cost", "",
              "| Arm | Rows | Seeds | Tokens per run | Epochs | Training s | Tokens/s | Evaluation s | Curation steps | Curation s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in cost_rows(result):
        base = row["arm"] == BASE
        lines.append(
            f"| {_cell(row['arm'])} | {'-' if base else format(row['rows'], ',')} | {row['seeds'] or '-'} | "
            f"{'-' if base else format(row['tokens_per_run'], ',')} | {'-' if base else row['epochs']} | "
            f"{'-' if base else row['train_seconds']} | {row['tokens_per_second'] or '-'} | {row['eval_seconds']} | "
            f"{'-' if base else row['curation_steps']} | {'-' if base else row['curation_seconds']} |")
    lines += ["", "## How each arm's data was made", ""]
    for arm in result.arms:
        if arm.is_base:
            continue
        lines += [f"### {arm.name}", ""]
        lines += [f"- {_cell(line)}" for line in provenance(result.manifests.get(arm.name, {}))] or ["- (no manifest)"]
        lines.append("")
    return "\n".join(lines)


def report_data(result: ExperimentResult, comps: list[Comparison]) -> dict:
    config = result.config
    scopes = ([AVERAGE] if len(config.tasks) > 1 else []) + list(config.tasks)
    return {
        "model": config.model, "metric": config.metric, "seeds": config.seeds, "tasks": config.tasks,
        "shots": config.shots, "bootstrap": config.bootstrap, "train": config.train, "evaluate": config.evaluate,
        "headline": headline(comps, Wording(config.metric, config.tasks)),
        "holm_family": sum(c.headline for c in comps),
        "draws": result.draws,
        "scores": {arm.name: {scope: {str(k): arm_score(result, arm.name, scope, k, config.metric)[0] for k in config.shots}
                              for scope in scopes} for arm in result.arms},
        "comparisons": [c.to_dict() for c in comps],
        "cost": cost_rows(result),
    }


def write_report(result: ExperimentResult, folder: Path) -> dict:
    """Write report.md, report-differences.png, report.html and report.json; return the JSON content."""
    folder = Path(folder)
    comps = comparisons(result)
    markdown = render_markdown(result, comps)
    metric = "F1" if result.config.metric == "f1" else "accuracy"
    png = difference_plot(comps, result.config.tasks, result.config.shots, metric)
    write_bytes_atomic(folder / PLOT, png)
    write_text_atomic(folder / "report.md", markdown)
    write_text_atomic(folder / "report.html", render_html(markdown, {PLOT: png}, title=f"train-eval: {result.config.model}"))
    data = report_data(result, comps)
    write_text_atomic(folder / "report.json", json.dumps(data, ensure_ascii=False, indent=1, default=str))
    return data
