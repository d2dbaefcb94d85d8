"""The train-eval report: tables in the seeds' form, differences with confidence intervals, cost, provenance."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arms import BASE
from .bootstrap import Difference, paired_bootstrap
from .runner import ExperimentResult


@dataclass
class Comparison:
    task: str
    shots: int
    arm: str
    against: str  # "base" or a control arm
    difference: Difference


def arm_score(result: ExperimentResult, arm: str, task: str, shots: int, metric: str) -> tuple[float, float]:
    """Mean and standard deviation over the arm's seeds."""
    values = [u.scores[task][str(shots)]["metrics"][metric] for u in result.units_of(arm)]
    return float(np.mean(values)), float(np.std(values)) if len(values) > 1 else 0.0


def _preds(result: ExperimentResult, arm: str, task: str, shots: int) -> tuple[np.ndarray, np.ndarray]:
    units = result.units_of(arm)
    gold = np.asarray(units[0].scores[task][str(shots)]["gold"])
    preds = np.asarray([u.scores[task][str(shots)]["pred"] for u in units])
    return gold, preds


def comparisons(result: ExperimentResult) -> list[Comparison]:
    """Each data arm against the base model and against its random control (same size)."""
    config = result.config
    controls = [a for a in result.arms if a.is_control]
    out = []
    for arm in result.arms:
        if arm.is_base:
            continue
        refs = [BASE]
        if not arm.is_control:
            mine = [c for c in controls if c.random_of == arm.name]
            refs += [c.name for c in mine]
        for task in config.tasks:
            for shots in config.shots:
                gold, preds = _preds(result, arm.name, task, shots)
                for ref in refs:
                    ref_gold, ref_preds = _preds(result, ref, task, shots)
                    if not np.array_equal(gold, ref_gold):
                        raise ValueError(f"{task} {shots}-shot: arms {arm.name} and {ref} were scored on different examples")
                    diff = paired_bootstrap(gold, preds, ref_preds, metric=config.metric, samples=config.bootstrap, seed=0)
                    out.append(Comparison(task, shots, arm.name, ref, diff))
    return out


def cost_rows(result: ExperimentResult) -> list[dict]:
    rows = []
    for arm in result.arms:
        if arm.is_base:
            continue
        reports = [u.train_report or {} for u in result.units_of(arm.name)]
        seconds = sum(float(r.get("seconds", r.get("train_seconds", 0.0)) or 0.0) for r in reports)
        tokens = sum(int(r.get("tokens", r.get("train_tokens", 0)) or 0) for r in reports)
        rows.append({
            "arm": arm.name, "rows": result.data_rows.get(arm.name, 0), "seeds": len(reports), "tokens": tokens,
            "seconds": round(seconds, 1), "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
        })
    return rows


def provenance(manifest: dict) -> list[str]:
    lines = [f"input {i.get('name')} ({i.get('kind')}, {i.get('rows')} rows, {i.get('fingerprint', '')[:19]})" for i in manifest.get("inputs", [])]
    for step in manifest.get("steps", []):
        params = ", ".join(f"{k}={v}" for k, v in (step.get("params") or {}).items())
        lines.append(f"{step.get('name')}: {step.get('rows_in')} -> {step.get('rows_out')} rows ({params})")
    return lines


# ---------------------------------------------------------------------------------------------


