"""The engine seam: each covered step through the local and the Ray Data executor keeps the same rows.

Ray runs locally with 2 CPUs, one session for the module. The Ray tests compare against the
local executor on the samples (planted duplicates, contamination, CoT tasks), so a wrong
shuffle key, a lost row or a different greedy order fails them.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kocurate.curate.cap import Cap
from kocurate.curate.dedup import ExactDedup, SemanticDedup
from kocurate.curate.engine import ENGINES, LocalExecutor, get_executor
from kocurate.curate.step import RunContext
from kocurate.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def instructions() -> pl.DataFrame:
    return pl.read_ndjson(SAMPLES / "ko_instructions.jsonl")


def cot() -> pl.DataFrame:
    frame = pl.read_ndjson(SAMPLES / "ko_cot.jsonl")
    return frame.with_columns(pl.format("cot-{}", pl.int_range(pl.len())).alias("id"))


# ---------------------------------------------------------------------------------------------
# without Ray


def test_get_executor_names_and_errors():
    assert isinstance(get_executor("local"), LocalExecutor)
    assert isinstance(get_executor(None), LocalExecutor)
    assert ENGINES == ("local", "ray")
    with pytest.raises(InputError, match="--engine spark: unknown engine; use one of local, ray"):
        get_executor("spark")
    with pytest.raises(InputError, match="--ray-address .* only used with --engine ray"):
        get_executor("local", address="ray://head:10001")


def test_get_executor_ray_is_lazy():
    executor = get_executor("ray", address="ray://nowhere:1")
    assert executor.name == "ray" and executor.address == "ray://nowhere:1"
    assert not executor._started  # nothing connects until a step runs


def test_local_executor_is_the_step_itself():
    frame = instructions()
    result, record = LocalExecutor().run_step(ExactDedup(), frame, RunContext(seed=1))
    direct = ExactDedup().run(frame, RunContext(seed=1))
    assert result.kept["id"].to_list() == direct.kept["id"].to_list()
    assert record.rows_in == frame.height and record.rows_out == direct.kept.height


def test_merge_counters_sums_counts_and_merges_tables():
    from kocurate.curate.engine.ray_data import merge_counters

    parts = [
        {"rows_in": 10, "rows_out": 4, "removed": {"over-cap": 6},
         "stats": {"tasks": 2, "tasks_capped": 1, "per_task": {"b": [8, 2], "a": [2, 2]}, "rows_after": 4}},
        {"rows_in": 5, "rows_out": 5, "removed": {}, "stats": {"tasks": 1, "tasks_capped": 0, "per_task": {"c": [5, 5]},
                                                           "rows_after": 5}},
    ]
    record = merge_counters(Cap(per_task=2), parts, 1.5)
    assert (record.rows_in, record.rows_out, record.removed) == (15, 9, {"over-cap": 6})
    assert record.stats["tasks"] == 3 and record.stats["rows_after"] == 9
    assert list(record.stats["per_task"]) == ["a", "b", "c"]


# ---------------------------------------------------------------------------------------------
# Ray: one local session for the module (the `ray_executor` fixture in conftest.py)



def both(step_factory, frame, ray_executor, ctx=None):
    ctx = ctx or RunContext(seed=7)
    local, local_record = LocalExecutor().run_step(step_factory(), frame, ctx)
    remote, remote_record = ray_executor.run_step(step_factory(), frame, ctx)
    return local, local_record, remote, remote_record


def removed_pairs(frame: pl.DataFrame) -> list[tuple]:
    return sorted(frame.select("id", "reason", "dup_of").iter_rows())


@pytest.mark.parametrize("rule", ["row", "instruction"])
def test_exact_dedup_same_kept_ids(ray_executor, rule):
    frame = instructions()
    extra = frame.head(3).with_columns(pl.Series("id", ["x-empty", "x-long", "x-short"]),
                                       pl.Series("instruction", [" \u200b ", *frame["instruction"][1:3]]),
                                       pl.Series("input", ["", *frame["input"][1:3]]),
                                       pl.Series("output", ["답", frame["output"][1] + " 더 긴 답", "짧"]))
    frame = pl.concat([frame, extra])  # an empty prompt; a longer and a shorter answer to a prompt
    local, lrec, remote, rrec = both(lambda: ExactDedup(rule=rule), frame, ray_executor)
    assert local.removed.height > 0  # the sample has planted exact duplicates
    assert lrec.stats["empty_text"] == 1
    assert remote.kept["id"].to_list() == local.kept["id"].to_list()  # same rows, input order
    assert removed_pairs(remote.removed) == removed_pairs(local.removed)  # same twin kept for each
    assert (sorted(remote.removed.select("id", "similarity", "detail").iter_rows())
            == sorted(local.removed.select("id", "similarity", "detail").iter_rows()))
    assert (rrec.rows_in, rrec.rows_out, rrec.removed) == (lrec.rows_in, lrec.rows_out, lrec.removed)
    assert {k: v for k, v in rrec.stats.items() if k != "engine"} == lrec.stats
    assert set(remote.kept.columns) == set(local.kept.columns)


def test_cap_same_kept_ids(ray_executor):
    frame = cot()
    local, lrec, remote, rrec = both(lambda: Cap(per_task=20), frame, ray_executor)
    assert lrec.stats["tasks_capped"] > 0
    assert remote.kept["id"].to_list() == local.kept["id"].to_list()
    assert rrec.stats["per_task"] == lrec.stats["per_task"]
    assert rrec.stats["tasks"] == lrec.stats["tasks"] and rrec.removed == lrec.removed


def test_decontaminate_same_kept_ids(ray_executor):
    from kocurate.curate.decontam import Decontaminate

    frame = instructions()

    def step():
        return Decontaminate(against="kobest", data_dir=str(SAMPLES / "kobest"), embedder="lexical", skip_missing=True)

    local, lrec, remote, rrec = both(step, frame, ray_executor)
    assert local.removed.height > 0  # planted contamination
    assert remote.kept["id"].to_list() == local.kept["id"].to_list()
    assert removed_pairs(remote.removed) == removed_pairs(local.removed)
    assert rrec.stats["contaminated"] == lrec.stats["contaminated"]
    assert rrec.stats["items"] == lrec.stats["items"]  # a constant, not summed over batches


def test_select_same_kept_ids_given_the_same_centroids(ray_executor):
    from kocurate.curate.select import Select

    frame = instructions().head(1200)
    # a deterministic stand-in score per row
    frame = frame.with_columns(pl.Series("ppl", [zlib.crc32(i.encode()) % 997 / 10 for i in frame["id"]]))

    def step():
        return Select(size=150, method="centroid", clusters=6, length_groups=3, embedder="lexical")

    # every row of a group in the k-means sample: the same centroids as the local step
    local, lrec, remote, rrec = both(step, frame, ray_executor)
    assert remote.kept["id"].to_list() == local.kept["id"].to_list()
    assert remote.kept.height == 150
    assert remote.kept.select("id", "len", "len_group", "cluster").equals(local.kept.select("id", "len", "len_group", "cluster"))
    assert rrec.stats["length_cut_points"] == lrec.stats["length_cut_points"]


def test_semantic_dedup_identical_pairs(ray_executor, tmp_path):
    frame = instructions()
    # the Ray workers embed first, into a shared cache folder; the local run then reads their vectors
    ctx = RunContext(seed=7, cache_dir=tmp_path / "cache")
    ray_executor.nlist, ray_executor.nprobe = 6, 6  # probe every cell: exact search, cell by cell
    try:
        ray_step = SemanticDedup(threshold=0.8, embedder="lexical", rule="instruction")
        remote, record = ray_executor.run_step(ray_step, frame, ctx)
    finally:
        ray_executor.nlist = ray_executor.nprobe = None
    assert list((tmp_path / "cache").rglob("*.keys.npy"))  # chunks written by the workers

    local = SemanticDedup(threshold=0.8, embedder="lexical", rule="instruction", search="exact").run(frame, ctx)
    result = local.result
    assert not result.truncated
    rows = np.repeat(np.arange(result.n), np.diff(result.lims))
    expected = {(result.ids[q], result.ids[j]) for q, j in zip(rows.tolist(), result.edge_j.tolist())}
    assert expected  # the sample has near-duplicates above 0.8
    rq, rj, _ = remote.pairs
    all_ids = frame["id"].to_list()
    got = {(all_ids[a], all_ids[b]) for a, b in zip(rq.tolist(), rj.tolist())}
    assert got == expected and len(rq) == len(got)  # each pair once, though every row lives in every cell
    assert remote.kept["id"].to_list() == local.kept["id"].to_list()
    assert removed_pairs(remote.removed) == removed_pairs(local.removed)
    assert record.stats["semantic_duplicates"] == local.stats["semantic_duplicates"]


def test_input_error_in_a_worker_is_one_line(ray_executor):
    with pytest.raises(InputError, match="no task column 'task'"):
        ray_executor.run_step(Cap(per_task=3), instructions().head(50), RunContext())


def test_killed_run_resumes_at_the_last_stage_and_matches_local(ray_executor, tmp_path):
    from kocurate.curate.engine.ray_pipeline import run_ray_pipeline
    from kocurate.records import load_records

    source = tmp_path / "in.jsonl"
    source.write_text((SAMPLES / "ko_instructions.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "out"
    ctx = RunContext(seed=5)
    with pytest.raises(KeyboardInterrupt):
        run_ray_pipeline(ray_executor, [source], [ExactDedup()], out, ctx=ctx, stop_after=1)
    assert not out.exists()  # nothing half-written at the output
    stages = list(tmp_path.glob(".out.engine-*"))
    assert len(stages) == 1 and (stages[0] / "00-drop-empty" / "record.json").is_file()

    result = run_ray_pipeline(ray_executor, [source], [ExactDedup()], out, ctx=ctx, shard_rows=1000)
    assert result.resumed == ["drop-empty"]
    assert not list(tmp_path.glob(".out.engine-*"))  # stages go once the folder is in place
    shards = sorted((out / "data").glob("*.parquet"))
    assert [p.name for p in shards] == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    kept = pl.concat([pl.read_parquet(p) for p in shards])
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))

    local_out = tmp_path / "local"
    LocalExecutor().run([load_records(str(source))], [ExactDedup()], local_out, ctx=ctx)
    local_kept = pl.concat([pl.read_parquet(p) for p in sorted((local_out / "data").glob("*.parquet"))])
    local_manifest = json.loads((local_out / "manifest.json").read_text(encoding="utf-8"))
    assert kept.equals(local_kept.select(kept.columns)) and kept.columns == local_kept.columns
    assert [(s["name"], s["rows_in"], s["rows_out"], s["removed"]) for s in manifest["steps"]] == \
           [(s["name"], s["rows_in"], s["rows_out"], s["removed"]) for s in local_manifest["steps"]]
    removed = pl.concat([pl.read_parquet(p) for p in sorted((out / "removed").glob("*.parquet"))])
    local_removed = pl.concat([pl.read_parquet(p) for p in sorted((local_out / "removed").glob("*.parquet"))])
    assert sorted(removed.select("id", "dup_of").iter_rows()) == sorted(local_removed.select("id", "dup_of").iter_rows())
    assert manifest["rows"] == local_manifest["rows"] and manifest["removed_rows"] == local_manifest["removed_rows"]


def test_cli_cap_on_ray_matches_local(ray_executor, tmp_path):
    """`kocurate cap --engine ray` writes the folder the local engine writes (same kept ids)."""
    from click.testing import CliRunner

    from kocurate.cli import main

    cot = Path(__file__).resolve().parent.parent / "samples" / "ko_cot.jsonl"
    normalized = tmp_path / "cot"
    assert CliRunner().invoke(main, ["normalize", str(cot), "--preset", "cot-collection", "-o", str(normalized)]).exit_code == 0
    outs = {}
    for engine in ("local", "ray"):
        result = CliRunner().invoke(main, ["cap", str(normalized), "--per-task", "20", "--engine", engine,
                                           "-o", str(tmp_path / engine)])
        assert result.exit_code == 0, result.output
        outs[engine] = sorted(pl.read_parquet(tmp_path / engine / "data").get_column("id").to_list())
    assert outs["ray"] == outs["local"] and 0 < len(outs["local"]) < pl.read_parquet(normalized / "data").height
    refused = CliRunner().invoke(main, ["cap", str(cot), "--preset", "cot-collection", "--engine", "ray",
                                        "-o", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "run `kocurate normalize" in refused.output


def _contamination_section(card: str) -> list[str]:
    """The card's contamination section and its `decontaminated` tag (the status lines)."""
    lines = card.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("## Benchmark contamination")), len(lines))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return [line for line in lines[:30] if "contaminat" in line] + lines[start:end]


