"""PEFT supervised fine-tuning, as one loop you can read top to bottom (nanoGPT-style).

    train(config)
      1. check the output folder (a new run, or --resume of the run already there)
      2. load rows, render the template, tokenize, mask the prompt, cut to --max-length (pack)
      3. load the base (bf16 on a GPU that has it, 4-bit with --load-in-4bit), put the adapter on
      4. for each optimizer step: grad_accum micro-batches, loss summed over response tokens and
         divided by the step's response tokens (so accumulation and padding never reweight rows),
         clip, AdamW, warmup + cosine; log loss, lr, non-pad tokens/s, peak memory, MFU
      5. checkpoints every --save-steps (adapter, optimizer, RNG, step) and at the end
      6. the adapter, train_report.json (data fingerprint, config, figures), --merge

Multi-GPU: `accelerate launch $(which kocurate) train ...` runs this same code in each process;
`accelerate.Accelerator` wraps the model in DDP and each process takes its share of every
step's micro-batches. Nothing else changes.
"""

from __future__ import annotations

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
from .templates import IGNORE_INDEX, Encoded, check_max_length, encode_rows, get_template

REPORT = "train_report.json"
LOG = "train_log.jsonl"
CHECKPOINTS = "checkpoints"

#: Dense bf16 peak FLOPS by GPU name (vendor datasheets), for the MFU estimate.
PEAK_BF16_FLOPS = [
    ("H200", 989e12), ("H100", 989e12), ("GH200", 989e12), ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12),
    ("A6000", 155e12), ("L4", 121e12), ("A10", 125e12), ("4090", 165e12), ("3090", 71e12), ("V100", 125e12),
    ("T4", 65e12),
]


