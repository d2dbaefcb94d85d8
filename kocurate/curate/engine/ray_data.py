"""The Ray Data executor: the same steps, past one machine's memory.

A dataset here is a `ray.data.Dataset` whose rows carry one extra column, `_kc_pos` (the row's
place in the input order), so order-dependent rules (keep the first, greedy in input order,
per-task samples in input order) give the rows the local executor gives.

How each step runs:

* per-row steps (drop-empty, decontaminate): ``map_batches`` over batches; decontamination in an
  actor pool whose actors load the benchmark items once (the items ride along with the step,
  i.e. broadcast through the object store) and embed through the shared embedding cache;
* exact dedup and cap: a narrow shuffle (key hashes or tasks, and positions: ~50 bytes a row)
  by plain Ray tasks into partitions that hold whole groups / tasks, the keep rule per
  partition in input order (so it decides exactly as the local step over the whole frame),
  the decisions broadcast, one filter pass; the wide rows are never shuffled;
* models run in actor pools (`actor_pool`): one GPU per actor where the cluster has GPUs and
  the embedder runs on one (USE, sentence-transformers), else one actor per CPU;
* select and semantic dedup: see `ray_select.py` and `ray_semantic.py` (global parts on
  lengths, centroids and pairs gathered to the driver);
* any other step: gathered to the driver and run locally (its record says so).

Each step's output is one dataset of kept and removed rows told apart by `_kc_kind`, with the
partition's counters in `_kc_stats` on its first row; the driver reads only those counters.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import polars as pl

from ...errors import InputError
from ...records import StepRecord
from ...records.schema import REMOVAL, removal_frame
from ..step import RunContext, Step, StepResult, _jsonable

POS = "_kc_pos"
KIND = "_kc_kind"  # 0 kept, 1 removed
STATS = "_kc_stats"
KEY = "_kc_key"
HELPERS = (POS, KIND, STATS, KEY)
#: rows per batch for per-row steps
BATCH_ROWS = 4096
#: rows per hash partition (keyed steps): small enough that a partition is one block
PARTITION_ROWS = 100_000

#: whole-number stats that describe the step, not its rows: kept from the first partition.
#: Every other whole number is a counter and adds up over partitions (they hold disjoint rows,
#: and keyed steps' partitions hold whole groups, so group counts add up too).
CONSTANTS = {"items", "ngram", "threshold", "per_task", "dim", "clusters", "length_groups"}
MERGED = {"cap": ("per_task",)}


# --------------------------------------------------------------------------------------------
# Ray session


def ensure_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to `address`, or start a local Ray (no dashboard) when none is running."""
    import ray

    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # The hash shuffle (tasks plus aggregators) measured 2x faster here than the default
    # SHUFFLE_V2 for the keyed steps, and its output maps faster (see benchmarks/results/engine.md).
    from ray.data.context import ShuffleStrategy

    context.shuffle_strategy = ShuffleStrategy.HASH_SHUFFLE
    return ray


def actor_pool(executor, embedder=None, spare_cpus: int = 0) -> tuple[int, int]:
    """(actors, GPUs per actor) for a pool of actors that embed with `embedder` (None: no
    model): one GPU per actor, one actor per GPU, where the cluster has GPUs and the embedder
    runs on one; else one actor per CPU (less `spare_cpus`). `RayExecutor(actors=N)` fixes the size."""
    from ..embed import runs_on_gpu

    gpus = gpus_available() if embedder is not None and runs_on_gpu(embedder) else 0
    if gpus:
        return executor.actors or gpus, 1
    return executor.actors or max(1, int(executor._cpus()) - spare_cpus), 0


def pool_options(actors: int, gpus: int) -> dict:
    """`map_batches` keyword arguments for a pool of `actors` actors with `gpus` GPUs each."""
    from ray.data import ActorPoolStrategy

    return {"compute": ActorPoolStrategy(size=actors), **({"num_gpus": gpus} if gpus else {})}


def map_features(executor, ds, fn, embedder=None, **kwargs):
    """Run the per-batch actor `fn(**kwargs)` over `ds`, materialised, on a pool sized by
    `actor_pool` for `embedder`. A worker's InputError comes back as the same one line."""
    out = ds.map_batches(fn, batch_size=executor.batch_rows, batch_format="pyarrow", fn_constructor_kwargs=kwargs,
                         **pool_options(*actor_pool(executor, embedder)))
    try:
        return out.materialize()
    except Exception as exc:
        raise unwrap(exc) from None


def gpus_available() -> int:
    import ray

    try:
        return int(ray.cluster_resources().get("GPU", 0))
    except Exception:  # pragma: no cover
        return 0


# --------------------------------------------------------------------------------------------
# frames <-> datasets