def _folder_view(folder: Path) -> dict:
    """What a dataset folder holds, with each check's random id replaced by its step's place."""
    from kocurate.publish.card import read_contamination

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    data = pl.concat([pl.read_parquet(p) for p in sorted((folder / "data").glob("*.parquet"))])
    removed_paths = sorted((folder / "removed").glob("*.parquet"))
    removed = pl.concat([pl.read_parquet(p) for p in removed_paths], how="diagonal_relaxed") if removed_paths else None
    names = {c["id"]: f"{c['step']}@{c['step_index']}" for c in manifest.get("checks", [])}
    checks = pl.read_parquet(folder / "checks" / "rows.parquet") if (folder / "checks").is_dir() else None
    check_rows = sorted((names[c], r) for c, r in checks.iter_rows()) if checks is not None else []
    infos = sorted(({k: v for k, v in c.items() if k != "id"} for c in manifest.get("checks", [])),
                   key=lambda c: c["step_index"])
    card = (folder / "README.md").read_text(encoding="utf-8")
    status = read_contamination(folder, manifest).status
    return {"data": data, "removed": removed, "check_rows": check_rows, "check_infos": infos, "status": status,
            "status_lines": _contamination_section(card),
            "removed_rows": manifest["removed_rows"], "rows": manifest["rows"],
            "steps": [(s["name"], s["rows_in"], s["rows_out"], s["removed"]) for s in manifest["steps"]]}


