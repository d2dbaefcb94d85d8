"""The pipeline on Ray: input shards -> steps -> the same Hub-layout folder, resumable by stage.

* The output goes through `records.folder.output_guard` (checked, locked, a temporary folder,
  one rename), like the local pipeline.
* Each finished step's rows are kept beside the output in ``.NAME.engine-<fingerprint>/NN-step/``
  (kept/ and removed/ parquet written by the workers, then ``record.json`` last, which marks the
  stage finished). The fingerprint covers the inputs' files, the steps' parameters and the seed,
  so a rerun of the same command after a kill starts after the last finished stage; a changed
  command starts afresh. The stage folder goes once the output is in place. It cannot live in
  the guard's temporary folder: the guard removes a dead run's temporaries.
* data/ and removed/ are written in input order as ``train-0000N-of-0000M.parquet`` shards,
  streamed one shard at a time through the driver. removed/ starts with the rows the input
  folders had already removed (carried forward, as the local pipeline does), then each step's.
* checks/ is what the local pipeline writes (records.checks): a step that reports a check
  (decontamination) has the fingerprints of the rows it let through computed on the workers
  and kept in its stage folder (``check.json`` + ``check-rows.parquet``, so a resumed run keeps
  the check's id); the input folders' checks come along; the final fingerprints are taken from
  data/'s shards as they stream through the driver, and checks/rows.parquet holds those covered.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import polars as pl

from ...errors import InputError
from ...records import Manifest, StepRecord
from ...records.checks import ROW_HASH, Check, read_checks, row_hashes, write_checks
from ...records.folder import SHARD_ROWS, minimal_card, output_guard, removed_files, write_json_atomic
from ...records.load import file_sha256, files_fingerprint
from ...records.manifest import read_manifest
from ...records.schema import canonical_order
from ..step import RunContext, Step, _jsonable


@dataclass
class RayPipelineResult:
    out: Path
    records: list[StepRecord]
    rows_in: int
    rows_out: int
    removed_rows: int
    resumed: list[str] = field(default_factory=list)

    def removed_by_reason(self) -> dict[str, int]:
        from ..pipeline import removed_by_reason

        return removed_by_reason(self.records)


def _files(path: Path) -> list[Path]:
    from ...records import data_files

    return data_files(path, "train") if path.is_dir() else [path]


def stage_fingerprint(paths: Sequence[Path], steps: Sequence[Step], seed: int) -> str:
    parts = {"inputs": [[str(p), files_fingerprint(_files(p))] for p in paths],
             "steps": [[s.name, _jsonable(s.params())] for s in steps], "seed": seed}
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


def run_ray_pipeline(executor, paths: Sequence, steps: Sequence[Step], out: str | Path, *, ctx: RunContext,
                     overwrite: bool = False, render_card: Callable | None = None, recipe: str | None = None,
                     shard_rows: int | None = None, stop_after: int | None = None) -> RayPipelineResult:
    """Run `steps` over the input files / folders `paths` on Ray and write one dataset folder.

    `stop_after` (tests) raises after that many stages finished, as a killed run would stop."""
    from ..normalize import DropEmpty
    from .ray_data import KIND, POS, read_shards

    paths = [Path(p).expanduser().resolve() for p in paths]
    if not paths:
        raise InputError("no input given")
    parents = [read_manifest(p) if p.is_dir() else None for p in paths]
    steps = list(steps)
    if any(m is None for m in parents) and not any(isinstance(s, DropEmpty) for s in steps):
        steps = [DropEmpty(), *steps]
    out = Path(out).expanduser().resolve()
    render = render_card or ctx.render_card or minimal_card
    executor.start()
    with output_guard(out, paths, overwrite=overwrite) as tmp:
        stages = out.with_name(f".{out.name}.engine-{stage_fingerprint(paths, steps, ctx.seed)}")
        for stale in out.parent.glob(f".{out.name}.engine-*"):
            if stale != stages:  # another command's stages: nothing to resume from
                shutil.rmtree(stale, ignore_errors=True)
        stages.mkdir(exist_ok=True)
        ds, rows_in = read_shards(paths)
        records: list[StepRecord] = []
        resumed: list[str] = []
        done_dirs: list[Path] = []
        # the input folders' checks travel with their rows (records.checks), as in the local pipeline
        checks: list[Check] = [c for path, parent in zip(paths, parents) if parent for c in read_checks(path, parent)]
        parent_steps = sum(len(parent.get("steps", [])) for parent in parents if parent)
        for number, step in enumerate(steps):
            stage = stages / f"{number:02d}-{step.name}"
            marker = stage / "record.json"
            if marker.is_file():
                record = StepRecord(**json.loads(marker.read_text(encoding="utf-8")))
                resumed.append(step.name)
            else:
                if stage.exists():
                    shutil.rmtree(stage)
                output = executor.run_dataset(step, ds, ctx, rows=records[-1].rows_out if records else rows_in)
                record = output.record
                output.kept.write_parquet(str(stage / "kept"))
                if sum(record.removed.values()):
                    output.removed.write_parquet(str(stage / "removed"))
                if output.check is not None:
                    _save_check(stage, {"step": step.name, "step_index": parent_steps + number, **output.check},
                                record.rows_out)
                write_json_atomic(marker, record.to_dict())
            check = _load_check(stage)
            if check is not None:
                checks.append(check)
            records.append(record)
            done_dirs.append(stage)
            ds = _read_stage(stage / "kept", ds)
            if stop_after is not None and number + 1 >= stop_after:
                raise KeyboardInterrupt(f"stopped after stage {number + 1} (test)")

        manifest = Manifest(seed=ctx.seed, recipe=recipe)
        for path, parent in zip(paths, parents):
            if parent:
                manifest.inputs.extend(parent.get("inputs", []))
                manifest.steps.extend(parent.get("steps", []))
                manifest.parents.append({"folder": str(path), "data_fingerprint": parent.get("data_fingerprint")})
            else:
                files = _files(path)
                rows = sum(pl.scan_parquet(f).select(pl.len()).collect().item() if f.suffix == ".parquet"
                           else _count_rows(f) for f in files)
                manifest.inputs.append({"name": path.name, "kind": "folder" if path.is_dir() else "file",
                                        "path": str(path), "rows": rows,
                                        "fingerprint": files_fingerprint(files) if path.is_dir() else file_sha256(path)})
        for record in records:
            manifest.add_step(record)
        rows_out = records[-1].rows_out if records else rows_in
        shards, hashes = _write_sorted(ds, tmp / "data", rows_out, shard_rows or SHARD_ROWS, POS, KIND,
                                       hash_rows=bool(checks))
        removed_frames = [d / "removed" for d in done_dirs if (d / "removed").is_dir()]
        carried = [f for path, parent in zip(paths, parents) if parent for f in removed_files(path)]
        removed_rows = sum(sum(r.removed.values()) for r in records) + _parquet_rows(carried)
        if removed_rows:
            _write_removed(removed_frames, tmp / "removed", shard_rows or SHARD_ROWS, POS, carried=carried)
        columns = pl.read_parquet_schema(shards[0]).keys() if shards else []
        manifest.rows = rows_out
        manifest.removed_rows = removed_rows
        manifest.columns = list(columns)
        manifest.data_fingerprint = files_fingerprint(shards)
        manifest.checks = write_checks(tmp, None, checks, hashes=hashes)
        manifest.write(tmp / "manifest.json")
        (tmp / "README.md").write_text(render(tmp, manifest.to_dict()), encoding="utf-8")
    shutil.rmtree(stages, ignore_errors=True)
    return RayPipelineResult(out, records, rows_in, rows_out, removed_rows, resumed)


def _count_rows(path: Path) -> int:
    from ...records.load import read_table

    return read_table(path).height


def _read_stage(folder: Path, previous):
    import ray.data

    if not folder.is_dir() or not any(folder.glob("*.parquet")):
        return previous.limit(0)
    return ray.data.read_parquet(str(folder))


def _write_sorted(ds, folder: Path, rows: int, shard_rows: int, pos: str, kind: str,
                  hash_rows: bool = False) -> tuple[list[Path], np.ndarray]:
    """`ds` in input order as Hub shards (one shard in the driver's memory at a time); with
    `hash_rows`, also the rows' fingerprints (records.checks.row_hashes), taken as they pass."""
    folder.mkdir(parents=True)
    count = max(1, -(-rows // shard_rows))
    paths = [folder / f"train-{i:05d}-of-{count:05d}.parquet" for i in range(count)]
    written = 0
    hashes: list[np.ndarray] = []
    if rows:
        ordered = ds.sort(pos)
        for index, batch in enumerate(ordered.iter_batches(batch_size=shard_rows, batch_format="pyarrow")):
            frame = pl.from_arrow(batch)
            frame = canonical_order(frame.drop([c for c in frame.columns if c.startswith("_kc_")]))
            frame.write_parquet(paths[index], compression="zstd")
            if hash_rows:
                hashes.append(row_hashes(frame))
            written += 1
    if written < count:  # no rows: one empty shard with the schema, as the local writer does
        pl.DataFrame().write_parquet(paths[written])
    return paths, (np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64))


def _parquet_rows(files: Sequence[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in files)


def _write_removed(stage_dirs: list[Path], folder: Path, shard_rows: int, pos: str,
                   carried: Sequence[Path] = ()) -> list[Path]:
    """The input folders' removed rows (`carried`, as they were), then every stage's removed
    rows, stage by stage, each in input order (lazily scanned)."""
    scans = [pl.scan_parquet(f) for f in carried] + [pl.scan_parquet(str(d / "*.parquet")).sort(pos) for d in stage_dirs]
    frame = pl.concat(scans, how="diagonal_relaxed")
    total = frame.select(pl.len()).collect().item()
    folder.mkdir(parents=True)
    count = max(1, -(-total // shard_rows))
    paths = []
    for index in range(count):
        part = frame.slice(index * shard_rows, shard_rows).collect()
        part = canonical_order(part.drop([c for c in part.columns if c.startswith("_kc_")]))
        path = folder / f"train-{index:05d}-of-{count:05d}.parquet"
        part.write_parquet(path, compression="zstd")
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# checks/: row fingerprints of the rows a check let through (records.checks)


def _save_check(stage: Path, info: dict, rows_passed: int) -> None:
    """A stage's check: its description (with a new id) and the fingerprints of its kept rows,
    computed on the workers from the stage's kept/ parquet and gathered (8 bytes a row)."""
    import secrets

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ...records.checks import _unique

    hashes = _unique(_stage_hashes(stage / "kept"))
    pq.write_table(pa.table({"row": pa.array(hashes, type=pa.uint64())}), stage / "check-rows.parquet")
    info = {"id": f"c-{secrets.token_hex(6)}", **_jsonable(info), "rows_passed": rows_passed, "row_hash": ROW_HASH}
    write_json_atomic(stage / "check.json", info)


def _load_check(stage: Path) -> Check | None:
    path = stage / "check.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text(encoding="utf-8"))
    rows = pl.read_parquet(stage / "check-rows.parquet")["row"].to_numpy().astype(np.uint64)
    return Check(info, rows)


def _hash_batch(batch):
    import pyarrow as pa

    frame = pl.from_arrow(batch)
    return pa.table({"row": pa.array(row_hashes(frame), type=pa.uint64())})


def _stage_hashes(folder: Path) -> np.ndarray:
    """Fingerprints of the rows in a stage's kept/ parquet, hashed where the blocks are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    import ray.data

    from ...records.checks import ROW_FIELDS

    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return np.zeros(0, dtype=np.uint64)
    names = set(pq.read_schema(files[0]).names)
    ds = ray.data.read_parquet([str(f) for f in files]).select_columns([c for c in ROW_FIELDS if c in names])
    tables = [t for t in ray.get(ds.map_batches(_hash_batch, batch_format="pyarrow").to_arrow_refs()) if t.num_rows]
    if not tables:
        return np.zeros(0, dtype=np.uint64)
    return pa.concat_tables(tables).column("row").to_numpy().astype(np.uint64)
