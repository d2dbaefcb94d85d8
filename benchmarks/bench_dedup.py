"""Semantic dedup: kocurate vs semhash on the SAME embeddings and threshold, in one run.

    .venv/bin/python benchmarks/bench_dedup.py peer --rows 100000          # time ratio + kept-set agreement
    .venv/bin/python benchmarks/bench_dedup.py recall --rows 100000        # IVF pair recall vs exact
    .venv/bin/python benchmarks/bench_dedup.py recall --rows 1000000 --dim 256 --nprobes 32,64,96   # a grid
    .venv/bin/python benchmarks/bench_dedup.py recall --data clustered --rows 1000000 --dim 256     # topics
    .venv/bin/python benchmarks/bench_dedup.py embed --rows 4000 --embedders use-fp32,use-bf16      # USE speed
    .venv/bin/python benchmarks/bench_dedup.py e2e --rows 200000            # `kocurate dedup`, cold cache
    .venv/bin/python benchmarks/bench_dedup.py memory --rows 1000000       # peak RSS of kocurate alone
    .venv/bin/python benchmarks/bench_dedup.py quality                     # default embedder on the samples
    .venv/bin/python benchmarks/bench_dedup.py candidates                  # embedders on Korean paraphrase pairs

Synthetic vectors: `rows` unit vectors in 512 dimensions (USE's size), a quarter of them planted
near-duplicates of earlier rows (cosine about 0.93 to their source), the rest random (cosine
near 0 to each other). Each measurement runs in its own subprocess, and its peak memory is that
process's own high-water mark (`maxrss_mib`: VmHWM, which a parent's peak does not leak into).
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


def clustered(rows: int, dim: int = 256, dup_share: float = 0.25, spread: float = 1.0, noise: float = 0.4,
              rows_per_topic: int = 200, seed: int = 0) -> np.ndarray:
    """Sentence-like vectors: topics of uneven size, rows spread around their topic, near-duplicates.

    Topic centres are random unit vectors; topic sizes are lognormal (a few large topics, many
    small ones), `rows_per_topic` on average. A row is its topic's centre plus Gaussian noise of
    norm about `spread` (cosine about 0.5 between two rows of one topic at spread 1, as sentence
    embeddings of one domain are). `dup_share` of the rows are near-duplicates of an earlier
    row: that row plus noise of norm `noise` (cosine about 0.93; chains of them occur). This is
    the hard case for cells: dense topics where near-duplicates straddle cell borders.
    Generated in blocks, float32 throughout (3M x 256 is 3 GB).
    """
    rng = np.random.default_rng(seed)
    n_topics = max(1, rows // rows_per_topic)
    centres = rng.standard_normal((n_topics, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, 1.0, n_topics)
    topic = rng.choice(n_topics, rows, p=weights / weights.sum())
    vectors = np.empty((rows, dim), dtype=np.float32)
    block = 262_144
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        part = rng.standard_normal((stop - start, dim), dtype=np.float32)
        part *= np.float32(spread / np.sqrt(dim))
        part += centres[topic[start:stop]]
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        vectors[start:stop] = part
    n_dup = int(rows * dup_share)
    targets = np.sort(rng.choice(np.arange(rows // 10, rows), n_dup, replace=False))
    sources = (rng.random(n_dup) * targets).astype(np.int64)
    for start in range(0, n_dup, block):
        t, src = targets[start:start + block], sources[start:start + block]
        jitter = rng.standard_normal((len(t), dim), dtype=np.float32)
        jitter *= np.float32(noise / np.sqrt(dim))
        jitter += vectors[src]
        jitter /= np.linalg.norm(jitter, axis=1, keepdims=True)
        vectors[t] = jitter
    return vectors


def make_vectors(args) -> np.ndarray:
    if getattr(args, "data", "random") == "clustered":
        return clustered(args.rows, args.dim)
    return synthetic(args.rows, args.dim)


def maxrss_mib() -> float:
    """This process's peak resident memory (MiB): VmHWM on Linux. Not ru_maxrss: Linux carries
    a parent's peak across fork + exec into the child's ru_maxrss, so a subprocess started by a
    parent that had generated the data reported the parent's peak (found 2026-12-02)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_kocurate(vectors: np.ndarray, threshold: float, method: str = "auto", *, with_pairs: bool = False):
    """(seconds, kept, search method), and with `with_pairs` the pairs the search found."""
    from kocurate.curate.dedup import SemanticResult
    from kocurate.curate.index import search_pairs

    start = time.perf_counter()
    pairs = search_pairs(vectors, threshold, method=method)
    result = SemanticResult.from_pairs([str(i) for i in range(len(vectors))], pairs, threshold)
    seconds = time.perf_counter() - start
    return (seconds, result.kept, pairs.method, pairs) if with_pairs else (seconds, result.kept, pairs.method)


