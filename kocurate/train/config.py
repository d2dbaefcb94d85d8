"""`TrainConfig`: one dataclass whose fields are the `kocurate train` flags, one to one (TRL-style).

Each field declares its flag with `kocurate.config.option`; `kocurate.cli.options.config_options`
turns every field into a click option, and `--config FILE` fills the same fields. The run maps
onto TRL's `SFTConfig` plus a PEFT `LoraConfig` / `IA3Config` (see `kocurate/train/sft.py`);
every other SFTConfig setting goes through `sft_args` (`--sft-arg key=value`, or any SFTConfig
key in the `--config` file). Pure Python: importing this module loads no torch, transformers,
peft or TRL.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import check_count, flag_of, option
from ..errors import InputError

METHODS = ("lora", "ia3")
SCHEDULERS = ("cosine", "linear", "constant")
BF16_CHOICES = ("auto", "true", "false")

#: Fields that may change between a run and its `--resume` (everything else must match).
RESUMABLE = frozenset({
    "epochs", "max_steps", "logging_steps", "save_steps", "save_total_limit", "resume", "overwrite",
    "merge", "dry_run", "peak_tflops", "output", "data", "report_to",  # data: its fingerprint is checked instead
})


def _opt(flag: str, help: str, *, group: str = "training", **kw) -> dict:
    return option(flag, help, group=group, **kw)


@dataclass
class TrainConfig:
    """Everything one `kocurate train` run needs; the CLI flag of each field is in its metadata."""

    # --- what to train on what -------------------------------------------------------------
    data: str = field(default=MISSING, metadata=_opt(  # type: ignore[assignment]
        "DATA", "Dataset folder, jsonl/json/parquet/csv file, or Hub id.", argument=True, group="data"))
    model: str = field(default=MISSING, metadata=_opt(  # type: ignore[assignment]
        "--model", "Base causal LM: Hub id (EleutherAI/polyglot-ko-1.3b) or local folder (--base is an alias).",
        metavar="MODEL", group="model", aliases=("--base",), required=True))
    output: Path | None = field(default=None, metadata=_opt(
        "--output", "Adapter folder to write (adapter, model card, train_report.json, checkpoints/); "
        "required unless --dry-run.", short="-o", metavar="OUT", group="output"))
    method: str = field(default="lora", metadata=_opt(
        "--method", "PEFT method: LoRA, or IA3 (learned scaling vectors, about 5x fewer parameters).",
        choices=METHODS, group="peft"))

    # --- data and prompt -------------------------------------------------------------------
    template: str = field(default="alpaca", metadata=_opt(
        "--template", "Prompt template: alpaca, koalpaca, kullm, koquality, cot, or a template file "
        "(.txt/.json/.yaml with {instruction}, {input}, {output}; {output} marks where the completion starts).",
        metavar="NAME|FILE", group="data"))
    max_length: int = field(default=1024, metadata=_opt(
        "--max-length", "Tokens per row (with --packing: per packed block); longer rows are cut and counted.",
        group="data"))
    train_on_inputs: bool = field(default=False, metadata=_opt(
        "--train-on-inputs", "Also compute the loss on prompt tokens (default: on the completion only, TRL's "
        "completion_only_loss).", group="data"))
    packing: bool = field(default=False, metadata=_opt(
        "--packing", "Pack rows into --max-length blocks (TRL best-fit-decreasing packing, padding-free): no pad "
        "tokens, position ids restart at each row so rows never attend to each other (flash attention uses "
        "varlen kernels when installed, sdpa a block-diagonal mask). Fewer, fuller steps per epoch.",
        group="data"))
    preset: str | None = field(default=None, metadata=_opt(
        "--preset", "Map a known dataset's columns: open-platypus, kopen-platypus, koalpaca, kullm, oig-ko, "
        "cot-collection, koquality.", metavar="NAME", group="data"))
    mapping: str | None = field(default=None, metadata=_opt(
        "--map", "Map other columns onto canonical ones, e.g. --map instruction=question,output=answer.",
        metavar="CANON=COL,...", group="data"))
    split: str = field(default="train", metadata=_opt(
        "--split", "Split to read when DATA is a Hub id.", group="data"))

    # --- schedule --------------------------------------------------------------------------
    epochs: float = field(default=1.0, metadata=_opt("--epochs", "Passes over the data (fractions allowed)."))
    max_steps: int | None = field(default=None, metadata=_opt(
        "--max-steps", "Optimizer steps to run; overrides --epochs.", metavar="N"))
    batch_size: int = field(default=4, metadata=_opt("--batch-size", "Rows (packed blocks) per micro-batch per device."))
    grad_accum: int = field(default=1, metadata=_opt(
        "--grad-accum", "Micro-batches per optimizer step (effective batch = batch-size x grad-accum x GPUs)."))
    learning_rate: float | None = field(default=None, metadata=_opt(
        "--learning-rate", "Peak learning rate [default: 3e-4 for lora, 3e-3 for ia3].", metavar="LR"))
    lr_scheduler: str = field(default="cosine", metadata=_opt(
        "--lr-scheduler", "Decay after linear warmup (constant: constant after warmup).", choices=SCHEDULERS))
    warmup_ratio: float = field(default=0.03, metadata=_opt("--warmup-ratio", "Share of steps spent warming up."))
    weight_decay: float = field(default=0.0, metadata=_opt("--weight-decay", "AdamW weight decay."))
    max_grad_norm: float = field(default=1.0, metadata=_opt("--max-grad-norm", "Clip gradients to this norm (0: off)."))
    seed: int = field(default=42, metadata=_opt("--seed", "Seed for data order, init and dropout (recorded)."))

    # --- PEFT ------------------------------------------------------------------------------
    lora_r: int = field(default=8, metadata=_opt("--lora-r", "LoRA rank.", group="peft"))
    lora_alpha: int = field(default=16, metadata=_opt("--lora-alpha", "LoRA alpha (scale = alpha / r).", group="peft"))
    lora_dropout: float = field(default=0.05, metadata=_opt("--lora-dropout", "Dropout on the LoRA input.", group="peft"))
    target_modules: tuple[str, ...] | None = field(default=None, metadata=_opt(
        "--target-modules", "Comma-separated module names, or all-linear [default: PEFT's own for the "
        "architecture: gpt_neox query_key_value (+dense_4h_to_h for ia3); llama q_proj,v_proj "
        "(ia3: k_proj,v_proj,down_proj)].", metavar="NAMES|all-linear", group="peft"))

    # --- hardware --------------------------------------------------------------------------
    bf16: str = field(default="auto", metadata=_opt(
        "--bf16", "bfloat16 mixed precision; auto = on when the GPU supports it.", choices=BF16_CHOICES,
        group="hardware"))
    gradient_checkpointing: bool = field(default=False, metadata=_opt(
        "--gradient-checkpointing", "Recompute activations in backward: less memory, about 30% slower.",
        group="hardware"))
    load_in_4bit: bool = field(default=False, metadata=_opt(
        "--load-in-4bit", "QLoRA: load the base in 4-bit NF4 (needs a CUDA GPU and bitsandbytes: "
        "pip install 'kocurate[qlora]').", group="hardware"))
    deepspeed: str | None = field(default=None, metadata=_opt(
        "--deepspeed", "DeepSpeed config for multi-GPU runs under accelerate launch: zero2 (the shipped "
        "kocurate/train/deepspeed_zero2.json) or a JSON file (needs: pip install deepspeed).",
        metavar="zero2|FILE", group="hardware"))
    peak_tflops: float | None = field(default=None, metadata=_opt(
        "--peak-tflops", "Accelerator peak TFLOPS for the MFU estimate [default: looked up from the GPU name].",
        metavar="TFLOPS", group="hardware"))

    # --- run control -----------------------------------------------------------------------
    logging_steps: int = field(default=10, metadata=_opt(
        "--logging-steps", "Log loss, lr, tokens/s, memory and MFU every N steps (and at the last step).",
        group="output"))
    save_steps: int = field(default=200, metadata=_opt(
        "--save-steps", "Write a Trainer checkpoint to OUT/checkpoints every N steps (and at the end).",
        group="output"))
    save_total_limit: int = field(default=2, metadata=_opt(
        "--save-total-limit", "Checkpoints to keep (oldest removed first).", group="output"))
    report_to: str = field(default="none", metadata=_opt(
        "--report-to", "Where the Trainer logs: none, tensorboard, wandb, mlflow, ... (comma-separated; "
        "passed to SFTConfig.report_to).", metavar="NAMES", group="output"))
    resume: bool = field(default=False, metadata=_opt(
        "--resume", "Continue the run in OUT from its last Trainer checkpoint (step count continues).",
        group="output"))
    overwrite: bool = field(default=False, metadata=_opt(
        "--overwrite", "Replace OUT when it holds another run.", group="output"))
    merge: bool = field(default=False, metadata=_opt(
        "--merge", "Also write the base with the adapter merged in, in 16-bit, to OUT/merged.", group="output"))
    dry_run: bool = field(default=False, metadata=_opt(
        "--dry-run", "Load no weights: read DATA, build the model on the meta device from its config and print "
        "total and trainable parameters and the targeted modules (needs no -o).", group="output"))

    #: Any other SFTConfig setting, by its TRL name (`--sft-arg key=value`, or the key in --config).
    sft_args: dict[str, Any] = field(default_factory=dict, metadata=_opt(
        "--sft-arg", "Any other SFTConfig / TrainingArguments setting, KEY=VALUE (repeatable).", cli=False))

    def __post_init__(self) -> None:
        self._coerce_numbers()
        for name in ("data", "model"):
            if getattr(self, name) in (MISSING, None, ""):
                raise InputError(f"TrainConfig: '{name}' is required ({flag_of(TrainConfig, name)})")
        if self.output in (MISSING, None, "") and not self.dry_run:
            raise InputError("-o/--output is required: the folder to write the adapter to (only --dry-run needs none)")
        self.data = str(self.data)
        self.model = str(self.model)
        self.output = Path(self.output) if self.output not in (MISSING, None, "") else None
        if isinstance(self.target_modules, str):
            self.target_modules = tuple(t.strip() for t in self.target_modules.split(",") if t.strip()) or None
        elif self.target_modules is not None:
            self.target_modules = tuple(self.target_modules) or None
        if self.method not in METHODS:
            raise InputError(f"--method {self.method}: unknown PEFT method; use one of {', '.join(METHODS)}")
        if self.lr_scheduler not in SCHEDULERS:
            raise InputError(f"--lr-scheduler {self.lr_scheduler}: unknown; use one of {', '.join(SCHEDULERS)}")
        if isinstance(self.bf16, bool):
            self.bf16 = "true" if self.bf16 else "false"
        if self.bf16 not in BF16_CHOICES:
            raise InputError(f"--bf16 {self.bf16}: use one of {', '.join(BF16_CHOICES)}")
        for name in ("max_length", "batch_size", "grad_accum", "lora_r", "logging_steps", "save_steps",
                     "save_total_limit"):
            setattr(self, name, check_count(flag_of(TrainConfig, name), getattr(self, name)))
        for name in ("epochs", "warmup_ratio", "weight_decay", "max_grad_norm", "lora_dropout", "learning_rate",
                     "peak_tflops", "lora_alpha"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"{flag_of(TrainConfig, name)} {value}: must be a finite number")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise InputError(f"--seed {self.seed}: must be a whole number, 0 or more")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise InputError(f"--learning-rate {self.learning_rate}: must be above 0 (e.g. 3e-4 for lora)")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"--max-steps {self.max_steps}: must be at least 1 (or leave it out to use --epochs)")
        if self.max_steps is None and self.epochs <= 0:
            raise InputError(f"--epochs {self.epochs}: must be above 0")
        if not 0 <= self.lora_dropout < 1:
            raise InputError(f"--lora-dropout {self.lora_dropout}: must be in [0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            raise InputError(f"--warmup-ratio {self.warmup_ratio}: must be in [0, 1)")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise InputError("--weight-decay and --max-grad-norm must be 0 or more")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise InputError(f"--peak-tflops {self.peak_tflops}: must be above 0")
        if self.resume and self.overwrite:
            raise InputError("--resume and --overwrite contradict each other; pass one of them")
        if not isinstance(self.sft_args, dict):
            raise InputError(f"sft_args: must be a mapping of SFTConfig setting: value, not {type(self.sft_args).__name__}")
        self.sft_args = {str(k).replace("-", "_"): v for k, v in self.sft_args.items()}

    def _coerce_numbers(self) -> None:
        """Numbers written as text in a config file (YAML reads 3e-4 as a string) become numbers."""
        for f in fields(self):
            value = getattr(self, f.name)
            kind = str(f.type).replace(" | None", "")
            if not isinstance(value, str) or kind not in ("int", "float"):
                continue
            try:
                number = float(value)
                setattr(self, f.name, int(number) if kind == "int" and number.is_integer() else number)
            except ValueError:
                raise InputError(f"{flag_of(TrainConfig, f.name)} {value}: must be a number") from None

    @property
    def lr(self) -> float:
        """The learning rate in effect: the flag, or the method's usual value."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 3e-4 if self.method == "lora" else 3e-3

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["output"] = str(self.output) if self.output is not None else None
        out["target_modules"] = list(self.target_modules) if self.target_modules else None
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def parse_sft_args(items) -> dict[str, Any]:
    """`--sft-arg key=value` pairs as a dict; values are read as YAML scalars (3e-4, true, [a, b], {k: v})."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InputError(f"--sft-arg {item}: use KEY=VALUE, e.g. --sft-arg optim=adamw_torch_fused")
        try:
            out[key] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            out[key] = text
    return out


@dataclass
class TrainResult:
    """What `train` hands back: where the adapter is and the content of its train_report.json."""

    adapter_dir: Path | None
    report: dict
    #: the trained PeftModel, only when `train(config, keep_model=True)` (tests, notebooks)
    model: Any = field(default=None, repr=False, compare=False)
