#!/usr/bin/env python3
"""kocurate's lm-eval backend against lm-eval's stock HF backend: same model object, tasks, shots,
batch size, in one process, with the scores compared before any speed is reported.

Both sides run through the same `kocurate.evaluate.evaluate(config, lm=...)` call, i.e. the same
`lm_eval.simple_evaluate` with the same task objects built from the same local KoBEST files; the
only difference is the model class (`lm_eval.models.huggingface.HFLM` vs
`kocurate.evaluate.engine.KocurateLM`, a subclass that replaces `_loglikelihood_tokens`). The peer
runs first, then ours, alternating for `--repeat` rounds; the best time of each is kept.

    # CPU, >= 100M-parameter random-weight GPT-NeoX built here (no download), all five KoBEST tasks:
    .venv/bin/python benchmarks/bench_evaluate.py --shots 0,5 --limit 8 --batch-size 8 --out benchmarks/results/evaluate.md
    # GPU (benchmarks/gpu_check.sh): polyglot-ko-1.3b-shaped random model, bf16 speed + fp32 parity
    python benchmarks/bench_evaluate.py --gpu --out benchmarks/results/evaluate-gpu.md
    # the same GPU mode on a CPU, with the tests' tiny model, to check the script itself
    .venv/bin/python benchmarks/bench_evaluate.py --gpu --tiny --limit 4
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

SHAPES = {
    # ~102M parameters: 14 x (4 d^2 + 8 d^2) + embeddings
    "cpu-100m": dict(hidden_size=768, num_hidden_layers=14, num_attention_heads=12, intermediate_size=3072,
                     max_position_embeddings=2048, rotary_pct=0.25),
    # EleutherAI/polyglot-ko-1.3b's config (vocab 30003, 24 layers, 2048 wide, rotary 0.5)
    "polyglot-ko-1.3b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=8192,
                             max_position_embeddings=2048, rotary_pct=0.5, vocab_size=30003),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=256, rotary_pct=0.25),
}


def build(shape: str, folder: Path, device: str, dtype):
    """A random-weight GPT-NeoX of `shape` with the tests' tokenizer (trained on the samples)."""
    import torch
    from tiny_models import build_tokenizer
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = dict(SHAPES[shape])
    tok = build_tokenizer(folder, vocab_size=2000, model_max_length=cfg["max_position_embeddings"])
    cfg.setdefault("vocab_size", len(tok))
    torch.manual_seed(0)
    with torch.device(device):
        model = GPTNeoXForCausalLM(GPTNeoXConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                                 pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **cfg))
    return model.to(dtype).eval(), tok


def run_pair(model, tok, config, repeat: int):
    from lm_eval.models.huggingface import HFLM

    from kocurate.evaluate import evaluate
    from kocurate.evaluate.engine import KocurateLM

    best = {"lm-eval": float("inf"), "kocurate": float("inf")}
    results = {}
    for _ in range(repeat):
        for name, cls in (("lm-eval", HFLM), ("kocurate", KocurateLM)):
            lm = cls(pretrained=model, tokenizer=tok, batch_size=config.batch_size)
            spent = [0.0]
            inner = lm._loglikelihood_tokens

            def timed(*a, _inner=inner, _spent=spent, **kw):  # the scoring alone, without lm-eval's task work
                t = time.perf_counter()
                try:
                    return _inner(*a, **kw)
                finally:
                    _spent[0] += time.perf_counter() - t

            lm._loglikelihood_tokens = timed
            if model.device.type == "cuda":
                import torch

                torch.cuda.synchronize()
            t0 = time.perf_counter()
            results[name] = evaluate(config, lm=lm)
            best[name] = min(best[name], time.perf_counter() - t0)
            best[name + " engine"] = min(best.get(name + " engine", float("inf")), spent[0])
            if name == "kocurate":
                results["stats"] = dict(lm.stats)
    return best, results


def compare(results) -> tuple[float, int]:
    """Largest |ours - lm-eval| over every task, shot count and acc / acc_norm / F1; docs scored."""
    worst, docs = 0.0, 0
    ours, theirs = results["kocurate"].results["results"], results["lm-eval"].results["results"]
    for task, by_shots in theirs.items():
        for shots, scores in by_shots.items():
            docs += scores["n"]
            for metric in ("acc", "acc_norm", "f1"):
                if metric in scores:
                    worst = max(worst, abs(scores[metric] - ours[task][shots][metric]))
    return worst, docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="polyglot-ko-1.3b shape, bf16 speed then fp32 parity")
    ap.add_argument("--tiny", action="store_true", help="use the tests' tiny shape (to try --gpu on a CPU)")
    ap.add_argument("--data-dir", default=str(REPO / "samples" / "kobest"))
    ap.add_argument("--tasks", default="kobest")
    ap.add_argument("--shots", default="0,5")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None, help="default: 8 on CPU, 32 with --gpu")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", help="append the markdown table to this file")
    args = ap.parse_args()

    import torch

    from kocurate.evaluate import EvalConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.gpu and torch.cuda.is_available() else "cpu"
    shape = "tiny" if args.tiny else ("polyglot-ko-1.3b" if args.gpu else "cpu-100m")
    batch = args.batch_size or (32 if args.gpu else 8)
    config = EvalConfig(model=shape, tasks=args.tasks, shots=args.shots, data_dir=args.data_dir, limit=args.limit,
                        batch_size=batch, device=device)
    runs = [("bfloat16", torch.bfloat16), ("float32", torch.float32)] if args.gpu else [("float32", torch.float32)]
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype_name, dtype in runs:
            model, tok = build(shape, Path(tmp) / "model", device, dtype)
            params = sum(p.numel() for p in model.parameters())
            best, results = run_pair(model, tok, config, args.repeat)
            worst, docs = compare(results)
            stats = results["stats"]
            row = (f"| {shape} ({params / 1e6:.0f}M) | {dtype_name} | {device} | {args.shots} | {docs} | {batch} | "
                   f"{best['lm-eval']:.1f} | {docs / best['lm-eval']:.2f} | {best['kocurate']:.1f} | "
                   f"{docs / best['kocurate']:.2f} | {best['lm-eval'] / best['kocurate']:.2f}x | "
                   f"{best['lm-eval engine']:.1f} / {best['kocurate engine']:.1f} = "
                   f"{best['lm-eval engine'] / best['kocurate engine']:.2f}x | {worst:.2e} | "
                   f"{stats['tokens_one_row_per_choice']:,} / {stats['tokens']:,} |")
            print(row, flush=True)
            lines.append(row)
            del model
            if device == "cuda":
                torch.cuda.empty_cache()
    head = [f"### {time.strftime('%Y-%m-%d')}: {shape}, tasks {args.tasks}, limit {args.limit}, best of {args.repeat} "
            f"({platform.machine()}, torch threads {torch.get_num_threads()}, "
            f"{torch.cuda.get_device_name() if device == 'cuda' else 'CPU'})", "",
            "| model | dtype | device | shots | docs | batch | lm-eval s | lm-eval docs/s | kocurate s | kocurate docs/s "
            "| speed-up (whole call) | scoring s lm-eval / kocurate (speed-up) | max abs diff acc/F1 "
            "| tokens forwarded lm-eval / kocurate |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    text = "\n".join(head + lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