def build_semhash(vectors: np.ndarray):
    """semhash over precomputed vectors; record i is "r{i}"."""
    from semhash import SemHash

    class Precomputed:  # semhash needs an Encoder object even when given embeddings
        def encode(self, sentences, **kwargs):
            raise RuntimeError("not used")

    return SemHash.from_embeddings(vectors, [f"r{i}" for i in range(len(vectors))], model=Precomputed())


def semhash_kept(result, n: int) -> np.ndarray:
    kept = np.zeros(n, dtype=bool)
    kept[[int(r[1:]) for r in result.selected]] = True
    return kept


def run_semhash(vectors: np.ndarray, threshold: float):
    start = time.perf_counter()
    result = build_semhash(vectors).self_deduplicate(threshold=threshold)
    return time.perf_counter() - start, semhash_kept(result, len(vectors))


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
    """Pair recall of the cell index against exact search on `sample` queries, for each nprobe.

    One index per nlist (`--nlists`, default: the shipped `ivf_params`), then every nprobe
    of `--nprobes` on the same queries. `visited` is the mean number of indexed rows a query
    is compared with (the search's cost per row; the assignment costs nlist per row).
    """
    from kocurate.curate.index import (
        CellIndex,
        build_index,
        ivf_params,
        pair_recall,
        range_pairs,
        recall_sample,
    )

    vectors = make_vectors(args)
    picks = recall_sample(len(vectors), args.sample)
    start = time.perf_counter()
    exact = range_pairs(build_index(vectors, method="exact"), vectors[picks], args.threshold)
    exact_s = time.perf_counter() - start
    default_nlist, default_nprobe = ivf_params(len(vectors))
    nlists = [int(x) for x in args.nlists.split(",")] if args.nlists else [default_nlist]
    nprobes = [int(x) for x in args.nprobes.split(",")] if args.nprobes else [default_nprobe]
    grid = []
    spills = [int(x) for x in args.spills.split(",")] if args.spills else [1]
    for nlist in nlists:
        for spill in spills:
            t0, c0 = time.perf_counter(), time.process_time()
            index = CellIndex(vectors, nlist=nlist, nprobe=max(nprobes), spill=spill)
            build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
            sizes = np.diff(index.range_bounds)
            for nprobe in nprobes:
                _, cells = index.quantizer.search(vectors[picks], nprobe)
                visited = float(sizes[cells].sum(axis=1).mean())
                t0 = time.perf_counter()
                recall = pair_recall(vectors, args.threshold, sample=args.sample, index=index, nprobe=nprobe, exact=exact)
                grid.append({"nlist": nlist, "spill": spill, "nprobe": nprobe, "pair_recall": round(recall, 5),
                             "visited": round(visited), "build_s": round(build_s, 1), "build_cpu_s": round(build_cpu, 1)})
                print(json.dumps(grid[-1]), file=sys.stderr, flush=True)
    return {"bench": "recall", "data": args.data, "rows": args.rows, "dim": args.dim, "threshold": args.threshold,
            "sample_queries": len(picks), "exact_pairs": int(exact.ids.size) - len(picks), "exact_s": round(exact_s, 1),
            "default": {"nlist": default_nlist, "nprobe": default_nprobe}, "grid": grid,
            "maxrss_mib": round(maxrss_mib())}