def train(config: TrainConfig, *, progress: bool | None = None, keep_model: bool = False) -> TrainResult:
    """Train a LoRA / IA3 adapter as `config` says; returns where it is and its report."""
    if config.dry_run:
        from .dry_run import dry_run

        result = dry_run(config)
        return TrainResult(adapter_dir=config.output_dir, report=result.to_dict())

    import torch

    # ---- 1. output folder (every process looks before any process writes) ---------------------
    cuda = torch.cuda.is_available()
    use_bf16 = config.bf16 == "true" or (config.bf16 == "auto" and cuda and torch.cuda.is_bf16_supported())
    if use_bf16 and not cuda and config.bf16 == "true":
        warnings.warn("--bf16 true on CPU: bfloat16 autocast on CPU is slow; use --bf16 auto", stacklevel=2)
    accelerator = make_accelerator(use_bf16, cuda)
    main = accelerator.is_main_process
    world = accelerator.num_processes
    out = config.output_dir.resolve()
    resume_from, replace = check_output_dir(config, out)
    accelerator.wait_for_everyone()

    # ---- 2. data ------------------------------------------------------------------------------
    started = time.perf_counter()
    loaded = load_records(config.data, preset=config.preset, mapping=parse_mapping(config.mapping), split=config.split)
    if loaded.frame.height == 0:
        raise InputError(f"{config.data}: no rows to train on")
    tokenizer = load_tokenizer(config.base)
    template = get_template(config.template)
    check_max_length(template, tokenizer, config.max_length)
    encoded = encode_rows(loaded.frame.to_dicts(), template, tokenizer, config.max_length,
                          train_on_inputs=config.train_on_inputs, packing=config.packing)
    if not encoded.input_ids:
        raise InputError(f"{config.data}: every row's prompt fills --max-length {config.max_length}; raise --max-length")
    data_seconds = time.perf_counter() - started
    from .dry_run import dry_run

    dry_run(config)  # target modules checked on the meta device, before minutes of loading weights

    # ---- 3. model + adapter ---------------------------------------------------------------------
    show = (sys.stderr.isatty() if progress is None else progress) and main
    torch.manual_seed(config.seed)

    model = load_model(config, accelerator, use_bf16)
    from .peft_setup import count_params, wrap

    torch.manual_seed(config.seed)  # adapter init depends on the seed only
    model, targets = wrap(model, config)
    params = count_params(model)
    flops_per_token = estimate_flops_per_token(model, params.total, encoded)
    model = accelerator.prepare(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.999))
    optimizer = accelerator.prepare(optimizer)

    # ---- schedule -------------------------------------------------------------------------------
    per_step = config.batch_size * config.grad_accum * world  # rows per optimizer step
    steps_per_epoch = max(1, math.ceil(len(encoded.input_ids) / per_step))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    warmup = int(config.warmup_ratio * total_steps)

    state = {"step": 0, "seconds": 0.0, "tokens": 0, "label_tokens": 0, "first_loss": None, "resumed_from": []}
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer, accelerator, config, loaded.info.fingerprint)
        if state["step"] >= total_steps:
            raise InputError(f"{out}: the run is already at step {state['step']} of {total_steps}; "
                             f"raise --max-steps (or --epochs) to continue it")
        state["resumed_from"].append(state["step"])
    elif main:
        if replace:  # --overwrite: the old run goes only now that data, model and adapter are known good
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    peak_flops = (config.peak_tflops * 1e12 if config.peak_tflops else lookup_peak_flops()) or None
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    # ---- 4. the loop ------------------------------------------------------------------------------
    model.train()
    bar = make_progress(show, total_steps, state["step"])
    window = new_window()
    last: dict = {}
    session_started = time.perf_counter()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        for step in range(state["step"], total_steps):
            step_started = time.perf_counter()
            micro = step_batches(len(encoded.input_ids), step, steps_per_epoch, config, world, accelerator.process_index)
            lr = lr_at(step, total_steps, warmup, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # every process divides by the step's response tokens over all processes; DDP averages
            local_labels = sum(count_labels(encoded, rows) for rows in micro)
            step_labels = int(accelerator.reduce(torch.tensor(local_labels, device=accelerator.device), "sum").item())
            step_loss_sum = torch.zeros((), device=accelerator.device, dtype=torch.float64)
            step_tokens = 0
            for i, rows in enumerate(micro):
                batch = collate(encoded, rows, pad_id, accelerator.device)
                sync = i == len(micro) - 1
                with (accelerator.no_sync(model) if not sync and world > 1 else _null()):
                    with accelerator.autocast():
                        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                    # targets are the labels shifted left by one (done in collate: no copy of the logits)
                    loss_sum = torch.nn.functional.cross_entropy(
                        logits.flatten(0, 1).float(), batch["targets"].flatten(), ignore_index=IGNORE_INDEX,
                        reduction="sum")
                    accelerator.backward(loss_sum * world / max(step_labels, 1))
                step_loss_sum += loss_sum.detach().double()  # no host sync inside the step
                step_tokens += sum(len(encoded.input_ids[r]) for r in rows)  # non-pad tokens
            grad_norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm) if config.max_grad_norm > 0 else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            figures = torch.stack([step_loss_sum, torch.tensor(float(step_tokens), device=accelerator.device,
                                                               dtype=torch.float64)])
            step_loss_sum, step_tokens = accelerator.reduce(figures, "sum").tolist()
            step_loss = step_loss_sum / max(step_labels, 1)
            step_seconds = time.perf_counter() - step_started  # .tolist() above waited for the GPU
            state["seconds"] += step_seconds
            window["seconds"] += step_seconds
            if state["first_loss"] is None:
                state["first_loss"] = step_loss
            window["loss_sum"] += step_loss_sum
            window["label_tokens"] += step_labels
            window["tokens"] += int(step_tokens)
            window["steps"] += 1
            state["tokens"] += int(step_tokens)
            state["label_tokens"] += step_labels
            done = step + 1
            if done % config.logging_steps == 0 or done == total_steps:
                last = log_window(window, done, total_steps, steps_per_epoch, lr, grad_norm, cuda,
                                  flops_per_token, peak_flops, world)
                if main:
                    with open(out / LOG, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(last) + "\n")
                    if bar is not None:
                        bar[0].console.print(format_log(last))
                window = new_window()
            if bar is not None:
                bar[0].update(bar[1], completed=done, loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
            if done % config.save_steps == 0 or done == total_steps:
                state["step"] = done
                save_checkpoint(out, model, optimizer, accelerator, config, state, loaded.info.fingerprint)
    except KeyboardInterrupt:
        done_at = last_checkpoint(out)
        raise KocurateError(f"interrupted; {out} holds checkpoints up to "
                            f"{done_at.name if done_at else 'none'}: rerun the same command with --resume to continue") from None
    finally:
        if bar is not None:
            bar[0].stop()
    seconds = state["seconds"]  # time in steps, over every session of the run (checkpoint writes excluded)
    wall_seconds = time.perf_counter() - session_started

    # ---- 6. adapter, report, merge ----------------------------------------------------------------------
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    report = {
        "kocurate_version": _version(),
        "base": config.base,
        "method": config.method,
        "data": loaded.info.to_dict() | {"fingerprint": loaded.info.fingerprint},
        "data_fingerprint": loaded.info.fingerprint,
        "template": template.name,
        "rows": loaded.frame.height,
        "rows_used": encoded.rows - encoded.dropped_prompt_too_long,
        "rows_truncated": encoded.truncated,
        "rows_dropped_prompt_too_long": encoded.dropped_prompt_too_long,
        "sequences": len(encoded.input_ids),
        "packed": encoded.packed,
        "steps": total_steps,
        "epochs": round(total_steps / steps_per_epoch, 4),
        "resumed_from_step": state["resumed_from"][-1] if state["resumed_from"] else None,
        "tokens": state["tokens"],
        "label_tokens": state["label_tokens"],
        "seconds": round(seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "data_seconds": round(data_seconds, 3),
        "tokens_per_second": round(state["tokens"] / seconds, 2) if seconds else None,
        "first_loss": state["first_loss"],
        "final_loss": last.get("loss"),
        "peak_memory_bytes": peak_memory(cuda),
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
        "mfu": (round(state["tokens"] / seconds * flops_per_token / (peak_flops * world), 4)
                if peak_flops and seconds else None),
        "flops_per_token": flops_per_token,
        "params": params.to_dict(),
        "target_modules": list(targets.modules),
        "feedforward_modules": list(targets.feedforward),
        "environment": environment(accelerator, use_bf16, config),
        "config": config.to_dict() | {"learning_rate_used": config.lr},
    }
    if main:
        write_adapter(unwrapped, tokenizer, out)
        if config.merge:
            del model, unwrapped, optimizer
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            report["merged_dir"] = str(merge_adapter(config.base, out, tokenizer))
        _write_json_atomic(out / REPORT, report)
    accelerator.wait_for_everyone()
    kept = accelerator.unwrap_model(model) if keep_model and not config.merge else None
    return TrainResult(adapter_dir=out, report=report, model=kept)


# ------------------------------------------------------------------------------------------------
# 1. output folder


def check_output_dir(config: TrainConfig, out: Path) -> tuple[Path | None, bool]:
    """(checkpoint to resume from or None, whether an old run is to be replaced); one-line errors otherwise."""
    for name, given in (("DATA", config.data), ("--base", config.base)):
        src = Path(given)
        if src.exists() and (src.resolve() == out or src.resolve() in out.parents or out in src.resolve().parents):
            raise InputError(f"{out}: the adapter folder would be written over or inside {name} {given}; choose another -o")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another -o")
    busy = out.is_dir() and any(out.iterdir())
    if config.resume:
        checkpoint = last_checkpoint(out)
        if checkpoint is None:
            raise InputError(f"{out}: no checkpoint to resume from ({CHECKPOINTS}/step-* is missing); drop --resume to start a new run")
        return checkpoint, False
    if busy:
        if config.overwrite:
            return None, True
        what = ", ".join(sorted(p.name for p in out.iterdir())[:4])
        raise InputError(f"{out}: holds another run ({what}); pass --resume to continue it, --overwrite to replace it, "
                         f"or choose another -o")
    return None, False


def last_checkpoint(out: Path) -> Path | None:
    # step-NNNNNNN only: a step-NNNNNNN.tmp left by a killed save is not a checkpoint
    found = sorted((out / CHECKPOINTS).glob("step-???????")) if (out / CHECKPOINTS).is_dir() else []
    found = [p for p in found if (p / "trainer_state.json").is_file()]
    return found[-1] if found else None


# ------------------------------------------------------------------------------------------------
# 2-3. tokenizer and model


def make_accelerator(use_bf16: bool, cuda: bool):
    """An Accelerator for this run. Accelerate keeps one global state per process, so a second
    `train()` in the same process (the train-eval experiment runs several arms) that asks for
    another precision would be refused; the precision part of that state is reset first (the
    process group, when launched distributed, is kept)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    try:
        AcceleratorState._reset_state(reset_partial_state=False)
    except AttributeError:  # a future accelerate without it: a mismatch then fails loudly, as before
        pass
    return Accelerator(mixed_precision="bf16" if use_bf16 else "no", cpu=not cuda)


def load_tokenizer(base: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
    except Exception as exc:
        raise InputError(f"--base {base}: could not load its tokenizer ({first_line(exc)}); pass a model folder "
                         f"with tokenizer files, or a Hub id you can reach") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # pads are masked out of attention and loss anyway
    tokenizer.padding_side = "right"
    return tokenizer


def load_model(config: TrainConfig, accelerator, use_bf16: bool):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": torch.bfloat16 if use_bf16 else torch.float32}
    if config.load_in_4bit:
        if not torch.cuda.is_available():
            raise InputError("--load-in-4bit needs a CUDA GPU (bitsandbytes 4-bit kernels); drop the flag on this machine")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise InputError("--load-in-4bit needs bitsandbytes: pip install 'kocurate[qlora]'") from None
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if use_bf16 else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": accelerator.local_process_index}
        kwargs["dtype"] = compute
    try:
        model = AutoModelForCausalLM.from_pretrained(config.base, **kwargs)
    except Exception as exc:
        raise InputError(f"--base {config.base}: could not load the model ({first_line(exc)}); pass a causal LM "
                         f"folder or Hub id") from None
    model.config.use_cache = False
    if config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif config.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


# ------------------------------------------------------------------------------------------------
# 4. batches, loss, schedule


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """A fresh shuffle per epoch that depends on the seed and the epoch only (so resume can replay it)."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def step_batches(n: int, step: int, steps_per_epoch: int, config: TrainConfig, world: int, rank: int) -> list[list[int]]:
    """The micro-batches (lists of sequence indices) this process runs at optimizer `step`."""
    epoch, k = divmod(step, steps_per_epoch)
    order = epoch_order(n, config.seed, epoch)
    per_step = config.batch_size * config.grad_accum * world
    rows = order[k * per_step:(k + 1) * per_step]
    if world > 1 and len(rows) < per_step:  # the epoch's last step: top up so every process gets work
        rows += order[:per_step - len(rows)]
    mine = rows[rank::world]
    return [mine[i:i + config.batch_size] for i in range(0, len(mine), config.batch_size)] or [order[:1]]


def count_labels(encoded: Encoded, rows: list[int]) -> int:
    # labels are shifted by one against logits: the first position never counts
    return sum(sum(1 for t in encoded.labels[r][1:] if t != IGNORE_INDEX) for r in rows)


def collate(encoded: Encoded, rows: list[int], pad_id: int, device) -> dict:
    """Right-pad to the longest row of the micro-batch; pads get attention 0 and target -100.

    `targets[i, t]` is the token position t must predict (labels shifted left by one).
    """
    import torch

    width = max(len(encoded.input_ids[r]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(encoded.input_ids[r])
        ids[i, :n] = torch.tensor(encoded.input_ids[r])
        targets[i, :n - 1] = torch.tensor(encoded.labels[r][1:], dtype=torch.long)
        mask[i, :n] = 1
    return {"input_ids": ids.to(device, non_blocking=True), "targets": targets.to(device, non_blocking=True),
            "attention_mask": mask.to(device, non_blocking=True)}


def lr_at(step: int, total: int, warmup: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine / linear decay to 0 (or constant)."""
    peak = config.lr
    if step < warmup:
        return peak * (step + 1) / warmup
    if config.lr_scheduler == "constant":
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    if config.lr_scheduler == "linear":
        return peak * (1.0 - progress)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------------------------------------
# logging: tokens/s, memory, MFU, progress


def new_window() -> dict:
    return {"loss_sum": 0.0, "label_tokens": 0, "tokens": 0, "seconds": 0.0, "steps": 0}


def estimate_flops_per_token(model, total_params: int, encoded: Encoded) -> float:
    """6 N (forward + backward over the non-embedding weights) + 12 L H T for attention (PaLM, app. B).

    With a frozen base the weight gradients of the base are skipped, so the real work is nearer
    4 N; the 6 N convention is kept so the figure compares with published MFUs.
    """
    cfg = model.config if hasattr(model, "config") else model.module.config
    embed = 0
    try:
        embed = sum(p.numel() for p in model.get_input_embeddings().parameters())
    except Exception:  # a wrapped model
        pass
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


def log_window(window: dict, step: int, total: int, steps_per_epoch: int, lr: float, grad_norm, cuda: bool,
               flops_per_token: float, peak_flops: float | None, world: int) -> dict:
    elapsed = max(window["seconds"], 1e-9)
    tps = window["tokens"] / elapsed
    return {
        "step": step,
        "of": total,
        "epoch": round(step / steps_per_epoch, 3),
        "loss": window["loss_sum"] / max(window["label_tokens"], 1),
        "lr": lr,
        "grad_norm": float(grad_norm) if grad_norm is not None else None,
        "tokens_per_second": round(tps, 1),
        "peak_memory_bytes": peak_memory(cuda),
        "mfu": round(tps * flops_per_token / (peak_flops * world), 4) if peak_flops else None,
    }


def format_log(rec: dict) -> str:
    mfu = f"{rec['mfu']:.1%}" if rec["mfu"] is not None else "n/a"
    return (f"step {rec['step']}/{rec['of']}  loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  "
            f"tok/s {rec['tokens_per_second']:,.0f}  mem {rec['peak_memory_bytes'] / 2**30:.2f} GiB  mfu {mfu}")


def make_progress(show: bool, total: int, start: int):
    if not show:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                   TextColumn("lr {task.fields[lr]}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
    task = bar.add_task("train", total=total, completed=start, loss="-", lr="-")
    bar.start()
    return bar, task


# ------------------------------------------------------------------------------------------------
# 5. checkpoints


def save_checkpoint(out: Path, model, optimizer, accelerator, config: TrainConfig, state: dict, fingerprint: str) -> None:
    import torch

    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    folder = out / CHECKPOINTS / f"step-{state['step']:07d}"
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.unwrap_model(model).save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    torch.save(rng, tmp / "rng.pt")
    _write_json_atomic(tmp / "trainer_state.json", {**state, "config": config.to_dict(), "data_fingerprint": fingerprint})
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    for old in sorted((out / CHECKPOINTS).glob("step-???????"))[:-config.save_total_limit]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path, model, optimizer, accelerator, config: TrainConfig, fingerprint: str) -> dict:
    import torch
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    saved = state.pop("config")
    now = config.to_dict()
    for key, value in saved.items():
        if key in RESUMABLE or key not in now or now[key] == value:
            continue
        raise InputError(f"{folder.parent.parent}: --resume with {key}={now[key]!r}, but the run was started with "
                         f"{value!r}; pass the same value (or start a new run with another -o)")
    if state.pop("data_fingerprint") != fingerprint:
        raise InputError(f"{folder.parent.parent}: --resume on different data ({config.data} changed since the run "
                         f"started); resume with the same data, or start a new run with another -o")
    weights = load_peft_weights(str(folder), device=str(accelerator.device))
    set_peft_model_state_dict(accelerator.unwrap_model(model), weights)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=accelerator.device, weights_only=True))
    rng = torch.load(folder / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state


# ------------------------------------------------------------------------------------------------
# 6. outputs


def write_adapter(model, tokenizer, out: Path) -> None:
    """Adapter (and tokenizer) files into `out`, each replaced in one rename."""
    tmp = out / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for item in tmp.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    tmp.rmdir()


def merge_adapter(base: str, adapter_dir: Path, tokenizer) -> Path:
    """The base with the adapter merged in, saved in 16-bit (bf16 where the GPU has it, else fp16)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if (not torch.cuda.is_available() or torch.cuda.is_bf16_supported()) else torch.float16
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # peft calls a deprecated transformers alias
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    target = adapter_dir / "merged"
    tmp = adapter_dir / ".merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def environment(accelerator, use_bf16: bool, config: TrainConfig) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "processes": accelerator.num_processes,
        "bf16": use_bf16,
        "gradient_checkpointing": config.gradient_checkpointing,
        "load_in_4bit": config.load_in_4bit,
        "torch": torch.__version__,
        "transformers": _pkg_version("transformers"),
        "peft": _pkg_version("peft"),
        "accelerate": _pkg_version("accelerate"),
    }


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


