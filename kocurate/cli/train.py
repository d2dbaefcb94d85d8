"""`kocurate train`: a LoRA / IA3 adapter on a curated set. Options are generated from TrainConfig.

Only the pure-Python config module is imported here; torch, transformers and peft load inside
the command, so `kocurate --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.table import Table

from ..train.config import TrainConfig, cli_fields
from .render import console

_TYPES = {"int": int, "float": float, "str": str}

EPILOG = """\b
Examples:
  kocurate train out/koquality-1pct --base EleutherAI/polyglot-ko-1.3b --method lora -o out/lora
  kocurate train out/koalpaca --base EleutherAI/polyglot-ko-5.8b --method ia3 \\
      --template koalpaca -o out/kgoat --dry-run          # 802,816 trainable, no weights loaded
  kocurate train out/kopen --base beomi/llama-2-ko-7b --load-in-4bit --gradient-checkpointing -o out/qlora
  accelerate launch $(which kocurate) train out/kopen --base ... -o out/ddp  # multi-GPU, same flags
  kocurate train out/kopen --base ... -o out/lora --resume --max-steps 2000  # continue a run

\b
Templates (the strings the originals trained with; loss on the response only unless --train-on-inputs):
  alpaca     Platypus / KO-Platypus: "Below is an instruction ... ### Response:"
  koalpaca   "### 질문: {instruction}\\n\\n### 답변: {output}"
  kullm      "아래는 작업을 설명하는 명령어입니다. ... ### 응답:\\n"
  koquality  "### 질문: {instruction}### 답변: {output}"
  cot        "{instruction}\\n\\n{rationale} [RESULT] {target}" (CoT-Collection)

\b
ADAPTER_DIR gets adapter_model.safetensors + adapter_config.json (load with
peft.PeftModel.from_pretrained(base, ADAPTER_DIR)), the tokenizer, train_report.json (data
fingerprint, config, loss, tokens/s, peak memory, MFU), train_log.jsonl and checkpoints/.
"""


def _option(f):
    meta = f.metadata
    type_name = str(f.type).replace(" | None", "")
    if meta["argument"]:
        return click.argument(f.name, metavar=meta["flag"])
    decls = [d for d in (meta["short"], meta["flag"]) if d] + [f.name]
    help_text = meta["help"]
    if type_name == "bool":
        return click.option(*decls, is_flag=True, default=False, help=help_text)
    kwargs: dict = {"help": help_text, "required": meta.get("required", False)}
    if meta["choices"]:
        kwargs["type"] = click.Choice(meta["choices"])
    elif type_name == "Path":
        kwargs["type"] = click.Path(path_type=Path)
    elif type_name in _TYPES:
        kwargs["type"] = _TYPES[type_name]
    else:  # tuple[str, ...]: a comma-separated list
        kwargs["type"] = str
    if meta["metavar"]:
        kwargs["metavar"] = meta["metavar"]
    if not kwargs["required"] and f.default is not None:
        kwargs["default"] = f.default
        kwargs["show_default"] = True
    return click.option(*decls, **kwargs)


def _with_config_options(func):
    for f in reversed(cli_fields()):
        func = _option(f)(func)
    return func


@click.command("train", epilog=EPILOG)
@_with_config_options
def train_cmd(**values):
    """Train a LoRA or IA3 adapter of MODEL on DATA and write it to ADAPTER_DIR.

    DATA is a dataset folder written by kocurate, a jsonl/json/parquet/csv file, or a Hub id;
    MODEL a Hub id or a local folder. PEFT's own target modules per architecture are the default
    (polyglot-ko / GPT-NeoX: query_key_value; Llama: q_proj, v_proj), so the parameter counts
    match published runs. bf16 turns on by itself on a GPU that supports it.
    """
    from ..train import train

    config = TrainConfig(**values)
    result = train(config, progress=True)
    if os.environ.get("RANK", "0") != "0":  # under accelerate launch / torchrun only the main process reports
        return
    if config.dry_run:
        _print_dry_run(result.report)
    else:
        _print_summary(result)


def _print_dry_run(report: dict) -> None:
    params = report["params"]
    table = Table(title=f"dry run: {report['base']} ({report['model_type']}), {report['method']}", title_justify="left",
                  show_header=False)
    table.add_row("total parameters", f"{params['total']:,}")
    table.add_row("trainable parameters", f"{params['trainable']:,}")
    table.add_row("trainable share", f"{params['trainable_share']:.4%}")
    table.add_row("target modules", f"{', '.join(report['target_modules'])} ({report['targets_from']})")
    if report["feedforward_modules"]:
        table.add_row("feedforward (IA3 scales their input)", ", ".join(report["feedforward_modules"]))
    table.add_row("linear layers in the model", ", ".join(report["linear_layers"]))
    console.print(table)
    layers = Table(title="adapted layers", title_justify="left")
    for name in ("module", "layers", "in", "out"):
        layers.add_column(name, justify="left" if name == "module" else "right")
    for t in params["targeted"]:
        layers.add_row(t["module"], f"{t['count']:,}", f"{t['in_features']:,}", f"{t['out_features']:,}")
    console.print(layers)
    console.print("no weights were loaded (meta device); nothing was written")


def _print_summary(result) -> None:
    r = result.report
    table = Table(title="training summary", title_justify="left", show_header=False)
    table.add_row("rows in / used", f"{r['rows']:,} / {r['rows_used']:,}")
    table.add_row("rows truncated to --max-length", f"{r['rows_truncated']:,}")
    if r["rows_dropped_prompt_too_long"]:
        table.add_row("rows dropped (prompt fills --max-length)", f"{r['rows_dropped_prompt_too_long']:,}")
    table.add_row("sequences" + (" (packed)" if r["packed"] else ""), f"{r['sequences']:,}")
    table.add_row("steps (epochs)", f"{r['steps']:,} ({r['epochs']:g})"
                  + (f", resumed from step {r['resumed_from_step']:,}" if r["resumed_from_step"] else ""))
    table.add_row("trainable / total parameters", f"{r['params']['trainable']:,} / {r['params']['total']:,}")
    table.add_row("loss first -> final", f"{r['first_loss']:.4f} -> {r['final_loss']:.4f}")
    table.add_row("tokens (non-pad) / response tokens", f"{r['tokens']:,} / {r['label_tokens']:,}")
    table.add_row("seconds", f"{r['seconds']:,.1f}")
    table.add_row("tokens per second", f"{r['tokens_per_second']:,.0f}")
    table.add_row(f"peak memory ({r['peak_memory_kind']})", f"{r['peak_memory_bytes'] / 2**30:,.2f} GiB")
    table.add_row("MFU (bf16 peak, 6N convention)", f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (no known GPU peak)")
    table.add_row("device", f"{r['environment']['device']} x{r['environment']['processes']}"
                  + (", bf16" if r["environment"]["bf16"] else ""))
    console.print(table)
    console.print(f"wrote [bold]{result.adapter_dir}[/] (adapter, train_report.json"
                  + (f"; merged model in {r['merged_dir']}" if r.get("merged_dir") else "") + ")")


COMMANDS = [train_cmd]