def test_cli_chain_on_ray_writes_the_local_folders_checks_and_removed(ray_executor, tmp_path):
    """decontaminate, then exact dedup of its folder, through both engines: the same data/,
    removed/ (the parent's rows carried forward), checks/ fingerprints and card status lines."""
    from click.testing import CliRunner

    from kocurate.cli import main

    views = {}
    for engine in ("local", "ray"):
        clean, dedup = tmp_path / f"{engine}-clean", tmp_path / f"{engine}-dedup"
        result = CliRunner().invoke(main, ["decontaminate", str(SAMPLES / "ko_instructions.jsonl"), "--against", "kobest",
                                           "--data-dir", str(SAMPLES / "kobest"), "--skip-missing", "--embedder", "lexical",
                                           "--no-cache", "--engine", engine, "-o", str(clean)])
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(main, ["dedup", str(clean), "--exact-only", "--engine", engine, "-o", str(dedup)])
        assert result.exit_code == 0, result.output
        views[engine] = (_folder_view(clean), _folder_view(dedup))
    for local, ray in zip(views["local"], views["ray"]):
        assert local["status"].startswith("clean against")  # every row in data/ verified by fingerprint
        assert ray["status"] == local["status"] and ray["status_lines"] == local["status_lines"]
        assert any("Result: **clean**" in line for line in local["status_lines"])  # the card states it
        assert ray["data"].equals(local["data"]) and ray["data"].columns == local["data"].columns
        assert ray["removed"].equals(local["removed"].select(ray["removed"].columns))
        assert sorted(ray["removed"].columns) == sorted(local["removed"].columns)
        assert ray["check_rows"] == local["check_rows"] and len(local["check_rows"]) == local["rows"]
        assert ray["check_infos"] == local["check_infos"]
        assert (ray["rows"], ray["removed_rows"], ray["steps"]) == (local["rows"], local["removed_rows"], local["steps"])
    dedup = views["ray"][1]
    assert dedup["removed"]["step"].unique().sort().to_list() == ["decontaminate", "exact-dedup"]  # carried forward
    assert dedup["check_infos"][0]["step"] == "decontaminate" and dedup["check_infos"][0]["rows_covered"] == dedup["rows"]


