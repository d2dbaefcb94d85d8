"""Benchmark `kocurate select` against what KoQuality ran (scikit-learn KMeans, n_init=10).

Three parts, each printing a markdown table (copied into benchmarks/results/select.md):

  kmeans  FAISS k-means (kocurate's, n_init 1 and 10) vs sklearn KMeans(n_init=10, random_state=42)
          on the same synthetic embeddings: seconds, time ratio, inertia ratio, adjusted Rand index.
  select  `kocurate select` end to end (CLI, subprocess) on N rows with precomputed embeddings (.npy)
          and a ppl column: seconds and peak RSS of the process.
  count   rows the `ppl` method keeps at KoQuality's sizes (N=384,067, L=5, K=100, ratio 0.01),
          from the cluster sizes of the `select` run and for reference size distributions.

Usage (synthetic data under benchmarks/work/, git-ignored):

  .venv/bin/python benchmarks/bench_select.py kmeans --rows 20000 --dim 768 --clusters 100
  .venv/bin/python benchmarks/bench_select.py select --rows 384067 --dim 768
  .venv/bin/python benchmarks/bench_select.py count
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
sys.path.insert(0, str(ROOT))


def synthetic_embeddings(rows: int, dim: int, topics: int = 2000, seed: int = 0, noise: float = 1.2) -> np.ndarray:
    """Unit vectors around `topics` centres with Zipf-like topic sizes (instruction sets are skewed)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dim)).astype(np.float32)
    weights = 1.0 / np.arange(1, topics + 1) ** 0.8
    topic = rng.choice(topics, size=rows, p=weights / weights.sum())
    x = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 50_000):
        end = min(rows, start + 50_000)
        block = centres[topic[start:end]] + noise * rng.standard_normal((end - start, dim)).astype(np.float32)
        x[start:end] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x


def inertia(x: np.ndarray, centres: np.ndarray) -> float:
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centres, dtype=np.float32))
    d, _ = index.search(x, 1)
    return float(d.sum())


def part_kmeans(args) -> None:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from kocurate.curate.select import kmeans

    x = synthetic_embeddings(args.rows, args.dim, seed=1, topics=args.topics, noise=args.noise)
    print(f"data: {x.shape[0]:,} x {x.shape[1]} float32, {args.topics} topics, noise {args.noise}, K={args.clusters}",
          flush=True)
    runs = {}
    for init in ("random", "k-means++"):
        for n_init in (1, 10):
            name = f"FAISS init={init} n_init={n_init}"
            t = time.perf_counter()
            labels, _, centres = kmeans(x, args.clusters, seed=42, niter=args.niter, n_init=n_init, init=init)
            runs[name] = (time.perf_counter() - t, labels, centres)
            print(f"{name}: {runs[name][0]:.1f}s", flush=True)
    # sklearn's run is cached per data set (it is the slow part); the seconds are the original run's
    cache = WORK / f"sklearn-{args.rows}x{args.dim}-t{args.topics}-n{args.noise}-k{args.clusters}-i{args.sk_n_init}.npz"
    if cache.exists():
        saved = np.load(cache)
        sk_seconds, sk_labels, sk_centres, sk_iter = float(saved["seconds"]), saved["labels"], saved["centres"], int(saved["n_iter"])
        print(f"sklearn n_init={args.sk_n_init}: {sk_seconds:.1f}s (cached run)", flush=True)
    else:
        t = time.perf_counter()
        km = KMeans(args.clusters, n_init=args.sk_n_init, random_state=42).fit(x)
        sk_seconds = time.perf_counter() - t
        sk_labels, sk_centres, sk_iter = km.labels_, km.cluster_centers_, km.n_iter_
        WORK.mkdir(parents=True, exist_ok=True)
        np.savez(cache, seconds=sk_seconds, labels=sk_labels, centres=sk_centres, n_iter=sk_iter)
        print(f"sklearn n_init={args.sk_n_init}: {sk_seconds:.1f}s", flush=True)
    sk_inertia = inertia(x, sk_centres)
    lines = [
        f"| method | seconds | time / sklearn | inertia / sklearn | ARI vs sklearn |",
        "|---|---:|---:|---:|---:|",
        f"| sklearn KMeans n_init={args.sk_n_init} (k-means++, random_state 42) | {sk_seconds:.1f} | 1.000 | 1.0000 | 1.000 |",
    ]
    for name, (seconds, labels, centres) in runs.items():
        lines.append(
            f"| {name} (niter {args.niter}) | {seconds:.1f} | {seconds / sk_seconds:.3f} | "
            f"{inertia(x, centres) / sk_inertia:.4f} | {adjusted_rand_score(sk_labels, labels):.3f} |"
        )
    a, b = runs["FAISS init=k-means++ n_init=1"][1], runs["FAISS init=k-means++ n_init=10"][1]
    lines.append(f"\nARI between FAISS k-means++ n_init=1 and n_init=10: {adjusted_rand_score(a, b):.3f}; "
                 f"sklearn iterations in the best run: {sk_iter}")
    print("\n".join(lines))