HNSW_K = 64


def cmd_faiss(args) -> dict:
    """kocurate's `CellIndex` against FAISS's own `IndexIVFFlat` (the same cells and probes) and
    `IndexHNSWFlat` on the same vectors, one process, one run: build and search time, and pair
    recall of each against exact flat search on the same 2,000 sampled queries.

    kocurate searches every row (what `dedup` does); FAISS searches `--faiss-queries` rows and
    its full-pass time is that time scaled to n (a query's cost does not depend on the others).
    HNSW: M 32, efConstruction 128, efSearch 128, top-64 search cut at the threshold.
    """
    import faiss

    from kocurate.curate.index import CellIndex, build_index, range_pairs, recall_sample

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    vectors = synthetic(args.rows, args.dim)
    n, dim = vectors.shape
    picks = recall_sample(n, args.sample)
    exact = range_pairs(build_index(vectors, method="exact"), vectors[picks], args.threshold)
    want = exact.query_index() * n + exact.ids
    want = want[exact.ids != picks[exact.query_index()]]
    radius = float(np.nextafter(np.float32(args.threshold), np.float32(-1)))  # >= threshold, as kocurate
    queries = np.sort(np.random.default_rng(7).choice(n, min(args.faiss_queries, n), replace=False))

    def clock():
        return time.perf_counter(), time.process_time()

    def since(t):
        return round(time.perf_counter() - t[0], 1), round(time.process_time() - t[1], 1)

    def recall_of(lims, ids) -> float:
        got = np.repeat(np.arange(len(picks), dtype=np.int64), np.diff(lims).astype(np.int64)) * n + ids.astype(np.int64)
        return round(float(np.isin(want, got).mean()), 5) if want.size else 1.0

    out = {"bench": "faiss", "rows": n, "dim": dim, "threshold": args.threshold, "sample_queries": len(picks),
           "exact_pairs": int(want.size), "faiss_threads": faiss.omp_get_max_threads()}
    t = clock()
    index = CellIndex(vectors)
    build = since(t)
    t = clock()
    pairs = range_pairs(index, vectors, args.threshold, method="ivf")
    search = since(t)
    found = range_pairs(index, vectors[picks], args.threshold, method="ivf")
    out["kocurate_cells"] = {"nlist": index.nlist, "nprobe": index.nprobe, "build_s": build[0], "build_cpu_s": build[1],
                             "search_all_s": search[0], "search_all_cpu_s": search[1], "pairs": int(pairs.ids.size),
                             "recall": recall_of(found.lims, found.ids)}
    print(json.dumps(out["kocurate_cells"]), file=sys.stderr, flush=True)
    del pairs

    # FAISS IVF over kocurate's own cells: the same candidates, FAISS's per-query list scan
    t = clock()
    ivf = faiss.IndexIVFFlat(index.quantizer, dim, index.nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.add(vectors)
    ivf.nprobe = index.nprobe
    add = since(t)
    t = clock()
    ivf.range_search(vectors[queries], radius)
    part = since(t)
    lims, _, ids = ivf.range_search(vectors[picks], radius)
    scale = n / len(queries)
    out["faiss_ivf"] = {"nlist": index.nlist, "nprobe": index.nprobe, "add_s": add[0], "queries_timed": len(queries),
                        "search_part_s": part[0], "search_part_cpu_s": part[1],
                        "search_all_s_scaled": round(part[0] * scale, 1), "search_all_cpu_s_scaled": round(part[1] * scale, 1),
                        "recall": recall_of(lims, ids)}
    print(json.dumps(out["faiss_ivf"]), file=sys.stderr, flush=True)
    del ivf
    ours = out["kocurate_cells"]["build_s"] + out["kocurate_cells"]["search_all_s"]
    out["ratio_vs_faiss_ivf"] = round(ours / (add[0] + out["faiss_ivf"]["search_all_s_scaled"] + build[0]), 3)
    if args.skip_hnsw:
        out["maxrss_mib"] = round(maxrss_mib())
        return out

    t = clock()
    hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 128
    hnsw.add(vectors)
    build_h = since(t)
    print(json.dumps({"faiss_hnsw_build_s": build_h[0], "cpu_s": build_h[1]}), file=sys.stderr, flush=True)
    hnsw.hnsw.efSearch = 128

    def hnsw_range(rows):
        # FAISS 1.15.1's IndexHNSW.range_search aborts with several OpenMP threads
        # (RangeSearchResult::do_allocation assertion, seen at 1M rows): top-k, then the threshold
        scores, ids = hnsw.search(vectors[rows], HNSW_K)
        hit = (scores >= args.threshold) & (ids >= 0)
        return np.concatenate(([0], np.cumsum(hit.sum(axis=1)))), ids[hit]

    t = clock()
    hnsw_range(queries)
    part = since(t)
    lims, ids = hnsw_range(picks)
    out["faiss_hnsw"] = {"M": 32, "efConstruction": 128, "efSearch": 128, "k": HNSW_K, "build_s": build_h[0], "build_cpu_s": build_h[1],
                         "queries_timed": len(queries), "search_part_s": part[0],
                         "search_all_s_scaled": round(part[0] * scale, 1), "recall": recall_of(lims, ids)}
    print(json.dumps(out["faiss_hnsw"]), file=sys.stderr, flush=True)
    out["ratio_vs_faiss_hnsw"] = round(ours / (build_h[0] + out["faiss_hnsw"]["search_all_s_scaled"]), 3)
    out["maxrss_mib"] = round(maxrss_mib())
    return out


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


def korean_rows(rows: int, seed: int = 0) -> list[dict]:
    """`rows` distinct instruction-length Korean rows recombined from the samples' sentences.

    Every sentence of samples/ko_instructions.jsonl (instructions, inputs, outputs) goes into a
    pool; a row takes 1-2 random sentences as its instruction, 0-2 as its input and 1-3 as its
    output (median instruction+input about 60-90 characters, like the samples). Rows share
    sentences, so the near-duplicate step has real candidates to check, but no two rows are equal.
    """
    import re

    rng = np.random.default_rng(seed)
    pool: set[str] = set()
    for line in (ROOT / "samples" / "ko_instructions.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            for key in ("instruction", "input", "output"):
                for sentence in re.split(r"(?<=[.?!])\s+", row.get(key) or ""):
                    if 8 <= len(sentence) <= 160:
                        pool.add(sentence.strip())
    sentences = sorted(pool)
    pick = lambda k: " ".join(sentences[i] for i in rng.choice(len(sentences), k, replace=False))
    out = []
    for i in range(rows):
        out.append({"id": f"r{i:07d}", "instruction": pick(int(rng.integers(1, 3))),
                    "input": pick(int(rng.integers(0, 3))) if rng.random() < 0.5 else "",
                    "output": pick(int(rng.integers(1, 4)))})
    return out


def cmd_e2e(args) -> dict:
    """`kocurate dedup` end to end with default settings, cold cache, against embedding alone.

    Writes `rows` generated rows (`korean_rows`) to a JSONL file, runs the CLI in a
    subprocess with a fresh --cache-dir, then embeds the same texts alone (a fresh cache, in
    another subprocess) with the default embedder: rows/s of both and the share of the
    command's time spent embedding. CPU seconds (user + system of the child) are reported
    beside wall seconds because this machine is shared: wall time stretches with other jobs.

    `--warm`: the embedder out of the figure. The texts are embedded first (into `--cache` when
    given, so a cache warmed once serves later runs), then `kocurate dedup` runs against that
    warm cache: its rows/s is everything except embedding (reading, exact dedup, the cache
    lookup, search, the row rule's second stage, writing). The manifest's cached-vector count
    is reported to show nothing was embedded.
    """
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    data = work / "rows.jsonl"
    with data.open("w", encoding="utf-8") as handle:
        for row in korean_rows(args.rows, seed=args.seed):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    kocurate = str(Path(sys.executable).with_name("kocurate"))

    def timed(cmd):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if done.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
        return wall, cpu, done.stdout

    embed_script = (
        "import json,sys; from kocurate.curate.embed import embed_texts, load_embedder; "
        "rows=[json.loads(l) for l in open(sys.argv[1], encoding='utf-8')]; "
        "texts=[r['instruction']+' '+r['input'] for r in rows]; st={}; "
        "m=load_embedder(sys.argv[3]); embed_texts(texts, m, cache_dir=sys.argv[2], stats=st); print(json.dumps({**st, 'name': m.name}))"
    )
    if args.warm:
        cache = Path(args.cache) if args.cache else work / "cache"
        emb_wall, emb_cpu, out = timed([sys.executable, "-c", embed_script, str(data), str(cache), args.embedder])
        cli_wall, cli_cpu, _ = timed([kocurate, "dedup", str(data), "-o", str(work / "out"), "--cache-dir", str(cache),
                                      "--embedder", args.embedder])
    else:
        cli_wall, cli_cpu, _ = timed([kocurate, "dedup", str(data), "-o", str(work / "out"), "--cache-dir",
                                      str(work / "cache-cli"), "--embedder", args.embedder])
        emb_wall, emb_cpu, out = timed([sys.executable, "-c", embed_script, str(data), str(work / "cache-embed"), args.embedder])
    manifest = json.loads((work / "out" / "manifest.json").read_text(encoding="utf-8"))
    steps = [{"step": s.get("step") or s.get("name"), "seconds": s.get("seconds"), "rows_out": s.get("rows_out"),
              **{k: (s.get("stats") or {}).get(k) for k in ("embed_cached", "checked_pairs", "candidate_pairs", "search")
                 if (s.get("stats") or {}).get(k) is not None}}
             for s in manifest.get("steps", [])]
    shutil.rmtree(work, ignore_errors=True)
    result = {"bench": "e2e", "rows": args.rows, "warm": bool(args.warm),
              "embedder": json.loads(out.strip().splitlines()[-1]).get("name"),
              "dedup_wall_s": round(cli_wall, 1), "dedup_cpu_s": round(cli_cpu, 1),
              "dedup_rows_per_s": round(args.rows / cli_wall), "dedup_rows_per_cpu_s": round(args.rows / cli_cpu),
              "embed_wall_s": round(emb_wall, 1), "embed_cpu_s": round(emb_cpu, 1)}
    if not args.warm:
        result.update(embed_share_wall=round(emb_wall / cli_wall, 3), embed_share_cpu=round(emb_cpu / cli_cpu, 3))
    return {**result, "steps": steps, "load_before": os.getloadavg()}


def _embedder_at(spec: str):
    """`SPEC@REV`: embedder SPEC as kocurate/curate/embed.py defined it at git revision REV
    (the same run's baseline for a change to the embedder; its vectors are not cached)."""
    import importlib.util
    import re

    name, rev = spec.split("@", 1)
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:kocurate/curate/embed.py"],
                            capture_output=True, text=True, check=True).stdout
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(
        "kocurate.curate._embed_at_" + re.sub(r"\W", "_", rev), loader=None))
    module.__package__ = "kocurate.curate"
    exec(compile(source, f"{rev}:kocurate/curate/embed.py", "exec"), module.__dict__)
    return module.load_embedder(name)


