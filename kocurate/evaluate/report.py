"""Result files and the seeds' tables (`| Model | 0-shot | 5-shot | ... |`), and reading results back.

`write` puts three kinds of file in the output folder, each through a temporary file and a rename:
`results.json` (kocurate's record: every metric with its standard error, per-doc predictions),
`results.md` (the tables) and `lm_eval/results_{k}shot.json` (lm-eval's own results, one per shot
count, exactly as `lm_eval --output_path` would write them, without samples).
`read` accepts a kocurate results.json (or its folder) and lm-eval results files alike.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError

METRIC_TITLES = {"f1": "macro F1", "acc": "accuracy", "acc_norm": "accuracy (length-normalized)"}
KOBEST = ("kobest_boolq", "kobest_copa", "kobest_hellaswag", "kobest_sentineg", "kobest_wic")


def model_label(run: dict) -> str:
    model = str(run.get("model", "?"))
    label = Path(model).name if os.path.isdir(model) else model
    if run.get("adapter"):
        label += f" + {Path(str(run['adapter'])).name}"
    return label


def _shots_of(run: dict) -> list[int]:
    return sorted({int(k) for task in run["results"].values() for k in task})


def _value(run: dict, task: str, shots: int, metric: str):
    return run["results"].get(task, {}).get(str(shots), {}).get(metric)


def kobest_average(run: dict, metric: str = "f1") -> dict[int, float]:
    """Mean of the five KoBEST tasks' metric per shot count (the KoQuality card's average);
    only shot counts where all five have it."""
    out = {}
    for s in _shots_of(run):
        values = [_value(run, t, s, metric) for t in KOBEST]
        if all(isinstance(v, (int, float)) for v in values):
            out[s] = sum(values) / len(values)
    return out


def _table(rows: list[tuple[str, dict[int, float | None]]], shots: list[int], stderr=None) -> str:
    lines = ["| Model | " + " | ".join(f"{s}-shot" for s in shots) + " |", "| --- |" + " --- |" * len(shots)]
    for label, values in rows:
        cells = []
        for s in shots:
            v = values.get(s)
            cell = "" if v is None else f"{v:.4f}"
            err = (stderr or {}).get(label, {}).get(s) if stderr else None
            if cell and isinstance(err, (int, float)):
                cell += f" ± {err:.4f}"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if len(rows) == 2:
        cells = []
        for s in shots:
            a, b = rows[0][1].get(s), rows[1][1].get(s)
            cells.append("" if a is None or b is None else f"{b - a:+.4f}")
        lines.append("| Δ (second − first) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(runs: list[dict], labels: list[str] | None = None) -> str:
    """Per task: macro F1 first (the seeds' metric), then accuracy, then acc_norm; then the KoBEST average."""
    labels = labels or [model_label(r) for r in runs]
    shots = sorted({s for r in runs for s in _shots_of(r)})
    tasks = list(dict.fromkeys(t for r in runs for t in r["results"]))
    head = runs[0]
    parts = [f"# Evaluation ({head.get('protocol', 'harness')} protocol)", ""]
    if len(runs) == 1:
        parts += [f"model: `{head.get('model')}`" + (f", adapter: `{head['adapter']}`" if head.get("adapter") else ""),
                  f"data: {head.get('data', {}).get('source', '?')}; test docs: "
                  + ", ".join(f"{t} {next(iter(head['results'][t].values())).get('n', '?')}" for t in tasks)
                  + (f" (limit {head['limit']})" if head.get("limit") else "") + f"; few-shot seed {head.get('seed')}", ""]
    else:
        protocols = {r.get("protocol", "harness") for r in runs}
        if len(protocols) > 1:
            parts += [f"warning: the runs use different protocols ({', '.join(sorted(map(str, protocols)))}); "
                      "their numbers are not comparable", ""]
    for task in tasks:
        for metric in ("f1", "acc", "acc_norm"):
            if not any(_value(r, task, s, metric) is not None for r in runs for s in shots):
                continue
            rows = [(label, {s: _value(r, task, s, metric) for s in shots}) for label, r in zip(labels, runs)]
            errs = {label: {s: _value(r, task, s, f"{metric}_stderr") for s in shots} for label, r in zip(labels, runs)}
            parts += [f"## {task}: {METRIC_TITLES[metric]}", "", _table(rows, shots, errs), ""]
    for metric in ("f1", "acc"):
        averages = [kobest_average(r, metric) for r in runs]
        if any(averages):
            cols = sorted({s for a in averages for s in a})
            parts += [f"## KoBEST average ({METRIC_TITLES[metric]} of the five tasks)", "",
                      _table([(label, a) for label, a in zip(labels, averages)], cols), ""]
    return "\n".join(parts)


def write(record: dict, lm_eval_results: dict[int, dict], output: str | Path, *, inputs=(),
          overwrite: bool = False) -> dict[str, Path]:
    """The result files, written through the house guard: a lock on `output`, a temporary folder
    and one rename (an atomic swap with `overwrite`), never inside an input."""
    from lm_eval.utils import handle_non_serializable

    from ..records import output_guard

    out = Path(output)
    texts = {f"lm_eval/results_{k}shot.json": json.dumps(res, ensure_ascii=False, indent=2, default=handle_non_serializable)
             for k, res in lm_eval_results.items()}
    texts["results.json"] = json.dumps(record, ensure_ascii=False, indent=1, default=str)
    texts["results.md"] = markdown([record])
    with output_guard(out, list(inputs), overwrite=overwrite) as tmp:
        for name, text in texts.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text + "\n", encoding="utf-8")
    return {name: out / name for name in texts}


