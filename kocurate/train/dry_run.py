"""`--dry-run`: the model from its config alone, on the meta device (no weights, no memory).

Reads DATA (so a missing or malformed file fails here too, not after the model loads) and
config.json (a local folder, a config.json file, or a Hub id), builds the architecture on
`torch.device("meta")`, puts the adapter on it and counts: total and trainable parameters and
the modules targeted. A 5.8B model costs nothing to inspect this way; no -o is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, first_line
from .config import TrainConfig
from .peft_setup import ParamCount, Targets, count_params, wrap


@dataclass
class DryRun:
    base: str
    model_type: str
    method: str
    params: ParamCount
    targets: Targets
    linear_layers: list[str]
    rows: int | None = None
    data_fingerprint: str | None = None

    def to_dict(self) -> dict:
        return {"dry_run": True, "model": self.base, "base": self.base, "rows": self.rows,
                "data_fingerprint": self.data_fingerprint, "model_type": self.model_type, "method": self.method,
                "params": self.params.to_dict(), "target_modules": list(self.targets.modules),
                "feedforward_modules": list(self.targets.feedforward), "targets_from": self.targets.source,
                "linear_layers": self.linear_layers,
                "total_params": self.params.total, "trainable_params": self.params.trainable}


def load_model_config(base: str):
    """AutoConfig from a folder, a config.json path, or a Hub id; one-line error otherwise."""
    from transformers import AutoConfig

    path = Path(base)
    try:
        if path.is_file():
            import json

            from transformers import CONFIG_MAPPING

            values = json.loads(path.read_text(encoding="utf-8"))
            model_type = values.pop("model_type", None)
            if model_type not in CONFIG_MAPPING:
                raise InputError(f"{path}: model_type '{model_type}' is not a transformers architecture")
            return CONFIG_MAPPING[model_type](**values)
        return AutoConfig.from_pretrained(base)
    except InputError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"--model {base}: could not read the model config ({first}); pass a local model folder, "
                         f"its config.json, or a Hub id you can reach") from None


def dry_run(config: TrainConfig, *, check_data: bool = True) -> DryRun:
    import torch
    from transformers import AutoModelForCausalLM

    from .peft_setup import linear_layer_names
    from .templates import get_template

    rows = fingerprint = None
    if check_data:  # a missing or malformed DATA fails a dry run as it would fail the run
        from ..records import load_records, parse_mapping

        loaded = load_records(config.data, preset=config.preset, mapping=parse_mapping(config.mapping),
                              split=config.split)
        if loaded.frame.height == 0:
            raise InputError(f"{config.data}: no rows to train on")
        rows, fingerprint = loaded.frame.height, loaded.info.fingerprint
    get_template(config.template)  # a typo in --template fails here too, not hours later
    model_config = load_model_config(config.model)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_config)
    except ValueError as exc:
        raise InputError(f"--model {config.model}: not a causal LM architecture ({first_line(exc, 160)})") from None
    linear = linear_layer_names(model)
    peft_model, targets = wrap(model, config)
    return DryRun(config.model, getattr(model_config, "model_type", "?"), config.method, count_params(peft_model),
                  targets, linear, rows, fingerprint)
