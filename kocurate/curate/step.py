"""What every step is built from: the run's context, a step, and what a step returns.

A step is a small dataclass with a `name`, its parameters as fields, and a `run` over a frame
that returns what it kept, what it removed (with reasons) and counters, in the manner of
datatrove's pipeline steps. The pipeline (pipeline.py) runs steps; this module imports neither
the pipeline nor any step, so steps and the pipeline never import each other.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator, TypeVar

import polars as pl

from ..records import StepRecord, empty_removed

T = TypeVar("T")

#: seconds between progress lines when output is not a terminal
PROGRESS_EVERY = 30.0


def default_cache_dir() -> Path:
    """$KOCURATE_CACHE, else $XDG_CACHE_HOME/kocurate, else ~/.cache/kocurate."""
    if os.environ.get("KOCURATE_CACHE"):
        return Path(os.environ["KOCURATE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kocurate"


@dataclass
class RunContext:
    """What every step may use: the run's seed, a cache folder, a progress display, a card renderer.

    `cache_dir=None` means no cache: steps neither read nor write embeddings or scores.
    `render_card` renders README.md of the folder the run writes (records.minimal_card when
    None); the CLI passes the publish room's full card, a library caller may pass the same.
    """

    seed: int = 42
    cache_dir: Path | None = None
    show_progress: bool = False
    render_card: Callable[[Path, dict], str] | None = None

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
        """Show progress over `items`: a live bar on a terminal, else a line every 10% (or 30 s)."""
        if not self.show_progress:
            return items
        if sys.stdout.isatty():
            from rich.progress import track

            return track(items, description=description, total=total, transient=True)
        if total is None:
            try:
                total = len(items)  # type: ignore[arg-type]
            except TypeError:
                total = None
        return progress_lines(items, description, total)


def progress_lines(items: Iterable[T], description: str, total: int | None, stream=None,
                   every: float = PROGRESS_EVERY, min_gap: float = 1.0) -> Iterator[T]:
    """Yield `items`, writing `description: done/total (pct) seconds` lines to stderr as they go:
    at each tenth of `total` (no closer than `min_gap` seconds, so a quick loop prints only its
    last line) and at least every `every` seconds, then once at the end."""
    stream = stream or sys.stderr
    start = last = time.monotonic()
    step = max(1, (total or 0) // 10)
    done = 0

    def line(final: bool = False) -> None:
        pct = f" ({done / total:.0%})" if total else ""
        of = f"/{total:,}" if total else ""
        stream.write(f"{description}: {done:,}{of}{pct} {time.monotonic() - start:.1f}s{' done' if final else ''}\n")
        stream.flush()

    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if (total and done % step == 0 and done < total and now - last >= min_gap) or now - last >= every:
            line()
            last = now
    line(final=True)


@dataclass
class StepResult:
    """What a step did: rows kept, rows removed (with step, reason, dup_of, similarity), counters.

    `check` describes a check the kept rows passed (e.g. decontamination against a benchmark:
    benchmark, where its data came from, configs); the pipeline fingerprints the kept rows under
    it, so a folder's card can tell which rows were checked against what.
    """

    kept: pl.DataFrame
    removed: pl.DataFrame
    stats: dict = field(default_factory=dict)
    check: dict | None = None

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
