"""The first step for rows from a file or the Hub: drop rows with no usable text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import polars as pl

from ..records import REQUIRED_TEXT, removal_frame
from .step import RunContext, Step, StepResult


@dataclass
class DropEmpty(Step):
    """Drop rows whose instruction or output is missing or only whitespace (reason `empty`)."""

    columns: tuple[str, ...] = REQUIRED_TEXT
    name: ClassVar[str] = "drop-empty"

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:
        empty = pl.any_horizontal(
            [pl.col(c).is_null() | (pl.col(c).str.strip_chars().str.len_chars() == 0) for c in self.columns]
        )
        which = pl.concat_str(
            [pl.when(pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "")).then(pl.lit(c)) for c in self.columns],
            separator=",",
            ignore_nulls=True,
        )
        flagged = frame.with_columns(empty.alias("_empty"), pl.format("empty {}", which).alias("_which"))
        dropped = flagged.filter(pl.col("_empty"))
        removed = removal_frame(dropped, self.name, "empty", detail=pl.col("_which")).drop("_empty", "_which")
        kept = flagged.filter(~pl.col("_empty")).drop("_empty", "_which")
        return StepResult(kept, removed, {"empty": dropped.height})
