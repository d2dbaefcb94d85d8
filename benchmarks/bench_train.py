#!/usr/bin/env python3
"""PEFT training speed: `kocurate train` against a plain transformers Trainer + peft, same everything.

Both sides get the same base model (a GPT-NeoX built from polyglot-ko-1.3b's config with random
weights: speed does not depend on the weights), the same tokenized rows (kocurate's koalpaca
encoding, response-only labels), the same micro-batch, max length, steps, optimizer (AdamW),
LR schedule, bf16 setting and PEFT config (PEFT's defaults). Per method (LoRA r=8, IA3) the
baseline runs first, then ours, in this one process. Reported: non-pad tokens per second over the
training steps, peak GPU memory, final loss, and MFU (same 6N + attention FLOPs per token on both).

    # GPU session (the measurement the issue asks for):
    python benchmarks/bench_train.py --config polyglot-ko-1.3b --batch-size 8 --max-length 512 \\
        --steps 60 --out benchmarks/results/train-gpu.md
    # CPU smoke run (a small GPT-NeoX, a few steps; proves the script, measures nothing useful):
    .venv/bin/python benchmarks/bench_train.py --config small --batch-size 4 --max-length 128 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

CONFIGS = REPO / "tests" / "data" / "configs"

_SENTENCES = [
    "오늘은 날씨가 맑아서 공원에 산책을 나갔다.", "김치찌개를 끓일 때는 잘 익은 김치와 돼지고기를 먼저 볶는다.",
    "경복궁과 창덕궁은 서울의 대표적인 궁궐이다.", "지구는 일 년에 한 번 태양 주위를 돈다.",
    "좋은 글을 쓰려면 먼저 많이 읽어야 한다.", "한국어 형태소 분석은 띄어쓰기와 조사 때문에 어렵다.",
    "데이터를 정제하면 적은 양으로도 모델을 잘 학습시킬 수 있다.", "기차는 오전 아홉 시에 부산으로 출발한다.",
]


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """Korean instruction rows of varied length (the samples file when it is there)."""
    sample = REPO / "samples" / "ko_instructions.jsonl"
    if sample.is_file():
        rows = [json.loads(line) for line in sample.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = [{"instruction": r.get("instruction", ""), "input": r.get("input", "") or "", "output": r.get("output", "")}
                for r in rows if r.get("instruction") and r.get("output")]
        if len(rows) >= n:
            return rows[:n]
    rng = random.Random(seed)
    return [{"instruction": " ".join(rng.choices(_SENTENCES, k=rng.randint(1, 4))) + " 이 내용을 설명해 주세요.",
             "input": "", "output": " ".join(rng.choices(_SENTENCES, k=rng.randint(2, 24)))} for _ in range(n)]


def build_base(name: str, folder: Path, dtype: str) -> Path:
    """A GPT-NeoX with random weights from a config (polyglot-ko-1.3b's, or a small one) + the project tokenizer."""
    import torch
    from tiny_models import build_tokenizer
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tok = build_tokenizer(folder, vocab_size=2000, model_max_length=2048)
    if name == "small":
        config = GPTNeoXConfig(vocab_size=30080, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                               intermediate_size=1024, max_position_embeddings=2048, rotary_pct=0.25,
                               tie_word_embeddings=False)
    else:
        values = json.loads((CONFIGS / f"{name}.json").read_text())
        values.pop("model_type")
        config = GPTNeoXConfig(**values)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = GPTNeoXForCausalLM(config)
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    return folder


def run_ours(base: Path, data: Path, method: str, args, work: Path) -> dict:
    from kocurate.train import TrainConfig, train

    config = TrainConfig(data=str(data), base=str(base), output_dir=work / f"ours-{method}", method=method,
                         template="koalpaca", max_length=args.max_length, batch_size=args.batch_size,
                         max_steps=args.steps, logging_steps=args.steps, save_steps=10**9, seed=0,
                         gradient_checkpointing=args.gradient_checkpointing, bf16=args.bf16)
    r = train(config, progress=False).report
    return {"tokens_per_second": r["tokens_per_second"], "peak_memory_bytes": r["peak_memory_bytes"],
            "final_loss": r["final_loss"], "mfu": r["mfu"], "trainable": r["params"]["trainable"],
            "seconds": r["seconds"], "tokens": r["tokens"], "flops_per_token": r["flops_per_token"]}


def run_baseline(base: Path, data: Path, method: str, args, work: Path) -> dict:
    """transformers.Trainer + peft.get_peft_model, the way most scripts do it."""
    import torch
    from datasets import Dataset
    from peft import IA3Config, LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from kocurate.records import load_records
    from kocurate.train.templates import encode_rows, get_template
    from kocurate.train.trainer import load_tokenizer

    tok = load_tokenizer(str(base))
    enc = encode_rows(load_records(str(data)).frame.to_dicts(), get_template("koalpaca"), tok, args.max_length)
    dataset = Dataset.from_dict({"input_ids": enc.input_ids, "labels": enc.labels,
                                 "attention_mask": [[1] * len(x) for x in enc.input_ids]})
    cuda = torch.cuda.is_available()
    bf16 = args.bf16 == "true" or (args.bf16 == "auto" and cuda and torch.cuda.is_bf16_supported())
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16 if bf16 else torch.float32)
    model.config.use_cache = False
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_config = (LoraConfig(task_type=TaskType.CAUSAL_LM, r=8, lora_alpha=16, lora_dropout=0.05) if method == "lora"
                   else IA3Config(task_type=TaskType.CAUSAL_LM))
    model = get_peft_model(model, peft_config)
    counted = {"tokens": None}

    class CountingTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            n = inputs["attention_mask"].sum()
            counted["tokens"] = n if counted["tokens"] is None else counted["tokens"] + n
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    training_args = TrainingArguments(
        output_dir=str(work / f"baseline-{method}"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=3e-4 if method == "lora" else 3e-3, lr_scheduler_type="cosine",
        warmup_steps=int(0.03 * args.steps), weight_decay=0.0, max_grad_norm=1.0, bf16=bf16, logging_steps=args.steps,
        save_strategy="no", report_to=[], seed=0, dataloader_num_workers=0, disable_tqdm=True,
        use_cpu=not cuda)
    trainer = CountingTrainer(model=model, args=training_args, train_dataset=dataset,
                              data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    out = trainer.train()
    seconds = out.metrics.get("train_runtime") or (time.perf_counter() - started)
    tokens = int(counted["tokens"].item())
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    peak = int(torch.cuda.max_memory_allocated()) if cuda else None
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()
    return {"tokens_per_second": tokens / seconds, "peak_memory_bytes": peak, "final_loss": losses[-1] if losses else None,
            "seconds": seconds, "tokens": tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="polyglot-ko-1.3b", help="'small' or a config name in tests/data/configs")
    ap.add_argument("--methods", default="lora,ia3")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--bf16", default="auto", choices=("auto", "true", "false"))
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side (alternating); the fastest is kept")
    ap.add_argument("--out", help="write the markdown table here as well")
    args = ap.parse_args()

    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        base = build_base(args.config, work / "base", "bfloat16" if cuda else "float32")
        data = work / "rows.jsonl"
        data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in make_rows(args.rows)) + "\n", encoding="utf-8")
        print(f"built {args.config} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        results = []
        for method in args.methods.split(","):
            runs = {"baseline": [], "ours": []}
            for attempt in range(args.repeat):  # alternate the two, keep each one's fastest run
                runs["baseline"].append(run_baseline(base, data, method, args, work / f"b{attempt}"))
                runs["ours"].append(run_ours(base, data, method, args, work / f"o{attempt}"))
            baseline, ours = (max(runs[k], key=lambda r: r["tokens_per_second"]) for k in ("baseline", "ours"))
            results.append((method, baseline, ours))
            print(method, json.dumps({"baseline": baseline, "ours": ours}), file=sys.stderr)

    device = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"

    def mem(b):
        return f"{b / 2**30:.2f} GiB" if b else "n/a (CPU)"

    lines = [
        f"device: {device}; torch {torch.__version__}, transformers {transformers.__version__}; base: GPT-NeoX from "
        f"{args.config} config, random weights; batch {args.batch_size}, max length {args.max_length}, {args.steps} steps, "
        f"bf16 {args.bf16}, gradient checkpointing {args.gradient_checkpointing}, best of {args.repeat}",
        "",
        "| method | trainable | Trainer+peft tok/s | kocurate tok/s | ratio | Trainer+peft peak mem | kocurate peak mem "
        "| kocurate MFU | final loss (Trainer / ours) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for method, b, o in results:
        ratio = o["tokens_per_second"] / b["tokens_per_second"]
        mfu = f"{o['mfu']:.1%}" if o["mfu"] is not None else "n/a (no GPU peak)"
        lines.append(f"| {method} | {o['trainable']:,} | {b['tokens_per_second']:,.0f} | {o['tokens_per_second']:,.0f} "
                     f"| {ratio:.2f}x | {mem(b['peak_memory_bytes'])} | {mem(o['peak_memory_bytes']) if cuda else 'n/a (CPU)'} "
                     f"| {mfu} | {b['final_loss']:.3f} / {o['final_loss']:.3f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