def from_lm_eval(data: dict, source: str) -> dict:
    """An lm-eval results file in kocurate's shape: results[task][shots][metric] (+ _stderr)."""
    n_shot = data.get("n-shot") or {}
    configs = data.get("configs") or {}
    results: dict[str, dict] = {}
    groups = set(data.get("groups") or {})
    for task, entry in data["results"].items():
        if task in groups or not isinstance(entry, dict):
            continue
        shots = n_shot.get(task, (configs.get(task) or {}).get("num_fewshot"))
        if shots is None:
            raise InputError(f"{source}: lm-eval results without 'n-shot' for {task}; pass the file lm-eval wrote")
        scores = {}
        for key, value in entry.items():
            name = key.partition(",")[0]
            if name in ("alias", "name", "sample_len") or not isinstance(value, (int, float)):
                continue
            scores[name] = value
        name = task.removeprefix("polyglot_")
        results.setdefault(name, {})[str(int(shots))] = scores
    cfg = data.get("config") or {}
    model = cfg.get("model_name") or cfg.get("model_args") or cfg.get("model") or "?"
    if isinstance(model, dict):
        model = model.get("pretrained", "?")
    if isinstance(model, str) and "pretrained=" in model:
        model = model.split("pretrained=", 1)[1].split(",", 1)[0]
    protocol = "polyglot" if any(t.startswith("polyglot_") for t in data["results"]) else "harness"
    return {"model": str(model), "protocol": protocol, "results": results, "source": "lm-eval"}


def read(path: str | Path) -> dict:
    """A kocurate results.json (or the folder holding one) or an lm-eval results file."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise InputError(f"{path}: no results file there; pass a results.json written by `kocurate evaluate` or lm-eval")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not JSON ({exc.msg} at line {exc.lineno}); pass a results file") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: not UTF-8 text; pass a results.json") from None
    if isinstance(data, dict) and isinstance(data.get("results"), dict):
        if "protocol" in data and "kocurate_version" in data:
            return data
        if all(isinstance(v, dict) for v in data["results"].values()) and ("n-shot" in data or "configs" in data):
            return from_lm_eval(data, str(p))
    raise InputError(f"{p}: neither a kocurate results.json (keys results, protocol) nor an lm-eval results file "
                     "(keys results, n-shot); pass one of those")


def merge(runs: list[dict]) -> dict:
    """lm-eval files of one model at several shot counts, as one run."""
    head = dict(runs[0])
    head["results"] = {}
    for r in runs:
        for task, by_shot in r["results"].items():
            head["results"].setdefault(task, {}).update(by_shot)
    return head


def compare(paths: list[str | Path]) -> str:
    runs = [read(p) for p in paths]
    labels = [model_label(r) for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({Path(str(p)).parent.name or p})" for label, p in zip(labels, paths)]
    return markdown(runs, labels)