def test_exact_key_texts_equal_exact_keys():
    """Ray's exact dedup hashes a key built from the two normalised parts: the same text as
    records.text.exact_keys over the whole row, on the samples and on boundary cases."""
    from kocurate.curate.engine.ray_data import _exact_texts
    from kocurate.records.text import exact_keys

    edge = pl.DataFrame({
        "instruction": ["a b", "a", " x ", "", "", "q\u200b", "e\u0301", "p", "가\u3000", None],
        "input": ["", "b", "\t", "", "y", "", "", "", "", "나"],
        "output": ["c", " c ", "\n z", "w", "", "\u00a8x", "\u0301o", "\u200b", "  다", "라"],
    })
    for frame in (instructions(), edge):
        for step in (ExactDedup(), ExactDedup(rule="instruction"), ExactDedup(columns=("instruction",))):
            _, keys, olen = _exact_texts(frame, step)
            assert keys == exact_keys(frame, step.key_columns()).to_list()
            assert olen == [len(t) for t in exact_keys(frame, ("output",)).to_list()]


def test_exact_decide_keeps_rows_whose_64_bit_halves_collide():
    """The keep rule groups on the 128-bit key hash: two different keys that share one 64-bit half
    (a collision a 64-bit key would merge) stay two groups; equal keys are one."""
    from kocurate.curate.engine.ray_data import (
        KEY,
        POS,
        STATS,
        _exact_decide,
        _exact_narrow,
        _hash128,
    )

    high, low = _hash128(["가 나", "가 나", "다"])
    assert high[0] == high[1] and low[0] == low[1] and (high[0], low[0]) != (high[2], low[2])
    frame = pl.DataFrame({"id": ["a", "b", "c"], "instruction": ["가", "가", "다"], "input": ["", "", ""],
                          "output": ["나", "나", "라"], POS: [0, 1, 2]})
    narrow = pl.from_arrow(_exact_narrow(frame.to_arrow(), ExactDedup()))
    forged = narrow.with_columns(pl.lit(7, pl.Int64).alias("_kc_full"), pl.lit(1, pl.Int64).alias(KEY))
    decided = pl.from_arrow(_exact_decide(forged.to_arrow(), ExactDedup()))
    removed = decided.filter(pl.col(POS) >= 0)
    assert removed[POS].to_list() == [1] and removed["dup_of"].to_list() == ["a"]  # only the true copy goes
    assert json.loads(decided[STATS].drop_nulls()[0])["stats"]["groups"] == 2