def load() -> str:
    """The 1-minute load average and the core count, for every figure (this machine is shared)."""
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def goal_data(args) -> np.ndarray:
    """The goal's data set (seeded, cached as .npy under benchmarks/work/)."""
    path = WORK / f"goal-{args.rows}x{args.dim}-t{args.topics}-n{args.noise}.npy"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        np.save(path, synthetic_embeddings(args.rows, args.dim, seed=1, topics=args.topics, noise=args.noise))
    return np.load(path)


def sklearn_reference(args, x: np.ndarray) -> dict:
    """scikit-learn KMeans(n_clusters=K, n_init=10, random_state=42) on `x`, run ONCE per data set:
    its inertia, seconds and load are kept in benchmarks/results/ as json (sklearn is the slow part)."""
    name = f"select-sklearn-{args.rows}x{args.dim}-t{args.topics}-n{args.noise}-k{args.clusters}-i{args.sk_n_init}.json"
    path = ROOT / "benchmarks" / "results" / name
    if path.exists():
        return json.loads(path.read_text())
    import sklearn
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_info

    before = load()
    t, cpu = time.perf_counter(), time.process_time()
    km = KMeans(args.clusters, n_init=args.sk_n_init, random_state=42).fit(x)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    ref = {"rows": args.rows, "dim": args.dim, "topics": args.topics, "noise": args.noise, "clusters": args.clusters,
           "n_init": args.sk_n_init, "random_state": 42, "sklearn": sklearn.__version__, "seconds": round(seconds, 2),
           "cpu_seconds": round(cpu, 2),
           "inertia": inertia(x, km.cluster_centers_), "sklearn_inertia_": float(km.inertia_), "n_iter": int(km.n_iter_),
           "threads": max(i["num_threads"] for i in threadpool_info()), "load_before": before, "load_after": load()}
    path.write_text(json.dumps(ref, indent=1) + "\n")
    np.save(WORK / name.replace(".json", "-labels.npy"), km.labels_)
    return ref


