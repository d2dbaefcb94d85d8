"""Run an experiment: a unit is one arm at one training seed (train, then evaluate).

Random controls are drawn afresh for every training seed, so each control unit trains on its own
rows. Each unit's results are stamped with a key (the data fingerprint and every setting that
made them) and a hash of the result file, so a rerun skips what is done, and a corrupt or stale
result is detected and recomputed.

The output folder is a working folder, reused by reruns (it holds `experiment.json`). It is
guarded before any work: never an input, never inside one, never a folder of something else
(without `--overwrite`), and locked for the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..errors import InputError
from ..records import file_sha256
from ..records.folder import check_output, output_guard, output_lock, write_text_atomic
from .arms import ArmSpec, draw_seed, load_arm_data, materialize_control, parse_arms
from .config import EVAL_EXCLUDE, ExperimentConfig, check_settings, eval_config, train_config

MARKER = "experiment.json"
LOG_FILE = "train-eval.log"

# ---------------------------------------------------------------------------------------------


@dataclass
class Unit:
    """One arm at one seed: where its adapter and scores live and what they cost."""

    arm: str
    seed: int | None
    folder: Path
    data: str | None = None  # the training data (a control's own draw for this seed)
    fingerprint: str | None = None
    train_report: dict | None = None
    scores: dict | None = None  # {task: {shots: {"metrics": {...}, "gold": [...], "pred": [...]}}}
    trained: bool = False  # trained in this run (not reused)
    evaluated: bool = False


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    arms: list[ArmSpec]
    units: list[Unit]
    manifests: dict[str, dict]
    data_rows: dict[str, int]
    draws: dict[str, int] = field(default_factory=dict)  # random control -> fresh row draws made

    def units_of(self, arm: str) -> list[Unit]:
        return [u for u in self.units if u.arm == arm]


@dataclass
class Tick:
    """Progress of the run, after each unit of work (a training or an evaluation)."""

    label: str
    done: int
    total: int
    reused: int  # units found finished and reused
    eta_seconds: float | None


# ---------------------------------------------------------------------------------------------
# stamps: a result is reused only if its key matches and its file still hashes the same


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def read_stamped(path: Path, key: str) -> dict | None:
    """The JSON at `path` if its stamp matches `key` and its bytes are unchanged, else None."""
    stamp = path.with_name(path.name + ".stamp")
    if not (path.is_file() and stamp.is_file()):
        return None
    try:
        meta = json.loads(stamp.read_text())
        if meta.get("key") != key or meta.get("sha256") != file_sha256(path):
            return None
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError, AttributeError):
        return None


def write_stamped(path: Path, data: dict, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))
    write_text_atomic(path.with_name(path.name + ".stamp"), json.dumps({"key": key, "sha256": file_sha256(path)}))


# ---------------------------------------------------------------------------------------------
# library chatter goes to a log file, not the terminal


@contextlib.contextmanager
def capture_library_logs(path: Path) -> Iterator[None]:
    """Send Python warnings, the logs of transformers, peft, TRL, datasets..., and anything written
    to sys.stderr (progress bars included) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    py_warnings = logging.getLogger("py.warnings")
    saved_propagate = py_warnings.propagate
    py_warnings.addHandler(handler)
    py_warnings.propagate = False
    logging.captureWarnings(True)
    restore: list[Callable[[], None]] = []
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()
        hf_logging.add_handler(handler)
        hf_logging.disable_progress_bar()
        restore += [hf_logging.enable_default_handler, lambda: hf_logging.remove_handler(handler),
                    hf_logging.enable_progress_bar]
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
        restore.append(datasets.enable_progress_bars)
    except ImportError:  # pragma: no cover
        pass
    # lm-eval's, datasets' and the trainer's own tqdm bars write to sys.stderr: into the log with them
    # (the run shows one overall bar on stdout).
    stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(stream):
            warnings.simplefilter("default")
            yield
    finally:
        for undo in reversed(restore):
            with contextlib.suppress(Exception):
                undo()
        stream.close()
        logging.captureWarnings(False)
        py_warnings.removeHandler(handler)
        py_warnings.propagate = saved_propagate
        root.removeHandler(handler)
        handler.close()


