"""Dataset statistics for `kocurate inspect`: sizes, lengths, Hangul share, empties, duplicates."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import polars as pl

from .records import OPTIONAL
from .records.text import count_repeats, exact_keys

TEXT_COLUMNS = ("instruction", "input", "output", *OPTIONAL)
PERCENTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_HANGUL = r"[\u1100-\u11FF\u3130-\u318F\uAC00-\uD7A3]"


@dataclass
class ColumnStats:
    column: str
    empty: int
    mean_chars: float
    percentiles: dict[str, int]
    max_chars: int
    hangul_share: float  # Hangul characters / non-space characters


@dataclass
class DatasetStats:
    rows: int
    columns: list[str]
    text: list[ColumnStats]
    exact_duplicates: int  # rows whose instruction+input+output repeats an earlier row's (exact dedup's key)
    by_source: dict[str, int] = field(default_factory=dict)
    by_task: dict[str, int] = field(default_factory=dict)
    tasks: int = 0
    same_prompt_different_output: int = 0  # rows repeating an earlier prompt with another output

    def to_dict(self) -> dict:
        return asdict(self)


def describe(frame: pl.DataFrame, top: int = 20) -> DatasetStats:
    """Compute the statistics of a canonical frame."""
    text = [column_stats(frame, c) for c in TEXT_COLUMNS if c in frame.columns and frame[c].dtype == pl.String]
    dups = count_repeats(exact_keys(frame))
    same_prompt = count_repeats(exact_keys(frame, ("instruction", "input"))) - dups
    by_source = _counts(frame, "source", top)
    by_task = _counts(frame, "task", top)
    tasks = frame["task"].n_unique() if "task" in frame.columns else 0
    return DatasetStats(frame.height, frame.columns, text, dups, by_source, by_task, tasks,
                        same_prompt_different_output=same_prompt)


def column_stats(frame: pl.DataFrame, column: str) -> ColumnStats:
    col = pl.col(column).fill_null("")
    lengths = frame.select(col.str.len_chars().alias("n"))["n"]
    stats = frame.select(
        (col.str.strip_chars() == "").sum().alias("empty"),
        col.str.count_matches(_HANGUL).sum().alias("hangul"),
        col.str.replace_all(r"\s", "").str.len_chars().sum().alias("chars"),
    ).row(0, named=True)
    percentiles = {f"p{int(q * 100)}": int(lengths.quantile(q, "nearest") or 0) for q in PERCENTILES}
    return ColumnStats(
        column=column,
        empty=int(stats["empty"]),
        mean_chars=round(float(lengths.mean() or 0.0), 1),
        percentiles=percentiles,
        max_chars=int(lengths.max() or 0),
        hangul_share=round(stats["hangul"] / stats["chars"], 4) if stats["chars"] else 0.0,
    )


def _counts(frame: pl.DataFrame, column: str, top: int) -> dict[str, int]:
    if column not in frame.columns:
        return {}
    counts = frame.group_by(column).len().sort(["len", column], descending=[True, False]).head(top)
    return {str(k): int(n) for k, n in counts.iter_rows()}