def render_markdown(result: ExperimentResult, comps: list[Comparison]) -> str:
    config = result.config
    metric = "F1" if config.metric == "f1" else "accuracy"
    lines = [f"# train-eval: {config.base}", "",
             f"Method {config.method}, protocol `{config.protocol}`, seeds {', '.join(map(str, config.seeds))}, "
             f"metric macro {metric}" if config.metric == "f1" else f"metric {metric}", ""]
    shot_head = " | ".join(f"{s}-shot" for s in config.shots)
    for task in config.tasks:
        lines += [f"## {task} ({metric})", "", f"| Arm | {shot_head} |", "| --- |" + " --- |" * len(config.shots)]
        for arm in result.arms:
            cells = []
            for shots in config.shots:
                mean, std = arm_score(result, arm.name, task, shots, config.metric)
                cells.append(f"{mean:.4f}" + (f" ± {std:.4f}" if std else ""))
            lines.append(f"| {arm.name} | " + " | ".join(cells) + " |")
        task_comps = [c for c in comps if c.task == task]
        if task_comps:
            lines += ["", "| Arm | vs | shots | difference [95% CI] | |", "| --- | --- | --- | --- | --- |"]
            for c in task_comps:
                mark = "significant" if c.difference.significant else ""
                lines.append(f"| {c.arm} | {c.against} | {c.shots} | {c.difference} | {mark} |")
        lines.append("")
    lines += ["## Training cost", "", "| Arm | rows | seeds | tokens | seconds | tokens/s |", "| --- | --- | --- | --- | --- | --- |"]
    for row in cost_rows(result):
        lines.append(f"| {row['arm']} | {row['rows']:,} | {row['seeds']} | {row['tokens']:,} | {row['seconds']} | {row['tokens_per_second'] or '-'} |")
    lines += ["", "## How each arm's data was made", ""]
    for arm in result.arms:
        if arm.is_base:
            continue
        lines.append(f"### {arm.name}")
        lines += [f"- {line}" for line in provenance(result.manifests.get(arm.name, {}))] or ["- (no manifest)"]
        lines.append("")
    lines += [f"Differences are paired bootstrap estimates over test examples ({config.bootstrap} resamples"
              + (", averaged over seeds" if len(config.seeds) > 1 else "") + "); 'significant' means the 95% interval excludes 0.", ""]
    return "\n".join(lines)


def plot_png(result: ExperimentResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = result.config
    fig, axes = plt.subplots(1, len(config.tasks), figsize=(3.2 * len(config.tasks), 3.2), squeeze=False)
    width = 0.8 / max(1, len(result.arms))
    for ax, task in zip(axes[0], config.tasks):
        x = np.arange(len(config.shots))
        for i, arm in enumerate(result.arms):
            stats = [arm_score(result, arm.name, task, s, config.metric) for s in config.shots]
            ax.bar(x + i * width, [m for m, _ in stats], width, yerr=[s for _, s in stats], label=arm.name)
        ax.set_xticks(x + width * (len(result.arms) - 1) / 2, [f"{s}-shot" for s in config.shots])
        ax.set_title(task.removeprefix("kobest_"))
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel(config.metric)
    axes[0][-1].legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def render_html(markdown: str, png: bytes) -> str:
    """A self-contained page: the report's text and the plot inlined as data."""
    body = []
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("- "):
                continue
            tag = "th" if not in_table else "td"
            body.append(("<table>" if not in_table else "") + "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            in_table = True
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    image = base64.b64encode(png).decode()
    style = "body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}"
    return (f"<!doctype html><html lang='ko'><head><meta charset='utf-8'><title>kocurate train-eval</title><style>{style}</style></head><body>"
            f"<img alt='scores per arm' src='data:image/png;base64,{image}'>" + "\n".join(body) + "</body></html>")


def write_report(result: ExperimentResult, folder: Path) -> dict:
    """Write report.md, report.html and report.json; return the JSON content."""
    comps = comparisons(result)
    markdown = render_markdown(result, comps)
    (folder / "report.md").write_text(markdown, encoding="utf-8")
    (folder / "report.html").write_text(render_html(markdown, plot_png(result)), encoding="utf-8")
    config = result.config
    data = {
        "base": config.base, "method": config.method, "protocol": config.protocol, "metric": config.metric,
        "seeds": config.seeds, "tasks": config.tasks, "shots": config.shots,
        "scores": {arm.name: {task: {str(s): arm_score(result, arm.name, task, s, config.metric)[0] for s in config.shots}
                              for task in config.tasks} for arm in result.arms},
        "comparisons": [{"task": c.task, "shots": c.shots, "arm": c.arm, "against": c.against, "delta": c.difference.delta,
                         "low": c.difference.low, "high": c.difference.high} for c in comps],
        "cost": cost_rows(result),
    }
    (folder / "report.json").write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return data
