"""`kocurate inspect` and `kocurate normalize`: look at a dataset, and turn it into a dataset folder."""

from __future__ import annotations

import json

import click
from rich.table import Table

from ..curate import DropEmpty, RunContext, run_pipeline
from ..errors import InputError
from ..stats import describe
from .options import apply, input_options, load_inputs, output_options
from .render import card_renderer, console, print_written


@click.command("inspect")
@click.argument("path")
@apply(input_options)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON instead of tables.")
@click.option("--top", default=20, show_default=True, help="How many sources and tasks to list (0 or more).")
def inspect_cmd(path, preset, mapping, split, as_json, top):
    """Show rows, columns, text lengths, Hangul share, empties, duplicates, sources and tasks.

    PATH is a jsonl/json/parquet/csv file, a dataset folder, or a Hub id.
    """
    if top < 0:
        raise InputError(f"--top {top}: must be 0 or more (how many sources and tasks to list)")
    loaded = load_inputs([path], preset, mapping, split)[0]
    stats = describe(loaded.frame, top=top)
    if as_json:
        click.echo(json.dumps({"path": path, **stats.to_dict()}, ensure_ascii=False, indent=2))
        return
    head = Table(title=f"{path}", title_justify="left", show_header=False)
    head.add_row("rows", f"{stats.rows:,}")
    head.add_row("columns", ", ".join(stats.columns))
    head.add_row("exact duplicates (instruction+input+output)", f"{stats.exact_duplicates:,}")
    head.add_row("same prompt, different output", f"{stats.same_prompt_different_output:,}")
    if stats.tasks:
        head.add_row("tasks", f"{stats.tasks:,}")
    console.print(head)

    lengths = Table(title="text columns (characters)", title_justify="left")
    for name in ("column", "empty", "mean", "p5", "p25", "p50", "p75", "p95", "max", "Hangul"):
        lengths.add_column(name, justify="left" if name == "column" else "right")
    for col in stats.text:
        p = col.percentiles
        lengths.add_row(col.column, f"{col.empty:,}", f"{col.mean_chars:,.0f}", *(f"{p[k]:,}" for k in ("p5", "p25", "p50", "p75", "p95")),
                        f"{col.max_chars:,}", f"{col.hangul_share:.0%}")
    console.print(lengths)
    for title, counts in (("rows per source", stats.by_source), ("rows per task", stats.by_task)):
        if counts:
            table = Table(title=title, title_justify="left")
            table.add_column(title.split()[-1])
            table.add_column("rows", justify="right")
            for key, n in counts.items():
                table.add_row(key, f"{n:,}")
            console.print(table)


@click.command("normalize")
@click.argument("inputs", nargs=-1, required=True)
@apply(input_options)
@apply(output_options)
def normalize_cmd(inputs, preset, mapping, split, output, overwrite, seed):
    """Load INPUTS (files, folders or Hub ids) into one dataset folder with canonical columns.

    Rows get stable ids (kept from the source, else derived from the source name and row
    position); rows with an empty instruction or output go to removed/ with reason `empty`.
    """
    sources = load_inputs(inputs, preset, mapping, split)
    ctx = RunContext(seed=seed, show_progress=True, render_card=card_renderer())
    result = run_pipeline(sources, [DropEmpty()], output, ctx=ctx, overwrite=overwrite)
    print_written(result)


COMMANDS = [inspect_cmd, normalize_cmd]
