"""train-eval's settings: ExperimentConfig (its own flags) plus the TrainConfig and EvalConfig fields
it passes through, merged from a config file and the command line, and checked before any work."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..config import option
from ..errors import InputError
from .arms import ArmSpec

#: TrainConfig fields train-eval sets itself (per unit) or that make no sense inside an experiment.
TRAIN_EXCLUDE = ("data", "output", "output_dir", "seed", "overwrite", "resume", "dry_run", "merge")
#: EvalConfig fields train-eval sets itself.
EVAL_EXCLUDE = ("model", "adapter", "output", "output_dir", "seed", "show_progress", "overwrite")
#: EvalConfig fields that take the training setting of the same name unless `evaluate` sets them.
SHARED = ("load_in_4bit",)


def _ints(value, flag: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    items = value.split(",") if isinstance(value, str) else list(value or [])
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            out.append(int(text))
        except ValueError:
            raise InputError(f"{flag} {value}: '{text}' is not a whole number; write e.g. {flag} 1,2,3") from None
    return out


@dataclass
class ExperimentConfig:
    """The experiment's own settings; `train` and `evaluate` hold TrainConfig / EvalConfig fields."""

    arms: list[str] = field(default_factory=list, metadata=option(
        "--arm", "A data arm NAME=DATA (folder, file or Hub id), or a random control NAME=random:SIZE_ARM[:POOL_ARM].",
        cli=False))
    output: Path | None = field(default=None, metadata=option(
        "--output", "Report folder; rerunning into it reuses finished adapters and scores.", short="-o",
        metavar="OUT", required=True))
    seeds: list[int] = field(default_factory=lambda: [1], metadata=option(
        "--seeds", "Training seeds, comma-separated (each a separate adapter per arm and a fresh draw per random "
        "control); intervals then cover training noise and row choice.  [default: 1]", metavar="1,2,3"))
    bootstrap: int = field(default=1000, metadata=option(
        "--bootstrap", "Paired bootstrap resamples for intervals and p-values (at least 100).", metavar="N"))
    metric: str = field(default="f1", metadata=option(
        "--metric", "Metric of the tables and the verdict: macro F1 (as the KoBEST papers) or accuracy.",
        choices=("f1", "acc")))
    overwrite: bool = field(default=False, metadata=option(
        "--overwrite", "Start afresh: replace OUT even if it holds another run or something else."))
    train: dict = field(default_factory=dict)  # TrainConfig fields (model included)
    evaluate: dict = field(default_factory=dict)  # EvalConfig fields

    def __post_init__(self) -> None:
        if not self.arms:
            raise InputError("no --arm given; add e.g. --arm full=out/clean --arm kq=out/koquality-1pct")
        if self.output in (None, ""):
            raise InputError("-o/--output is required: the report folder")
        self.output = Path(self.output)
        self.arms = [self.arms] if isinstance(self.arms, str) else list(self.arms)
        self.seeds = _ints(self.seeds, "--seeds")
        if not self.seeds:
            raise InputError("--seeds is empty; give one or more training seeds, e.g. --seeds 1 or --seeds 1,2,3")
        repeated = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if repeated:
            raise InputError(f"--seeds repeats {', '.join(map(str, repeated))}: each seed is one run; list each once")
        if any(s < 0 for s in self.seeds):
            raise InputError(f"--seeds {','.join(map(str, self.seeds))}: seeds must be 0 or more")
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or self.bootstrap < 100:
            raise InputError(f"--bootstrap {self.bootstrap}: use at least 100 resamples (1000 is the default)")
        if self.metric not in ("f1", "acc"):
            raise InputError(f"--metric {self.metric}: use f1 or acc")
        if not self.train.get("model") and not self.train.get("base"):
            raise InputError("--model is required: the base causal LM (Hub id or local folder) every arm trains on")

    @property
    def model(self) -> str:
        return str(self.train.get("model") or self.train.get("base"))

    @property
    def tasks(self) -> list[str]:
        """Concrete task names (the `kobest` group expanded), in the given order."""
        from ..evaluate import KOBEST_TASKS, EvalConfig, canonical_task

        given = self.evaluate.get("tasks")
        if given in (None, "", []):
            given = next(f for f in dataclasses.fields(EvalConfig) if f.name == "tasks").default_factory()
        items = given.split(",") if isinstance(given, str) else list(given)
        names: list[str] = []
        for item in (str(i).strip() for i in items):
            if item:
                for name in (KOBEST_TASKS if item in ("kobest", "all") else [canonical_task(item)]):
                    if name not in names:
                        names.append(name)
        if not names:
            raise InputError("--tasks is empty; pass e.g. --tasks kobest or --tasks kobest_copa,kobest_boolq")
        return names

    @property
    def shots(self) -> list[int]:
        from ..evaluate import EvalConfig, parse_shots

        given = self.evaluate.get("shots")
        if given in (None, "", []):
            given = next(f for f in dataclasses.fields(EvalConfig) if f.name == "shots").default_factory()
        return parse_shots(given)

    def to_dict(self) -> dict:
        return {"arms": self.arms, "output": str(self.output), "seeds": self.seeds, "bootstrap": self.bootstrap,
                "metric": self.metric, "train": self.train, "evaluate": self.evaluate}