def part_goal(args) -> None:
    """kocurate's k-means vs the cached scikit-learn reference on the same data: time and inertia ratios."""
    from kocurate.curate.cluster import kmeans

    x = goal_data(args)
    print(f"data: {x.shape[0]:,} x {x.shape[1]} float32, {args.topics} topics, noise {args.noise}, K={args.clusters}",
          flush=True)
    ref = sklearn_reference(args, x)
    print(f"sklearn KMeans n_init={ref['n_init']}: {ref['seconds']:.1f}s, inertia {ref['inertia']:.2f} "
          f"({ref['load_before']} before, {ref['load_after']} after)", flush=True)
    sk_cpu = ref.get("cpu_seconds")
    lines = ["| kocurate k-means | seconds | CPU seconds | sklearn / ours: wall | sklearn / ours: CPU | inertia / sklearn "
             "| load before / after |", "|---|---:|---:|---:|---:|---:|---|"]
    for spec in args.variant or ["default"]:
        kw = {} if spec == "default" else {k: (int(v) if v.lstrip("-").isdigit() else v)
                                           for k, v in (kv.split("=") for kv in spec.split(","))}
        before = load()
        t, cpu = time.perf_counter(), time.process_time()
        _, d2, centres = kmeans(x, args.clusters, seed=42, **kw)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        ratio = inertia(x, centres) / ref["inertia"]
        cpu_ratio = f"{sk_cpu / cpu:.1f}x" if sk_cpu else "n/a"
        lines.append(f"| {spec} | {seconds:.1f} | {cpu:.1f} | {ref['seconds'] / seconds:.1f}x | {cpu_ratio} | {ratio:.5f} "
                     f"| {before} / {load()} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


def part_select(args) -> None:
    import polars as pl

    WORK.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    data = WORK / f"select-{args.rows}.parquet"
    npy = WORK / f"select-{args.rows}x{args.dim}.npy"
    if not npy.exists():
        np.save(npy, synthetic_embeddings(args.rows, args.dim, seed=3))
    if not data.exists():
        lengths = np.clip(rng.lognormal(3.6, 0.8, args.rows).astype(int), 2, 2000)  # median ~37 chars
        syllables = np.array(list("가나다라마바사아자차카타파하국어문장질문답변서울김치"))
        text = ["".join(rng.choice(syllables, size=min(n, 64))) + "다" * max(0, n - 64) for n in lengths]
        pl.DataFrame({
            "id": [f"syn-{i:06d}" for i in range(args.rows)], "instruction": text,
            "output": ["답변"] * args.rows, "ppl": rng.lognormal(2.5, 0.6, args.rows),
        }).write_parquet(data)
    out = WORK / "select-out"
    cmd = [str(ROOT / ".venv" / "bin" / "kocurate"), "select", str(data), "-o", str(out), "--overwrite",
           "--ratio", "0.01", "--method", args.method, "--length-groups", "5", "--clusters", "100",
           "--embeddings", str(npy)]
    print(" ".join(cmd), flush=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(proc.stdout[-3000:], proc.stderr[-2000:])
    if proc.returncode:
        raise SystemExit(proc.returncode)
    manifest = json.loads((out / "manifest.json").read_text())
    step = manifest["steps"][-1]
    print(f"| rows in | rows out | seconds (process) | select step seconds | peak RSS (MiB) | embeddings on disk (MiB) |\n"
          f"|---:|---:|---:|---:|---:|---:|\n"
          f"| {step['rows_in']:,} | {step['rows_out']:,} | {seconds:.1f} | {step['seconds']:.1f} | {peak:,.0f} | "
          f"{npy.stat().st_size / 2**20:,.0f} |")
    # cluster sizes for the count part
    kept = pl.read_parquet(next((out / "data").glob("*.parquet")), columns=["len_group", "cluster"])
    removed = pl.read_parquet(next((out / "removed").glob("*.parquet")), columns=["len_group", "cluster"])
    sizes = pl.concat([kept, removed]).group_by("len_group", "cluster").len()["len"].to_numpy()
    np.save(WORK / "cluster-sizes.npy", sizes)


def part_count(args) -> None:
    from kocurate.curate.select import koquality_count

    n, step = 384_067, 100
    lines = ["| cluster sizes (500 clusters, 384,067 rows) | rows kept by `ppl` | share | excess over N/step |",
             "|---|---:|---:|---:|"]

    def row(label, sizes):
        kept = koquality_count(sizes, 0.01)
        lines.append(f"| {label} | {kept:,} | {kept / sizes.sum():.4%} | {kept - sizes.sum() / step:,.1f} |")

    path = WORK / "cluster-sizes.npy"
    if path.exists():
        sizes = np.load(path)
        row(f"this run's k-means ({len(sizes)} clusters, min {sizes.min()}, median {int(np.median(sizes))}, "
            f"max {sizes.max()})", sizes)
    equal = np.full(500, n // 500)
    equal[: n - equal.sum()] += 1
    row("all equal (768-769 rows)", equal)
    rng = np.random.default_rng(0)
    row("random sizes (Dirichlet alpha=1)", np.bincount(rng.choice(500, n, p=rng.dirichlet(np.ones(500))), minlength=500))
    exact_hundreds = np.full(500, 700)
    exact_hundreds[:84] += 100
    exact_hundreds[84] += n - exact_hundreds.sum()
    row("remainders near 0 (multiples of 100 but one)", exact_hundreds)
    lines.append(f"\nN/step = {n / step:,.2f}; released KoQuality: 4,006 (excess {4006 - n / step:,.1f}); "
                 f"bounds for 500 non-empty clusters: {math.ceil(n / step):,} to {math.floor(n / step) + 500:,}")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["kmeans", "goal", "select", "count"])
    parser.add_argument("--rows", type=int, default=384_067)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--niter", type=int, default=20)
    parser.add_argument("--sk-n-init", type=int, default=10)
    parser.add_argument("--method", default="ppl")
    parser.add_argument("--topics", type=int, default=2000, help="kmeans: topic centres in the synthetic data")
    parser.add_argument("--noise", type=float, default=1.2, help="kmeans: per-dimension noise around a topic centre")
    parser.add_argument("--variant", action="append",
                        help="goal: kmeans() keyword overrides, e.g. niter=30,n_init=3 (repeatable; default: the defaults)")
    args = parser.parse_args()
    {"goal": part_goal, "kmeans": part_kmeans, "select": part_select, "count": part_count}[args.part](args)


if __name__ == "__main__":
    main()
