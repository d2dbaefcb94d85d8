"""Supervised fine-tuning of a PEFT adapter on TRL's `SFTTrainer`: kocurate owns no training loop.

    train(config)
      1. the output folder: the house lock on it, then a new run, `--resume` of the run there, or `--overwrite`
      2. rows -> template -> (prompt, completion) -> token ids + TRL `completion_mask`, cut to --max-length
      3. the base through the one causal-LM loader (kocurate.lm), a PEFT LoraConfig / IA3Config
      4. `SFTTrainer(args=SFTConfig(...), peft_config=...)`: TRL builds the labels (completion-only
         loss), packs (--packing: best-fit decreasing, padding-free, position ids restart per row),
         runs the loop, writes Trainer checkpoints to OUT/checkpoints and resumes from them
      5. a TrainerCallback measures tokens/s, peak memory and MFU; the adapter, train_report.json,
         an optional model card, --merge

`TrainConfig` maps onto `SFTConfig` in `sft_config_values`; any other SFTConfig setting comes
from `config.sft_args`. Multi-GPU: `accelerate launch $(which kocurate) train ...` (DDP), or with
`--deepspeed zero2` (kocurate/train/deepspeed_zero2.json). Nothing else changes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import resource
import shutil
import sys
import time
import warnings
from pathlib import Path

from ..errors import InputError, KocurateError, first_line
from ..records import load_records, parse_mapping
from .config import RESUMABLE, TrainConfig, TrainResult
from .templates import Encoded, check_max_length, completion_mask, encode_rows, get_template

REPORT = "train_report.json"
LOG = "train_log.jsonl"
RUN = "train_run.json"  # the config and data fingerprint a --resume must match
CHECKPOINTS = "checkpoints"
DEEPSPEED_ZERO2 = Path(__file__).with_name("deepspeed_zero2.json")

#: Dense bf16 peak FLOPS by GPU name (vendor datasheets), for the MFU estimate.
PEAK_BF16_FLOPS = [
    ("H200", 989e12), ("H100", 989e12), ("GH200", 989e12), ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12),
    ("A6000", 155e12), ("L4", 121e12), ("A10", 125e12), ("4090", 165e12), ("3090", 71e12), ("V100", 125e12),
    ("T4", 65e12),
]

#: SFTConfig settings that TrainConfig owns: `--sft-arg` may not set them (one source per setting).
OWNED = {
    "output_dir": "-o/--output", "per_device_train_batch_size": "--batch-size",
    "gradient_accumulation_steps": "--grad-accum", "num_train_epochs": "--epochs", "max_steps": "--max-steps",
    "learning_rate": "--learning-rate", "lr_scheduler_type": "--lr-scheduler", "warmup_steps": "--warmup-ratio",
    "warmup_ratio": "--warmup-ratio", "weight_decay": "--weight-decay", "max_grad_norm": "--max-grad-norm",
    "seed": "--seed", "bf16": "--bf16", "gradient_checkpointing": "--gradient-checkpointing",
    "logging_steps": "--logging-steps", "save_steps": "--save-steps", "save_total_limit": "--save-total-limit",
    "report_to": "--report-to", "max_length": "--max-length", "packing": "--packing",
    "completion_only_loss": "--train-on-inputs", "deepspeed": "--deepspeed", "resume_from_checkpoint": "--resume",
    "use_cpu": "(automatic: CPU when no GPU is visible)",
}

_SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def train(config: TrainConfig, *, progress: bool | None = None, keep_model: bool = False,
          render_card=None) -> TrainResult:
    """Train a LoRA / IA3 adapter as `config` says; returns where it is and its report.

    `render_card(report: dict, adapter_dir: Path) -> str`, when given, writes the folder's README.md
    (kocurate.publish.model_card.render_model_card); PEFT's blank template is never left there.
    """
    if config.dry_run:
        from .dry_run import dry_run

        return TrainResult(adapter_dir=None, report=dry_run(config).to_dict())
    out = Path(config.output).resolve()
    check_not_inside_inputs(config, out)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with output_lock(out, enabled=main_rank):
        return _train(config, out, progress=progress, keep_model=keep_model, render_card=render_card)


# ------------------------------------------------------------------------------------------------
# 1. the output folder


def check_not_inside_inputs(config: TrainConfig, out: Path) -> None:
    for name, given in (("DATA", config.data), ("--model", config.model)):
        src = Path(given)
        if src.exists() and (src.resolve() == out or src.resolve() in out.parents or out in src.resolve().parents):
            raise InputError(f"{out}: the adapter folder would be written over or inside {name} {given}; choose another -o")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another -o")


@contextlib.contextmanager
def output_lock(out: Path, *, enabled: bool = True):
    """The house lock on OUT (kocurate.records.output_lock: `.NAME.lock` beside it, fcntl.flock) for
    the whole run, so a second `train` into the same folder fails at once instead of both reporting
    success. Under torchrun / accelerate launch only the main process takes it."""
    if not enabled:
        yield
        return
    from ..records import output_lock as house_lock

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create its parent folder ({exc.strerror}); choose another -o") from None
    with house_lock(out):
        yield


def contents(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.is_dir() else []


def last_checkpoint(out: Path) -> Path | None:
    """The newest complete Trainer checkpoint in OUT/checkpoints (a save killed half-way has no trainer_state.json)."""
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = []
    for p in folder.iterdir():
        name, _, step = p.name.partition("-")
        if name == "checkpoint" and step.isdigit() and (p / "trainer_state.json").is_file():
            found.append((int(step), p))
    return max(found)[1] if found else None


def check_output(config: TrainConfig, out: Path) -> tuple[Path | None, bool]:
    """(checkpoint to resume from or None, whether an old run is to be replaced); one-line errors otherwise."""
    held = contents(out)
    if config.resume:
        checkpoint = last_checkpoint(out)
        if checkpoint is None:
            raise InputError(f"{out}: no checkpoint to resume from ({CHECKPOINTS}/checkpoint-N is missing); "
                             "drop --resume to start a new run")
        return checkpoint, False
    if held:
        if config.overwrite:
            return None, True
        raise InputError(f"{out}: holds another run ({', '.join(held[:4])}); pass --resume to continue it, "
                         "--overwrite to replace it, or choose another -o")
    return None, False


def check_resume(out: Path, checkpoint: Path, config: TrainConfig, fingerprint: str) -> int:
    """The checkpoint's step, after checking the run there is this one (same settings, same data)."""
    run_file = out / RUN
    if run_file.is_file():
        try:
            saved = json.loads(run_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise InputError(f"{run_file}: unreadable; the run cannot be checked, start a new one with --overwrite") from None
        now = config.to_dict()
        for key, value in (saved.get("config") or {}).items():
            if key in RESUMABLE or key not in now or now[key] == value:
                continue
            raise InputError(f"{out}: --resume with {key}={now[key]!r}, but the run was started with {value!r}; "
                             "pass the same value (or start a new run with another -o)")
        if saved.get("data_fingerprint") != fingerprint:
            raise InputError(f"{out}: --resume on different data ({config.data} changed since the run started); "
                             "resume with the same data, or start a new run with another -o")
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return int(state.get("global_step", 0))
    except (UnicodeDecodeError, ValueError, TypeError):
        raise InputError(f"{checkpoint}: its trainer_state.json is unreadable; delete that checkpoint folder "
                         "to resume from the one before") from None


def total_steps(config: TrainConfig, trainer) -> int:
    """Optimizer steps the run takes, counted as the Trainer counts them (packed blocks, processes)."""
    if config.max_steps:
        return config.max_steps
    batches = len(trainer.get_train_dataloader())
    per_epoch = max(1, batches // config.grad_accum + int(batches % config.grad_accum > 0))
    return max(1, math.ceil(config.epochs * per_epoch))


# ------------------------------------------------------------------------------------------------
# the run


def _train(config: TrainConfig, out: Path, *, progress, keep_model: bool, render_card) -> TrainResult:
    import torch

    cuda = torch.cuda.is_available()
    use_bf16 = config.bf16 == "true" or (config.bf16 == "auto" and cuda and torch.cuda.is_bf16_supported())
    if use_bf16 and not cuda and config.bf16 == "true":
        warnings.warn("--bf16 true on CPU: bfloat16 autocast on CPU is slow; use --bf16 auto", stacklevel=3)
    resume_from, replace = check_output(config, out)

    # ---- 2. data: rows -> (prompt, completion) -> ids + completion mask ---------------------------
    started = time.perf_counter()
    loaded = load_records(config.data, preset=config.preset, mapping=parse_mapping(config.mapping), split=config.split)
    if loaded.frame.height == 0:
        raise InputError(f"{config.data}: no rows to train on")
    template = get_template(config.template)
    from ..lm import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(config.model, padding_side="right")
    check_max_length(template, tokenizer, config.max_length)
    encoded = encode_rows(loaded.frame.to_dicts(), template, tokenizer, config.max_length,
                          train_on_inputs=config.train_on_inputs)
    if not encoded.input_ids:
        raise InputError(f"{config.data}: every row's prompt fills --max-length {config.max_length}; raise --max-length")
    data_seconds = time.perf_counter() - started
    from .dry_run import dry_run

    dry_run(config, check_data=False)  # target modules checked on the meta device, before loading weights

    # ---- 3a. the SFTConfig (it also sets up the process group under accelerate launch / torchrun) -----
    show = (sys.stderr.isatty() if progress is None else progress)
    sft_args = build_sft_config(config, out, use_bf16, cuda, show)
    world = sft_args.world_size
    start_step = 0
    if resume_from is not None:  # settings and data checked before minutes of loading weights
        start_step = check_resume(out, resume_from, config, loaded.info.fingerprint)

    # ---- 3b. model + PEFT config -------------------------------------------------------------------
    dtype = "bfloat16" if use_bf16 else "float32"
    attn = attention_implementation(config, cuda, use_bf16)
    extra = {"attn_implementation": attn} if attn else {}
    model, _, _, _ = load_causal_lm(config.model, device="cuda" if cuda else "cpu", dtype=dtype,
                                    load_in_4bit=config.load_in_4bit, place=False, **extra)
    model.config.use_cache = False
    if config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    from .peft_setup import count_params, peft_config, resolve_targets

    targets = resolve_targets(model, config)
    peft = peft_config(config, targets)

    # ---- 4. SFTTrainer --------------------------------------------------------------------------------
    dataset = sft_dataset(encoded)
    peak_flops = (config.peak_tflops * 1e12 if config.peak_tflops else lookup_peak_flops()) or None
    callback = ReportCallback(out / LOG, cuda=cuda, peak_flops=peak_flops, world=world)
    trainer = make_trainer(model, sft_args, dataset, tokenizer, peft, callback, show)
    params = count_params(trainer.model)
    callback.flops_per_token = estimate_flops_per_token(trainer.model, params.total, encoded)
    planned = total_steps(config, trainer)
    if start_step >= planned:
        raise InputError(f"{out}: the run is already at step {start_step} of {planned}; raise --max-steps "
                         "(or --epochs) to continue it")
    sft_args.distributed_state.wait_for_everyone()  # every process has looked before any process writes
    if trainer.is_world_process_zero() and resume_from is None:
        if replace:  # --overwrite: the old run goes only now that data, model and adapter are known good
            for name in contents(out):
                target = out / name
                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        out.mkdir(parents=True, exist_ok=True)  # created only now: a run refused earlier leaves nothing
        _write_json_atomic(out / RUN, {"config": config.to_dict(), "data_fingerprint": loaded.info.fingerprint})
    sft_args.distributed_state.wait_for_everyone()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        done_at = last_checkpoint(out)
        raise KocurateError(f"interrupted; {out} holds checkpoints up to {done_at.name if done_at else 'none'}: "
                            "rerun the same command with --resume to continue") from None

    # ---- 5. adapter, report, card, merge ----------------------------------------------------------------
    state = trainer.state
    seconds = callback.seconds
    report = {
        "kocurate_version": _version(),
        "model": config.model,
        "base": config.model,
        "method": config.method,
        "data": loaded.info.to_dict(),
        "data_fingerprint": loaded.info.fingerprint,
        "data_manifest": _manifest_summary(loaded.manifest),
        "template": template.name,
        "rows": loaded.frame.height,
        "rows_used": encoded.rows - encoded.dropped_prompt_too_long,
        "rows_truncated": encoded.truncated,
        "rows_dropped_prompt_too_long": encoded.dropped_prompt_too_long,
        "sequences": len(trainer.train_dataset),
        "packed": config.packing,
        "steps": int(state.global_step),
        "epochs": round(float(state.epoch or 0.0), 4),
        "resumed_from_step": start_step or None,
        "tokens": callback.tokens,
        "label_tokens": encoded.label_tokens,
        "seconds": round(seconds, 3),
        "data_seconds": round(data_seconds, 3),
        "tokens_per_second": round(callback.tokens / seconds, 2) if seconds else None,
        "first_loss": callback.first_loss,
        "final_loss": callback.last.get("loss"),
        "peak_memory_bytes": peak_memory(cuda),
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
        "mfu": (round(callback.tokens / seconds * callback.flops_per_token / (peak_flops * world), 4)
                if peak_flops and seconds else None),
        "flops_per_token": callback.flops_per_token,
        "params": params.to_dict(),
        "target_modules": list(targets.modules),
        "feedforward_modules": list(targets.feedforward),
        "environment": environment(world, use_bf16, config, attn or getattr(model.config, "_attn_implementation", None)),
        "config": config.to_dict() | {"learning_rate_used": config.lr},
        "sft_config": {k: v for k, v in sft_config_values(config, out, use_bf16, cuda, show).items()
                       if k not in ("output_dir", "disable_tqdm")} | {"extra": config.sft_args},
    }
    sft_args.distributed_state.wait_for_everyone()
    if trainer.is_world_process_zero():
        write_adapter(trainer.model, tokenizer, out)
        if config.merge:
            del model
            trainer.model = None
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            report["merged_dir"] = str(merge_adapter(config.model, out, tokenizer))
        _write_json_atomic(out / REPORT, report)
        if render_card is not None:
            _write_text_atomic(out / "README.md", render_card(report, out))
    sft_args.distributed_state.wait_for_everyone()
    kept_model = trainer.model if keep_model and not config.merge else None
    return TrainResult(adapter_dir=out, report=report, model=kept_model)


# ------------------------------------------------------------------------------------------------
# SFTConfig


def sft_config_values(config: TrainConfig, out: Path, use_bf16: bool, cuda: bool, show: bool) -> dict:
    """The SFTConfig settings a TrainConfig stands for (before `sft_args` are laid on top)."""
    values = {
        "output_dir": str(out / CHECKPOINTS),
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "num_train_epochs": float(config.epochs),
        "max_steps": config.max_steps or -1,
        "learning_rate": config.lr,
        "lr_scheduler_type": _SCHEDULERS[config.lr_scheduler],
        "warmup_steps": float(config.warmup_ratio),  # a float in [0, 1) is a share of the steps
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "seed": config.seed,
        "bf16": use_bf16,
        "fp16": False,
        "gradient_checkpointing": config.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if config.gradient_checkpointing else None,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "report_to": [r.strip() for r in config.report_to.split(",") if r.strip()] or "none",
        "max_length": config.max_length,
        "packing": config.packing,
        "packing_strategy": "bfd",
        "completion_only_loss": not config.train_on_inputs,
        "use_cpu": not cuda,
        "disable_tqdm": not show,
        "dataloader_num_workers": 0,
    }
    if values["report_to"] == ["none"]:
        values["report_to"] = "none"
    if config.deepspeed:
        values["deepspeed"] = resolve_deepspeed(config.deepspeed)
    return values


def build_sft_config(config: TrainConfig, out: Path, use_bf16: bool, cuda: bool, show: bool):
    """`SFTConfig` from the TrainConfig, with `config.sft_args` on top; one-line errors for bad keys or values."""
    import dataclasses
    import difflib

    from trl import SFTConfig

    values = sft_config_values(config, out, use_bf16, cuda, show)
    known = {f.name for f in dataclasses.fields(SFTConfig)}
    for key, value in config.sft_args.items():
        if key in OWNED:
            raise InputError(f"--sft-arg {key}: kocurate sets it from {OWNED[key]}; use that flag instead")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise InputError(f"--sft-arg {key}: not an SFTConfig setting{hint}; see trl.SFTConfig for the names")
        values[key] = value
    if values.get("padding_free") and not values["packing"]:
        values["max_length"] = None  # rows are already cut to --max-length; TRL refuses to cut padding-free rows
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            return SFTConfig(**values)
    except (ValueError, TypeError, ImportError) as exc:
        raise InputError(f"SFTConfig refused the settings ({first_line(exc)}); check --sft-arg / --config values") from None


def resolve_deepspeed(spec: str) -> str:
    path = DEEPSPEED_ZERO2 if spec == "zero2" else Path(spec)
    if not path.is_file():
        raise InputError(f"--deepspeed {spec}: no such file; pass zero2 (the shipped ZeRO-2 config) or a DeepSpeed JSON file")
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise InputError("--deepspeed needs DeepSpeed: pip install deepspeed (and run under accelerate launch)") from None
    return str(path)


def attention_implementation(config: TrainConfig, cuda: bool, use_bf16: bool) -> str | None:
    """flash_attention_2 for packed rows on a GPU when flash-attn is installed (varlen kernels, no mask)."""
    if "attn_implementation" in (config.sft_args.get("model_init_kwargs") or {}):
        return config.sft_args["model_init_kwargs"]["attn_implementation"]
    if not (cuda and use_bf16 and (config.packing or config.sft_args.get("padding_free"))):
        return None
    import importlib.util

    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else None


def make_trainer(model, args, dataset, tokenizer, peft, callback, show: bool):
    import datasets
    from trl import SFTTrainer

    quiet = not show and not datasets.utils.logging.is_progress_bar_enabled()
    if not show:
        datasets.utils.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # peft calls a deprecated transformers alias
            trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                 peft_config=peft, callbacks=[callback] if callback is not None else None)
    except (ValueError, RuntimeError, ImportError) as exc:  # e.g. --report-to tensorboard without tensorboard
        raise InputError(f"SFTTrainer refused the run ({first_line(exc)}); check --report-to, --sft-arg and "
                         "--config values") from None
    finally:
        if not show and not quiet:
            datasets.utils.logging.enable_progress_bar()
    if not show:  # without a progress bar the Trainer would print every log dict
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def sft_dataset(encoded: Encoded):
    """The pre-tokenized dataset SFTTrainer takes: `input_ids` and TRL's `completion_mask` (TRL turns the
    mask into labels with completion_only_loss, truncates, and packs)."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": encoded.input_ids,
                              "completion_mask": [completion_mask(lab) for lab in encoded.labels]})


# ------------------------------------------------------------------------------------------------
# the report callback: tokens/s, memory, MFU


def _make_report_callback_class():
    from transformers import TrainerCallback

    class _ReportCallback(TrainerCallback):
        """Times each optimizer step (checkpoint writes excluded), reads TRL's `num_tokens` (non-pad tokens,
        all processes) from each log, and adds tokens/s, peak memory and MFU to it; writes OUT/train_log.jsonl."""

        def __init__(self, log_path: Path, *, cuda: bool, peak_flops: float | None, world: int):
            self.log_path, self.cuda, self.peak_flops, self.world = log_path, cuda, peak_flops, world
            self.flops_per_token = 0.0
            self.seconds = 0.0
            self.tokens = 0
            self.first_loss = None
            self.last: dict = {}
            self._window_seconds = 0.0
            self._window_tokens_at = 0
            self._step_started = None

        def on_step_begin(self, args, state, control, **kwargs):
            self._step_started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self.cuda:
                import torch

                torch.cuda.synchronize()
            if self._step_started is not None:
                took = time.perf_counter() - self._step_started
                self.seconds += took
                self._window_seconds += took
                self._step_started = None
            if state.global_step >= state.max_steps:
                control.should_log = True  # the last step is always logged: final_loss is the run's last figure
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            tokens = int(logs.get("num_tokens", 0))
            window_tokens = tokens - self._window_tokens_at
            self._window_tokens_at = tokens
            self.tokens = tokens
            tps = window_tokens / self._window_seconds if self._window_seconds else None
            self._window_seconds = 0.0
            record = {
                "step": state.global_step, "of": state.max_steps, "epoch": round(float(state.epoch or 0), 3),
                "loss": float(logs["loss"]), "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                "tokens_per_second": round(tps, 1) if tps is not None else None,
                "tokens": tokens, "seconds": round(self.seconds, 4),  # this session's totals so far
                "peak_memory_bytes": peak_memory(self.cuda),
                "mfu": (round(tps * self.flops_per_token / (self.peak_flops * self.world), 4)
                        if self.peak_flops and tps else None),
            }
            if self.first_loss is None:
                self.first_loss = record["loss"]
            self.last = record
            if state.is_world_process_zero:
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")

    return _ReportCallback


def ReportCallback(*args, **kwargs):  # noqa: N802 - the class is made on first use (transformers loads lazily)
    global _REPORT_CALLBACK
    if _REPORT_CALLBACK is None:
        _REPORT_CALLBACK = _make_report_callback_class()
    return _REPORT_CALLBACK(*args, **kwargs)


_REPORT_CALLBACK = None


def estimate_flops_per_token(model, total_params: int, encoded: Encoded) -> float:
    """6 N (forward + backward over the non-embedding weights) + 12 L H T for attention (PaLM, app. B).

    With a frozen base the weight gradients of the base are skipped, so the real work is nearer
    4 N; the 6 N convention is kept so the figure compares with published MFUs. T is the mean row
    length (packed rows attend only within themselves).
    """
    cfg = model.config
    embed = 0
    with contextlib.suppress(Exception):
        embed = sum(p.numel() for p in model.get_input_embeddings().parameters())
    layers = getattr(cfg, "num_hidden_layers", 0)
    hidden = getattr(cfg, "hidden_size", 0)
    mean_len = encoded.tokens / max(1, len(encoded.input_ids))
    return float(6 * (total_params - embed) + 12 * layers * hidden * mean_len)


def lookup_peak_flops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, flops in PEAK_BF16_FLOPS:
        if key in name:
            return flops
    return None


def peak_memory(cuda: bool) -> int:
    if cuda:
        import torch

        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


# ------------------------------------------------------------------------------------------------
# outputs


def write_adapter(model, tokenizer, out: Path) -> None:
    """Adapter (and tokenizer) files into `out`; PEFT's blank card is dropped.

    `out` itself cannot go through `output_guard`: it is the run's folder (checkpoints/, train_log.jsonl,
    train_run.json written during the run, the lock `train` holds on it), and PEFT, train-eval and the
    Hub load the adapter from its top level. So the adapter is saved whole into a house temporary
    folder (the guard's, on `out/.adapter`), fsync'd, and only then moved in, one rename per file,
    train_report.json first taken out of the way: an interrupted write leaves no report claiming an
    adapter that is not all there (rerun the command, or `--resume`). The guard removes the temporary
    on any error, and a killed run's temporary on the next write.
    """
    from ..records.folder import output_guard

    with output_guard(out / ".adapter", overwrite=True) as tmp:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").unlink(missing_ok=True)
        _fsync_tree(tmp)
        (out / REPORT).unlink(missing_ok=True)  # rewritten after the adapter; absent means "not finished"
        for item in sorted(tmp.iterdir()):
            target = out / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
        # the guard now renames the empty temporary to out/.adapter: remove it
    with contextlib.suppress(OSError):
        (out / ".adapter").rmdir()


def _fsync_tree(folder: Path) -> None:
    """Flush every file under `folder` to disk, so a rename never publishes a half-written file."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def merge_adapter(base: str, adapter_dir: Path, tokenizer) -> Path:
    """The base with the adapter merged in, saved in 16-bit (bf16 where the GPU has it, else fp16)."""
    import torch
    from peft import PeftModel

    from ..lm import load_causal_lm

    dtype = "bfloat16" if (not torch.cuda.is_available() or torch.cuda.is_bf16_supported()) else "float16"
    model, _, _, _ = load_causal_lm(base, device="cpu", dtype=dtype, place=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # peft calls a deprecated transformers alias
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    from ..records.folder import output_guard

    target = adapter_dir / "merged"
    # the house guard: written whole into a temporary, then swapped in, so `merged/` holds the old
    # or the new model at every instant (never neither, never half of one)
    with output_guard(target, overwrite=True) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _fsync_tree(tmp)
    return target


def environment(world: int, use_bf16: bool, config: TrainConfig, attn: str | None) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "processes": world,
        "bf16": use_bf16,
        "attn_implementation": attn,
        "gradient_checkpointing": config.gradient_checkpointing,
        "load_in_4bit": config.load_in_4bit,
        "deepspeed": config.deepspeed,
        "torch": torch.__version__,
        **{name: _pkg_version(name) for name in ("transformers", "trl", "peft", "accelerate")},
    }


def _manifest_summary(manifest: dict | None) -> dict | None:
    """What the model card cites from a kocurate dataset folder: its fingerprint and steps."""
    if not isinstance(manifest, dict):
        return None
    steps = manifest.get("steps") if isinstance(manifest.get("steps"), list) else []
    return {"data_fingerprint": manifest.get("data_fingerprint"),
            "steps": [s.get("step") or s.get("name") for s in steps if isinstance(s, dict)],
            "rows": manifest.get("rows")}


def _pkg_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _version() -> str:
    from .. import __version__

    return __version__


def _write_json_atomic(path: Path, payload: dict) -> None:
    _write_text_atomic(path, json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n")


def _write_text_atomic(path: Path, text: str) -> None:
    from ..records import write_text_atomic  # the house's one atomic write (fsync, umask)

    write_text_atomic(path, text)
