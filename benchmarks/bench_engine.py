"""Benchmark the engine seam: the Ray Data executor against the local one, same steps, same rows.

For N synthetic rows (Korean-like text with planted exact duplicates and near-duplicates, a
skewed `task` column, a `ppl` score, precomputed 256-d prompt vectors in an .npy file) it runs
each step once per engine, each engine in its own process (so peak memory is that engine's):

  exact-dedup   (row rule)                      narrow hash shuffle of key hashes on the prompt, then a filter
  cap           (per_task 200)                  keyed: hash shuffle on the task
  decontaminate (lexical embedder, 0.8, 50-char n-grams) against 1,000 "benchmark" items made
                from the rows themselves (half verbatim, half with one word changed)
  select        (centroid, size N/10, 5 x 20, precomputed vectors)
  semantic-dedup (instruction rule, lexical embedder, threshold 0.8)

and prints one markdown row per step: seconds local / ray, ratio, kept-set agreement
(|A & B| / |A | B|), and peak RSS of the driver and of the Ray workers (sampled every 0.5 s).

  .venv/bin/python benchmarks/bench_engine.py --rows 200000            # both engines, table
  .venv/bin/python benchmarks/bench_engine.py --rows 200000 --steps exact-dedup,cap
  .venv/bin/python benchmarks/bench_engine.py --rows 100000 --steps exact-dedup --exact-rows   # the old row shuffle

Data goes to benchmarks/work/engine-N/ (git-ignored). The machine's load distorts every time:
the table says what the load average was.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
sys.path.insert(0, str(ROOT))
STEPS = ("exact-dedup", "cap", "decontaminate", "select", "semantic-dedup")
SYLLABLES = [chr(0xAC00 + i) for i in range(0, 11172, 37)]


def make_data(rows: int, dim: int = 256, seed: int = 0) -> Path:
    """Synthetic rows and vectors under benchmarks/work/engine-ROWS/ (made once)."""
    import polars as pl

    folder = WORK / f"engine-{rows}"
    if (folder / "vectors.npy").is_file():
        return folder
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(SYLLABLES, size=rng.integers(2, 5))) for _ in range(5000)]
    base = max(1, int(rows * 0.9))

    def sentences(n, lo, hi):
        lengths = rng.integers(lo, hi, size=n)
        picks = rng.integers(0, len(words), size=int(lengths.sum()))
        out, at = [], 0
        for length in lengths.tolist():
            out.append(" ".join(words[k] for k in picks[at:at + length]))
            at += length
        return out

    instruction = sentences(base, 4, 30)
    inputs = sentences(base, 0, 12)
    output = sentences(base, 5, 40)
    # 10%: copies of earlier rows (half exact, half with one word changed: near-duplicates)
    extra = rows - base
    src = rng.integers(0, base, size=extra)
    for k, s in enumerate(src.tolist()):
        text = instruction[s]
        if k % 2:
            parts = text.split(" ")
            parts[rng.integers(len(parts))] = words[rng.integers(len(words))]
            text = " ".join(parts)
        instruction.append(text)
        inputs.append(inputs[s])
        output.append(output[s])
    tasks = np.minimum(rng.zipf(1.3, size=rows), 2000)
    order = rng.permutation(rows)
    frame = pl.DataFrame({
        "id": [f"r{i:08d}" for i in range(rows)],
        "instruction": [instruction[i] for i in order], "input": [inputs[i] for i in order],
        "output": [output[i] for i in order], "task": [f"task-{t}" for t in tasks.tolist()],
        "ppl": rng.gamma(2.0, 5.0, size=rows),
    })
    topics = rng.normal(size=(100, dim)).astype(np.float32)
    vectors = topics[rng.integers(0, 100, size=rows)] + rng.normal(scale=1.5, size=(rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    shard = 250_000
    count = max(1, -(-rows // shard))
    for i in range(count):
        frame.slice(i * shard, shard).write_parquet(folder / "data" / f"train-{i:05d}-of-{count:05d}.parquet",
                                                    row_group_size=50_000)
    np.save(folder / "vectors.npy", vectors.astype(np.float32))
    return folder


def make_items(folder: Path, count: int = 1000, seed: int = 1) -> Path:
    """A stand-in benchmark: `count` instructions of the rows (half verbatim, half with one word
    changed), so decontamination removes rows on both engines (made once)."""
    import polars as pl

    path = folder / "bench_items.jsonl"
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    frame = pl.read_parquet(folder / "data" / "*.parquet", columns=["instruction"])
    picks = rng.choice(frame.height, size=count, replace=False)
    texts = []
    for k, i in enumerate(picks.tolist()):
        words = frame["instruction"][i].split(" ")
        if k % 2 and len(words) > 3:
            words[rng.integers(len(words))] = "바뀐말"
        texts.append(" ".join(words))
    pl.DataFrame({"id": [f"item-{k}" for k in range(count)], "text": texts}).write_ndjson(path)
    return path


def make_step(name: str, rows: int, folder: Path):
    from kocurate.curate.cap import Cap
    from kocurate.curate.dedup import ExactDedup, SemanticDedup
    from kocurate.curate.select import Select

    if name == "exact-dedup":
        return ExactDedup()
    if name == "cap":
        return Cap(per_task=200)
    if name == "decontaminate":
        from kocurate.curate.decontam import Decontaminate

        return Decontaminate(against=str(make_items(folder)), fields=("text",), embedder="lexical", threshold=0.8,
                             ngram=50)
    if name == "select":
        return Select(size=max(1, rows // 10), method="centroid", clusters=20, length_groups=5,
                      embeddings=str(folder / "vectors.npy"))
    if name == "semantic-dedup":
        return SemanticDedup(threshold=0.8, embedder="lexical", rule="instruction", search="auto")
    raise SystemExit(f"unknown step {name}")


class Sampler:
    """Peak summed RSS of Ray's worker processes (and the raylet's children), every 0.5 s."""

    def __init__(self):
        import psutil

        self.psutil = psutil
        self.peak = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        me = os.getpid()
        while not self.stop:
            total = 0
            for proc in self.psutil.process_iter(["pid", "cmdline", "memory_info"]):
                try:
                    cmd = " ".join(proc.info["cmdline"] or [])
                    if proc.info["pid"] != me and ("ray::" in cmd or "default_worker.py" in cmd):
                        total += proc.info["memory_info"].rss
                except Exception:
                    continue
            self.peak = max(self.peak, total)
            time.sleep(0.5)


def run_engine(engine: str, rows: int, steps: list[str], out: Path, sample: int | None = None,
               nprobe: int | None = None, exact_rows: bool = False, nlist: int | None = None,
               spill: int | None = None) -> None:
    """One engine, every step over the same input; kept ids per step to `out`."""
    import polars as pl

    from kocurate.curate.step import RunContext

    folder = make_data(rows)
    frame = pl.read_parquet(folder / "data" / "*.parquet") if engine == "local" else None
    ctx = RunContext(seed=42)
    results = {}
    sampler = None
    if engine == "ray":
        from kocurate.curate.engine.ray_data import RayExecutor, read_shards

        executor = RayExecutor(num_cpus=os.cpu_count(), sample_rows=sample, nprobe=nprobe, nlist=nlist, spill=spill)
        executor.exact_narrow = not exact_rows
        t = time.perf_counter()
        executor.start()
        results["ray_start_seconds"] = round(time.perf_counter() - t, 1)
        sampler = Sampler()
    for name in steps:
        step = make_step(name, rows, folder)
        t = time.perf_counter()
        if engine == "local":
            kept = step.run(frame, ctx).kept["id"]
        else:
            ds, _ = read_shards([folder])
            output = executor.run_dataset(step, ds, ctx, rows=rows)
            import pyarrow as pa
            import ray

            tables = ray.get(output.kept.select_columns(["id"]).to_arrow_refs())
            kept = pl.from_arrow(pa.concat_tables(tables))["id"]
        seconds = time.perf_counter() - t
        ids = out / f"{engine}-{name}.txt"
        ids.write_text("\n".join(sorted(kept.to_list())), encoding="utf-8")
        results[name] = {"seconds": round(seconds, 1), "kept": int(len(kept)), "load": round(os.getloadavg()[0], 1)}
    from bench_dedup import maxrss_mib  # VmHWM: the parent's peak (data generation) does not leak in

    results["driver_peak_rss_gib"] = round(maxrss_mib() / 1024, 2)
    if sampler:
        sampler.stop = True
        results["workers_peak_rss_gib"] = round(sampler.peak / 2**30, 2)
    (out / f"{engine}.json").write_text(json.dumps(results), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--engine", choices=("local", "ray"))
    parser.add_argument("--sample", default=None,
                        help="k-means sample rows per length group on Ray (default 256 x clusters; `all`: every row)")
    parser.add_argument("--nprobe", type=int, default=None, help="cells each row probes in Ray semantic dedup (default 8)")
    parser.add_argument("--spill", type=int, default=None, help="cells each row lives in, Ray semantic dedup (default 8)")
    parser.add_argument("--nlist", type=int, default=None, help="cells in Ray semantic dedup (default: its own rule)")
    parser.add_argument("--exact-rows", action="store_true",
                        help="Ray exact dedup by the old path (shuffle whole rows, the step's own run per partition)")
    args = parser.parse_args()
    sample = None if args.sample is None else (10**12 if args.sample == "all" else int(args.sample))
    steps = [s for s in args.steps.split(",") if s]
    out = WORK / f"engine-{args.rows}" / "results"
    out.mkdir(parents=True, exist_ok=True)
    if args.engine:
        run_engine(args.engine, args.rows, steps, out, sample, args.nprobe, args.exact_rows, args.nlist, args.spill)
        return
    make_items(make_data(args.rows))
    load = os.getloadavg()[0]
    for engine in ("local", "ray"):
        extra = ((["--sample", args.sample] if args.sample else []) + (["--nprobe", str(args.nprobe)] if args.nprobe else [])
                 + (["--nlist", str(args.nlist)] if args.nlist else [])
                 + (["--spill", str(args.spill)] if args.spill else [])
                 + (["--exact-rows"] if args.exact_rows else []))
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--steps", args.steps, "--engine", engine,
                        *extra], check=True)
    local = json.loads((out / "local.json").read_text())
    ray = json.loads((out / "ray.json").read_text())
    print(f"\nk-means sample: {args.sample or '256 x clusters'} rows per length group; nprobe {args.nprobe or 8}")
    print(f"\n{args.rows:,} rows, {os.cpu_count()} CPUs, load average {load:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end; Ray start {ray.get('ray_start_seconds')} s (not in the step times)\n")
    print("| step | local s | ray s | ray / local | kept local | kept ray | kept-set agreement | load after local / ray |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in steps:
        a = set((out / f"local-{name}.txt").read_text(encoding="utf-8").split("\n"))
        b = set((out / f"ray-{name}.txt").read_text(encoding="utf-8").split("\n"))
        agree = len(a & b) / max(1, len(a | b))
        print(f"| {name} | {local[name]['seconds']} | {ray[name]['seconds']} | "
              f"{ray[name]['seconds'] / max(local[name]['seconds'], 1e-9):.2f} | {local[name]['kept']:,} | "
              f"{ray[name]['kept']:,} | {agree:.5f} | {local[name].get('load')} / {ray[name].get('load')} |")
    print(f"\npeak RSS: local process {local['driver_peak_rss_gib']} GiB; ray driver {ray['driver_peak_rss_gib']} GiB, "
          f"ray workers (sum) {ray.get('workers_peak_rss_gib')} GiB")


if __name__ == "__main__":
    main()