def _field(cls, new: str, old: str) -> str:
    """A config field's name across the rename in progress (output_dir -> output, base -> model)."""
    return new if any(f.name == new for f in dataclasses.fields(cls)) else old


def train_config(config: ExperimentConfig, data: str, output: Path, seed: int):
    """The TrainConfig of one unit (raises the trainer's own one-line errors)."""
    from ..train import TrainConfig

    settings = {k: v for k, v in config.train.items() if k not in ("model", "base") and v is not None}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InputError(f"train setting(s) {', '.join(unknown)} unknown; see kocurate train --help for the settings")
    settings[_field(TrainConfig, "model", "base")] = config.model
    settings[_field(TrainConfig, "output", "output_dir")] = output
    return TrainConfig(data=data, seed=seed, overwrite=True, **settings)


def eval_config(config: ExperimentConfig, adapter: Path | None, output: Path | None):
    from ..evaluate import EvalConfig

    settings = {k: v for k, v in config.evaluate.items() if v is not None and k not in EVAL_EXCLUDE}
    known = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InputError(f"evaluate setting(s) {', '.join(unknown)} unknown; see kocurate evaluate --help for the settings")
    for name in SHARED:
        if name in known and name not in settings and config.train.get(name) is not None:
            settings[name] = config.train[name]
    settings.update(tasks=config.tasks, shots=config.shots)
    if "overwrite" in known:
        settings["overwrite"] = True  # a unit's own eval folder, re-evaluated only when its stamp is stale
    # seed None: the protocol's own few-shot seed, so every arm sees the same prompts
    settings[_field(EvalConfig, "output", "output_dir")] = None if output is None else str(output)
    return EvalConfig(model=config.model, adapter=None if adapter is None else str(adapter), seed=None, **settings)


def check_settings(config: ExperimentConfig, arms: list[ArmSpec]) -> None:
    """Build one TrainConfig and one EvalConfig now, so a bad setting fails before any training."""
    data = next((a.data for a in arms if a.data), None) or "probe"
    train_config(config, data, config.output / "probe", config.seeds[0])
    try:
        eval_config(config, None, None)
    except InputError as exc:  # the evaluator's flag is --eval-batch-size here
        raise InputError(str(exc).replace("--batch-size", "--eval-batch-size")) from None


# ---------------------------------------------------------------------------------------------
# one config from three sources: a config file (sections train: and evaluate:), then the flags


def option_layout() -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]:
    """(TrainConfig fields left out, EvalConfig fields left out, EvalConfig flag renames) of the
    train-eval command: an evaluation flag that a training flag already spells is renamed (batch
    size) or taken from training (SHARED)."""
    from ..config import cli_fields
    from ..evaluate import EvalConfig
    from ..train import TrainConfig

    rename = {"batch_size": "--eval-batch-size"}
    taken = {f.metadata["flag"] for f in cli_fields(TrainConfig) if f.name not in TRAIN_EXCLUDE}
    taken |= {f.metadata["flag"] for f in cli_fields(ExperimentConfig)}
    eval_exclude = tuple(EVAL_EXCLUDE) + tuple(
        f.name for f in cli_fields(EvalConfig)
        if f.name not in EVAL_EXCLUDE and rename.get(f.name, f.metadata["flag"]) in taken)
    return TRAIN_EXCLUDE, eval_exclude, rename


def _section(values, source: str) -> dict:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InputError(f"{source}: must be a mapping of setting: value, not a {type(values).__name__}")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def build_config(config_file: Path | None, arms: list[str] | tuple, flags: dict) -> ExperimentConfig:
    """The experiment's settings: `config_file` (top-level experiment keys and `model`, a `train:`
    section of TrainConfig fields, an `evaluate:` section of EvalConfig fields), then every flag
    given (not None) on top. `flags` keys: experiment fields, `train_<field>`, `eval_<field>`."""
    from ..config import pick_fields, read_config_file
    from ..evaluate import EvalConfig
    from ..train import TrainConfig

    source = str(config_file)
    top = read_config_file(config_file) if config_file else {}
    train = pick_fields(TrainConfig, _section(top.pop("train", None), f"{source}: train"), source=f"{source}: train")
    evaluate = pick_fields(EvalConfig, _section(top.pop("evaluate", None), f"{source}: evaluate"),
                           source=f"{source}: evaluate")
    for name in ("model", "base"):
        if name in top:
            train["model"] = top.pop(name)
    names = {f.name for f in dataclasses.fields(ExperimentConfig)} - {"train", "evaluate"}
    unknown = sorted(set(top) - names)
    if unknown:
        raise InputError(f"{source}: unknown setting(s) {', '.join(unknown)}; the top level takes "
                         f"{', '.join(sorted(names | {'model'}))}, and the sections train: and evaluate:")
    experiment = dict(top)
    for key, value in flags.items():
        if value is None:
            continue
        if key.startswith("train_"):
            train[key.removeprefix("train_")] = value
        elif key.startswith("eval_"):
            evaluate[key.removeprefix("eval_")] = value
        elif key in names:
            experiment[key] = value
    for name in TRAIN_EXCLUDE:
        if name in train:
            raise InputError(f"{source}: train: {name} is set by train-eval itself (per arm and seed); remove it")
    if arms:
        experiment["arms"] = list(arms)
    return ExperimentConfig(**experiment, train=train, evaluate=evaluate)
