"""Evaluation on lm-evaluation-harness, with kocurate's faster model backend.

lm-eval owns the tasks, prompts, few-shot draws and metrics (KoBEST from its own task YAML, any
other lm-eval task by name); kocurate owns the engine (`engine.KocurateLM`, registered as the lm-eval
model ``kocurate``), the legacy polyglot KoBEST protocol and NSMC as task YAML (`tasks/`), local
data folders, and the tables in the seeds' form (`report`).

    from kocurate.evaluate import EvalConfig, evaluate
    result = evaluate(EvalConfig(model="EleutherAI/polyglot-ko-1.3b", tasks=["kobest_copa"], shots=[0, 5]))
    result.metric("kobest_copa", 5, "f1")
    result.predictions("kobest_copa", 5)   # [{"doc_id", "doc_index", "gold", "pred", "loglikelihoods"}, ...]

Importing this package loads neither torch nor lm_eval; `evaluate()` imports them when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import check_count, option
from ..errors import InputError

__all__ = ["EvalConfig", "EvalResult", "evaluate", "PROTOCOLS", "KOBEST_TASKS", "canonical_task"]

PROTOCOLS = ("harness", "polyglot")
BACKENDS = ("kocurate", "hf")
KOBEST_CONFIGS = ("boolq", "copa", "hellaswag", "sentineg", "wic")
KOBEST_TASKS = tuple(f"kobest_{c}" for c in KOBEST_CONFIGS)
#: the seed each protocol draws its shots with when --seed is not given
PROTOCOL_SEEDS = {"harness": 1234, "polyglot": 42}


def canonical_task(name: str) -> str:
    """`copa` -> `kobest_copa`, `polyglot_kobest_copa` -> `kobest_copa`; other names unchanged."""
    name = name.strip()
    if name in KOBEST_CONFIGS:
        return f"kobest_{name}"
    return name.removeprefix("polyglot_")


def _split_list(value) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(i).strip() for i in items if str(i).strip()]


def parse_shots(spec) -> list[int]:
    """'0,5,10' -> [0, 5, 10]; one-line error on anything else."""
    shots: list[int] = []
    for item in _split_list([spec] if isinstance(spec, int) else spec):
        try:
            k = int(item)
        except ValueError:
            raise InputError(f"--shots: '{item}' is not a whole number; write e.g. --shots 0,5,10") from None
        if k < 0:
            raise InputError(f"--shots: {k} is negative; shot counts are 0 or more")
        if k not in shots:
            shots.append(k)
    if not shots:
        raise InputError("--shots is empty; write e.g. --shots 0,5")
    return shots


@dataclass
class EvalConfig:
    """One evaluation run; the fields are the `kocurate evaluate` flags one to one."""

    model: str = field(default="", metadata=option(
        "--model", "Hub id or local folder of the causal LM to score.", metavar="MODEL", required=True))
    adapter: str | None = field(default=None, metadata=option(
        "--adapter", "A PEFT adapter folder (LoRA, IA3) to apply on top of --model.", metavar="DIR"))
    tasks: list[str] = field(default_factory=lambda: ["kobest"], metadata=option(
        "--tasks", "Comma-separated lm-eval task or group names (kobest, kobest_copa, nsmc, kmmlu, arc_challenge, ...); "
        "the kobest_ prefix is optional for KoBEST.  [default: kobest]", metavar="LIST"))
    shots: list[int] = field(default_factory=lambda: [0, 5, 10, 50], metadata=option(
        "--shots", "Comma-separated few-shot counts, each a separate lm-eval run.  [default: 0,5,10,50]", metavar="LIST"))
    protocol: str = field(default="harness", metadata=option(
        "--protocol", "KoBEST prompts: harness = lm-eval's own task YAML; polyglot = the legacy branch behind the "
        "seeds' tables (shipped as task YAML in kocurate).", choices=list(PROTOCOLS)))
    data_dir: str | None = field(default=None, metadata=option(
        "--data-dir", "Local data in the Hub's layout: {config}/{split}.jsonl (KoBEST: boolq/test.jsonl, ...; "
        "NSMC: nsmc/test.jsonl). Tasks with a folder there read it instead of the Hub.", metavar="DIR"))
    limit: int | None = field(default=None, metadata=option(
        "--limit", "Score only the first N test docs of each task (polyglot: of its shuffled order).", metavar="N"))
    batch_size: int | str = field(default="auto", metadata=option(
        "--batch-size", "Contexts per forward pass; auto = the largest that fits on the GPU, 16 on a CPU.",
        metavar="N|auto"))
    seed: int | None = field(default=None, metadata=option(
        "--seed", "Few-shot seed (lm-eval's fewshot_random_seed); default: the protocol's, harness 1234, polyglot 42."))
    output: str | None = field(default=None, metadata=option(
        "--output", "Folder for results.json, results.md and lm-eval's own results files.", short="-o",
        metavar="RESULTS_DIR"))
    overwrite: bool = field(default=False, metadata=option(
        "--overwrite", "Replace the result files already in --output."))
    device: str = field(default="auto", metadata=option(
        "--device", "auto (a GPU when present), cpu, cuda, cuda:1, ..."))
    dtype: str = field(default="auto", metadata=option(
        "--dtype", "auto = bfloat16 on a GPU that has it, float32 on a CPU.",
        choices=["auto", "float32", "bfloat16", "float16"]))
    device_map: str | None = field(default=None, metadata=option(
        "--device-map", "auto: split a model too big for one GPU across the GPUs (accelerate).", metavar="auto"))
    load_in_4bit: bool = field(default=False, metadata=option(
        "--load-in-4bit", "Load the model in 4-bit NF4 (bitsandbytes, CUDA only)."))
    backend: str = field(default="kocurate", metadata=option(
        "--backend", "kocurate = the shared-context engine; hf = lm-eval's stock HF model (same numbers, slower).",
        choices=list(BACKENDS)))
    share_context: bool = field(default=True, metadata=option("--share-context", "", cli=False))
    show_progress: bool = field(default=False, metadata=option("--progress", "", cli=False))
    output_dir: str | None = field(default=None, repr=False)  # old name of `output`, accepted for one release

    def __post_init__(self) -> None:
        if self.output_dir is not None and self.output is None:
            self.output = self.output_dir
            self.overwrite = True  # the old name's callers re-evaluated into the same folder
        self.output_dir = None
        if self.output is not None:
            self.output = str(self.output)
        if not self.model:
            raise InputError("missing --model: pass a Hub id or a local model folder")
        self.model = str(self.model)
        self.tasks = _split_list(self.tasks)
        if not self.tasks:
            raise InputError("--tasks is empty; pass e.g. --tasks kobest or --tasks kobest_copa,nsmc")
        self.shots = parse_shots(self.shots)
        if self.protocol not in PROTOCOLS:
            raise InputError(f"--protocol {self.protocol}: use one of {', '.join(PROTOCOLS)}")
        if self.backend not in BACKENDS:
            raise InputError(f"--backend {self.backend}: use one of {', '.join(BACKENDS)}")
        if self.limit is not None:
            try:
                self.limit = int(self.limit)
            except (TypeError, ValueError):
                raise InputError(f"--limit {self.limit}: use a positive whole number of test docs") from None
            if self.limit < 1:
                raise InputError(f"--limit {self.limit}: use a positive whole number of test docs")
        if str(self.batch_size) != "auto":
            self.batch_size = check_count("--batch-size", self.batch_size, extra=", or 'auto'")
        if self.device_map not in (None, "auto"):
            raise InputError(f"--device-map {self.device_map}: only 'auto' is supported (split across the GPUs)")
        if self.seed is not None:
            self.seed = int(self.seed)
        if self.data_dir is not None:
            self.data_dir = str(self.data_dir)

    @property
    def fewshot_seed(self) -> int:
        return PROTOCOL_SEEDS[self.protocol] if self.seed is None else self.seed


@dataclass
class EvalResult:
    """The run's record (what results.json holds) and the files written."""

    results: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    lm_eval: dict[int, dict] = field(default_factory=dict, repr=False)  # lm-eval's own results, per shot count

    def _entry(self, task: str, shots: int) -> dict:
        name = canonical_task(task)
        try:
            return self.results["results"][name][str(int(shots))]
        except KeyError:
            known = ", ".join(sorted(self.results.get("results", {})))
            raise InputError(f"no result for {name} at {shots} shots in this run (it has {known})") from None

    def metric(self, task: str, shots: int, name: str) -> float:
        entry = self._entry(task, shots)
        if name not in entry:
            raise InputError(f"no {name} for {canonical_task(task)} at {shots} shots (it has {', '.join(k for k in entry if not k.endswith('_stderr'))})")
        return entry[name]

    def predictions(self, task: str, shots: int) -> list[dict]:
        """Per test doc, in scoring order: doc_id, doc_index, gold, pred, loglikelihoods (+ pred_norm)."""
        self._entry(task, shots)
        return self.results["predictions"][canonical_task(task)][str(int(shots))]


def evaluate(config: EvalConfig, *, model=None, tokenizer=None, lm=None, progress=None) -> EvalResult:
    """Run lm-eval's `simple_evaluate` once per shot count with kocurate's backend.

    `model`/`tokenizer` may be passed already loaded (adapter applied), or `lm` an lm-eval model
    object (e.g. lm-eval's HFLM, for comparisons). See `kocurate.evaluate.run`."""
    from .run import evaluate as _evaluate

    return _evaluate(config, model=model, tokenizer=tokenizer, lm=lm, progress=progress)