# ---------------------------------------------------------------------------------------------


def _local_inputs(config: ExperimentConfig, arms: list[ArmSpec]) -> list[Path]:
    paths = [Path(a.data) for a in arms if a.data and Path(a.data).exists()]
    for value in (config.model, config.evaluate.get("data_dir")):
        if value and Path(value).exists():
            paths.append(Path(value))
    return paths


def guard_output(config: ExperimentConfig, arms: list[ArmSpec]) -> Path:
    """Check the report folder before any work (one-line errors); return it resolved."""
    out = check_output(config.output, _local_inputs(config, arms), overwrite=True)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not config.overwrite:
        raise InputError(f"{out}: folder exists, is not empty and holds no train-eval run; "
                         "choose another -o, or pass --overwrite to replace it")
    return out


def plan_units(config: ExperimentConfig, arms: list[ArmSpec], out: Path) -> list[Unit]:
    units = []
    for arm in arms:
        for seed in ([None] if arm.is_base else config.seeds):
            folder = out / "arms" / arm.name / ("eval-only" if seed is None else f"seed-{seed}")
            units.append(Unit(arm.name, seed, folder))
    return units


def run_experiment(config: ExperimentConfig, log: Callable[[str], None] = print,
                   progress: Callable[[Tick], None] | None = None) -> ExperimentResult:
    """Train and evaluate every arm at every seed, reusing whatever is already done."""
    arms = parse_arms(config.arms)
    check_settings(config, arms)
    out = guard_output(config, arms)
    reading = {k: v for k, v in config.train.items() if k in ("preset", "mapping", "split") and v is not None}
    loaded = load_arm_data(arms, **reading)
    for arm in arms:  # a control's size and pool are checked before anything is written
        if arm.is_control:
            size, pool = loaded[arm.random_of].frame.height, arm.pool or max(loaded, key=lambda n: loaded[n].frame.height)
            if size > loaded[pool].frame.height:
                raise InputError(f"--arm {arm.name}: {arm.random_of} has {size} rows but the pool {pool} only "
                                 f"{loaded[pool].frame.height}; draw from a larger pool (random:{arm.random_of}:POOL)")
    if config.overwrite and out.exists() and any(out.iterdir()):
        # --overwrite: the new run is built in the house guard's temporary beside OUT and swapped in whole
        # when it ends, so OUT holds the old run (or, after, the new one) at every instant; a failed or
        # interrupted run leaves the old one as it was (its temporary is removed, or by the next run)
        with output_guard(out, _local_inputs(config, arms), overwrite=True) as tmp:
            result = _start(config, arms, loaded, tmp, log, progress)
        _relocate(result, tmp, out)
        return result
    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        return _start(config, arms, loaded, out, log, progress)


def _start(config, arms, loaded, out: Path, log, progress) -> ExperimentResult:
    write_text_atomic(out / MARKER, json.dumps(config.to_dict(), ensure_ascii=False, indent=1, default=str))
    with capture_library_logs(out / LOG_FILE):
        return _run(config, arms, loaded, out, log, progress)


def _relocate(result: ExperimentResult, tmp: Path, out: Path) -> None:
    """Point the result's unit folders and drawn data at OUT, where the temporary they were written in now is."""
    for unit in result.units:
        if unit.folder.is_relative_to(tmp):
            unit.folder = out / unit.folder.relative_to(tmp)
        if unit.data and Path(unit.data).is_relative_to(tmp):
            unit.data = str(out / Path(unit.data).relative_to(tmp))