def cmd_embed(args) -> dict:
    """Embedders alone on the same texts, one run: e.g. fp32 (the wheel) against bf16 (torch).

    `--embedders` takes specs of `load_embedder`, or `SPEC@REV` for SPEC as the code was at
    git revision REV (`use-bf16@a4ae662` is the bf16 path before its per-token-id tables).
    Each embedder is built afresh for each of `repeat` rounds (3; the rounds interleave the
    embedders, so a change in the box's load hits all of them), so the bf16 path's per-id
    tables start empty and their filling is timed; a warm-up on 64 other rows pages the
    weights in. Per embedder: the best round (most rows per wall second) and every round with
    the 1-minute load average before it. CPU seconds are those of this process (all threads).
    """
    from kocurate.curate import embed

    def fresh(spec):
        if "@" in spec:
            return _embedder_at(spec)
        embed._LOADED.pop(embed.DEFAULT_EMBEDDER if spec == "default" else spec, None)
        return embed.load_embedder(spec)

    rows = korean_rows(args.rows, seed=args.seed)
    texts = [r["instruction"] + " " + r["input"] for r in rows]
    warm = [r["instruction"] for r in korean_rows(64, seed=args.seed + 1)]
    specs = args.embedders.split(",")
    out = {"bench": "embed", "rows": args.rows, "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
           "cpus": len(os.sched_getaffinity(0))}
    rounds = {spec: [] for spec in specs}
    vectors = {}
    for _ in range(max(1, getattr(args, "repeat", 3))):
        for spec in specs:
            model = fresh(spec)
            model.encode(warm)
            load = os.getloadavg()[0]
            start, cpu = time.perf_counter(), time.process_time()
            vectors[spec] = embed.embed_texts(texts, model)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            rounds[spec].append({"name": model.name, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                 "rows_per_s": round(args.rows / wall), "rows_per_cpu_s": round(args.rows / cpu),
                                 "load_1min": round(load, 1)})
            print(json.dumps({spec: rounds[spec][-1]}), file=sys.stderr, flush=True)
            del model
    for spec in specs:
        best = max(rounds[spec], key=lambda r: r["rows_per_s"])
        out[spec] = {**best, "rounds": [[r["rows_per_s"], r["rows_per_cpu_s"], r["load_1min"]] for r in rounds[spec]]}
    if len(specs) >= 2:
        first = vectors[specs[0]]
        out["cosine_to_" + specs[0]] = {
            spec: {"min": round(float((first * vectors[spec]).sum(axis=1).min()), 6),
                   "mean": round(float((first * vectors[spec]).sum(axis=1).mean()), 7)} for spec in specs[1:]}
    out["load_after"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", choices=["peer", "recall", "faiss", "memory", "quality", "candidates", "e2e", "embed", "all"])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--method", default="auto")
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--data", choices=["random", "clustered"], default="random",
                        help="synthetic vectors: random with planted near-duplicates, or clustered topics (recall)")
    parser.add_argument("--nlists", default="", help="recall: comma-separated nlist values (default: ivf_params)")
    parser.add_argument("--spills", default="", help="recall: comma-separated spill values (cells per indexed row)")
    parser.add_argument("--nprobes", default="", help="recall: comma-separated nprobe values (default: ivf_params)")
    parser.add_argument("--faiss-queries", type=int, default=20000,
                        help="faiss: rows FAISS searches (its full-pass time is scaled from them)")
    parser.add_argument("--skip-hnsw", action="store_true", help="faiss: leave out the HNSW build (the slow part)")
    parser.add_argument("--embedder", default="default")
    parser.add_argument("--thresholds", default="0.8,0.85,0.9")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--embedders", default="default,lexical")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inline", action="store_true", help="run in this process (default: a subprocess per bench)")
    parser.add_argument("--repeat", type=int, default=3, help="embed: timed rounds per embedder, best reported")
    parser.add_argument("--warm", action="store_true",
                        help="e2e: embed first (into --cache when given), then time `kocurate dedup` on the warm cache")
    args = parser.parse_args()
    if args.bench == "all":
        for bench, rows in (("quality", 0), ("peer", 100_000), ("recall", 100_000), ("memory", 1_000_000), ("memory", 2_000_000)):
            subprocess.run([sys.executable, __file__, bench, "--rows", str(rows)], check=False)
        return
    if not args.inline:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--inline"]
        sys.exit(subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode)
    result = {"peer": cmd_peer, "recall": cmd_recall, "faiss": cmd_faiss, "memory": cmd_memory, "quality": cmd_quality,
              "candidates": cmd_candidates, "e2e": cmd_e2e, "embed": cmd_embed}[args.bench](args)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
