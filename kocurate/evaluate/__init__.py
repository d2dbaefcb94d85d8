"""KoBEST evaluation: tasks as data (`tasks`), few-shot draws (`fewshot`), the scoring engine
(`scorer`), metrics and result tables (`report`).

    from kocurate.evaluate import EvalConfig, evaluate
    result = evaluate(EvalConfig(model="EleutherAI/polyglot-ko-1.3b", tasks=["kobest_copa"], shots=[0, 5]))
    result.metric("kobest_copa", 5, "f1")
    result.predictions("kobest_copa", 5)   # [{"doc_index", "gold", "pred", "loglikelihoods", ...}, ...]

Only `kocurate.records` and `kocurate.errors` are imported from the rest of the package; torch,
transformers and peft load inside `evaluate()`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from ..records.kobest import HUB_ID, load_split
from . import metrics as _metrics
from .fewshot import draw_fewshot
from .tasks import PROTOCOL_DEFS, PROTOCOLS, TASK_NAMES, get_task, parse_shots, parse_tasks

__all__ = ["EvalConfig", "EvalResult", "evaluate", "PROTOCOLS", "TASK_NAMES", "get_task"]


@dataclass
class EvalConfig:
    """One evaluation run; the fields are the `kocurate evaluate` flags one to one."""

    model: str
    adapter: str | None = None
    tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES))
    shots: list[int] = field(default_factory=lambda: [0, 5, 10, 50])
    protocol: str = "harness"
    data_dir: str | None = None
    limit: int | None = None
    batch_size: int | str = "auto"
    seed: int | None = None          # None: the protocol's own (harness 1234, polyglot 42)
    output_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"              # auto: bfloat16 on a GPU that has it, float32 on a CPU
    share_context: bool = True       # run each context once for all its choices (same numbers)
    show_progress: bool = False


@dataclass
class EvalResult:
    results: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    def metric(self, task: str, shots: int, name: str) -> float:
        task = parse_tasks(task)[0]
        try:
            return self.results["results"][task][str(shots)][name]
        except KeyError:
            raise InputError(f"no {name} for {task} at {shots} shots in this result") from None

    def predictions(self, task: str, shots: int) -> list[dict]:
        task = parse_tasks(task)[0]
        try:
            return self.results["predictions"][task][str(shots)]
        except KeyError:
            raise InputError(f"no predictions for {task} at {shots} shots in this result") from None


def _fingerprint(rows: list[dict]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def _check(config: EvalConfig) -> tuple[list[str], list[int]]:
    if config.protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol '{config.protocol}'; use one of {', '.join(PROTOCOLS)}")
    tasks = parse_tasks(config.tasks)
    shots = parse_shots(config.shots)
    if config.limit is not None and int(config.limit) < 1:
        raise InputError(f"--limit {config.limit}: use a positive number of test rows")
    if config.batch_size != "auto":
        try:
            if int(config.batch_size) < 1:
                raise ValueError
        except ValueError:
            raise InputError(f"--batch-size {config.batch_size}: use a positive number or 'auto'") from None
    if config.output_dir and Path(config.output_dir).exists() and not Path(config.output_dir).is_dir():
        raise InputError(f"{config.output_dir}: exists and is not a folder; pass -o a folder for results.json and results.md")
    if config.adapter and not Path(config.adapter).is_dir():
        raise InputError(f"{config.adapter}: adapter folder not found; pass a folder written by PEFT's save_pretrained")
    return tasks, shots


def evaluate(config: EvalConfig, *, model=None, tokenizer=None,
             progress: Callable[[str, int, int], None] | None = None) -> EvalResult:
    """Score every task at every shot count; write results.json / results.md when output_dir is set.

    `model`/`tokenizer` may be passed already loaded (the adapter, if any, already applied);
    `progress(label, done, total)` is called as docs are scored.
    """
    tasks, shots = _check(config)
    protocol = PROTOCOL_DEFS[config.protocol]

    # data first: a bad folder should fail before a model loads
    data: dict[str, dict[str, list[dict]]] = {}
    for name in tasks:
        test = load_split(name, "test", config.data_dir)
        train = load_split(name, "train", config.data_dir) if max(shots) > 0 else []
        if not test:
            raise InputError(f"{name}: the test split is empty")
        if max(shots) > len(train):
            where = f"{config.data_dir}/{get_task(name).config}/train.jsonl" if config.data_dir else f"{HUB_ID} train"
            raise InputError(f"{name}: {max(shots)}-shot asks for more examples than {where} has ({len(train)} rows); "
                             f"lower --shots to at most {len(train)}")
        data[name] = {"test": test, "train": train}

    from .scorer import Scorer, load_model

    started = time.perf_counter()
    if model is None:
        model, tokenizer, dtype = load_model(config.model, adapter=config.adapter, device=config.device, dtype=config.dtype)
    else:
        if tokenizer is None:
            raise InputError("evaluate(): pass the tokenizer with the model")
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    scorer = Scorer(model, tokenizer, joint_encoding=protocol.joint_encoding,
                    move_trailing_space=protocol.move_trailing_space, batch_size=config.batch_size,
                    share_context=config.share_context)

    bars: dict[str, Any] = {}
    if progress is None and config.show_progress:
        from tqdm.auto import tqdm

        def progress(label, done, total):
            if label not in bars:
                bars[label] = tqdm(total=total, desc=label, unit="doc")
            bars[label].update(done - bars[label].n)
            if done >= total:
                bars[label].close()

    results: dict[str, dict[str, dict]] = {}
    predictions: dict[str, dict[str, list[dict]]] = {}
    timings: dict[str, dict[str, float]] = {}
    for name in tasks:
        task = get_task(name, config.protocol)
        test, train = data[name]["test"], data[name]["train"]
        for k in shots:
            t0 = time.perf_counter()
            draws = draw_fewshot(protocol, len(test), len(train), k, limit=config.limit, seed=config.seed, task=name)
            requests = []
            for d in draws:
                doc = test[d.doc_index]
                requests.append((task.prompt(doc, [train[i] for i in d.shot_indices]), task.continuations(doc)))
            label = f"{name} {k}-shot"
            done = 0

            def tick(n, _label=label, _total=len(requests)):
                nonlocal done
                done += n
                if progress:
                    progress(_label, done, _total)

            tick(0)
            lls = scorer.score(requests, progress=tick)
            golds, preds, norms, rows = [], [], [], []
            for d, ll in zip(draws, lls):
                doc = test[d.doc_index]
                choices = task.doc_to_choices(doc)
                gold = task.doc_to_gold(doc)
                pred, pred_norm = _metrics.predict(ll, choices)
                golds.append(gold)
                preds.append(pred)
                norms.append(pred_norm)
                row = {"doc_index": d.doc_index, "gold": gold, "pred": pred, "loglikelihoods": ll,
                       "shots": list(d.shot_indices)}
                if "acc_norm" in task.metrics:
                    row["pred_norm"] = pred_norm
                rows.append(row)
            scores = _metrics.compute(task.metrics, golds, preds, norms)
            scores["n"] = len(rows)
            results.setdefault(name, {})[str(k)] = scores
            predictions.setdefault(name, {})[str(k)] = rows
            timings.setdefault(name, {})[str(k)] = round(time.perf_counter() - t0, 3)

    from .. import __version__

    record = {
        "kocurate_version": __version__,
        "protocol": config.protocol,
        "protocol_reference": protocol.reference,
        "model": config.model,
        "adapter": config.adapter,
        "data": {
            "source": str(config.data_dir) if config.data_dir else HUB_ID,
            "fingerprint": {n: {"test": _fingerprint(d["test"]), "train": _fingerprint(d["train"])} for n, d in data.items()},
            "test_rows": {n: len(d["test"]) for n, d in data.items()},
        },
        "seed": protocol.seed if config.seed is None else config.seed,
        "limit": config.limit,
        "shots": shots,
        "tasks": tasks,
        "batch_size": config.batch_size,
        "device": str(scorer.device),
        "dtype": dtype,
        "max_length": scorer.max_length,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "results": results,
        "seconds": {"total": round(time.perf_counter() - started, 3), "per_task": timings},
        "engine": dict(scorer.stats),
        "predictions": predictions,
    }
    files = {}
    if config.output_dir:
        from .report import write

        files = write(record, config.output_dir)
    return EvalResult(record, files)
