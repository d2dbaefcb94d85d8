"""`kocurate dedup`, `kocurate explain` and `kocurate decontaminate`.

Only light imports here: the embedders load numpy models / torch inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from .options import (apply, embed_options, input_options, load_inputs, output_options, refuse_empty,
                      run_context, threshold_option)
from .render import console, print_settings, print_written

_optional_output = [
    click.option("-o", "--output", "output", default=None, type=click.Path(path_type=Path),
                 help="Dataset folder to write (Hub layout). Written atomically; never the input. Not needed with --analyze."),
    *output_options[1:],
]

@click.command("dedup")
@click.argument("inputs", nargs=-1, required=True)
@apply(input_options)
@apply(_optional_output)
@click.option("--threshold", default=None, type=float, metavar="COSINE",
              help="A row is kept only if its max cosine to rows already kept is <= this, in (0, 1]. "
                   "Default: the embedder's calibrated value (default/use 0.8, lexical 0.8, st: 0.9). "
                   "Platypus used 0.7 with all-MiniLM-L6-v2.")
@apply(embed_options)
@click.option("--keep", type=click.Choice(["longest-output", "first"]), default="longest-output", show_default=True,
              help="Which row of an exact-duplicate group stays: the one with the longest output (Platypus) or the first.")
@click.option("--columns", default="instruction,input", show_default=True, metavar="COL,...",
              help="Columns whose normalised text is the duplicate key and the embedded text.")
@click.option("--exact-only", is_flag=True, help="Only remove exact duplicates (no embeddings).")
@click.option("--search", type=click.Choice(["auto", "exact", "ivf"]), default="auto", show_default=True,
              help="Neighbour search: exact FAISS flat index, IVF (approximate, for large sets), or auto (exact up to 20k rows).")
@click.option("--analyze", is_flag=True,
              help="Write nothing: print the nearest-neighbour cosine distribution and how many rows would go at "
                   "several thresholds, to choose --threshold.")
def dedup_cmd(inputs, preset, mapping, split, output, overwrite, seed, threshold, embedder, cache_dir, no_cache,
              keep, columns, exact_only, search, analyze):
    """Remove exact and semantic near-duplicates from INPUTS (files, folders or Hub ids).

    \b
    1. exact: rows with the same NFKC, whitespace-folded instruction+input; one stays (--keep).
    2. semantic: rows embedded (instruction + " " + input), then greedy in input order: a row
       stays only if its max cosine to the rows already kept is <= --threshold.
    Removed rows go to OUTPUT/removed/ with dup_of (the kept twin's id) and similarity.

    \b
    Examples:
      kocurate dedup samples/ko_instructions.jsonl --analyze
      kocurate dedup samples/ko_instructions.jsonl -o out/dedup --threshold 0.85
      kocurate dedup data.jsonl -o out/dedup --embedder st:BM-K/KoSimCSE-roberta-multitask --threshold 0.9
      kocurate explain out/dedup
    """
    from ..curate import run_pipeline
    from ..curate.dedup import ExactDedup, SemanticDedup
    from ..curate.dedup import analyze as analyze_rows

    threshold = threshold_option(threshold)
    cols = tuple(c.strip() for c in columns.split(",") if c.strip())
    if not analyze and output is None:
        raise click.UsageError("missing -o/--output (or pass --analyze to only look)")
    sources = load_inputs(inputs, preset, mapping, split)
    refuse_empty(inputs, sources)
    ctx = run_context(seed, cache_dir, no_cache)
    exact = ExactDedup(columns=cols, keep=keep)
    if analyze:
        from ..curate.normalize import DropEmpty
        from ..curate.pipeline import combine_inputs

        frame = DropEmpty().run(combine_inputs(sources), ctx).kept
        if not frame.height:
            raise click.UsageError(f"{', '.join(inputs)}: no rows to analyse")
        if exact_only:
            result = exact.run(frame, ctx)
            console.print(f"exact duplicates: {result.stats['exact_duplicates']:,} of {frame.height:,} rows")
            return
        report = analyze_rows(frame, ctx, embedder=embedder, columns=cols, search=search, exact_step=exact)
        _print_analysis(report, threshold)
        return
    steps = [exact] if exact_only else [exact, SemanticDedup(threshold=threshold, embedder=embedder, columns=cols, search=search)]
    result = run_pipeline(sources, steps, output, ctx=ctx, overwrite=overwrite)
    print_settings(result)
    print_written(result)
    if result.out is not None and result.removed.height:
        console.print(f"see the removed rows beside their kept twins: [bold]kocurate explain {result.out}[/]")


def _print_analysis(report, threshold) -> None:
    head = Table(title=f"near-duplicate analysis ({report.rows:,} rows after exact dedup; nothing written)", title_justify="left",
                 show_header=False)
    head.add_row("embedder", report.embedder)
    head.add_row("search", report.search)
    head.add_row("exact duplicates", f"{report.exact_duplicates:,}")
    if report.empty_text:
        head.add_row("empty after normalisation", f"{report.empty_text:,}")
    console.print(head)
    hist = Table(title="cosine to the nearest other row", title_justify="left")
    hist.add_column("cosine")
    hist.add_column("rows", justify="right")
    hist.add_column("share", justify="right")
    hist.add_column("")
    top = max((c for _, _, c in report.histogram), default=1) or 1
    for lo, hi, count in report.histogram:
        label = f"< {hi:.2f}" if lo <= -1 else f"{lo:.2f} - {min(hi, 1.0):.2f}"
        hist.add_row(label, f"{count:,}", f"{count / max(report.rows, 1):.1%}", "#" * int(30 * count / top))
    console.print(hist)
    would = Table(title="rows the greedy pass would remove", title_justify="left")
    would.add_column("--threshold", justify="right")
    would.add_column("removed", justify="right")
    would.add_column("share", justify="right")
    from ..curate.dedup import default_threshold

    chosen = threshold if threshold is not None else default_threshold(report.embedder)
    for t, n in report.would_remove.items():
        mark = " <- " + ("chosen" if threshold is not None else "default") if abs(t - chosen) < 1e-9 else ""
        would.add_row(f"{t:.2f}{mark}", f"{n:,}", f"{n / max(report.rows, 1):.1%}")
    console.print(would)
    console.print("then: [bold]kocurate dedup IN -o OUT --threshold T[/] (the embeddings are cached: no re-embedding)")


@click.command("explain")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--limit", default=20, show_default=True, help="How many removed rows to show.")
@click.option("--step", "step_name", default=None, metavar="NAME",
              help="Only rows removed by this step (exact-dedup, semantic-dedup, decontaminate, ...).")
@click.option("--order", type=click.Choice(["lowest", "highest", "input"]), default="lowest", show_default=True,
              help="lowest: the least similar removals first (where a threshold errs); highest; or input order.")
@click.option("--width", default=60, show_default=True, help="Characters of text shown per side.")
def explain_cmd(folder, limit, step_name, order, width):
    """Show removed rows of a dataset FOLDER beside what they duplicated (kept twin or benchmark item).

    \b
    Examples:
      kocurate explain out/dedup
      kocurate explain out/dedup --step semantic-dedup --order lowest --limit 50
      kocurate explain out/clean --step decontaminate
    """
    import polars as pl

    from ..errors import InputError
    from ..records import data_files, read_table

    folder = Path(folder)
    if not (folder / "manifest.json").is_file() and not (folder / "data").is_dir():
        raise InputError(f"{folder}: not a kocurate dataset folder (no manifest.json or data/); pass the -o of a dedup run")
    removed_files = sorted((folder / "removed").glob("train-*.parquet"))
    if not removed_files:
        console.print(f"{folder}: removed/ is empty: no row was removed")
        return
    removed = pl.concat([read_table(f) for f in removed_files], how="diagonal_relaxed")
    kept_files = data_files(folder)
    kept = pl.concat([read_table(f) for f in kept_files], how="diagonal_relaxed") if kept_files else removed.head(0)
    if step_name:
        removed = removed.filter(pl.col("step") == step_name)
        if not removed.height:
            raise InputError(f"{folder}: no rows removed by step '{step_name}'; steps there: "
                             f"{', '.join(sorted(set(pl.concat([read_table(f) for f in removed_files], how='diagonal_relaxed')['step'].to_list())))}")
    counts = removed.group_by("step", "reason").len().sort("len", descending=True)
    summary = Table(title=f"{folder}: removed rows", title_justify="left")
    for name in ("step", "reason", "rows"):
        summary.add_column(name, justify="right" if name == "rows" else "left")
    for step, reason, n in counts.iter_rows():
        summary.add_row(step, reason, f"{n:,}")
    console.print(summary)

    text = lambda frame: pl.concat_str([pl.col("instruction").fill_null(""), pl.col("input").fill_null("")], separator=" ")  # noqa: E731
    lookup = {}
    for frame in (kept, removed):
        if frame.height:
            for rid, t in frame.select("id", text(frame).alias("t")).iter_rows():
                lookup.setdefault(rid, t)
    if order != "input":
        removed = removed.sort("similarity", descending=order == "highest", nulls_last=True)
    shown = removed.head(limit)
    table = Table(title=f"{min(limit, removed.height)} of {removed.height:,} removals ({order} similarity first)",
                  title_justify="left", show_lines=True)
    table.add_column("removed row", ratio=1)
    table.add_column("score", justify="right")
    table.add_column("duplicate of", ratio=1)
    for row in shown.iter_rows(named=True):
        twin = row.get("dup_of")
        twin_text = lookup.get(twin) if twin else None
        right = f"[bold]{twin}[/]\n{_cut(twin_text, width)}" if twin_text is not None else f"[bold]{twin or '-'}[/]\n{row.get('detail') or ''}"
        score = "-" if row.get("similarity") is None else f"{row['similarity']:.3f}"
        left = f"[bold]{row['id']}[/] ({row['reason']})\n{_cut(lookup.get(row['id'], ''), width)}"
        table.add_row(left, score, right)
    console.print(table)


def _cut(value, width: int) -> str:
    value = (value or "").replace("\n", " ")
    return value if len(value) <= width else value[: width - 1] + "…"




COMMANDS = [dedup_cmd, explain_cmd]
