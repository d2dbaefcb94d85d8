"""`kocurate train`: a LoRA / IA3 adapter on a curated set, trained by TRL's SFTTrainer.

Options are generated from TrainConfig (kocurate.cli.options.config_options); only the pure-Python
config module is imported here, so `kocurate --help` stays fast.
"""

from __future__ import annotations

import os

import click
from rich.table import Table

from ..train.config import TrainConfig, parse_sft_args
from .options import config_file_option, config_options, config_values
from .render import console

EPILOG = """\b
Examples:
  kocurate train out/koquality-1pct --model EleutherAI/polyglot-ko-1.3b --method lora -o out/lora
  kocurate train out/koalpaca --model EleutherAI/polyglot-ko-5.8b --method ia3 \\
      --template koalpaca --dry-run          # 802,816 trainable, no weights loaded, no -o needed
  kocurate train out/kopen --model beomi/llama-2-ko-7b --load-in-4bit --gradient-checkpointing -o out/qlora
  kocurate train out/kopen --model ... -o out/lora --resume --max-steps 2000   # continue a run
  kocurate train out/kopen --model ... -o out/lora --sft-arg optim=adamw_torch_fused \\
      --sft-arg lr_scheduler_kwargs='{min_lr: 1.0e-5}' --report-to tensorboard

\b
Multi-GPU (same flags; the Trainer wraps the model in DDP):
  accelerate launch --num_processes 8 $(which kocurate) train out/kopen --model ... -o out/ddp
  accelerate launch --num_processes 8 $(which kocurate) train ... --deepspeed zero2
      # DeepSpeed ZeRO-2 (optimizer state and gradients sharded), config shipped as
      # kocurate/train/deepspeed_zero2.json ("auto" values filled from these flags); needs
      # pip install deepspeed. --deepspeed FILE takes your own config.

\b
Engine: TRL's SFTTrainer with a PEFT LoraConfig / IA3Config. Each row is rendered by --template
into a prompt / completion pair; the loss is on the completion and its EOS only (TRL's
completion_only_loss) unless --train-on-inputs. Checkpoints are Trainer checkpoints in
OUT/checkpoints (--resume continues from the newest).

\b
Other SFTConfig settings: every trl.SFTConfig / transformers.TrainingArguments field that has no
flag here is reachable with --sft-arg KEY=VALUE (repeatable; VALUE read as YAML) or as a key of
the --config file, e.g. optim, adam_beta2, lr_scheduler_kwargs, neftune_noise_alpha, loss_type,
padding_free, packing_strategy, dataset_num_proc, torch_compile, ddp_timeout, fsdp, fsdp_config,
model_init_kwargs, logging_dir, run_name, push_to_hub. Settings a flag owns (batch size, lr,
schedule, max length, packing, output, seed, precision, ...) are refused there: use the flag.

\b
Templates (the strings the originals trained with):
  alpaca     Platypus / KO-Platypus: "Below is an instruction ... ### Response:"
  koalpaca   "### 질문: {instruction}\\n\\n### 답변: {output}"
  kullm      "아래는 작업을 설명하는 명령어입니다. ... ### 응답:\\n"
  koquality  "### 질문: {instruction}### 답변: {output}"
  cot        "{instruction}\\n\\n{rationale} [RESULT] {target}" (CoT-Collection)
  FILE       your own; {output} marks where the completion starts

\b
--packing packs rows into --max-length blocks with TRL's best-fit-decreasing strategy, padding-free:
no pad tokens, position ids restart at every row, so rows never attend to each other (flash
attention's varlen kernels when flash-attn is installed on a GPU, else a block-diagonal mask).
It changes the number of sequences and steps per epoch, not what each row is trained on.

\b
OUT gets adapter_model.safetensors + adapter_config.json (load with
peft.PeftModel.from_pretrained(base, OUT)), the tokenizer, README.md (a model card: base, data and
its fingerprint, method, hyper-parameters, figures), train_report.json (data fingerprint, config,
loss, tokens/s, peak memory, MFU), train_log.jsonl and checkpoints/. A lock (.OUT.lock beside
OUT) keeps a second run out of the same folder while this one runs.
"""


