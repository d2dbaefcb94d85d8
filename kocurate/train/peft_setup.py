"""PEFT adapters with PEFT's own per-architecture defaults, and the checks around them.

The defaults are read from PEFT's own tables (so they are PEFT's, by construction):
gpt_neox  LoRA query_key_value;  IA3 query_key_value, dense_4h_to_h (feedforward dense_4h_to_h)
llama     LoRA q_proj, v_proj;   IA3 k_proj, v_proj, down_proj      (feedforward down_proj)
On polyglot-ko-5.8b that gives 3,670,016 LoRA (r=8) and 802,816 IA3 parameters: the seed table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..errors import InputError
from .config import TrainConfig


@dataclass
class Targets:
    """The modules an adapter goes on (suffix names, as PEFT matches them)."""

    modules: tuple[str, ...]
    feedforward: tuple[str, ...] = ()
    source: str = "peft default"  # or "--target-modules", "all-linear"


def linear_layer_names(model) -> list[str]:
    """Suffix names of the model's linear layers, output head excluded, in model order."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: list[str] = []
    for name, module in model.named_modules():
        if module is head or not name:
            continue
        kind = type(module).__name__
        if isinstance(module, torch.nn.Linear) or kind in ("Linear4bit", "Linear8bitLt", "Conv1D"):
            suffix = name.rsplit(".", 1)[-1]
            if suffix not in names:
                names.append(suffix)
    return names


def default_targets(model_type: str, method: str) -> Targets | None:
    from peft.utils import constants as c

    if method == "lora":
        modules = c.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
        return Targets(tuple(modules)) if modules else None
    modules = c.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING.get(model_type)
    ff = c.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(model_type, [])
    return Targets(tuple(modules), tuple(ff)) if modules else None


def resolve_targets(model, config: TrainConfig) -> Targets:
    """The target modules for `config` on `model`; every name must match at least one layer."""
    model_type = getattr(model.config, "model_type", "?")
    linear = linear_layer_names(model)
    defaults = default_targets(model_type, config.method)
    if config.target_modules is None:
        if defaults is None:
            raise InputError(f"no PEFT default target modules for model type '{model_type}'; pass --target-modules "
                             f"(its linear layers: {', '.join(linear)}) or all-linear")
        return defaults
    requested = config.target_modules
    if requested == ("all-linear",):
        modules, source = tuple(linear), "all-linear"
    else:
        missing = [name for name in requested if name not in linear and not _matches(model, name)]
        if missing:
            raise InputError(f"--target-modules {','.join(missing)} matches no module of this {model_type} model; "
                             f"its linear layers are: {', '.join(linear)} (or pass all-linear)")
        modules, source = tuple(requested), "--target-modules"
    # IA3 scales the input of feedforward layers and the output of the others; keep PEFT's split.
    ff_default = defaults.feedforward if defaults else ()
    feedforward = tuple(m for m in modules if m in ff_default) if config.method == "ia3" else ()
    return Targets(modules, feedforward, source)


def _matches(model, key: str) -> bool:
    return any(name == key or name.endswith("." + key) for name, _ in model.named_modules())


def peft_config(config: TrainConfig, targets: Targets):
    from peft import IA3Config, LoraConfig, TaskType

    if config.method == "lora":
        return LoraConfig(task_type=TaskType.CAUSAL_LM, r=config.lora_r, lora_alpha=config.lora_alpha,
                          lora_dropout=config.lora_dropout, target_modules=list(targets.modules), bias="none")
    return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=list(targets.modules),
                     feedforward_modules=list(targets.feedforward))


def wrap(model, config: TrainConfig):
    """Put the adapter on `model`; returns (peft_model, targets)."""
    import warnings

    from peft import get_peft_model

    targets = resolve_targets(model, config)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # peft calls a deprecated transformers alias
        peft_model = get_peft_model(model, peft_config(config, targets))
    return peft_model, targets


@dataclass
class ParamCount:
    total: int
    trainable: int
    #: (module suffix, how many, in_features, out_features) of every adapted layer kind
    targeted: list[tuple[str, int, int, int]]

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {"total": self.total, "trainable": self.trainable, "trainable_share": self.share,
                "targeted": [{"module": m, "count": n, "in_features": i, "out_features": o}
                             for m, n, i, o in self.targeted]}


def count_params(peft_model) -> ParamCount:
    """Total and trainable parameters (4-bit weights counted by their real element count)."""
    trainable, total = peft_model.get_nb_trainable_parameters()
    kinds: Counter = Counter()
    shapes: dict[str, tuple[int, int]] = {}
    for name, module in peft_model.named_modules():
        base = getattr(module, "base_layer", None)
        if base is None or not hasattr(module, "active_adapters"):
            continue
        suffix = name.rsplit(".", 1)[-1]
        kinds[suffix] += 1
        shapes[suffix] = (getattr(base, "in_features", 0), getattr(base, "out_features", 0))
    targeted = [(m, n, *shapes[m]) for m, n in kinds.items()]
    return ParamCount(int(total), int(trainable), targeted)
