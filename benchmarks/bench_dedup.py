"""Semantic dedup: kocurate vs semhash on the SAME embeddings and threshold, in one run.

    .venv/bin/python benchmarks/bench_dedup.py peer --rows 100000          # time ratio + kept-set agreement
    .venv/bin/python benchmarks/bench_dedup.py recall --rows 100000        # IVF pair recall vs exact
    .venv/bin/python benchmarks/bench_dedup.py memory --rows 1000000       # peak RSS of kocurate alone
    .venv/bin/python benchmarks/bench_dedup.py quality                     # default embedder on the samples
    .venv/bin/python benchmarks/bench_dedup.py candidates                  # embedders on Korean paraphrase pairs

Synthetic vectors: `rows` unit vectors in 512 dimensions (USE's size), a quarter of them planted
near-duplicates of earlier rows (cosine about 0.93 to their source), the rest random (cosine
near 0 to each other). Each measurement runs in its own subprocess so that
resource.getrusage(RUSAGE_SELF).ru_maxrss is the peak of that measurement alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Korean paraphrase pairs written for this benchmark (same request, different wording) and hard
# negatives (same topic, a different request): the candidates' first test.
PARAPHRASES = [
    ("서울에서 가장 유명한 궁궐은 어디인가요?", "서울에서 제일 유명한 궁궐이 어디예요?"),
    ("김치찌개를 맛있게 끓이는 방법을 알려 주세요.", "김치찌개 맛있게 끓이는 법 좀 알려 줘."),
    ("파이썬에서 리스트를 정렬하는 방법은?", "파이썬 리스트는 어떻게 정렬하나요?"),
    ("지구의 자전 주기는 얼마인가요?", "지구가 한 번 자전하는 데 걸리는 시간은?"),
    ("다음 문장을 영어로 번역하세요: 나는 학교에 간다.", "나는 학교에 간다를 영어로 번역해 주세요."),
    ("건강하게 살을 빼는 방법을 추천해 주세요.", "건강을 해치지 않고 체중을 줄이는 방법을 알려 주세요."),
    ("한국의 수도는 어디입니까?", "대한민국의 수도가 어디인가요?"),
    ("이 글의 요지를 세 문장으로 요약하세요.", "이 글을 세 문장으로 요약해 주세요."),
    ("면접에서 좋은 인상을 주는 방법은 무엇인가요?", "면접 때 좋은 인상을 남기려면 어떻게 해야 하나요?"),
    ("광합성이 무엇인지 초등학생에게 설명해 주세요.", "초등학생도 이해할 수 있게 광합성을 설명해 줘."),
    ("스트레스를 줄이는 좋은 습관을 알려 주세요.", "스트레스 해소에 도움이 되는 습관은 뭐가 있나요?"),
    ("서울에서 부산까지 기차로 얼마나 걸리나요?", "기차를 타면 서울에서 부산까지 몇 시간 걸려요?"),
    ("커피를 너무 많이 마시면 어떤 문제가 생기나요?", "커피 과다 섭취의 부작용은 무엇인가요?"),
    ("좋은 이력서를 쓰는 요령을 알려 주세요.", "이력서를 잘 쓰는 팁을 알려 주세요."),
    ("고양이가 물을 잘 마시지 않는 이유는?", "고양이는 왜 물을 잘 안 마실까요?"),
    ("영어 단어를 효과적으로 외우는 방법은?", "영단어를 효율적으로 암기하는 방법을 알려 주세요."),
    ("비 오는 날 듣기 좋은 노래를 추천해 주세요.", "비가 올 때 들을 만한 노래 추천해 줘."),
    ("삼각형의 넓이를 구하는 공식은 무엇인가요?", "삼각형 넓이는 어떻게 구하나요?"),
    ("운동 전에 스트레칭을 해야 하는 이유는?", "운동하기 전에 왜 스트레칭을 해야 하나요?"),
    ("잠이 잘 오지 않을 때 어떻게 하면 좋을까요?", "불면증이 있을 때 잠드는 방법을 알려 주세요."),
]
HARD_NEGATIVES = [
    ("서울에서 가장 유명한 궁궐은 어디인가요?", "부산에서 가장 유명한 해수욕장은 어디인가요?"),
    ("김치찌개를 맛있게 끓이는 방법을 알려 주세요.", "된장찌개를 맛있게 끓이는 방법을 알려 주세요."),
    ("파이썬에서 리스트를 정렬하는 방법은?", "파이썬에서 딕셔너리를 정렬하는 방법은?"),
    ("지구의 자전 주기는 얼마인가요?", "화성의 공전 주기는 얼마인가요?"),
    ("다음 문장을 영어로 번역하세요: 나는 학교에 간다.", "다음 문장을 일본어로 번역하세요: 나는 회사에 간다."),
    ("건강하게 살을 빼는 방법을 추천해 주세요.", "건강하게 살을 찌우는 방법을 추천해 주세요."),
    ("한국의 수도는 어디입니까?", "일본의 수도는 어디입니까?"),
    ("이 글의 요지를 세 문장으로 요약하세요.", "이 글의 맞춤법 오류를 고치세요."),
    ("면접에서 좋은 인상을 주는 방법은 무엇인가요?", "면접에서 자주 나오는 질문은 무엇인가요?"),
    ("광합성이 무엇인지 초등학생에게 설명해 주세요.", "호흡이 무엇인지 대학생에게 설명해 주세요."),
    ("서울에서 부산까지 기차로 얼마나 걸리나요?", "서울에서 부산까지 비행기 요금은 얼마인가요?"),
    ("삼각형의 넓이를 구하는 공식은 무엇인가요?", "원의 둘레를 구하는 공식은 무엇인가요?"),
]


def synthetic(rows: int, dim: int = 512, dup_share: float = 0.25, noise: float = 0.4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((rows, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    n_dup = int(rows * dup_share)
    targets = np.sort(rng.choice(np.arange(rows // 10, rows), n_dup, replace=False))
    sources = (rng.random(n_dup) * targets).astype(np.int64)  # an earlier row
    for start in range(0, n_dup, 65536):
        t, s = targets[start:start + 65536], sources[start:start + 65536]
        jitter = rng.standard_normal((len(t), dim), dtype=np.float32)
        jitter /= np.linalg.norm(jitter, axis=1, keepdims=True)
        mixed = vectors[s] + noise * jitter
        vectors[t] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
    return vectors


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_kocurate(vectors: np.ndarray, threshold: float, method: str = "auto"):
    from kocurate.curate.dedup import SemanticResult
    from kocurate.curate.index import search_pairs

    start = time.perf_counter()
    pairs = search_pairs(vectors, threshold, method=method)
    result = SemanticResult.from_pairs([str(i) for i in range(len(vectors))], pairs, threshold)
    return time.perf_counter() - start, result.kept, pairs.method


def run_semhash(vectors: np.ndarray, threshold: float):
    from semhash import SemHash

    class Precomputed:  # semhash needs an Encoder object even when given embeddings
        def encode(self, sentences, **kwargs):
            raise RuntimeError("not used")

    records = [f"r{i}" for i in range(len(vectors))]
    start = time.perf_counter()
    semhash = SemHash.from_embeddings(vectors, records, model=Precomputed())
    result = semhash.self_deduplicate(threshold=threshold)
    seconds = time.perf_counter() - start
    kept = np.zeros(len(vectors), dtype=bool)
    kept[[int(r[1:]) for r in result.selected]] = True
    return seconds, kept


def cmd_peer(args) -> dict:
    vectors = synthetic(args.rows, args.dim)
    ours_s, ours_kept, method = run_kocurate(vectors, args.threshold, args.method)
    print(f"kocurate: {ours_s:.1f} s ({method})", file=sys.stderr, flush=True)
    peer_s, peer_kept = run_semhash(vectors, args.threshold)
    print(f"semhash: {peer_s:.1f} s", file=sys.stderr, flush=True)
    both = (ours_kept & peer_kept).sum()
    return {
        "bench": "peer", "rows": args.rows, "dim": args.dim, "threshold": args.threshold, "method": method,
        "kocurate_s": round(ours_s, 2), "semhash_s": round(peer_s, 2), "speedup": round(peer_s / ours_s, 2),
        "kocurate_removed": int((~ours_kept).sum()), "semhash_removed": int((~peer_kept).sum()),
        "same_decision": round(float((ours_kept == peer_kept).mean()), 5),
        "kept_jaccard": round(float(both / (ours_kept | peer_kept).sum()), 5),
        "maxrss_mib": round(maxrss_mib()),
    }


def cmd_recall(args) -> dict:
    from kocurate.curate.index import build_index, ivf_params, pair_recall

    vectors = synthetic(args.rows, args.dim)
    start = time.perf_counter()
    index = build_index(vectors, method="ivf")
    recall = pair_recall(vectors, args.threshold, sample=args.sample, index=index)
    nlist, nprobe = ivf_params(len(vectors))
    return {"bench": "recall", "rows": args.rows, "threshold": args.threshold, "sample_queries": args.sample,
            "nlist": nlist, "nprobe": nprobe, "pair_recall": round(recall, 5), "seconds": round(time.perf_counter() - start, 1)}


def cmd_memory(args) -> dict:
    vectors = synthetic(args.rows, args.dim)
    seconds, kept, method = run_kocurate(vectors, args.threshold, args.method)
    return {"bench": "memory", "rows": args.rows, "dim": args.dim, "method": method, "seconds": round(seconds, 1),
            "removed": int((~kept).sum()), "maxrss_mib": round(maxrss_mib()),
            "vectors_mib": round(vectors.nbytes / 2**20)}


def cmd_quality(args) -> dict:
    """The embedder on the samples' planted near-duplicates: share found and false removals."""
    import polars as pl

    from kocurate.curate import RunContext
    from kocurate.curate.dedup import ExactDedup, SemanticDedup
    from kocurate.curate.pipeline import run_pipeline
    from kocurate.records import load_records

    data = ROOT / "samples" / "ko_instructions.jsonl"
    truth = ROOT / "samples" / "ko_instructions.truth.jsonl"
    planted = [json.loads(line) for line in truth.read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs = {p["id"]: p["of"] for p in planted if p["kind"] in ("exact", "edit", "reorder", "paraphrase")}
    kinds = {p["id"]: p["kind"] for p in planted}
    involved = set(pairs) | set(pairs.values())
    out = []
    thresholds = [float(t) for t in args.thresholds.split(",")]
    cache = Path(args.cache or (ROOT / ".cache-bench"))
    for threshold in thresholds:
        start = time.perf_counter()
        result = run_pipeline([load_records(data)], [ExactDedup(), SemanticDedup(threshold=threshold, embedder=args.embedder)],
                              None, ctx=RunContext(cache_dir=cache))
        gone = set(result.removed.filter(pl.col("step").is_in(["exact-dedup", "semantic-dedup"]))["id"].to_list())
        found = {a for a, b in pairs.items() if a in gone or b in gone}
        by_kind = {}
        for a in pairs:
            k = kinds[a]
            hit, total = by_kind.get(k, (0, 0))
            by_kind[k] = (hit + (a in found), total + 1)
        out.append({"embedder": args.embedder, "threshold": threshold, "rows": result.rows_in, "planted": len(pairs),
                    "found": round(len(found) / len(pairs), 4), "false_removals": len(gone - involved),
                    "false_share": round(len(gone - involved) / result.rows_in, 4),
                    "by_kind": {k: f"{h}/{t}" for k, (h, t) in by_kind.items()}, "seconds": round(time.perf_counter() - start, 1)})
    return {"bench": "quality", "results": out}


def cmd_candidates(args) -> dict:
    """Each offline embedder on the Korean paraphrase pairs and hard negatives above."""
    from kocurate.curate.embed import load_embedder

    out = []
    for spec in args.embedders.split(","):
        model = load_embedder(spec)
        start = time.perf_counter()
        para = [float(a @ b) for a, b in (model.encode([x, y]) for x, y in PARAPHRASES)]
        hard = [float(a @ b) for a, b in (model.encode([x, y]) for x, y in HARD_NEGATIVES)]
        auc = float(np.mean([[p > h for h in hard] for p in para]))
        out.append({"embedder": model.name, "paraphrase_mean": round(float(np.mean(para)), 3),
                    "paraphrase_min": round(min(para), 3), "hard_negative_mean": round(float(np.mean(hard)), 3),
                    "hard_negative_max": round(max(hard), 3), "auc": round(auc, 3),
                    "ms_per_pair": round(1000 * (time.perf_counter() - start) / (len(para) + len(hard)), 2)})
    return {"bench": "candidates", "results": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", choices=["peer", "recall", "memory", "quality", "candidates", "all"])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--method", default="auto")
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--embedder", default="default")
    parser.add_argument("--thresholds", default="0.8,0.85,0.9")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--embedders", default="default,lexical")
    parser.add_argument("--inline", action="store_true", help="run in this process (default: a subprocess per bench)")
    args = parser.parse_args()
    if args.bench == "all":
        for bench, rows in (("quality", 0), ("peer", 100_000), ("recall", 100_000), ("memory", 1_000_000), ("memory", 2_000_000)):
            subprocess.run([sys.executable, __file__, bench, "--rows", str(rows)], check=False)
        return
    if not args.inline:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--inline"]
        sys.exit(subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode)
    result = {"peer": cmd_peer, "recall": cmd_recall, "memory": cmd_memory, "quality": cmd_quality,
              "candidates": cmd_candidates}[args.bench](args)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
