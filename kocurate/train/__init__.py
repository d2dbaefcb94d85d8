"""PEFT (LoRA / IA3) supervised fine-tuning on a curated dataset, on TRL's SFTTrainer: `kocurate train`.

    from kocurate.train import TrainConfig, train
    result = train(TrainConfig(data="out/koquality-1pct", model="EleutherAI/polyglot-ko-1.3b",
                               method="ia3", output="out/adapters/ia3", template="koalpaca"))
    result.adapter_dir, result.report["final_loss"], result.report["tokens_per_second"]

Importing this package is cheap: torch, transformers, peft and TRL load when `train` runs.
"""

from __future__ import annotations

from .config import TrainConfig, TrainResult
from .templates import TEMPLATES, Template, get_template


def train(config: TrainConfig, progress: bool | None = None, *, keep_model: bool = False,
          render_card=None) -> TrainResult:
    """Train an adapter as `config` says (or, with `dry_run`, count parameters on the meta device).

    Returns a `TrainResult`: `adapter_dir` and `report` (the content of train_report.json).
    `progress` shows the Trainer's progress bar (default: when stderr is a terminal); `keep_model`
    hands back the trained PeftModel in `result.model`; `render_card(report, adapter_dir) -> str`
    writes the adapter folder's README.md (kocurate.publish.model_card.render_model_card).
    """
    from .sft import train as _train

    return _train(config, progress=progress, keep_model=keep_model, render_card=render_card)


__all__ = ["TEMPLATES", "Template", "TrainConfig", "TrainResult", "get_template", "train"]
