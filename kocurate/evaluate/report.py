"""results.json and the markdown tables in the seeds' form (`| Model | 0-shot | 5-shot | ... |`)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import InputError

METRIC_TITLES = {"f1": "macro F1", "acc": "accuracy", "acc_norm": "accuracy (length-normalized)"}


def model_label(results: dict) -> str:
    label = Path(str(results.get("model", "?"))).name if os.path.isdir(str(results.get("model", ""))) else str(results.get("model"))
    if results.get("adapter"):
        label += f" + {Path(str(results['adapter'])).name}"
    return label


def _shots_of(results: dict) -> list[int]:
    return sorted({int(k) for task in results["results"].values() for k in task})


def task_table(task: str, metric: str, runs: list[dict], labels: list[str] | None = None) -> str | None:
    """One markdown table: a row per run, a column per shot count (blank where a run lacks it)."""
    shots = sorted({s for r in runs for s in _shots_of(r)})
    if not any(metric in v for r in runs for v in r["results"].get(task, {}).values()):
        return None
    labels = labels or [model_label(r) for r in runs]
    lines = ["| Model | " + " | ".join(f"{s}-shot" for s in shots) + " |", "| --- |" + " --- |" * len(shots)]
    for label, run in zip(labels, runs):
        cells = []
        for s in shots:
            value = run["results"].get(task, {}).get(str(s), {}).get(metric)
            cells.append("" if value is None else f"{value:.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if len(runs) == 2:
        cells = []
        for s in shots:
            a, b = (r["results"].get(task, {}).get(str(s), {}).get(metric) for r in runs)
            cells.append("" if a is None or b is None else f"{b - a:+.4f}")
        lines.append("| Δ (second − first) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(runs: list[dict], labels: list[str] | None = None) -> str:
    """Every task's tables: macro F1 first (the seeds' metric), then accuracy, then acc_norm."""
    tasks = list(dict.fromkeys(t for r in runs for t in r["results"]))
    head = runs[0]
    parts = [f"# KoBEST ({head.get('protocol')} protocol)", ""]
    if len(runs) == 1:
        parts += [f"model: `{head.get('model')}`" + (f", adapter: `{head['adapter']}`" if head.get("adapter") else ""),
                  f"data: {head['data']['source']}, test rows: "
                  + ", ".join(f"{t} {head['data']['test_rows'].get(t, '?')}" for t in tasks)
                  + (f" (limit {head['limit']})" if head.get("limit") else ""), ""]
    else:
        protocols = {r.get("protocol") for r in runs}
        if len(protocols) > 1:
            parts += [f"warning: the runs use different protocols ({', '.join(sorted(map(str, protocols)))}); "
                      "their numbers are not comparable", ""]
    for task in tasks:
        for metric in ("f1", "acc", "acc_norm"):
            table = task_table(task, metric, runs, labels)
            if table:
                parts += [f"## {task}: {METRIC_TITLES[metric]}", "", table, ""]
    return "\n".join(parts)


def write(results: dict, output_dir: str | Path) -> dict[str, Path]:
    """results.json and results.md into `output_dir`, each written to a temp file and renamed."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, text in (("results.json", json.dumps(results, ensure_ascii=False, indent=1)),
                       ("results.md", markdown([results]))):
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        os.replace(tmp, out / name)
        written[name] = out / name
    return written


def read(path: str | Path) -> dict:
    """A results.json (or the folder holding one), checked to be ours."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise InputError(f"{path}: no results.json there; pass a file written by `kocurate evaluate`")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or "results" not in data or "protocol" not in data:
        raise InputError(f"{p}: not a kocurate evaluate results file (no 'results'/'protocol' keys)")
    return data


def compare(paths: list[str | Path]) -> str:
    runs = [read(p) for p in paths]
    labels = [model_label(r) for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({Path(str(p)).parent.name or p})" for label, p in zip(labels, paths)]
    return markdown(runs, labels)
