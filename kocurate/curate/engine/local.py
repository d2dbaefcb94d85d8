"""The local executor: today's behaviour, every step over one in-memory polars frame."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import polars as pl

from ...records import StepRecord
from ..step import RunContext, Step, StepResult


class LocalExecutor:
    """Runs each step's `run(frame, ctx)` in this process (per-batch and global parts together)."""

    name = "local"

    def run_step(self, step: Step, frame: pl.DataFrame, ctx: RunContext | None = None) -> tuple[StepResult, StepRecord]:
        """One step over an in-memory frame: (what it kept and removed, its manifest record)."""
        return step(frame, ctx or RunContext())

    def run(self, sources: Sequence, steps: Sequence[Step], out: str | Path | None, *, ctx: RunContext | None = None,
            overwrite: bool = False, render_card: Callable | None = None, recipe: str | None = None):
        """The pipeline over loaded inputs (`records.Loaded`), written to `out` (see pipeline.run_pipeline)."""
        from ..pipeline import run_pipeline

        return run_pipeline(sources, steps, out, ctx=ctx, overwrite=overwrite, render_card=render_card, recipe=recipe)

    def close(self) -> None:
        pass
