"""kocurate vs semhash at 1M+ rows on the same vectors, with CPU time and decisions checked
against exact search on a sample.

    .venv/bin/python benchmarks/bench_semhash_scale.py --rows 1000000 --dim 256
    .venv/bin/python benchmarks/bench_semhash_scale.py --rows 3000000 --dim 256 --semhash-limit 7200

Why CPU seconds as well as wall seconds: on a shared machine another job's load stretches the
wall time of whichever tool runs while it is busy; the CPU seconds each tool's process spends
(all threads) are the fairer figure then. Both are reported.

The exact reference: for `--sample` rows drawn at random, the greedy keep-first decision of exact
search (a row is removed when an earlier KEPT row is within the threshold), computed by exact
flat search for the sampled rows and, recursively, for the earlier neighbours their decision
depends on. On these vectors the chains are short, so that costs seconds, not the hours an
exact all-pairs search of 1M rows would take. Each tool's decision on the same rows is then
compared with it: agreement, and the share of exact removals each tool also removes.

Pair recall: for the same sampled rows, the share of the pairs exact search finds above the
threshold (a row with itself excluded) that each tool's own search returns. kocurate's come from
the pairs its whole run found; semhash's from its own index (usearch HNSW, semhash's defaults,
queried as `self_deduplicate` queries it) right after semhash built it, so semhash's recall is
known even when its whole run does not finish within `--semhash-limit` (the sample's queries are
timed apart and left out of semhash's time).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_dedup import build_semhash, maxrss_mib, run_kocurate, semhash_kept, synthetic  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a running process and its reaped children (Linux /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def exact_decisions(vectors: np.ndarray, threshold: float, rows: np.ndarray) -> dict[int, bool]:
    """kept[row] under exact search for `rows` and every earlier row their decision needs."""
    from kocurate.curate.index import build_index, range_pairs

    index = build_index(vectors, method="exact")
    neighbours: dict[int, list[int]] = {}

    def fetch(todo: list[int]) -> None:
        todo = sorted(set(todo) - neighbours.keys())
        for start in range(0, len(todo), 1024):
            part = np.asarray(todo[start:start + 1024], dtype=np.int64)
            pairs = range_pairs(index, vectors[part], threshold)
            for q, i in enumerate(part.tolist()):
                js = pairs.ids[pairs.lims[q]:pairs.lims[q + 1]]
                ss = pairs.scores[pairs.lims[q]:pairs.lims[q + 1]]
                neighbours[i] = sorted(j for j, s in zip(js.tolist(), ss.tolist()) if j < i and s > threshold)

    todo = rows.tolist()
    while todo:  # breadth first: fetch every row a decision depends on
        fetch(todo)
        todo = [j for i in todo for j in neighbours[i] if j not in neighbours]
    kept: dict[int, bool] = {}

    def decide(i: int) -> bool:
        stack = [i]
        while stack:
            top = stack[-1]
            pending = [j for j in neighbours[top] if j not in kept]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            kept[top] = not any(kept[j] for j in neighbours[top])
        return kept[i]

    for i in rows.tolist():
        decide(i)
    return kept


def compare(kept: np.ndarray, exact: dict[int, bool], rows: np.ndarray) -> dict:
    truth = np.array([exact[i] for i in rows.tolist()])
    mine = kept[rows]
    removed = ~truth
    return {"agreement_with_exact": round(float((mine == truth).mean()), 5),
            "exact_removals_found": round(float((~mine[removed]).mean()), 5) if removed.any() else None,
            "removed_but_exact_keeps": int((~mine & truth).sum())}


def sample_recall(exact, rows: np.ndarray, found: list[np.ndarray]) -> dict:
    """Share of the exact pairs of the sampled `rows` that a tool found (`found[q]`: row q's neighbours)."""
    want = found_n = 0
    for q, row in enumerate(rows.tolist()):
        truth = exact.ids[exact.lims[q]:exact.lims[q + 1]]
        truth = set(truth[truth != row].tolist())
        want += len(truth)
        found_n += len(truth & set(np.asarray(found[q]).tolist()))
    return {"pair_recall": round(found_n / want, 5) if want else 1.0, "exact_pairs": want}


def kocurate_neighbours(pairs, rows: np.ndarray) -> list[np.ndarray]:
    """Each sampled row's neighbours in kocurate's pairs (queries are all rows, in order)."""
    return [pairs.ids[pairs.lims[r]:pairs.lims[r + 1]] for r in rows.tolist()]


def _semhash_child(path: str, threshold: float, rows: np.ndarray, out) -> None:
    """semhash's run, as `run_semhash`, with its index's neighbours of `rows` sent as soon as it is built."""
    vectors = np.ascontiguousarray(np.load(path, mmap_mode="r"))
    c0, t0 = cpu_seconds(), time.perf_counter()
    semhash = build_semhash(vectors)
    build_s, build_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    q0, qc0 = time.perf_counter(), cpu_seconds()
    neighbours = semhash.index.query_threshold(vectors[rows], threshold=threshold)
    sample_s, sample_cpu = time.perf_counter() - q0, cpu_seconds() - qc0
    # semhash indexes groups of exact copies; the vectors here are distinct, so group i is row i
    assert len(semhash.index.items) == len(vectors)
    out.send(("built", round(build_s, 1), round(build_cpu, 1), [ids for ids, _ in neighbours]))
    t1, c1 = time.perf_counter(), cpu_seconds()
    result = semhash.self_deduplicate(threshold=threshold)
    seconds = build_s + time.perf_counter() - t1
    cpu = build_cpu + cpu_seconds() - c1
    kept = semhash_kept(result, len(vectors))
    out.send(("done", seconds, cpu, kept, maxrss_mib(), round(sample_s, 1), round(sample_cpu, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--semhash-limit", type=float, default=3600, help="seconds before semhash is stopped")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "work"))
    args = parser.parse_args()

    from kocurate.curate.index import build_index, range_pairs

    vectors = synthetic(args.rows, args.dim)
    rows = np.sort(np.random.default_rng(1).choice(args.rows, size=args.sample, replace=False))
    t0 = time.perf_counter()
    exact = exact_decisions(vectors, args.threshold, rows)
    exact_pairs = range_pairs(build_index(vectors, method="exact"), vectors[rows], args.threshold)
    exact_s = time.perf_counter() - t0
    print(f"exact reference on {args.sample} rows: {exact_s:.1f} s ({len(exact)} rows decided)", file=sys.stderr, flush=True)

    c0 = cpu_seconds()
    ours_s, ours_kept, method, pairs = run_kocurate(vectors, args.threshold, with_pairs=True)
    ours_cpu = cpu_seconds() - c0
    print(f"kocurate: {ours_s:.1f} s wall, {ours_cpu:.1f} CPU-s ({method})", file=sys.stderr, flush=True)
    result = {"bench": "semhash-scale", "rows": args.rows, "dim": args.dim, "threshold": args.threshold,
              "sample": args.sample, "kocurate": {"wall_s": round(ours_s, 1), "cpu_s": round(ours_cpu, 1),
                                                  "search": method,
                                                  "maxrss_mib_so_far": round(maxrss_mib()),
                                                  **sample_recall(exact_pairs, rows, kocurate_neighbours(pairs, rows)),
                                                  **compare(ours_kept, exact, rows)}}
    del pairs
    print(json.dumps(result["kocurate"]), file=sys.stderr, flush=True)

    # semhash in its own process, so it can be stopped at the limit and its peak memory is its own
    path = Path(args.work) / f"semhash_scale_{args.rows}_{args.dim}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    del vectors
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_semhash_child, args=(str(path), args.threshold, rows, send))
    started = time.perf_counter()
    child.start()
    peer: dict = {}
    if recv.poll(args.semhash_limit):
        _, build_s, build_cpu, found = recv.recv()
        peer.update({"index_build_s": build_s, "index_build_cpu_s": build_cpu,
                     **sample_recall(exact_pairs, rows, found)})
        print(f"semhash index built: {json.dumps(peer)}", file=sys.stderr, flush=True)
    left = args.semhash_limit - (time.perf_counter() - started)
    if peer and left > 0 and recv.poll(left):
        _, peer_s, peer_cpu, peer_kept, peer_rss, sample_s, sample_cpu = recv.recv()
        child.join()
        result["semhash"] = {"wall_s": round(peer_s, 1), "cpu_s": round(peer_cpu, 1), "maxrss_mib": round(peer_rss),
                             "sample_query_s_left_out": sample_s, **peer, **compare(peer_kept, exact, rows)}
        result["ratio_wall"] = round(ours_s / peer_s, 3)
        result["ratio_cpu"] = round(ours_cpu / peer_cpu, 3)
    else:
        waited = time.perf_counter() - started
        spent = child_cpu_seconds(child.pid)
        child.kill()
        result["semhash"] = {"finished": False, "stopped_after_s": round(waited, 1), "cpu_s_so_far": round(spent, 1),
                             **peer}
        result["ratio_wall_bound"] = f"< {ours_s / waited:.3f}"
        result["ratio_cpu_bound"] = f"< {ours_cpu / spent:.3f}"
    path.unlink(missing_ok=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
