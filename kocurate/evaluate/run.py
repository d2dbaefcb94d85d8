"""`evaluate(config)`: lm-eval's `simple_evaluate`, once per shot count, with kocurate's model.

- Task names are checked against lm-eval's task index (close matches listed on a typo). Names in
  the KoBEST / polyglot / NSMC family are served from a small index (lm-eval's kobest folder and
  kocurate's task YAML), so they start in a second; any other name indexes all of lm-eval's tasks.
- `--data-dir`: every task whose data has a folder there ({config}/{split}.jsonl, the Hub's layout)
  reads it instead of the Hub. This is done the way an lm-eval user would: a task YAML that
  `include`s the original and sets `dataset_path`/`data_files`, in a temporary include path.
- `--protocol polyglot` swaps each KoBEST name for its `polyglot_` twin shipped in
  `kocurate/evaluate/tasks` and uses few-shot seed 42.
- The record keeps, per task and shot count, every metric with its standard error and the
  per-doc predictions (from lm-eval's logged samples), in a stable order.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InputError, first_line
from . import KOBEST_CONFIGS, KOBEST_TASKS, EvalConfig, EvalResult, canonical_task
from .tasks import TASKS_DIR

_DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_FAMILY_PREFIXES = ("kobest", "polyglot_kobest", "nsmc")
_HUB_KOBEST = "skt/kobest_v1"


def _lm_eval_kobest_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks" / "kobest"


def _in_family(name: str) -> bool:
    return any(name == p or name.startswith(p + "_") for p in _FAMILY_PREFIXES)


@contextmanager
def _quiet(level=logging.ERROR):
    """lm-eval logs a warning per overridden task and per model quirk; keep the run's output readable."""
    loggers = [logging.getLogger(n) for n in ("lm_eval", "lm-eval")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, old):
            lg.setLevel(lv)


def resolve_task_names(config: EvalConfig) -> list[str]:
    """The names lm-eval is asked for: KoBEST short names completed, polyglot twins swapped in."""
    names: list[str] = []
    for raw in config.tasks:
        name = raw.strip()
        if name == "all":
            name = "kobest"
        if name in KOBEST_CONFIGS:
            name = f"kobest_{name}"
        if config.protocol == "polyglot" and (name == "kobest" or name in KOBEST_TASKS):
            name = f"polyglot_{name}"
        if name not in names:
            names.append(name)
    return names


def task_manager(names: list[str], extra: list[Path] = ()):
    """A TaskManager that knows `names`: a small one for the KoBEST family, lm-eval's full index otherwise."""
    from lm_eval.tasks import TaskManager

    with _quiet():
        if all(_in_family(n) for n in names):
            return TaskManager(include_path=[str(_lm_eval_kobest_dir()), str(TASKS_DIR), *map(str, extra)],
                               include_defaults=False)
        return TaskManager(include_path=[str(TASKS_DIR), *map(str, extra)])


