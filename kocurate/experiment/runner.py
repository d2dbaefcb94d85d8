"""train-eval: arms of data -> adapters -> KoBEST scores, resumable at every arm and seed.

Each unit of work (one adapter, one evaluation) is stored under the report folder with a key
(the data fingerprint and the config that made it) and a hash of its result file, so a rerun
skips what is done, and a corrupt or stale result is detected and recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..records import file_sha256
from .arms import BASE, ArmSpec, load_arm_data, materialize_control, parse_arms


@dataclass
class TrainEvalConfig:
    """Fields are the `kocurate train-eval` flags, one to one."""

    base: str
    arms: list[str]
    output_dir: Path
    method: str = "lora"
    tasks: list[str] = field(default_factory=lambda: ["kobest_boolq", "kobest_copa", "kobest_hellaswag", "kobest_sentineg", "kobest_wic"])
    shots: list[int] = field(default_factory=lambda: [0, 5])
    seeds: list[int] = field(default_factory=lambda: [1])
    protocol: str = "harness"
    data_dir: str | None = None
    limit: int | None = None
    template: str = "koalpaca"
    max_steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 4
    learning_rate: float | None = None  # None: the trainer's per-method default (LoRA 3e-4, IA3 3e-3)
    max_length: int = 512
    eval_batch_size: str = "auto"
    metric: str = "f1"
    bootstrap: int = 1000


@dataclass
class Unit:
    """One arm at one seed: where its adapter and scores live and what they cost."""

    arm: str
    seed: int | None
    folder: Path
    train_report: dict | None = None
    scores: dict | None = None  # {task: {shots: {"metrics": {...}, "gold": [...], "pred": [...]}}}
    trained: bool = False  # trained in this run (not reused)
    evaluated: bool = False


@dataclass
class ExperimentResult:
    config: TrainEvalConfig
    arms: list[ArmSpec]
    units: list[Unit]
    manifests: dict[str, dict]
    data_rows: dict[str, int]

    def units_of(self, arm: str) -> list[Unit]:
        return [u for u in self.units if u.arm == arm]


# ---------------------------------------------------------------------------------------------
# stamps: a result is reused only if its key matches and its file still hashes the same


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    return file_sha256(path)


def read_stamped(path: Path, key: str) -> dict | None:
    """The JSON at `path` if its stamp matches `key` and its bytes are unchanged, else None."""
    stamp = path.with_name(path.name + ".stamp")
    if not (path.is_file() and stamp.is_file()):
        return None
    try:
        meta = json.loads(stamp.read_text())
        if meta.get("key") != key or meta.get("sha256") != _file_digest(path):
            return None
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return None


def write_stamped(path: Path, data: dict, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))
    _write_atomic(path.with_name(path.name + ".stamp"), json.dumps({"key": key, "sha256": _file_digest(path)}))


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------


def run_experiment(config: TrainEvalConfig, log: Callable[[str], None] = print) -> ExperimentResult:
    """Train and evaluate every arm (and seed), reusing whatever is already done."""
    if config.metric not in ("f1", "acc"):
        raise InputError(f"--metric {config.metric}: use f1 or acc")
    arms = parse_arms(config.arms)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_arm_data(arms)
    data_paths: dict[str, str] = {name: loaded[name].info.path for name in loaded}
    manifests = {name: (l.manifest or {"inputs": [l.info.to_dict()], "steps": []}) for name, l in loaded.items()}
    for arm in arms:
        if arm.is_control:
            folder = materialize_control(arm, loaded, out / "data" / arm.name, seed=min(config.seeds))
            from ..records import load_records

            loaded[arm.name] = load_records(folder)
            data_paths[arm.name] = str(folder)
            manifests[arm.name] = loaded[arm.name].manifest or {}

    units: list[Unit] = []
    for arm in arms:
        seeds = [None] if arm.is_base else config.seeds
        for seed in seeds:
            folder = out / "arms" / arm.name / ("eval-only" if seed is None else f"seed-{seed}")
            unit = Unit(arm.name, seed, folder)
            adapter = None
            if not arm.is_base:
                unit.train_report, adapter, unit.trained = _train_unit(config, unit, data_paths[arm.name],
                                                                       loaded[arm.name].info.fingerprint, log)
            unit.scores, unit.evaluated = _eval_unit(config, unit, adapter, log)
            units.append(unit)
    return ExperimentResult(config, arms, units, manifests, {n: l.frame.height for n, l in loaded.items()})


def _train_config_fields(config: TrainEvalConfig) -> dict:
    return {k: getattr(config, k) for k in ("base", "method", "template", "max_steps", "epochs", "batch_size",
                                            "learning_rate", "max_length")}


def _train_unit(config, unit: Unit, data: str, fingerprint: str, log) -> tuple[dict, Path, bool]:
    from ..train import TrainConfig, train  # torch, transformers, peft: only now

    adapter = unit.folder / "adapter"
    key = _digest({"data": fingerprint, "seed": unit.seed, **_train_config_fields(config)})
    stamp_path = unit.folder / "train_report.json"
    cached = read_stamped(stamp_path, key)
    if cached is not None and adapter.is_dir():
        log(f"{unit.arm} seed {unit.seed}: adapter reused")
        return cached, adapter, False
    log(f"{unit.arm} seed {unit.seed}: training on {data}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    fields = {k: v for k, v in _train_config_fields(config).items() if k in names and v is not None}
    # A stale or half-finished adapter of this unit is replaced, never resumed with other data.
    train_config = TrainConfig(data=data, output_dir=adapter, seed=unit.seed, overwrite=True, **fields)
    started = time.perf_counter()
    result = train(train_config)
    report = dict(result.report)
    report.setdefault("seconds", round(time.perf_counter() - started, 2))
    write_stamped(stamp_path, report, key)
    return report, Path(result.adapter_dir), True


def _eval_unit(config, unit: Unit, adapter: Path | None, log) -> tuple[dict, bool]:
    key = _digest({"model": config.base, "adapter": _adapter_digest(adapter), "tasks": config.tasks, "shots": config.shots,
                   "protocol": config.protocol, "data_dir": config.data_dir, "limit": config.limit})
    scores_path = unit.folder / "scores.json"
    results_path = unit.folder / "eval" / "results.json"
    cached = read_stamped(scores_path, key)
    # The evaluator's results.json is what a person reads: it must be intact too.
    if cached is not None and not (results_path.is_file() and cached.get("_results_sha256") == _file_digest(results_path)):
        cached = None
    if cached is not None:
        log(f"{unit.arm}{'' if unit.seed is None else f' seed {unit.seed}'}: scores reused")
        return cached, False
    if scores_path.exists():
        log(f"{unit.arm}: results in {unit.folder} are stale or corrupt; evaluating again")
    from ..evaluate import EvalConfig, evaluate  # torch, transformers: only now

    log(f"{unit.arm}{'' if unit.seed is None else f' seed {unit.seed}'}: evaluating {', '.join(config.tasks)}")
    result = evaluate(EvalConfig(
        model=config.base, adapter=str(adapter) if adapter else None, tasks=list(config.tasks),
        shots=list(config.shots), protocol=config.protocol, data_dir=config.data_dir, limit=config.limit,
        # seed None: the protocol's own few-shot seed, so every arm sees the same prompts
        batch_size=config.eval_batch_size, seed=None, output_dir=unit.folder / "eval",
    ))
    scores: dict = {}
    for task in config.tasks:
        for shots in config.shots:
            preds = result.predictions(task, shots)
            metrics = {m: result.metric(task, shots, m) for m in ("acc", "f1")}
            scores.setdefault(task, {})[str(shots)] = {
                "metrics": metrics,
                "gold": [int(p["gold"]) for p in preds],
                "pred": [int(p["pred"]) for p in preds],
            }
    scores["_results_sha256"] = _file_digest(results_path)
    write_stamped(scores_path, scores, key)
    return scores, True


def _adapter_digest(adapter: Path | None) -> str | None:
    """Hash the adapter's files, so a retrained adapter invalidates its scores."""
    if adapter is None:
        return None
    digest = hashlib.sha256()
    for path in sorted(adapter.rglob("*")):
        if path.is_file() and path.suffix in (".safetensors", ".bin", ".json"):
            digest.update(path.name.encode())
            digest.update(_file_digest(path).encode())
    return digest.hexdigest()