def from_frame(frame: pl.DataFrame, blocks: int = 4):
    """An in-memory frame as a Ray dataset of `blocks` blocks, with input positions."""
    import ray.data

    frame = frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(POS))
    size = max(1, -(-frame.height // max(1, blocks)))
    tables = [frame.slice(i, size).to_arrow() for i in range(0, max(frame.height, 1), size)]
    return ray.data.from_arrow(tables)


def to_frame(ds, keep_pos: bool = False) -> pl.DataFrame:
    """Gather a (small) dataset to the driver in input order: tests and analysis only."""
    import pyarrow as pa
    import ray

    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    if not tables:
        return pl.DataFrame()
    frame = pl.from_arrow(pa.concat_tables(tables, promote_options="permissive"))
    frame = frame.sort(POS) if POS in frame.columns else frame
    drop = [c for c in HELPERS if c in frame.columns and not (keep_pos and c == POS)]
    return frame.drop(drop)


def read_shards(paths: Sequence[str | Path]):
    """Input files (parquet, jsonl, json, csv) or kocurate dataset folders as one dataset read
    in shards (a parquet row group or a file per read task), each row with its input position."""
    import pyarrow.parquet as pq
    import ray.data

    from ...records import data_files

    pieces: list[dict] = []
    offset = 0
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = data_files(path, "train")
            if not files:
                raise InputError(f"{path}: no data/train-*.parquet shards; pass a kocurate dataset folder or data files")
        elif path.is_file():
            files = [path]
        else:
            raise InputError(f"{path}: not found; pass a dataset folder or a data file")
        for file in files:
            if file.suffix == ".parquet":
                meta = pq.ParquetFile(file).metadata
                for group in range(meta.num_row_groups):
                    rows = meta.row_group(group).num_rows
                    pieces.append({"path": str(file), "group": group, "offset": offset})
                    offset += rows
            else:
                from ...records.load import read_table

                rows = read_table(file).height  # counted once here, read again in a worker
                pieces.append({"path": str(file), "group": -1, "offset": offset})
                offset += rows
    if not pieces:
        raise InputError("no input rows: every input file is empty")
    items = ray.data.from_items(pieces, override_num_blocks=len(pieces))
    return items.map_batches(_read_piece, batch_size=1, batch_format="pyarrow"), offset


def _read_piece(batch):
    import pyarrow.parquet as pq

    from ...records.load import read_table

    path = batch["path"][0].as_py()
    group = batch["group"][0].as_py()
    offset = batch["offset"][0].as_py()
    if group >= 0:
        frame = pl.from_arrow(pq.ParquetFile(path).read_row_group(group))
    else:
        frame = read_table(Path(path))
    if "id" not in frame.columns:
        raise InputError(f"{path}: no `id` column; the Ray engine reads canonical rows: run `kocurate normalize` first, "
                         f"or pass a kocurate dataset folder")
    return frame.with_columns((pl.int_range(pl.len(), dtype=pl.Int64) + offset).alias(POS)).to_arrow()


# --------------------------------------------------------------------------------------------
# a step's output: kept and removed rows in one dataset, with counters


def _removal_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """Every removed/ column present with a fixed type, so all blocks share one schema."""
    types = {"step": pl.String, "reason": pl.String, "dup_of": pl.String, "similarity": pl.Float64, "detail": pl.String}
    return frame.with_columns([(pl.col(c).cast(types[c]) if c in frame.columns else pl.lit(None, types[c])).alias(c)
                               for c in REMOVAL])


def combine(result: StepResult, rows_in: int) -> "pa.Table":  # noqa: F821
    """One partition's kept and removed rows as one table; counters on the first row."""
    kept = _removal_columns(result.kept).with_columns(pl.lit(0, pl.Int8).alias(KIND))
    removed = _removal_columns(result.removed).with_columns(pl.lit(1, pl.Int8).alias(KIND))
    both = pl.concat([kept, removed], how="diagonal_relaxed") if removed.height else kept
    counters = json.dumps(_jsonable({"rows_in": rows_in, "rows_out": result.kept.height,
                                     "removed": result.removed_by_reason(), "stats": result.stats,
                                     "check": result.check}), ensure_ascii=False)
    stats = pl.Series(STATS, [counters] + [None] * max(0, both.height - 1), dtype=pl.String)
    if not both.height:  # an empty partition still reports (rows_in 0)
        return both.with_columns(pl.lit(None, pl.String).alias(STATS)).to_arrow()
    return both.with_columns(stats).to_arrow()


_RESOLVED: dict = {}


def resolve(value):
    """A broadcast value passed to map_batches as an ObjectRef, fetched once per worker."""
    import ray

    if not isinstance(value, ray.ObjectRef):
        return value
    key = value.hex()
    if key not in _RESOLVED:
        _RESOLVED.clear()  # one broadcast at a time per worker: the last step's
        _RESOLVED[key] = ray.get(value)
    return _RESOLVED[key]


def _as_frame(batch) -> pl.DataFrame:
    frame = pl.from_arrow(batch)
    return frame if isinstance(frame, pl.DataFrame) else frame.to_frame()


def _run_on_batch(batch, step: Step, seed: int, cache_dir: str | None):
    frame = _as_frame(batch)
    frame = frame.drop([c for c in (KIND, STATS, KEY) if c in frame.columns])
    ctx = RunContext(seed=seed, cache_dir=None if cache_dir is None else Path(cache_dir))
    if POS in frame.columns:
        frame = frame.sort(POS)
    result = step.run(frame, ctx)
    if frame.height and POS not in result.kept.columns:
        raise RuntimeError(f"step {step.name} dropped the engine's position column")
    return combine(result, frame.height)


class BatchRunner:
    """An actor of the pool for per-row steps: the step (with what it loaded once) stays warm."""

    def __init__(self, step: Step, seed: int, cache_dir: str | None):
        self.step, self.seed, self.cache_dir = step, seed, cache_dir

    def __call__(self, batch):
        return _run_on_batch(batch, self.step, self.seed, self.cache_dir)


def _key_column(batch, step: Step):
    """The shuffle key of each row: a 64-bit hash of what decides the row's group."""
    from ..dedup import row_texts
    from ..embed import text_keys

    frame = _as_frame(batch)
    if step.name == "cap":
        col = step.task_column
        if col not in frame.columns:
            values = [""] * frame.height  # Cap.run reports the missing column
        else:
            values = frame[col].cast(pl.String).fill_null("(none)").to_list()  # Cap folds nulls into "(none)"
    else:  # exact dedup: rows with equal step keys have equal normalised `columns`
        values = row_texts(frame, exact_key_columns(step), separator="\n")
    keys = text_keys(values).view(np.int64)
    return frame.with_columns(pl.Series(KEY, keys, dtype=pl.Int64)).to_arrow()


def exact_key_columns(step: Step) -> tuple[str, ...]:
    """Columns whose normalised text every exact-dedup key includes (the shuffle key hashes them).

    Any key the step computes that is at least as fine as these columns works: rows with equal
    step keys then share a partition. (Wanted from dedup.py: `exact_key(frame) -> list[str]`.)"""
    return tuple(getattr(step, "columns", ("instruction", "input")))


@dataclass
class RayStepOutput:
    """A step's result on Ray: its kept rows, its removed rows (both datasets), its record."""

    kept: object
    removed: object
    record: StepRecord
    stats: dict
    #: the check the kept rows passed (StepResult.check, e.g. decontamination's benchmark), or None
    check: dict | None = None


ROW_STEPS = ("drop-empty", "decontaminate", "normalize")
KEYED_STEPS = ("exact-dedup", "cap")


class RayExecutor:
    """Runs steps on Ray Data; see the module docstring. `address` None starts a local Ray."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, partition_rows: int = PARTITION_ROWS,
                 batch_rows: int = BATCH_ROWS, actors: int | None = None, sample_rows: int | None = None,
                 nprobe: int | None = None, nlist: int | None = None, spill: int | None = None):
        self.address = address
        self.num_cpus = num_cpus
        self.partition_rows = partition_rows
        self.batch_rows = batch_rows
        self.actors = actors
        self.sample_rows = sample_rows
        self.nprobe = nprobe
        self.nlist = nlist
        #: cells each row lives in for semantic dedup (None: ray_semantic.RAY_SPILL)
        self.spill = spill
        #: exact dedup and cap by a narrow shuffle (key hashes / tasks and positions). False: shuffle
        #: whole rows and run the step per partition, the first version (bench_engine.py --exact-rows)
        self.exact_narrow = True
        self._started = False

    def start(self):
        import ray

        owns = not ray.is_initialized()  # only a Ray this executor started is shut down by close()
        ray = ensure_ray(self.address, self.num_cpus)
        self._started = self._started or owns
        return ray

    def close(self) -> None:
        """Leaves a Ray this executor did not start alone; shuts down a local one it started."""
        import ray

        if self._started and not self.address and ray.is_initialized():
            ray.shutdown()
        self._started = False

    # ---- one step over a dataset ---------------------------------------------------------------

    def run_dataset(self, step: Step, ds, ctx: RunContext, rows: int | None = None) -> RayStepOutput:
        """Run `step` over dataset `ds` (rows carry `_kc_pos`); returns kept/removed datasets."""
        self.start()
        start = time.perf_counter()
        cache = None if ctx.cache_dir is None else str(ctx.cache_dir)
        if step.name == "exact-dedup" and self.exact_narrow and hasattr(step, "key_columns"):
            return run_exact(self, step, ds, ctx, rows)
        if step.name == "cap" and self.exact_narrow:
            return run_cap(self, step, ds, ctx, rows)
        if step.name in KEYED_STEPS:
            rows = rows if rows is not None else ds.count()
            parts = max(2, -(-rows // self.partition_rows))
            keyed = ds.map_batches(_key_column, batch_format="pyarrow", fn_kwargs={"step": step})
            shuffled = keyed.repartition(parts, keys=[KEY])
            out = shuffled.map_batches(_run_on_batch, batch_size=None, batch_format="pyarrow",
                                       fn_kwargs={"step": step, "seed": ctx.seed, "cache_dir": cache})
            how = f"hash shuffle into {parts} partitions"
        elif step.name in ROW_STEPS:
            if step.name == "decontaminate":
                step.load_items()  # once, on the driver; shipped with the step to every actor
                actors, gpus = actor_pool(self, step.embedder, spare_cpus=1)
                out = ds.map_batches(BatchRunner, batch_size=self.batch_rows, batch_format="pyarrow",
                                     fn_constructor_kwargs={"step": step, "seed": ctx.seed, "cache_dir": cache},
                                     **pool_options(actors, gpus))
                how = f"map_batches, {actors} actors" + (", one GPU each" if gpus else "")
            else:
                out = ds.map_batches(_run_on_batch, batch_size=self.batch_rows, batch_format="pyarrow",
                                     fn_kwargs={"step": step, "seed": ctx.seed, "cache_dir": cache})
                how = "map_batches"
        elif step.name == "select":
            from .ray_select import run_select

            return run_select(self, step, ds, ctx, rows)
        elif step.name == "semantic-dedup":
            from .ray_semantic import run_semantic

            return run_semantic(self, step, ds, ctx, rows)
        else:
            return self._on_driver(step, ds, ctx)
        return self.split(step, out, start, how)

    def split(self, step: Step, out, start: float, how: str, extra: dict | None = None) -> RayStepOutput:
        """Materialise a step's combined output; read its counters; split kept from removed."""
        try:
            out = out.materialize()
        except Exception as exc:  # a step's InputError raised in a worker: the same one line here
            raise unwrap(exc) from None
        import ray

        refs = out.to_arrow_refs()  # materialised: no new execution, the blocks stay in the object store
        counters = [json.loads(c) for part in ray.get([_stats_task().remote(r) for r in refs]) for c in part]
        record = merge_counters(step, counters, time.perf_counter() - start)
        record.stats["engine"] = f"ray ({how})"
        if extra:
            record.stats.update(extra)
        kept = out.map_batches(_only, batch_format="pyarrow", fn_kwargs={"kind": 0})
        removed = out.map_batches(_only, batch_format="pyarrow", fn_kwargs={"kind": 1})
        # every partition runs the same step, so describes the same check: the first non-empty one
        # says it (an empty partition's check lacks what only embedding learns, e.g. the embedder)
        checks = sorted((c for c in counters if c.get("check") is not None), key=lambda c: c["rows_in"] == 0)
        check = checks[0]["check"] if checks else None
        return RayStepOutput(kept, removed, record, record.stats, check)

    def _on_driver(self, step: Step, ds, ctx: RunContext) -> RayStepOutput:
        import ray.data

        start = time.perf_counter()
        frame = to_frame(ds, keep_pos=True)
        result = step.run(frame, ctx)
        out = ray.data.from_arrow(combine(result, frame.height))
        return self.split(step, out, start, "gathered to the driver: no Ray plan for this step")

    def _cpus(self) -> float:
        import ray

        return float(ray.cluster_resources().get("CPU", 1))

    # ---- one step over an in-memory frame (tests, library callers) -----------------------------

    def run_step(self, step: Step, frame: pl.DataFrame, ctx: RunContext | None = None,
                 blocks: int = 4) -> tuple[StepResult, StepRecord]:
        """`step` over `frame` on Ray; the result gathered back (only for frames that fit)."""
        ctx = ctx or RunContext()
        self.start()
        output = self.run_dataset(step, from_frame(frame, blocks), ctx, rows=frame.height)
        kept = to_frame(output.kept)
        removed = to_frame(output.removed)
        if not kept.height and not kept.columns:
            kept = frame.head(0)
        result = StepResult(kept, removed, output.stats, check=output.check)
        if getattr(output, "pairs", None) is not None:  # semantic dedup: the pairs it found, for comparison
            result.pairs = output.pairs  # type: ignore[attr-defined]
        return result, output.record

    def run(self, paths: Sequence, steps: Sequence[Step], out: str | Path, *, ctx: RunContext | None = None,
            overwrite: bool = False, render_card: Callable | None = None, recipe: str | None = None,
            shard_rows: int | None = None):
        """The pipeline over input files or folders, written to `out` with resumable stages."""
        from .ray_pipeline import run_ray_pipeline

        return run_ray_pipeline(self, paths, steps, out, ctx=ctx or RunContext(), overwrite=overwrite,
                                render_card=render_card, recipe=recipe, shard_rows=shard_rows)


def _stats_of(table) -> list[str]:
    """The counters a block carries (its partition's first row), read where the block lives."""
    if STATS not in table.column_names or not table.num_rows:
        return []
    return [c for c in table.column(STATS).to_pylist() if c is not None]


_STATS_TASK = None


def _stats_task():
    global _STATS_TASK
    if _STATS_TASK is None:
        import ray

        _STATS_TASK = ray.remote(num_cpus=0.1)(_stats_of)
    return _STATS_TASK


def unwrap(exc: BaseException) -> BaseException:
    """The InputError inside Ray's task-error wrappers (its own one line), else `exc` itself."""
    from ...errors import first_line

    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            todo.append(cause)
            continue
        if isinstance(e, InputError):
            return InputError(first_line(e, 2000))
        todo += [e.__cause__, e.__context__]
    # Ray Data re-raises a UDF's error as text inside its own wrappers: find the one line there
    import re

    found = re.findall(r"kocurate\.errors\.InputError: (.+)", str(exc))
    return InputError(found[-1].strip()) if found else exc


def _only(batch, kind: int):
    import pyarrow.compute as pc

    table = batch.filter(pc.equal(batch[KIND], kind))
    drop = [KIND, STATS] + ([c for c in REMOVAL if c in table.column_names] if kind == 0 else [])
    return table.drop_columns([c for c in drop if c in table.column_names])


def merge_counters(step: Step, counters: list[dict], seconds: float) -> StepRecord:
    """One manifest record from the partitions' counters."""
    merged_keys = MERGED.get(step.name, ())
    stats: dict = {}
    removed: dict[str, int] = {}
    rows_in = rows_out = 0
    for part in counters:
        rows_in += part["rows_in"]
        rows_out += part["rows_out"]
        for reason, n in part["removed"].items():
            removed[reason] = removed.get(reason, 0) + n
        for key, value in part["stats"].items():
            if isinstance(value, int) and not isinstance(value, bool) and key not in CONSTANTS:
                stats[key] = stats.get(key, 0) + value
            elif key in merged_keys:
                stats.setdefault(key, {}).update(value)
            else:
                stats.setdefault(key, value)
    if "per_task" in stats:
        stats["per_task"] = dict(sorted(stats["per_task"].items()))
    return StepRecord(name=step.name, params=_jsonable(step.params()), rows_in=rows_in, rows_out=rows_out,
                      removed=dict(sorted(removed.items(), key=lambda kv: -kv[1])), seconds=round(seconds, 3),
                      stats=_jsonable(stats))


# --------------------------------------------------------------------------------------------
# exact dedup: a narrow hash shuffle (keys, lengths, positions), then a filter of the rows


def _exact_texts(frame: pl.DataFrame, step: Step) -> tuple[list[str], list[str], list[int]]:
    """Per row: the normalised prompt (`step.columns`), the exact-dedup key text and the
    normalised output length, each text normalised once.

    The key text is `records.text.exact_keys(frame, step.key_columns())`, built from the two
    normalised parts: normalising "PROMPT\\nOUTPUT" folds the line break with the whitespace
    around it into one space and strips the ends, and nothing composes across a line break
    (NFKC), so it is the two normalised parts joined by one space (an empty part drops out).
    tests/test_engine.py checks the identity against `exact_keys` on the samples and edge cases."""
    from ...records.text import row_texts

    prompts = row_texts(frame, step.columns, separator="\n")
    outputs = row_texts(frame, ("output",))
    if tuple(step.key_columns()) == tuple(step.columns):
        keys = prompts
    else:
        keys = [f"{p} {o}" if p and o else (p or o) for p, o in zip(prompts, outputs)]
    return prompts, keys, [len(o) for o in outputs]


def _hash64(texts: Sequence[str]) -> np.ndarray:
    """XXH3-64 of each text as int64 (stable across processes and machines)."""
    import xxhash

    digest = xxhash.xxh3_64_intdigest
    return np.fromiter((digest(t.encode("utf-8", "surrogatepass")) for t in texts), dtype=np.uint64,
                       count=len(texts)).view(np.int64)


def _hash128(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """XXH3-128 of each text as two int64 columns (high, low half).

    The keep rule groups rows on this: two different texts share it with chance ~1e-21 at
    100M rows, where a 64-bit key would merge two different rows with chance ~3e-4."""
    import xxhash

    digest = xxhash.xxh3_128_intdigest
    both = np.frombuffer(b"".join(digest(t.encode("utf-8", "surrogatepass")).to_bytes(16, "little") for t in texts),
                         dtype=np.uint64).reshape(-1, 2).view(np.int64)
    return np.ascontiguousarray(both[:, 1]), np.ascontiguousarray(both[:, 0])


def _exact_narrow(batch, step: Step):
    """Per-batch part: only what the keep rule needs, hashes instead of the texts."""
    from ..dedup import check_columns

    frame = _as_frame(batch)
    check_columns(frame, step.columns)
    prompts, keys, olen = _exact_texts(frame, step)
    high, low = _hash128(keys)
    return pl.DataFrame({
        KEY: _hash64(prompts),  # the shuffle key: every row of one prompt in one partition
        "_kc_full": high, "_kc_full2": low, "_kc_olen": pl.Series(olen, dtype=pl.Int64),
        "_kc_empty": pl.Series([not p for p in prompts], dtype=pl.Boolean),
        POS: frame[POS], "id": frame["id"].cast(pl.String),
    }).to_arrow()


def _exact_decide(batch, step: Step):
    """Global part, per partition (whole prompt groups): ExactDedup's keep rule on the hashes.
    Returns the removed rows' decisions (position, reason, kept twin) and the counters."""
    frame = _as_frame(batch)
    empty = frame.filter(pl.col("_kc_empty"))
    work = frame.filter(~pl.col("_kc_empty"))
    full = ["_kc_full", "_kc_full2"]  # the 128-bit hash of the key text
    if step.keep == "longest-output":
        ranked = work.sort([*full, "_kc_olen", POS], descending=[False, False, True, False])
    else:
        ranked = work.sort([*full, POS])
    winners = ranked.group_by(full, maintain_order=True).first().select(
        *full, pl.col("id").alias("_keep_id"), pl.col(POS).alias("_keep_pos"))
    work = work.join(winners, on=full, how="left")
    kept = work.filter(pl.col(POS) == pl.col("_keep_pos"))
    dropped = work.filter(pl.col(POS) != pl.col("_keep_pos"))
    stats = {"rule": step.rule, "key": "+".join(step.key_columns()), "groups": winners.height,
             "exact_duplicates": dropped.height, "empty_text": empty.height}
    if step.rule == "row":
        stats["same_prompt_different_output"] = int(kept.height - kept[KEY].n_unique())
    removed = {k: v for k, v in (("empty-text", empty.height), ("exact-duplicate", dropped.height)) if v}
    counters = {"rows_in": frame.height, "rows_out": kept.height, "removed": removed, "stats": stats}
    decisions = pl.concat([
        empty.select(POS, pl.lit("empty-text").alias("reason"), pl.lit(None, pl.String).alias("dup_of")),
        dropped.select(POS, pl.lit("exact-duplicate").alias("reason"), pl.col("_keep_id").alias("dup_of")),
    ])
    return _decisions_table(decisions, counters)


def _exact_apply(batch, step: Step, decisions):
    """Per-batch part again: each row kept or removed as decided (the decisions are broadcast)."""
    table = resolve(decisions)
    frame = _as_frame(batch)
    frame = frame.drop([c for c in (KIND, STATS, KEY) if c in frame.columns])
    marks = frame.select(POS).join(pl.from_arrow(table), on=POS, how="left")
    reason = marks["reason"]
    kept = frame.filter(reason.is_null())
    gone = frame.filter(reason.is_not_null())
    if gone.height:
        sub = marks.filter(reason.is_not_null())
        dup = sub["reason"] == "exact-duplicate"
        detail = pl.Series([f"same normalised {'+'.join(step.key_columns())}; rule={step.rule}; keep={step.keep}"
                            if d else f"{'+'.join(step.columns)} is empty after NFKC and whitespace folding"
                            for d in dup.to_list()], dtype=pl.String)
        gone = removal_frame(gone, step.name, sub["reason"], dup_of=sub["dup_of"],
                             similarity=pl.Series([1.0 if d else None for d in dup.to_list()], dtype=pl.Float64),
                             detail=detail)
    kept = _removal_columns(kept).with_columns(pl.lit(0, pl.Int8).alias(KIND))
    gone = _removal_columns(gone).with_columns(pl.lit(1, pl.Int8).alias(KIND))
    both = pl.concat([kept, gone], how="diagonal_relaxed") if gone.height else kept
    return both.with_columns(pl.lit(None, pl.String).alias(STATS)).to_arrow()


#: narrow rows (hashes, lengths, positions, id) per exact-dedup partition
NARROW_PARTITION_ROWS = 1_000_000


def _split_narrow(table, parts: int):
    """Map side of the shuffle: one narrow block cut into `parts` by its prompt hash."""
    frame = _as_frame(table)
    which = frame[KEY].cast(pl.UInt64, wrap_numerical=True) % parts
    cuts = [frame.filter(which == i).to_arrow() for i in range(parts)]
    return cuts if parts > 1 else cuts[0]


def _decide_narrow(decide: Callable, fn_kwargs: dict, *pieces):
    """Reduce side: one partition's pieces from every block, decided (whole key groups)."""
    import pyarrow as pa

    tables = [t for t in pieces if t.num_rows] or list(pieces[:1])
    return decide(pa.concat_tables(tables), **fn_kwargs)


_TASKS: dict = {}


def _split_task():
    if "split" not in _TASKS:
        import ray

        _TASKS["split"] = ray.remote(_split_narrow)
    return _TASKS["split"]


def _decide_task():
    if "decide" not in _TASKS:
        import ray

        _TASKS["decide"] = ray.remote(_decide_narrow)
    return _TASKS["decide"]


def _narrow_decisions(executor, ds, rows: int, narrow: Callable, decide: Callable, narrow_kwargs: dict,
                      decide_kwargs: dict):
    """Per batch `narrow` (a few columns per row, KEY among them), a shuffle of those narrow rows
    on KEY into partitions by plain Ray tasks, `decide` per partition (whole key groups).
    Returns (the removed rows' decisions sorted by position, the partitions' counters, parts)."""
    import pyarrow as pa
    import ray

    # narrow rows are ~50 bytes: a partition of a million is ~50 MB; at least one per CPU
    parts = max(2, int(executor._cpus()), -(-rows // NARROW_PARTITION_ROWS))
    narrow_ds = ds.map_batches(narrow, batch_format="pyarrow", fn_kwargs=narrow_kwargs)
    try:
        blocks = narrow_ds.to_arrow_refs()  # the narrow rows stay in the object store
        split = _split_task().options(num_returns=parts)
        pieces = [split.remote(block, parts) for block in blocks]
        pieces = [p if isinstance(p, list) else [p] for p in pieces]
        task = _decide_task()
        tables = ray.get([task.remote(decide, decide_kwargs, *[p[i] for p in pieces]) for i in range(parts)])
    except Exception as exc:
        raise unwrap(exc) from None
    table = pl.from_arrow(pa.concat_tables([t for t in tables if t.num_rows]))
    counters = [json.loads(c) for c in table[STATS].drop_nulls().to_list()]
    decisions = table.filter(pl.col(POS) >= 0).drop(STATS).sort(POS)
    return decisions, counters, parts


def _decisions_table(decisions: pl.DataFrame, counters: dict):
    """A partition's decisions plus one row (position -1) carrying its counters."""
    carrier = pl.DataFrame({POS: [-1]}, schema={POS: pl.Int64})
    both = pl.concat([decisions, carrier], how="diagonal_relaxed")
    stats_col = [None] * (both.height - 1) + [json.dumps(counters)]
    return both.with_columns(pl.Series(STATS, stats_col, dtype=pl.String)).to_arrow()


def run_exact(executor, step: Step, ds, ctx: RunContext, rows: int | None) -> RayStepOutput:
    """Exact dedup on Ray: hashes and lengths per batch (the texts normalised once), a hash
    shuffle of those narrow rows (about 50 bytes each) on the prompt hash, the keep rule per
    partition, the removed rows' decisions gathered and broadcast, then one filter pass over
    the rows. The wide rows are never shuffled.

    The shuffle is plain Ray tasks (each narrow block split into `parts` objects, one task per
    partition concatenates its pieces): Ray Data's hash shuffle starts aggregator actors per
    job, which cost 10+ s here for 5 MB of narrow rows (benchmarks/results/engine.md)."""
    import ray

    start = time.perf_counter()
    rows = rows if rows is not None else ds.count()
    decisions, counters, parts = _narrow_decisions(executor, ds, rows, _exact_narrow, _exact_decide, {"step": step},
                                                   {"step": step})
    decisions = decisions.select(POS, "reason", "dup_of")
    return _apply_decisions(step, ds, _exact_apply, ray.put(decisions.to_arrow()), counters, start,
                            f"narrow hash shuffle of key hashes into {parts} partitions by Ray tasks, "
                            f"{decisions.height:,} decisions broadcast, one filter pass")


def _apply_decisions(step: Step, ds, apply: Callable, ref, counters: list[dict], start: float, how: str) -> RayStepOutput:
    """The filter pass of a narrow-shuffle step: `apply` marks each batch's rows from the broadcast
    decisions `ref`; kept and removed split; the record from the partitions' counters."""
    record = merge_counters(step, counters, 0.0)
    out = ds.map_batches(apply, batch_format="pyarrow", fn_kwargs={"step": step, "decisions": ref})
    kept = out.map_batches(_only, batch_format="pyarrow", fn_kwargs={"kind": 0})
    removed = out.map_batches(_only, batch_format="pyarrow", fn_kwargs={"kind": 1})
    record.seconds = round(time.perf_counter() - start, 3)
    record.stats["engine"] = f"ray ({how})"
    output = RayStepOutput(kept, removed, record, record.stats)
    output._hold = ref  # the broadcast lives as long as the output's lazy datasets
    return output


# --------------------------------------------------------------------------------------------
# cap: the same narrow shuffle (task, position), each task's seeded sample per partition


def position_bitmap(positions: np.ndarray) -> np.ndarray:
    """Input positions as a packed bitmap up to the largest: what a filter pass needs to test
    membership, broadcast in at most (input rows / 8) bytes however many rows a step removes
    (a positions array would take 8 bytes per removed row)."""
    if not len(positions):
        return np.zeros(0, dtype=np.uint8)
    bits = np.zeros(int(positions.max()) + 1, dtype=bool)
    bits[positions] = True
    return np.packbits(bits)


def in_bitmap(bitmap: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Which `positions` the bitmap holds (positions past its end are not held)."""
    positions = np.asarray(positions, dtype=np.int64)
    held = np.zeros(len(positions), dtype=bool)
    inside = (positions >> 3) < len(bitmap)
    pos = positions[inside]
    held[inside] = ((bitmap[pos >> 3] >> (7 - (pos & 7))) & 1).astype(bool)
    return held


def _cap_narrow(batch, step: Step):
    """Per-batch part of cap: each row's task (nulls folded as Cap folds them) and position."""
    from ..cap import NO_TASK, require_task_column

    frame = _as_frame(batch)
    col = step.task_column
    require_task_column(frame.columns, col)
    tasks = frame[col].cast(pl.String)
    folded = tasks.fill_null(NO_TASK)
    return pl.DataFrame({KEY: folded.hash(seed=7).cast(pl.Int64, wrap_numerical=True), "_kc_task": folded,
                         "_kc_null": tasks.is_null(), POS: frame[POS]}).to_arrow()


def _cap_decide(batch, step: Step, seed: int):
    """Global part, per partition (whole tasks): `Cap.run`'s sample of each task, on positions
    (input order, as the local step sees its rows)."""
    from ..cap import cap_stats, task_sample

    frame = _as_frame(batch).sort(POS)
    removed_pos, table = [], {}
    for (task,), group in frame.group_by("_kc_task", maintain_order=True):
        rows = group[POS].to_numpy()
        if len(rows) > step.per_task:
            keep = task_sample(seed, task, rows, step.per_task)
            removed_pos.append(np.setdiff1d(rows, keep, assume_unique=True))
        table[task] = [int(len(rows)), int(min(len(rows), step.per_task))]
    gone = np.concatenate(removed_pos) if removed_pos else np.zeros(0, np.int64)
    kept = frame.height - len(gone)
    stats = cap_stats(table, step.per_task, frame.height, kept, int(frame["_kc_null"].sum()))
    counters = {"rows_in": frame.height, "rows_out": kept, "removed": {"over-cap": len(gone)} if len(gone) else {},
                "stats": stats}
    return _decisions_table(pl.DataFrame({POS: gone.astype(np.int64)}, schema={POS: pl.Int64}), counters)


def _cap_apply(batch, step: Step, decisions):
    """Per-batch part again: the rows over their task's cap removed, as Cap.run marks them."""
    from ..cap import over_cap_detail

    frame = _as_frame(batch)
    frame = frame.drop([c for c in (KIND, STATS, KEY) if c in frame.columns])
    over = in_bitmap(resolve(decisions), frame[POS].to_numpy())
    mask = pl.Series(over)
    gone = removal_frame(frame.filter(mask), step.name, "over-cap",
                         detail=over_cap_detail(step.task_column, step.per_task)) if over.any() else frame.head(0)
    kept = _removal_columns(frame.filter(~mask)).with_columns(pl.lit(0, pl.Int8).alias(KIND))
    gone = _removal_columns(gone).with_columns(pl.lit(1, pl.Int8).alias(KIND))
    both = pl.concat([kept, gone], how="diagonal_relaxed") if gone.height else kept
    return both.with_columns(pl.lit(None, pl.String).alias(STATS)).to_arrow()


def run_cap(executor, step: Step, ds, ctx: RunContext, rows: int | None) -> RayStepOutput:
    """Cap on Ray: (task, position) per batch, shuffled narrow on the task (as exact dedup's
    hashes), each task's seeded sample taken per partition, the over-cap positions broadcast,
    one filter pass. The wide rows are never shuffled."""
    import ray

    start = time.perf_counter()
    rows = rows if rows is not None else ds.count()
    decisions, counters, parts = _narrow_decisions(executor, ds, rows, _cap_narrow, _cap_decide, {"step": step},
                                                   {"step": step, "seed": ctx.seed})
    bitmap = position_bitmap(decisions[POS].to_numpy())
    return _apply_decisions(step, ds, _cap_apply, ray.put(bitmap), counters, start,
                            f"narrow shuffle of (task, position) into {parts} partitions by Ray tasks, "
                            f"{decisions.height:,} over-cap positions broadcast as a {bitmap.nbytes:,}-byte bitmap, "
                            f"one filter pass")


__all__ = ["KIND", "POS", "RayExecutor", "RayStepOutput", "ensure_ray", "from_frame", "read_shards", "to_frame"]