def check_names(names: list[str], manager) -> None:
    known = set(manager.all_tasks)
    for name in names:
        if name in known:
            continue
        pool = sorted(known)
        close = difflib.get_close_matches(name, pool, n=5, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "run `lm_eval ls tasks` for the names"
        raise InputError(f"--tasks: unknown task '{name}' ({hint})")


def leaves(name: str, manager) -> list[tuple[str, Path | None]]:
    """(task name, its YAML) for every task under a task, group or tag name."""
    from lm_eval.tasks._index import Kind

    entry = manager.task_index.get(name)
    if entry is None:
        return []
    if entry.kind == Kind.GROUP:
        out = []
        members = (entry.cfg or {}).get("task", [])
        for member in members if isinstance(members, list) else [members]:
            if isinstance(member, str):
                out += leaves(member, manager)
            elif isinstance(member, dict) and isinstance(member.get("task"), str):
                out += leaves(member["task"], manager)
        return out
    if entry.kind == Kind.TAG:
        return [leaf for t in sorted(entry.tags) for leaf in leaves(t, manager)]
    return [(name, entry.yaml_path)]


def _local_files(folder: Path, split: str) -> Path | None:
    for suffix in _DATA_SUFFIXES:
        path = folder / f"{split}{suffix}"
        if path.is_file():
            return path
    return None


def _raw_config(yaml_path: Path) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(yaml_path, resolve_func=False)


def local_overrides(names: list[str], manager, data_dir: Path, shots: list[int], out: Path) -> dict[str, Path]:
    """Write one overriding task YAML per task whose data has a folder in `data_dir`; the files used."""
    if not data_dir.is_dir():
        raise InputError(f"--data-dir {data_dir}: folder not found; pass a folder with {{config}}/{{split}}.jsonl inside")
    written: dict[str, Path] = {}
    for name in names:
        for task, yaml_path in leaves(name, manager):
            if task in written or yaml_path is None:
                continue
            cfg = _raw_config(yaml_path)
            while "include" in cfg:  # follow includes for the dataset fields only
                base = _raw_config((Path(yaml_path).parent / cfg.pop("include")).resolve())
                cfg = {**base, **cfg}
            dataset_name, dataset_path = cfg.get("dataset_name"), str(cfg.get("dataset_path", ""))
            folder_name = dataset_name or dataset_path.rstrip("/").split("/")[-1]
            folder = data_dir / str(folder_name)
            kobest = dataset_path == _HUB_KOBEST
            if not folder.is_dir():
                if kobest:
                    raise InputError(f"{folder}: missing; a KoBEST data folder needs {folder_name}/test.jsonl and "
                                     f"{folder_name}/train.jsonl (the Hub layout of {_HUB_KOBEST})")
                continue
            splits = {}
            need = [cfg.get("test_split") or cfg.get("validation_split")]
            if max(shots) > 0:
                need.append((cfg.get("fewshot_config") or {}).get("split") or cfg.get("training_split")
                            or cfg.get("validation_split"))
            for split in filter(None, dict.fromkeys([*need, cfg.get("training_split"), cfg.get("validation_split")])):
                path = _local_files(folder, split)
                if path is None:
                    if split in need:
                        raise InputError(f"{folder / (split + '.jsonl')}: missing; {task} needs its {split} split there "
                                         f"({', '.join(s + '.jsonl' for s in need)} in the Hub layout)")
                    continue
                splits[split] = path
            kinds = {_DATA_SUFFIXES[p.suffix] for p in splits.values()}
            if len(kinds) > 1:
                raise InputError(f"{folder}: mixes {', '.join(sorted(kinds))} files; use one format for all splits")
            lines = [f"include: {yaml_path}", f"task: {task}", f"dataset_path: {kinds.pop()}", "dataset_name: null",
                     "dataset_kwargs:", "  data_files:"]
            lines += [f"    {split}: {json.dumps(str(path.resolve()))}" for split, path in splits.items()]
            (out / f"{task}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
            written[task] = folder
    return written


def _check_fewshot_rows(names, manager, data_dir: Path | None, shots: list[int]) -> None:
    """A shot count larger than a local few-shot split is a one-line error before any model loads."""
    if data_dir is None or max(shots) == 0:
        return
    for name in names:
        for task, yaml_path in leaves(name, manager):
            if yaml_path is None or not Path(yaml_path).is_file():
                continue
            cfg = _raw_config(yaml_path)
            files = ((cfg.get("dataset_kwargs") or {}).get("data_files") or {})
            split = cfg.get("training_split") or "train"
            path = files.get(split) if isinstance(files, dict) else None
            if not path or not str(path).endswith(".jsonl") or not Path(path).is_file():
                continue
            with open(path, encoding="utf-8") as handle:
                rows = sum(1 for line in handle if line.strip())
            if max(shots) > rows:
                raise InputError(f"--shots {max(shots)}: {task} has only {rows} few-shot examples in {path}; "
                                 f"lower --shots to at most {rows}")


def build_lm(config: EvalConfig, model=None, tokenizer=None):
    """The lm-eval model object: kocurate's engine (default) or lm-eval's stock HFLM."""
    from ..lm import resolve_device

    if config.backend == "hf":
        from lm_eval.models.huggingface import HFLM as cls
        extra = {}
    else:
        from .engine import KocurateLM as cls
        extra = {"share_context": config.share_context}
    batch = config.batch_size
    if model is not None:
        if tokenizer is None:
            raise InputError("evaluate(): pass the tokenizer with the model")
        return cls(pretrained=model, tokenizer=tokenizer, batch_size=batch, **extra)
    from ..lm import check_tokenizer_files

    check_tokenizer_files(config.model)
    if config.adapter and not Path(config.adapter).is_dir():
        raise InputError(f"--adapter {config.adapter}: folder not found; pass a folder written by PEFT's save_pretrained")
    if config.load_in_4bit and config.backend == "hf":
        raise InputError("--load-in-4bit goes with --backend kocurate (it loads through kocurate's loader)")
    kwargs: dict[str, Any] = {"pretrained": config.model, "batch_size": batch, "peft": config.adapter}
    if config.device_map == "auto":
        kwargs["parallelize"] = True
    else:
        kwargs["device"] = resolve_device(config.device)
    if config.backend == "kocurate":
        kwargs.update(kocurate_dtype=config.dtype, load_in_4bit=config.load_in_4bit)
    else:
        kwargs["dtype"] = "auto" if config.dtype == "auto" else config.dtype
    try:
        return cls(**kwargs, **extra)
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(f"--model {config.model}: could not load it ({first_line(exc)}); pass a Hub id you can "
                         "reach or a folder saved with save_pretrained") from None


def _metric_name(key: str) -> tuple[str, str]:
    """'acc,none' -> ('acc', 'none'); 'acc_stderr,none' -> ('acc_stderr', 'none')."""
    name, _, filt = key.partition(",")
    return name, filt or "none"


def _scores(entry: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key in ("alias", "name", "sample_len", "samples"):
            continue
        name, _ = _metric_name(key)
        if isinstance(value, (int, float)) or value == "N/A":
            out[name] = float(value) if isinstance(value, (int, float)) else None
    return out


def _predictions(samples: list[dict], order: list[int] | None) -> list[dict]:
    rows = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        lls = [float(r[0]) for r in (s.get("filtered_resps") or [r[0] for r in s["resps"]])]
        pred = max(range(len(lls)), key=lambda i: (lls[i], -i)) if lls else None
        gold = s.get("target")
        row = {"doc_id": s["doc_id"], "doc_index": order[s["doc_id"]] if order else s["doc_id"],
               "gold": int(gold) if isinstance(gold, (int, float)) or str(gold).isdigit() else gold,
               "pred": pred, "loglikelihoods": lls}
        if isinstance(s.get("f1"), (list, tuple)) and len(s["f1"]) == 2:
            row["gold"], row["pred"] = int(s["f1"][0]), int(s["f1"][1])
        rows.append(row)
    return rows


def _offline_metrics() -> None:
    """lm-eval's KoBEST YAML asks the `evaluate` library for "f1" (then uses its own); offline, that
    lookup retries the network with sleeps. Tell `evaluate` it is offline whenever the Hub is."""
    truthy = {"1", "ON", "YES", "TRUE"}
    if not any(os.environ.get(v, "").upper() in truthy for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return
    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
    import sys

    if "evaluate.config" in sys.modules:
        sys.modules["evaluate.config"].HF_EVALUATE_OFFLINE = True


def evaluate(config: EvalConfig, *, model=None, tokenizer=None, lm=None, progress=None) -> EvalResult:
    _offline_metrics()
    import lm_eval

    out_dir = Path(config.output) if config.output else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"-o {out_dir}: exists and is not a folder; pass a folder for the result files")
        from ..records import check_output

        # refused before any scoring: an input's folder, or a non-empty folder without --overwrite
        check_output(out_dir, _local_inputs(config), overwrite=config.overwrite)
    names = resolve_task_names(config)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="kocurate-tasks-"))
    try:
        manager = task_manager(names)
        check_names(names, manager)
        data_dir = Path(config.data_dir) if config.data_dir else None
        local: dict[str, Path] = {}
        if data_dir is not None:
            local = local_overrides(names, manager, data_dir, config.shots, tmp)
            if local:
                manager = task_manager(names, extra=[tmp])
            _check_fewshot_rows(names, manager, data_dir, config.shots)

        if lm is None:
            with _quiet():
                lm = build_lm(config, model, tokenizer)
        record_results: dict[str, dict] = {}
        predictions: dict[str, dict] = {}
        groups: dict[str, dict] = {}
        raw: dict[int, dict] = {}
        seconds: dict[str, float] = {}
        higher: dict[str, dict] = {}
        for k in config.shots:
            t0 = time.perf_counter()
            with _quiet(logging.WARNING if config.show_progress else logging.ERROR):
                try:
                    out = lm_eval.simple_evaluate(model=lm, tasks=list(names), num_fewshot=k, limit=config.limit,
                                                  task_manager=manager, log_samples=True,
                                                  fewshot_random_seed=config.fewshot_seed, bootstrap_iters=1000,
                                                  random_seed=config.fewshot_seed)
                except ValueError as exc:
                    if "larger than population" in str(exc):
                        raise InputError(f"--shots {k}: a task has fewer than {k} few-shot examples to draw from; "
                                         "lower --shots") from None
                    raise
            seconds[str(k)] = round(time.perf_counter() - t0, 3)
            if out is None:  # a non-zero rank under accelerate: rank 0 reports
                continue
            samples = out.pop("samples", {})
            raw[k] = out
            task_objects = {}
            for task_name, entry in out["results"].items():
                if task_name in out.get("groups", {}) or task_name not in samples:
                    if task_name in out.get("groups", {}):
                        groups.setdefault(canonical_task(task_name), {})[str(k)] = _scores(entry)
                    continue
                name = canonical_task(task_name)
                scores = _scores(entry)
                scores["n"] = len(samples[task_name])
                record_results.setdefault(name, {})[str(k)] = scores
                order = None
                if task_name.startswith("polyglot_"):
                    order = _polyglot_order(task_name, config, manager, task_objects)
                predictions.setdefault(name, {})[str(k)] = _predictions(samples[task_name], order)
                higher[name] = out.get("higher_is_better", {}).get(task_name, {})
            if progress:
                progress(f"{k}-shot", 1, 1)

        from .. import __version__

        record = {
            "kocurate_version": __version__,
            "lm_eval_version": getattr(lm_eval, "__version__", None),
            "protocol": config.protocol,
            "backend": config.backend,
            "model": config.model,
            "adapter": config.adapter,
            "tasks": names,
            "shots": config.shots,
            "seed": config.fewshot_seed,
            "limit": config.limit,
            "batch_size": config.batch_size,
            "device": str(getattr(lm, "device", "")),
            "dtype": str(getattr(getattr(lm, "model", None), "dtype", "")).removeprefix("torch."),
            "data": {"source": str(data_dir) if data_dir else "hub",
                     "local": {t: str(p) for t, p in local.items()}},
            "results": record_results,
            "groups": groups,
            "higher_is_better": higher,
            "seconds": {"total": round(time.perf_counter() - started, 3), "per_shots": seconds},
            "engine": dict(getattr(lm, "stats", {})),
            "predictions": predictions,
        }
        files = {}
        if out_dir is not None and raw:
            from .report import write

            files = write(record, raw, out_dir, inputs=_local_inputs(config), overwrite=config.overwrite)
        return EvalResult(record, files, raw)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _local_inputs(config: EvalConfig) -> list[str]:
    """The folders evaluation reads (model, adapter, data), which its output must stay out of."""
    return [p for p in (config.model, config.adapter, config.data_dir) if p and Path(str(p)).exists()]


def _polyglot_order(task_name: str, config: EvalConfig, manager, cache: dict) -> list[int] | None:
    """Test-split position of each doc of a polyglot task, in its shuffled scoring order."""
    import random

    entry = manager.task_index.get(task_name)
    if entry is None:
        return None
    # the order depends only on the split's length and the seed
    n = None
    cfg = _raw_config(entry.yaml_path)
    files = ((cfg.get("dataset_kwargs") or {}).get("data_files") or {})
    test = files.get("test") if isinstance(files, dict) else None
    if test and str(test).endswith(".jsonl") and os.path.isfile(test):
        with open(test, encoding="utf-8") as handle:
            n = sum(1 for line in handle if line.strip())
    if n is None:
        return None
    order = list(range(n))
    random.Random(config.fewshot_seed).shuffle(order)
    return order