def _run(config, arms, loaded, out: Path, log, progress) -> ExperimentResult:
    from ..records import load_records

    manifests = {name: (l.manifest or {"inputs": [l.info.to_dict()], "steps": []}) for name, l in loaded.items()}
    rows = {name: l.frame.height for name, l in loaded.items()}
    units = plan_units(config, arms, out)
    draws: dict[str, int] = {}
    by_name = {a.name: a for a in arms}
    for unit in units:
        arm = by_name[unit.arm]
        if arm.is_control:
            folder = materialize_control(arm, loaded, out / "data" / arm.name / f"seed-{unit.seed}",
                                         seed=draw_seed(arm.name, unit.seed))
            drawn = load_records(folder)
            unit.data, unit.fingerprint = str(folder), drawn.info.fingerprint
            manifests.setdefault(arm.name, drawn.manifest or {})
            rows[arm.name] = drawn.frame.height
            draws[arm.name] = draws.get(arm.name, 0) + 1
        elif not arm.is_base:
            unit.data, unit.fingerprint = loaded[arm.name].info.path, loaded[arm.name].info.fingerprint

    work = [("train", u) for u in units if u.seed is not None] + [("eval", u) for u in units]
    # Evaluate each unit right after training it; the base model last, so a setting only the trainer
    # can check (it needs the tokenizer) fails on the first unit, before any evaluation.
    order = []
    for unit in units:
        if unit.seed is not None:
            order += [("train", unit), ("eval", unit)]
    order += [("eval", u) for u in units if u.seed is None]
    clock = _Clock(total=len(work), tick=progress)
    clock.plan({"train": sum(k == "train" for k, _ in work), "eval": sum(k == "eval" for k, _ in work)})
    for kind, unit in order:
        name = unit.arm if unit.seed is None else f"{unit.arm} seed {unit.seed}"
        started = time.perf_counter()
        if kind == "train":
            unit.train_report, unit.trained = _train_unit(config, unit, log)
            clock.done(kind, f"trained {name}" if unit.trained else f"{name}: reused its adapter", not unit.trained,
                       time.perf_counter() - started)
        else:
            adapter = None if unit.seed is None else unit.folder / "adapter"
            unit.scores, unit.evaluated = _eval_unit(config, unit, adapter, log)
            clock.done(kind, f"evaluated {name}" if unit.evaluated else f"{name}: reused its scores", not unit.evaluated,
                       time.perf_counter() - started)
    return ExperimentResult(config, arms, units, manifests, rows, draws)


class _Clock:
    """Units done / to do and an ETA from the average time of the units actually computed, per kind."""

    def __init__(self, total: int, tick: Callable[[Tick], None] | None):
        self.total, self.tick = total, tick
        self.count, self.reused = 0, 0
        self.seconds: dict[str, list[float]] = {"train": [], "eval": []}
        self.left: dict[str, int] = {}

    def plan(self, kinds: dict[str, int]) -> None:
        self.left = dict(kinds)

    def done(self, kind: str, label: str, reused: bool, seconds: float) -> None:
        self.count += 1
        self.reused += int(reused)
        if not reused:
            self.seconds[kind].append(seconds)
        self.left[kind] = self.left.get(kind, 0) - 1
        if self.tick is not None:
            self.tick(Tick(label, self.count, self.total, self.reused, self.eta()))

    def eta(self) -> float | None:
        known = [s for values in self.seconds.values() for s in values]
        if not known:
            return None
        fallback = sum(known) / len(known)
        total = 0.0
        for kind, left in self.left.items():
            times = self.seconds.get(kind) or [fallback]
            total += max(left, 0) * sum(times) / len(times)
        return total


def _train_key(config: ExperimentConfig, unit: Unit) -> str:
    settings = {k: v for k, v in config.train.items() if v is not None}
    return _digest({"data": unit.fingerprint, "seed": unit.seed, "model": config.model, **settings})


