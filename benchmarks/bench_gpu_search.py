"""GPU embedding and vector search: what only a GPU can show, for `benchmarks/gpu_check.sh`.

1. embed: texts/s of the `st:` embedder path (sentence-transformers) with a BERT-base-shaped
   random encoder on the GPU (fp16) against the same model on the CPU, same texts, same run.
2. search: all pairs above a cosine threshold among N unit vectors, exact: blocked matrix
   products on the GPU (torch) against FAISS's flat inner-product search on the CPU, same vectors,
   same run; time ratio and pair agreement.

    python benchmarks/bench_gpu_search.py --out results.md            # on the GPU machine
    python benchmarks/bench_gpu_search.py --tiny                      # CPU smoke run (small shapes)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _korean_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    topics = ["헌법 제{}조", "김치찌개 끓이는 법", "파이썬 리스트", "조선 왕조", "주식 배당", "광합성", "세금 신고"]
    asks = ["에 대해 자세히 설명해 주세요.", "의 핵심은 무엇인가요?", "을 예를 들어 알려 줘.", "와 관련된 질문입니다."]
    return [topics[i % len(topics)].format(i % 137) + asks[int(rng.integers(len(asks)))] + " " * int(rng.integers(3))
            for i in range(n)]


def _encoder_folder(root: Path, tiny: bool) -> Path:
    """A random BERT (base shape unless tiny) with a WordPiece tokenizer trained on Korean text."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(_korean_texts(2000, 1), trainers.WordPieceTrainer(
        vocab_size=4000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if tiny else \
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    config = BertConfig(vocab_size=fast.vocab_size, max_position_embeddings=512, **shape)
    folder = root / "encoder"
    BertModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def bench_embed(tiny: bool, n: int) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer, models

    texts = _korean_texts(n)
    out = {"texts": n}
    with tempfile.TemporaryDirectory() as tmp:
        folder = _encoder_folder(Path(tmp), tiny)
        for device in (["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]):
            word = models.Transformer(str(folder), max_seq_length=128)
            dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
            model = SentenceTransformer(modules=[word, models.Pooling(dim())], device=device)
            if device == "cuda":
                model.half()
            count = n if device == "cuda" else min(n, 2000)
            model.encode(texts[:256], batch_size=256)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model.encode(texts[:count], batch_size=256, normalize_embeddings=True)
            if device == "cuda":
                torch.cuda.synchronize()
            out[f"{device}_texts_per_s"] = round(count / (time.perf_counter() - start), 1)
    return out


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 50), d)).astype(np.float32)
    x = centres[rng.integers(len(centres), size=n)] + 0.35 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_search(tiny: bool, n: int, d: int, threshold: float) -> dict:
    import faiss
    import torch

    x = _clustered(n, d)
    start = time.perf_counter()
    index = faiss.IndexFlatIP(d)
    index.add(x)
    lims, _, ids = index.range_search(x, threshold)
    cpu_s = time.perf_counter() - start
    faiss_pairs = {(i, int(j)) for i in range(n) for j in ids[lims[i]:lims[i + 1]] if j > i}
    out = {"rows": n, "dim": d, "threshold": threshold, "faiss_cpu_s": round(cpu_s, 2), "pairs": len(faiss_pairs)}
    if not torch.cuda.is_available():
        return out
    dev = torch.device("cuda")
    xt = torch.from_numpy(x).to(dev, torch.float16)
    torch.cuda.synchronize()
    start = time.perf_counter()
    found = []
    block = 8192
    for s in range(0, n, block):
        sims = xt[s:s + block] @ xt.T
        rows, cols = torch.nonzero(sims >= threshold, as_tuple=True)
        keep = cols > rows + s
        found.append(torch.stack([rows[keep] + s, cols[keep]], 1).cpu())
    torch.cuda.synchronize()
    gpu_s = time.perf_counter() - start
    gpu_pairs = {tuple(map(int, p)) for p in torch.cat(found).tolist()} if found else set()
    both = len(gpu_pairs & faiss_pairs)
    out.update({"torch_gpu_fp16_s": round(gpu_s, 2), "speedup_vs_faiss_cpu": round(cpu_s / gpu_s, 1),
                "pair_agreement": round(both / max(1, len(gpu_pairs | faiss_pairs)), 4)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small shapes (a CPU smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as Markdown here")
    args = parser.parse_args()
    embed = bench_embed(args.tiny, 2000 if args.tiny else 50_000)
    search = bench_search(args.tiny, 5_000 if args.tiny else 200_000, 64 if args.tiny else 256, 0.9)
    lines = ["# GPU embedding and search (benchmarks/bench_gpu_search.py)", "",
             "| what | figure |", "| --- | --- |"]
    lines += [f"| embed {k} | {v} |" for k, v in embed.items()]
    lines += [f"| search {k} | {v} |" for k, v in search.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
