"""Steps and the pipeline that runs them: load -> steps -> one dataset folder.

A step is a small dataclass with a `name`, its parameters as fields, and a `run` over a frame
that returns what it kept, what it removed (with reasons) and counters, in the manner of
datatrove's pipeline steps.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Sequence, TypeVar

import polars as pl

from ..errors import InputError
from ..records import (
    Loaded,
    Manifest,
    StepRecord,
    check_output,
    concat_removed,
    empty_removed,
    write_dataset_folder,
)

T = TypeVar("T")


def default_cache_dir() -> Path:
    """$KOCURATE_CACHE, else $XDG_CACHE_HOME/kocurate, else ~/.cache/kocurate."""
    if os.environ.get("KOCURATE_CACHE"):
        return Path(os.environ["KOCURATE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kocurate"


@dataclass
class RunContext:
    """What every step may use: the run's seed, a cache folder, and a progress display.

    `cache_dir=None` means no cache: steps neither read nor write embeddings or scores.
    """

    seed: int = 42
    cache_dir: Path | None = None
    show_progress: bool = False

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
        if not self.show_progress:
            return items
        from rich.progress import track

        return track(items, description=description, total=total, transient=True)


@dataclass
class StepResult:
    """What a step did: rows kept, rows removed (with step, reason, dup_of, similarity), counters."""

    kept: pl.DataFrame
    removed: pl.DataFrame
    stats: dict = field(default_factory=dict)

    def removed_by_reason(self) -> dict[str, int]:
        if not self.removed.height:
            return {}
        counts = self.removed.group_by("reason").len().sort("len", descending=True)
        return {r: int(n) for r, n in counts.iter_rows()}


class Step:
    """Base class. Subclasses are dataclasses whose fields are the step's parameters."""

    name: ClassVar[str] = "step"

    def params(self) -> dict:
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def keep_all(self, frame: pl.DataFrame, **stats) -> StepResult:
        return StepResult(frame, empty_removed(frame), stats)

    def __call__(self, frame: pl.DataFrame, ctx: RunContext) -> tuple[StepResult, StepRecord]:
        start = time.perf_counter()
        result = self.run(frame, ctx)
        record = StepRecord(
            name=self.name,
            params=_jsonable(self.params()),
            rows_in=frame.height,
            rows_out=result.kept.height,
            removed=result.removed_by_reason(),
            seconds=round(time.perf_counter() - start, 3),
            stats=_jsonable(result.stats),
        )
        return result, record


@dataclass
class PipelineResult:
    """The written folder, its rows, and one record per step (for the summary table)."""

    out: Path | None
    kept: pl.DataFrame
    removed: pl.DataFrame
    manifest: Manifest
    records: list[StepRecord]
    results: list[StepResult]

    @property
    def rows_in(self) -> int:
        return self.records[0].rows_in if self.records else self.kept.height

    def removed_by_reason(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for record in self.records:
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

    With `out=None` nothing is written (analysis runs). Rows an input folder had already
    removed are carried into the new removed/, and its steps into the new manifest, so the
    last folder of a chain tells the whole story.
    """
    from .normalize import DropEmpty

    ctx = ctx or RunContext()
    if out is not None:
        check_output(out, [s.info.path for s in sources], overwrite=overwrite)
    frame = combine_inputs(sources)

    manifest = Manifest(seed=ctx.seed, recipe=recipe)
    carried_removed: list[pl.DataFrame] = []
    for source in sources:
        parent = source.manifest
        if parent:
            manifest.inputs.extend(parent.get("inputs", []))
            manifest.steps.extend(parent.get("steps", []))
            manifest.parents.append({"folder": source.info.path, "data_fingerprint": parent.get("data_fingerprint")})
            carried_removed.append(_read_removed(Path(source.info.path)))
        else:
            manifest.inputs.append(source.info.to_dict())

    # Rows straight from a file or the Hub pass the empty filter first; folder rows already did.
    if any(s.manifest is None for s in sources) and not any(isinstance(s, DropEmpty) for s in steps):
        steps = [DropEmpty(), *steps]

    records, results, removed = [], [], list(carried_removed)
    for step in steps:
        result, record = step(frame, ctx)
        frame = result.kept
        records.append(record)
        results.append(result)
        removed.append(result.removed)
        manifest.add_step(record)

    removed_all = concat_removed(removed)
    written = None
    if out is not None:
        written = write_dataset_folder(out, frame, removed_all, manifest, overwrite=overwrite, render_card=render_card)
    return PipelineResult(written, frame, removed_all, manifest, records, results)


def _read_removed(folder: Path) -> pl.DataFrame:
    from ..records import read_table

    files = sorted((folder / "removed").glob("train-*.parquet"))
    if not files:
        return pl.DataFrame()
    return pl.concat([read_table(f) for f in files], how="diagonal_relaxed")


def _jsonable(value):
    """Make step parameters and stats JSON-safe (paths, tuples, numpy scalars)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
