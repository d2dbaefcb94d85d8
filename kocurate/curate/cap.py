"""Per-task capping (the CoT-Collection recipe): a task with at most N rows stays whole, a larger
one keeps a seeded random sample of N.

Each task draws from its own generator seeded by (run seed, CRC32 of the task name), so a task's
sample depends only on the seed and that task's rows: adding or dropping another task changes
nothing else. Kept rows stay in their input order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import polars as pl

from ..errors import InputError
from ..records import removal_frame
from .pipeline import RunContext, Step, StepResult

NO_TASK = "(none)"


def task_generator(seed: int, task: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) % (2**32), zlib.crc32(task.encode("utf-8"))])


def task_sample(seed: int, task: str, rows: np.ndarray, per_task: int) -> np.ndarray:
    """The rows (in input order) one task keeps: all of them up to `per_task`, else its seeded sample."""
    if len(rows) <= per_task:
        return rows
    return task_generator(seed, task).choice(rows, size=per_task, replace=False)


def require_task_column(columns: list[str], column: str) -> None:
    """The one-line error for a missing task column, on every engine."""
    if column not in columns:
        raise InputError(
            f"no task column '{column}'; columns: {', '.join(columns)}; pass --task-column NAME "
            f"(or load CoT-Collection with --preset cot-collection, which maps 'task')"
        )


def over_cap_detail(column: str, per_task: int) -> pl.Expr:
    """The removed/ detail of an over-cap row, on every engine."""
    return pl.format("task {} over {} rows", pl.col(column).cast(pl.String).fill_null(NO_TASK), pl.lit(per_task))


def cap_stats(table: dict, per_task: int, rows_before: int, rows_after: int, null_task_rows: int) -> dict:
    """The manifest stats of a cap (`table`: task -> [rows, kept]), one shape on every engine."""
    return {"tasks": len(table), "tasks_capped": sum(1 for b, _ in table.values() if b > per_task),
            "rows_before": rows_before, "rows_after": rows_after, "null_task_rows": null_task_rows,
            "per_task": table}


@dataclass
class Cap(Step):
    """Keep at most `per_task` rows of every task (seeded sample), all rows of smaller tasks."""

    per_task: int = 100
    task_column: str = "task"
    name: ClassVar[str] = "cap"

    def __post_init__(self):
        if int(self.per_task) < 1:
            raise InputError(f"--per-task {self.per_task} must be at least 1")

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:
        col = self.task_column
        require_task_column(frame.columns, col)
        tasks = frame[col].cast(pl.String).fill_null(NO_TASK).to_list()
        by_task: dict[str, list[int]] = {}
        for i, t in enumerate(tasks):
            by_task.setdefault(t, []).append(i)
        keep = np.zeros(frame.height, dtype=bool)
        table = {}
        for task in ctx.track(sorted(by_task), f"capping {len(by_task):,} tasks at {self.per_task}"):
            rows = np.asarray(by_task[task], dtype=np.int64)
            keep[task_sample(ctx.seed, task, rows, self.per_task)] = True
            table[task] = [int(len(rows)), int(min(len(rows), self.per_task))]
        mask = pl.Series(keep)
        kept = frame.filter(mask)
        removed = removal_frame(frame.filter(~mask), self.name, "over-cap", detail=over_cap_detail(col, self.per_task))
        stats = cap_stats(table, self.per_task, frame.height, int(keep.sum()), int(frame[col].is_null().sum()))
        return StepResult(kept, removed, stats)