@click.command("train", epilog=EPILOG)
@config_options(TrainConfig)
@click.option("--sft-arg", "sft_arg", multiple=True, metavar="KEY=VALUE",
              help="Any other SFTConfig setting (repeatable), e.g. --sft-arg optim=adamw_torch_fused.")
@config_file_option
@click.option("--output-dir", "old_output_dir", hidden=True, default=None)
def train_cmd(config_file, sft_arg, old_output_dir, **values):
    """Train a LoRA or IA3 adapter of MODEL on DATA with TRL's SFTTrainer and write it to OUT.

    DATA is a dataset folder written by kocurate, a jsonl/json/parquet/csv file, or a Hub id;
    MODEL a Hub id or a local folder. PEFT's own target modules per architecture are the default
    (polyglot-ko / GPT-NeoX: query_key_value; Llama: q_proj, v_proj), so the parameter counts
    match published runs. bf16 turns on by itself on a GPU that supports it.
    """
    from ..errors import InputError
    from ..train import train

    if old_output_dir is not None:
        raise InputError(f"--output-dir {old_output_dir}: the flag is now -o/--output (one vocabulary); "
                         f"pass -o {old_output_dir}")
    config = TrainConfig(**train_settings(values, config_file, sft_arg))
    card = None
    if not config.dry_run:
        from ..publish.model_card import render_model_card

        card = render_model_card
    result = train(config, progress=True, render_card=card)
    if os.environ.get("RANK", "0") != "0":  # under accelerate launch / torchrun only the main process reports
        return
    if config.dry_run:
        _print_dry_run(result.report)
    else:
        _print_summary(result)


def train_settings(values: dict, config_file, sft_arg) -> dict:
    """TrainConfig settings: the --config file's, then the flags given on top. A file key that is
    no TrainConfig field (nor flag spelling) is an SFTConfig setting, as is everything under its
    `sft_args:` mapping; TRL's names are checked when the run starts."""
    from ..config import pick_fields, read_config_file
    from ..errors import InputError

    settings: dict = {}
    sft_args: dict = {}
    if config_file:
        raw = read_config_file(config_file)
        nested = raw.pop("sft_args", None) or {}
        if not isinstance(nested, dict):
            raise InputError(f"{config_file}: sft_args must be a mapping of SFTConfig setting: value")
        for key, value in raw.items():
            picked = pick_fields(TrainConfig, {key: value}, source=str(config_file), strict=False)
            if picked:
                settings.update(picked)
            else:
                sft_args[key] = value
        sft_args.update(nested)
    settings.update(config_values(TrainConfig, values, None))
    sft_args.update(parse_sft_args(sft_arg))
    if sft_args:
        settings["sft_args"] = sft_args
    return settings


def _print_dry_run(report: dict) -> None:
    params = report["params"]
    table = Table(title=f"dry run: {report['model']} ({report['model_type']}), {report['method']}", title_justify="left",
                  show_header=False)
    if report.get("rows") is not None:
        table.add_row("rows in DATA", f"{report['rows']:,}")
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
    if r["first_loss"] is not None and r["final_loss"] is not None:
        table.add_row("loss first -> final", f"{r['first_loss']:.4f} -> {r['final_loss']:.4f}")
    table.add_row("tokens (non-pad) / completion tokens", f"{r['tokens']:,} / {r['label_tokens']:,}")
    table.add_row("seconds in steps", f"{r['seconds']:,.1f}")
    if r["tokens_per_second"] is not None:
        table.add_row("tokens per second", f"{r['tokens_per_second']:,.0f}")
    table.add_row(f"peak memory ({r['peak_memory_kind']})", f"{r['peak_memory_bytes'] / 2**30:,.2f} GiB")
    table.add_row("MFU (bf16 peak, 6N convention)", f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (no known GPU peak)")
    table.add_row("device", f"{r['environment']['device']} x{r['environment']['processes']}"
                  + (", bf16" if r["environment"]["bf16"] else ""))
    console.print(table)
    console.print(f"wrote [bold]{result.adapter_dir}[/] (adapter, README.md, train_report.json"
                  + (f"; merged model in {r['merged_dir']}" if r.get("merged_dir") else "") + ")")


COMMANDS = [train_cmd]
