#!/usr/bin/env python3
"""KoBEST scoring speed: kocurate evaluate against lm-evaluation-harness, same model, data and batch size.

Both run in this one process on the same already-loaded model, the peer first and ours second
(then once more each, keeping the faster run of each), and the scores are checked equal before
any speed is reported.

    # CPU, the small random-weight GPT-NeoX built here (no download):
    .venv/bin/python benchmarks/bench_evaluate.py --model small --shots 0,5 --batch-size 8
    # GPU session, the real polyglot-ko-1.3b (GPT-NeoX, 1.3B), bf16 on both sides:
    python benchmarks/bench_evaluate.py --model EleutherAI/polyglot-ko-1.3b --data-dir samples/kobest \
        --shots 0,5 --batch-size 32 --device cuda --dtype bfloat16 --out benchmarks/results/evaluate-gpu.md

lm-eval reads the same jsonl files through task configs that include its own kobest yaml files
(see tests/test_evaluate_lmeval.py). The model is loaded once, outside the timings; each side's
time is its whole evaluate call (lm-eval's includes building its task objects).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from test_evaluate import CONFIGS, kobest_folder, write_kobest  # noqa: E402
from test_evaluate_lmeval import lmeval_task_dir  # noqa: E402


def build_small(folder: Path) -> Path:
    """A 6-layer, 256-wide GPT-NeoX with 1024 positions on the project tokenizer (random weights)."""
    import torch
    from tiny_models import build_tokenizer
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tok = build_tokenizer(folder, vocab_size=2000, model_max_length=1024)
    torch.manual_seed(0)
    GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=len(tok), hidden_size=256, num_hidden_layers=6, num_attention_heads=8, intermediate_size=1024,
        max_position_embeddings=1024, rotary_pct=0.25, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False)).save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="small", help="'tiny', 'small' (built here) or a Hub id / folder")
    ap.add_argument("--data-dir", help="KoBEST folder (default: samples/kobest, else a generated one)")
    ap.add_argument("--tasks", default=",".join(CONFIGS))
    ap.add_argument("--shots", default="0,5")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--repeat", type=int, default=2, help="runs per side; the fastest is kept")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both sides (1 = steadier timings)")
    ap.add_argument("--out", help="append the markdown result to this file")
    args = ap.parse_args()

    import torch
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kocurate.evaluate import EvalConfig, evaluate

    work = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    data = Path(args.data_dir) if args.data_dir else kobest_folder(REPO / "samples" / "kobest", work / "kobest")
    if not args.data_dir and data.parent == work:
        data = write_kobest(work / "kobest", sizes={"train": 64, "validation": 12, "test": 40})
    if args.model in ("tiny", "small"):
        from tiny_models import build_gpt_neox

        model_path = build_gpt_neox(work / "tiny") if args.model == "tiny" else build_small(work / "small")
    else:
        model_path = args.model
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(args.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tasks = [t.strip().removeprefix("kobest_") for t in args.tasks.split(",")]
    shots = [int(s) for s in args.shots.split(",")]
    task_dir = lmeval_task_dir(data, work / "lmeval-tasks")
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, device=args.device)

    rows = []
    for k in shots:
        peer_s, ours_s = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()  # the peer first, then ours, alternating
            peer = lm_eval.simple_evaluate(model=lm, tasks=[f"local_kobest_{c}" for c in tasks], num_fewshot=k,
                                           task_manager=manager, limit=args.limit, log_samples=False)
            peer_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ours = evaluate(EvalConfig(model=str(model_path), tasks=tasks, shots=[k], data_dir=str(data),
                                       limit=args.limit, batch_size=args.batch_size), model=model, tokenizer=tokenizer)
            ours_s.append(time.perf_counter() - t0)
        n = sum(v[str(k)]["n"] for v in ours.results["results"].values())
        engine = ours.results["engine"]
        worst = 0.0
        for c in tasks:
            for metric in ("acc", "f1"):
                worst = max(worst, abs(ours.results["results"][f"kobest_{c}"][str(k)][metric]
                                       - peer["results"][f"local_kobest_{c}"][f"{metric},none"]))
        rows.append((k, n, min(peer_s), min(ours_s), worst, engine["tokens_one_row_per_choice"], engine["tokens"]))

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()})"
    lines = [f"### {Path(str(model_path)).name if args.model not in ('tiny', 'small') else args.model} "
             f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, {args.dtype}) on {device}", "",
             f"data: {data} ({', '.join(tasks)}; limit {args.limit}); batch size {args.batch_size}; "
             f"lm-eval {lm_eval.__version__ if hasattr(lm_eval, '__version__') else '?'}; best of {args.repeat}", "",
             "| shots | examples | lm-eval s | lm-eval ex/s | kocurate s | kocurate ex/s | speed-up | max abs diff acc/F1 "
             "| tokens forwarded lm-eval / kocurate |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k, n, p, o, worst, t_peer, t_ours in rows:
        lines.append(f"| {k} | {n} | {p:.2f} | {n / p:.1f} | {o:.2f} | {n / o:.1f} | {p / o:.2f}x | {worst:.1e} "
                     f"| {t_peer:,} / {t_ours:,} ({t_peer / t_ours:.2f}x) |")
    tp, to = sum(r[2] for r in rows), sum(r[3] for r in rows)
    lines.append(f"| all | {sum(r[1] for r in rows)} | {tp:.2f} | | {to:.2f} | | {tp / to:.2f}x | | |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