def _train_unit(config: ExperimentConfig, unit: Unit, log) -> tuple[dict, bool]:
    from ..train import train  # torch, transformers, peft: only now

    adapter = unit.folder / "adapter"
    key = _train_key(config, unit)
    stamp_path = unit.folder / "train_report.json"
    cached = read_stamped(stamp_path, key)
    if cached is not None and adapter.is_dir():
        log(f"{unit.arm} seed {unit.seed}: adapter reused")
        return cached, False
    log(f"{unit.arm} seed {unit.seed}: training on {unit.data}")
    # A stale or half-finished adapter of this unit is replaced, never resumed with other data.
    started = time.perf_counter()
    quiet = {"progress": False} if "progress" in inspect.signature(train).parameters else {}
    result = train(train_config(config, unit.data, adapter, unit.seed), **quiet)
    report = {k: v for k, v in dict(result.report).items() if k in _REPORT_KEYS}
    report.setdefault("seconds", round(time.perf_counter() - started, 2))
    write_stamped(stamp_path, report, key)
    return report, True


#: What the experiment keeps of each train_report.json (the adapter folder holds the whole report).
_REPORT_KEYS = ("rows", "rows_used", "rows_truncated", "sequences", "steps", "epochs", "tokens", "label_tokens", "seconds",
                "wall_seconds", "tokens_per_second", "first_loss", "final_loss", "peak_memory_bytes", "data_fingerprint")


def _eval_key(config: ExperimentConfig, adapter: Path | None) -> str:
    settings = {k: v for k, v in config.evaluate.items() if v is not None and k not in EVAL_EXCLUDE}
    settings.update(tasks=config.tasks, shots=config.shots)
    return _digest({"model": config.model, "adapter": _adapter_digest(adapter), **settings})


def _eval_unit(config: ExperimentConfig, unit: Unit, adapter: Path | None, log) -> tuple[dict, bool]:
    name = unit.arm if unit.seed is None else f"{unit.arm} seed {unit.seed}"
    key = _eval_key(config, adapter)
    scores_path = unit.folder / "scores.json"
    results_path = unit.folder / "eval" / "results.json"
    cached = read_stamped(scores_path, key)
    # The evaluator's results.json is what a person reads: it must be intact too.
    if cached is not None and not (results_path.is_file() and cached.get("_results_sha256") == file_sha256(results_path)):
        cached = None
    if cached is not None:
        log(f"{name}: scores reused")
        return cached, False
    if scores_path.exists():
        log(f"{name}: results in {unit.folder} are stale or corrupt; evaluating again")
    from ..evaluate import evaluate  # torch, transformers: only now

    log(f"{name}: evaluating {', '.join(config.tasks)}")
    started = time.perf_counter()
    result = evaluate(eval_config(config, adapter, unit.folder / "eval"))
    seconds = time.perf_counter() - started
    scores: dict = {}
    for task in config.tasks:
        for shots in config.shots:
            preds = result.predictions(task, shots)
            metrics = {}
            for name in ("acc", "f1"):
                with contextlib.suppress(InputError):  # a task without macro F1 (e.g. kmmlu): --metric acc
                    metrics[name] = result.metric(task, shots, name)
            scores.setdefault(task, {})[str(shots)] = {
                "metrics": metrics,
                "gold": [int(p["gold"]) for p in preds],
                "pred": [int(p["pred"]) for p in preds],
            }
    scores["_results_sha256"] = file_sha256(results_path)
    scores["_seconds"] = round(seconds, 2)
    write_stamped(scores_path, scores, key)
    return scores, True


def _adapter_digest(adapter: Path | None) -> str | None:
    """Hash the adapter's files, so a retrained adapter invalidates its scores."""
    if adapter is None:
        return None
    digest = hashlib.sha256()
    for path in sorted(adapter.rglob("*")):
        if path.is_file() and (path.suffix in (".safetensors", ".bin") or path.name == "adapter_config.json"):
            digest.update(path.name.encode())
            digest.update(file_sha256(path).encode())
    return digest.hexdigest()