@pytest.mark.parametrize("spill", [1, 3, 5])
def test_cell_hits_finds_each_pair_once_where_a_probed_cell_is_a_home(spill):
    """Ray's per-cell product with rows living in `spill` cells: exactly the pairs above the radius
    whose query probes one of the other row's first `spill` cells, each reported once."""
    from kocurate.curate.engine.ray_semantic import _cell_hits

    rng = np.random.default_rng(3)
    rows, cells, nprobe = 300, 12, 5
    base = rng.normal(size=(40, 16))
    vecs = base[rng.integers(0, 40, rows)] + 0.25 * rng.normal(size=(rows, 16))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    centroids = vecs[rng.choice(rows, cells, replace=False)]
    probes = np.argsort(-(vecs @ centroids.T), axis=1)[:, :nprobe].astype(np.int32)
    # one record per (row, probed cell), sorted by cell, as the shuffle leaves them
    rec_row = np.repeat(np.arange(rows), nprobe)
    rec_cell = probes.reshape(-1).astype(np.int64)
    rec_home = np.tile(np.arange(nprobe) < spill, rows)
    order = np.argsort(rec_cell, kind="stable")
    rec_row, rec_cell, rec_home = rec_row[order], rec_cell[order], rec_home[order]
    found = []
    for a, b, sim in _cell_hits(rec_cell, rec_home, vecs[rec_row], 0.8, probes[rec_row], spill):
        found.extend(zip(rec_row[a].tolist(), rec_row[b].tolist()))
    sims = vecs @ vecs.T
    expected = {(q, j) for q in range(rows) for j in range(rows)
                if sims[q, j] > 0.8 and set(probes[q].tolist()) & set(probes[j, :spill].tolist())}
    assert len(found) == len(set(found))  # once each
    assert set(found) == expected and len(expected) > rows  # self-pairs and real neighbours


def test_position_bitmap_holds_exactly_the_given_positions():
    """The over-cap broadcast: membership of every position, including past the bitmap's end."""
    from kocurate.curate.engine.ray_data import in_bitmap, position_bitmap

    rng = np.random.default_rng(3)
    removed = np.unique(rng.choice(10_000, size=700, replace=False))
    bitmap = position_bitmap(removed)
    assert bitmap.nbytes == -(-(int(removed.max()) + 1) // 8)
    probe = np.arange(12_000)
    assert np.array_equal(np.flatnonzero(in_bitmap(bitmap, probe)), removed)
    assert not in_bitmap(position_bitmap(np.zeros(0, np.int64)), probe).any()


@pytest.mark.parametrize("embedder, gpus, expected", [
    ("lexical", 2, (4, 0)),          # hashing: CPU actors even where GPUs exist
    ("default", 2, (2, 1)),          # two actors, one GPU each
    ("st:./some-model", 1, (1, 1)),
    ("default", 0, (4, 0)),
    (None, 2, (4, 0)),               # precomputed vectors: no model, no GPU
])
def test_actor_pool_gives_embedding_actors_a_gpu_each_where_they_use_one(monkeypatch, embedder, gpus, expected):
    from kocurate.curate.engine import ray_data

    class FourCpus:
        actors = None

        def _cpus(self):
            return 4.0

    monkeypatch.setattr(ray_data, "gpus_available", lambda: gpus)
    assert ray_data.actor_pool(FourCpus(), embedder) == expected
    assert ray_data.actor_pool(FourCpus(), "lexical", spare_cpus=1) == (3, 0)
    options = ray_data.pool_options(*expected)
    assert options["compute"].max_size == expected[0] and options.get("num_gpus", 0) == expected[1]
