"""The model card of an adapter folder written by `kocurate train` (README.md, Hub layout).

`render_model_card(report, adapter_dir)` reads only the run's train_report.json content (and the
adapter's adapter_config.json): the base model, the data and its fingerprint (and the kocurate
folder's manifest steps when the data is one), the PEFT method and hyper-parameters, and the
figures measured in the run. Every line is taken from those two files; nothing is inherited by
name. The YAML metadata is built in Python and dumped with PyYAML, so it is always valid.
Pure Python: no torch, no peft.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _is_hub_id(spec: str | None) -> bool:
    return bool(spec) and bool(_HUB_ID.match(spec)) and not Path(spec).exists()


def _fmt(value, spec: str = ",") -> str:
    if value is None:
        return "n/a"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def render_model_card(report: dict, adapter_dir: str | Path | None = None) -> str:
    """README.md text for the adapter folder of a training run, from its report."""
    import yaml

    adapter_config: dict = {}
    if adapter_dir is not None and (Path(adapter_dir) / "adapter_config.json").is_file():
        try:
            adapter_config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            adapter_config = {}
    model = report.get("model") or report.get("base") or "unknown"
    method = (report.get("method") or "").lower()
    config = report.get("config") or {}
    data = report.get("data") or {}
    env = report.get("environment") or {}
    params = report.get("params") or {}
    method_name = {"lora": "LoRA", "ia3": "IA3"}.get(method, method or "PEFT")

    meta: dict = {"library_name": "peft", "pipeline_tag": "text-generation",
                  "tags": ["kocurate", "trl", "sft", "peft", method or "adapter"]}
    if _is_hub_id(model):
        meta["base_model"] = model
    if data.get("kind") == "hub" and data.get("name"):
        meta["datasets"] = [data["name"]]
    header = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"

    name = Path(str(adapter_dir)).name if adapter_dir is not None else "adapter"
    lines = [f"# {name}", "",
             f"{'An' if method_name[:1] in 'AEIOU' else 'A'} {method_name} adapter of `{model}`, trained with kocurate (TRL `SFTTrainer`, PEFT) on "
             f"`{data.get('name', config.get('data', '?'))}`.", ""]

    lines += ["## Data", "",
              "| | |", "|---|---|",
              f"| source | `{data.get('path', config.get('data', '?'))}` ({data.get('kind', '?')}) |",
              f"| data fingerprint | `{report.get('data_fingerprint', 'n/a')}` |",
              f"| rows in / used | {_fmt(report.get('rows'))} / {_fmt(report.get('rows_used'))} |",
              f"| rows cut to max length | {_fmt(report.get('rows_truncated'))} |",
              f"| rows dropped (prompt fills max length) | {_fmt(report.get('rows_dropped_prompt_too_long'))} |",
              f"| prompt template | `{report.get('template', config.get('template', '?'))}` "
              f"({'loss on prompt and completion' if config.get('train_on_inputs') else 'loss on the completion only'}) |"]
    if data.get("preset"):
        lines.append(f"| preset | `{data['preset']}` |")
    manifest = report.get("data_manifest")
    if manifest:
        steps = [s for s in manifest.get("steps") or [] if s]
        lines.append(f"| kocurate folder manifest | fingerprint `{manifest.get('data_fingerprint') or 'n/a'}`"
                     + (f"; steps: {', '.join(map(str, steps))}" if steps else "") + " |")
    lines.append("")

    targets = report.get("target_modules") or adapter_config.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    lines += ["## Method", "",
              "| | |", "|---|---|",
              f"| base model | `{model}` |",
              f"| method | {method_name} |",
              f"| target modules | {', '.join(f'`{t}`' for t in sorted(targets)) or 'n/a'} |"]
    if method == "lora":
        lines.append(f"| rank / alpha / dropout | {config.get('lora_r')} / {config.get('lora_alpha')} / "
                     f"{config.get('lora_dropout')} |")
    if report.get("feedforward_modules"):
        lines.append(f"| feedforward modules (IA3) | {', '.join(f'`{t}`' for t in report['feedforward_modules'])} |")
    lines.append(f"| trainable / total parameters | {_fmt(params.get('trainable'))} / {_fmt(params.get('total'))} |")
    lines.append("")

    lines += ["## Hyper-parameters", "", "| setting | value |", "|---|---|"]
    shown = [("learning rate", config.get("learning_rate_used", config.get("learning_rate"))),
             ("schedule", f"{config.get('lr_scheduler')}, warmup ratio {config.get('warmup_ratio')}"),
             ("epochs / max steps", f"{config.get('epochs')} / {config.get('max_steps') or '-'}"),
             ("batch size x grad accum x processes",
              f"{config.get('batch_size')} x {config.get('grad_accum')} x {env.get('processes', 1)}"),
             ("max length", config.get("max_length")), ("packing", bool(config.get("packing"))),
             ("weight decay", config.get("weight_decay")), ("max grad norm", config.get("max_grad_norm")),
             ("seed", config.get("seed")), ("bf16", env.get("bf16")),
             ("gradient checkpointing", config.get("gradient_checkpointing")),
             ("4-bit base (QLoRA)", config.get("load_in_4bit"))]
    for key, value in shown:
        lines.append(f"| {key} | {value} |")
    for key, value in sorted((config.get("sft_args") or {}).items()):
        lines.append(f"| SFTConfig `{key}` | `{value}` |")
    lines.append("")

    mfu = report.get("mfu")
    lines += ["## Figures (this run)", "", "| | |", "|---|---|",
              f"| steps (epochs) | {_fmt(report.get('steps'))} ({_fmt(report.get('epochs'), 'g')}) |",
              f"| loss first -> final | {_fmt(report.get('first_loss'), '.4f')} -> {_fmt(report.get('final_loss'), '.4f')} |",
              f"| tokens trained on (non-pad) | {_fmt(report.get('tokens'))} |",
              f"| tokens per second | {_fmt(report.get('tokens_per_second'), ',.0f')} |",
              f"| peak memory | {_fmt((report.get('peak_memory_bytes') or 0) / 2**30, '.2f')} GiB "
              f"({report.get('peak_memory_kind', '?')}) |",
              f"| MFU | {f'{mfu:.1%}' if isinstance(mfu, (int, float)) else 'n/a'} |",
              f"| device | {env.get('device', '?')} x{env.get('processes', 1)} |",
              f"| software | kocurate {report.get('kocurate_version', '?')}, trl {env.get('trl')}, "
              f"transformers {env.get('transformers')}, peft {env.get('peft')}, torch {env.get('torch')} |"]
    if report.get("resumed_from_step"):
        lines.append(f"| resumed from step | {report['resumed_from_step']} |")
    lines.append("")

    lines += ["## Use", "", "```python",
              "from peft import PeftModel",
              "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'base = AutoModelForCausalLM.from_pretrained("{model}")',
              'model = PeftModel.from_pretrained(base, "<this repository or folder>")',
              'tokenizer = AutoTokenizer.from_pretrained("<this repository or folder>")',
              "```", "",
              "The full configuration and figures are in `train_report.json`; the per-step log in `train_log.jsonl`.",
              ""]
    return header + "\n" + "\n".join(lines)


def write_model_card(adapter_dir: str | Path) -> Path:
    """(Re)write README.md of an adapter folder from its train_report.json (for folders trained earlier)."""
    from ..errors import InputError

    folder = Path(adapter_dir)
    report_path = folder / "train_report.json"
    if not report_path.is_file():
        raise InputError(f"{folder}: no train_report.json; is this an adapter folder written by kocurate train?")
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{report_path}: not a readable JSON report ({exc}); retrain or restore the file") from None
    if not isinstance(report, dict):
        raise InputError(f"{report_path}: the report must be a JSON object")
    target = folder / "README.md"
    tmp = target.with_name(".README.md.tmp")
    tmp.write_text(render_model_card(report, folder), encoding="utf-8")
    tmp.replace(target)
    return target
