"""The pipeline: load -> steps -> one dataset folder, written through records' output guard.

The step vocabulary (Step, StepResult, RunContext) lives in step.py; it is re-exported here
for the modules that import it from the pipeline.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import polars as pl

from ..errors import InputError
from ..records import Loaded, Manifest, StepRecord, concat_removed
from ..records.checks import Check, new_check, read_checks
from ..records.folder import fill_dataset_folder, output_guard, read_removed
from .normalize import DropEmpty
from .step import (
    RunContext,
    Step,
    StepResult,
    _jsonable,
    default_cache_dir,
    progress_lines,
)

__all__ = [
    "PipelineResult",
    "RunContext",
    "Step",
    "StepResult",
    "_jsonable",
    "combine_inputs",
    "default_cache_dir",
    "progress_lines",
    "run_pipeline",
]


@dataclass
class PipelineResult:
    """The written folder, its rows, and one record per step (for the summary table)."""

    out: Path | None
    kept: pl.DataFrame
    removed: pl.DataFrame
    manifest: Manifest
    records: list[StepRecord]
    results: list[StepResult]
    #: the checks the kept rows carry (records.checks.Check: this run's and the inputs'); pass
    #: them to records.write_dataset_folder(checks=...) when writing `kept` later
    checks: list[Check] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return self.records[0].rows_in if self.records else self.kept.height

    def removed_by_reason(self) -> dict[str, int]:
        return removed_by_reason(self.records)


def removed_by_reason(records) -> dict[str, int]:
    """Rows removed per reason over the step records of a run."""
    totals: dict[str, int] = {}
    for record in records:
        for reason, n in record.removed.items():
            totals[reason] = totals.get(reason, 0) + n
    return totals


def combine_inputs(sources: Sequence[Loaded]) -> pl.DataFrame:
    """Stack the inputs; ids must stay unique across them."""
    if not sources:
        raise InputError("no input given")
    frame = pl.concat([s.frame for s in sources], how="diagonal_relaxed") if len(sources) > 1 else sources[0].frame
    if len(sources) > 1:
        dupes = frame.filter(pl.col("id").is_duplicated())
        if dupes.height:
            raise InputError(
                f"id '{dupes['id'][0]}' occurs in more than one input; drop the id mapping of one input so its ids are derived"
            )
    return frame


def run_pipeline(
    sources: Sequence[Loaded],
    steps: Sequence[Step],
    out: str | Path | None,
    *,
    ctx: RunContext | None = None,
    overwrite: bool = False,
    render_card: Callable | None = None,
    recipe: str | None = None,
) -> PipelineResult:
    """Run `steps` over the combined inputs and write one dataset folder to `out`.

    With `out=None` nothing is written (analysis runs). Otherwise the output is checked and
    locked before anything runs (records.output_guard) and appears in one rename at the end.
    Rows an input folder had already removed are carried into the new removed/, its steps into
    the new manifest, and its checks' row fingerprints along with its rows, so the last folder
    of a chain tells the whole story. The card is rendered by `render_card`, else
    `ctx.render_card`, else records' minimal card.
    """
    ctx = ctx or RunContext()
    render = render_card or ctx.render_card
    if out is None:
        return _run(sources, steps, ctx, recipe)
    with output_guard(out, [s.info.path for s in sources], overwrite=overwrite) as tmp:
        result = _run(sources, steps, ctx, recipe)
        fill_dataset_folder(tmp, result.kept, result.removed, result.manifest, render_card=render, checks=result.checks)
    result.out = Path(out).expanduser().resolve()
    return result


def _run(sources: Sequence[Loaded], steps: Sequence[Step], ctx: RunContext, recipe: str | None) -> PipelineResult:
    frame = combine_inputs(sources)
    manifest = Manifest(seed=ctx.seed, recipe=recipe)
    removed: list[pl.DataFrame] = []
    checks: list[Check] = []
    for source in sources:
        parent = source.manifest
        if parent:
            folder = Path(source.info.path)
            manifest.inputs.extend(parent.get("inputs", []))
            manifest.steps.extend(parent.get("steps", []))
            manifest.parents.append({"folder": source.info.path, "data_fingerprint": parent.get("data_fingerprint")})
            removed.append(read_removed(folder))
            checks.extend(read_checks(folder, parent))
        else:
            manifest.inputs.append(source.info.to_dict())

    # Rows straight from a file or the Hub pass the empty filter first; folder rows already did.
    if any(s.manifest is None for s in sources) and not any(isinstance(s, DropEmpty) for s in steps):
        steps = [DropEmpty(), *steps]

    records, results = [], []
    log = ctx.show_progress and not sys.stdout.isatty()  # a terminal has the live bars instead
    for number, step in enumerate(steps, 1):
        if log:
            print(f"step {number}/{len(steps)} {step.name}: {frame.height:,} rows in", file=sys.stderr, flush=True)
        result, record = step(frame, ctx)
        if log:
            print(f"step {number}/{len(steps)} {step.name}: {record.rows_out:,} rows out ({record.seconds:.1f}s)",
                  file=sys.stderr, flush=True)
        frame = result.kept
        records.append(record)
        results.append(result)
        removed.append(result.removed)
        manifest.add_step(record)
        if result.check is not None:
            checks.append(new_check({"step": step.name, "step_index": len(manifest.steps) - 1, **_jsonable(result.check)},
                                    result.kept))
    return PipelineResult(None, frame, concat_removed(removed), manifest, records, results, checks)
