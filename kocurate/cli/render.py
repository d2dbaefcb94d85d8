"""Rich rendering of results: the summary table every command ends with."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console(stderr=False)


def card_renderer():
    """The full dataset card every command writes (publish's renderer, which falls back to the
    minimal card if rendering fails). Pass it as RunContext(render_card=...) or render_card=."""
    from ..publish.card import default_card_renderer

    return default_card_renderer


def pipeline_summary(result, title: str = "summary") -> Table:
    """Rows in/out, removed by reason and seconds per step, then the totals."""
    table = Table(title=title, title_justify="left")
    table.add_column("step")
    table.add_column("rows in", justify="right")
    table.add_column("rows out", justify="right")
    table.add_column("removed (reason: rows)")
    table.add_column("seconds", justify="right")
    for record in result.records:
        removed = ", ".join(f"{r}: {n:,}" for r, n in record.removed.items()) or "-"
        table.add_row(record.name, f"{record.rows_in:,}", f"{record.rows_out:,}", removed, f"{record.seconds:.2f}")
    total_seconds = sum(r.seconds for r in result.records)
    table.add_section()
    removed = ", ".join(f"{r}: {n:,}" for r, n in result.removed_by_reason().items()) or "-"
    table.add_row("total", f"{result.rows_in:,}", f"{_rows_out(result):,}", removed, f"{total_seconds:.2f}")
    return table


def _rows_out(result) -> int:
    """Rows kept: an in-memory run holds them; a Ray run only counted them."""
    return result.kept.height if hasattr(result, "kept") else result.rows_out


def print_written(result) -> None:
    console.print(pipeline_summary(result))
    if result.out is not None:
        removed = result.removed.height if hasattr(result, "removed") else result.removed_rows
        console.print(f"wrote [bold]{result.out}[/] ({_rows_out(result):,} rows; removed/ holds {removed:,})")


def print_settings(result) -> None:
    table = Table(title="settings and search", title_justify="left", show_header=False)
    for record in result.records:
        stats = record.stats or {}
        for key in ("embedder", "threshold", "search", "pairs", "recall_vs_exact", "benchmark", "items", "ngram",
                    "semantic", "ngram_matches", "skipped_configs", "groups", "search_truncated",
                    "embed_truncated", "embed_cached"):
            if key in stats and stats[key] not in (None, [], {}):
                table.add_row(f"{record.name}: {key}", str(stats[key]))
        if record.stats.get("items_per_config"):
            table.add_row(f"{record.name}: items per config",
                          ", ".join(f"{k} {v:,}" for k, v in record.stats["items_per_config"].items()))
    if table.row_count:
        console.print(table)
