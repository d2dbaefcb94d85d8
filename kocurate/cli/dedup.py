"""`kocurate dedup` and `kocurate explain`: parse, call the library (curate.dedup, curate.explain), render.

Only light imports here: the embedders load numpy models / torch inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from .options import (apply, embed_options, engine_options, input_options, load_inputs, output_options, refuse_empty,
                      run_context, run_steps, threshold_option)
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
@click.option("--rule", type=click.Choice(["row", "instruction"]), default="row", show_default=True,
              help="What makes two rows duplicates. row: the same example (instruction, input AND output; semantic "
                   "candidates checked on Korean jamo n-grams, numbers and named things). instruction: Platypus's rule "
                   "(instruction+input only: exact key without the output, cosine alone).")
@click.option("--threshold", default=None, type=float, metavar="COSINE",
              help="row rule: the candidate cosine (default per embedder: default/use 0.6, lexical 0.5; an st: model is "
                   "calibrated on the bundled Korean near-duplicate dev pairs at first use and cached). "
                   "instruction rule: a row is kept only if its max cosine to kept rows is <= this "
                   "(default/use 0.8, lexical 0.8, st: 0.9; Platypus used 0.7 with all-MiniLM-L6-v2). In (0, 1].")
@apply(embed_options)
@click.option("--keep", type=click.Choice(["longest-output", "first"]), default="longest-output", show_default=True,
              help="Which row of an exact-duplicate group stays: the one with the longest output (Platypus) or the first.")
@click.option("--columns", default=None, metavar="COL,...",
              help="Columns of the request: the embedded text and, with the output, the duplicate key "
                   "[default: instruction,input].")
@click.option("--method", type=click.Choice(["semantic", "minhash", "minhash+semantic", "exact"]), default="semantic",
              show_default=True,
              help="After exact dedup: semantic near-duplicates (embeddings), MinHash-LSH on character shingles "
                   "(fast lexical path for large corpora), both, or nothing more.")
@click.option("--jaccard", type=float, default=None, metavar="J",
              help="minhash: a row goes when its character 3-gram Jaccard to a kept row is >= J and the answers "
                   "overlap as much  [default: 0.8, calibrated on benchmarks/neardup's dev split]")
@click.option("--exact-only", is_flag=True, help="Only remove exact duplicates (no embeddings); same as --method exact.")
@click.option("--search", type=click.Choice(["auto", "exact", "ivf"]), default="auto", show_default=True,
              help="Neighbour search: exact FAISS flat index, IVF (approximate, for large sets), or auto (exact up to 20k rows).")
@click.option("--analyze", is_flag=True,
              help="Write nothing: print the nearest-neighbour cosine distribution and how many rows would go at "
                   "several thresholds, to choose --threshold.")
@apply(engine_options)
def dedup_cmd(inputs, preset, mapping, split, output, overwrite, seed, rule, threshold, embedder, cache_dir, no_cache,
              keep, columns, method, jaccard, exact_only, search, analyze, engine, ray_address):
    """Remove exact and near-duplicate rows from INPUTS (files, folders or Hub ids).

    \b
    1. exact: rows with the same NFKC, whitespace-folded instruction+input+output; one stays
       (--keep). Rows sharing an instruction+input with another output are counted, not removed
       (--rule instruction removes them: Platypus).
    2. near-duplicates, greedy in input order: a row goes when an earlier kept row is the same
       example. Row rule (default): embedding cosine >= --threshold (or the same squashed prompt
       or long answer) finds candidates; a candidate is a duplicate only when the numbers match,
       the two rows are not about different named things, the answers and inputs overlap and the
       requests overlap (or share their subject with the same long answer).
    Removed rows go to OUTPUT/removed/ with dup_of (the kept twin's id), similarity and every
    signal in detail: `kocurate explain OUTPUT` shows both whole rows.

    \b
    Examples:
      kocurate dedup samples/ko_instructions.jsonl --analyze
      kocurate dedup samples/ko_instructions.jsonl -o out/dedup
      kocurate dedup data.jsonl -o out/dedup --rule instruction --threshold 0.7     # Platypus
      kocurate dedup big.jsonl -o out/dedup --method minhash
      kocurate explain out/dedup
    """
    from ..curate.dedup import ExactDedup, SemanticDedup
    from ..curate.dedup import analyze as analyze_rows
    from ..curate.dedup import check_columns
    from ..curate.pipeline import combine_inputs

    threshold = threshold_option(threshold)
    cols = tuple(c.strip() for c in (columns or "instruction,input").split(",") if c.strip())
    if not cols:
        raise click.UsageError("--columns is empty; name the request columns, e.g. --columns instruction,input")
    if exact_only:
        method = "exact"
    if not analyze and output is None:
        raise click.UsageError("missing -o/--output (or pass --analyze to only look)")
    if analyze and method in ("minhash", "minhash+semantic"):
        raise click.UsageError("--analyze shows the semantic similarity distribution; drop --method minhash")
    if analyze and engine != "local":
        raise click.UsageError("--analyze runs in one process; drop --engine ray")
    sources = None
    if engine == "local":
        sources = load_inputs(inputs, preset, mapping, split)
        refuse_empty(inputs, sources)
        check_columns(combine_inputs(sources), cols)
    ctx = run_context(seed, cache_dir, no_cache)
    exact = ExactDedup(columns=cols, keep=keep, rule=rule)
    if analyze:
        from ..curate.normalize import DropEmpty

        frame = DropEmpty().run(combine_inputs(sources), ctx).kept
        if not frame.height:
            raise click.UsageError(f"{', '.join(inputs)}: no rows to analyse")
        if method == "exact":
            result = exact.run(frame, ctx)
            console.print(f"exact duplicates: {result.stats['exact_duplicates']:,} of {frame.height:,} rows")
            _print_same_prompt(result.stats)
            return
        report = analyze_rows(frame, ctx, embedder=embedder, columns=cols, search=search, exact_step=exact, rule=rule)
        _print_analysis(report, threshold)
        return
    steps = [exact]
    if method in ("minhash", "minhash+semantic"):
        steps.append(_minhash_step(cols, keep, rule, jaccard))
    if method in ("semantic", "minhash+semantic"):
        steps.append(SemanticDedup(threshold=threshold, embedder=embedder, columns=cols, search=search, rule=rule))
    result = run_steps(inputs, steps, output, ctx=ctx, overwrite=overwrite, engine=engine, ray_address=ray_address,
                       sources=sources, preset=preset, mapping=mapping, split=split)
    print_settings(result)
    _print_dedup_summary(result)
    print_written(result)
    if result.out is not None and result.removed_by_reason():
        console.print(f"see the removed rows beside their kept twins: [bold]kocurate explain {result.out}[/]")


def _minhash_step(cols, keep, rule, jaccard=None):
    try:
        from ..curate.minhash import MinHashDedup
    except ImportError:  # pragma: no cover - the module ships with kocurate
        raise click.UsageError("--method minhash needs kocurate.curate.minhash (not installed in this build)") from None
    columns = cols if rule == "instruction" else (*cols, "output") if "output" not in cols else cols
    if jaccard is not None and not 0 < jaccard <= 1:
        raise click.UsageError(f"--jaccard {jaccard}: a share in (0, 1], e.g. 0.8")
    extra = {} if jaccard is None else {"threshold": jaccard}
    return MinHashDedup(columns=tuple(columns), keep="first" if keep == "first" else keep, **extra)


def _print_same_prompt(stats: dict) -> None:
    same = stats.get("same_prompt_different_output")
    if same:
        console.print(f"same instruction+input, different output: {same:,} rows kept "
                      "(--rule instruction removes them, keeping the longest output)")


def _print_dedup_summary(result) -> None:
    """The rule and resolved parameters of each dedup step, and the rows kept on purpose."""
    table = Table(title="dedup rule", title_justify="left", show_header=False)
    for record in result.records:
        stats = record.stats or {}
        if record.name == "exact-dedup":
            table.add_row("exact-dedup: key", f"{stats.get('key', '')} (rule {stats.get('rule', '')})")
            if stats.get("same_prompt_different_output") is not None:
                table.add_row("same prompt, different output", f"{stats['same_prompt_different_output']:,} kept")
        if record.name == "semantic-dedup" and "rule" in stats:
            table.add_row("semantic-dedup: rule", f"{stats['rule']} (threshold {stats.get('threshold')}: {stats.get('threshold_from', '')})")
            second = stats.get("second_stage")
            if second:
                table.add_row("second stage", f"jamo {second['ngram']}-grams: prompt >= {second['prompt_overlap']}, "
                                              f"output containment >= {second['output_overlap']} and Jaccard >= {second['output_jaccard']}, "
                                              f"input >= {second['input_overlap']}; numbers and named things must match")
                table.add_row("pairs", f"{stats.get('candidate_pairs', 0):,} candidates, {stats.get('checked_pairs', 0):,} checked, "
                                       f"{stats.get('passing_pairs', 0):,} the same example")
    if table.row_count:
        console.print(table)


def _print_analysis(report, threshold) -> None:
    head = Table(title=f"near-duplicate analysis ({report.rows:,} rows after exact dedup; nothing written)", title_justify="left",
                 show_header=False)
    head.add_row("rule", report.rule)
    head.add_row("embedder", report.embedder)
    head.add_row("search", report.search)
    head.add_row("default --threshold", f"{report.default_threshold} ({report.threshold_from})")
    head.add_row("exact duplicates", f"{report.exact_duplicates:,}")
    if report.same_prompt_different_output:
        head.add_row("same prompt, different output", f"{report.same_prompt_different_output:,} kept")
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
    title = ("rows the greedy pass would remove (row rule: --threshold is the candidate cosine)" if report.rule == "row"
             else "rows the greedy pass would remove")
    would = Table(title=title, title_justify="left")
    would.add_column("--threshold", justify="right")
    would.add_column("removed", justify="right")
    would.add_column("share", justify="right")
    chosen = threshold if threshold is not None else report.default_threshold
    for t, n in report.would_remove.items():
        mark = " <- " + ("chosen" if threshold is not None else "default") if abs(t - chosen) < 1e-9 else ""
        would.add_row(f"{t:.2f}{mark}", f"{n:,}", f"{n / max(report.rows, 1):.1%}")
    console.print(would)
    console.print("then: [bold]kocurate dedup IN -o OUT --threshold T[/] (the embeddings are cached: no re-embedding)")


@click.command("explain")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--limit", default=20, show_default=True, type=int, help="How many removed rows to show (0: only the counts).")
@click.option("--step", "step_name", default=None, metavar="NAME",
              help="Only rows removed by this step (exact-dedup, semantic-dedup, minhash-dedup, decontaminate, ...).")
@click.option("--order", type=click.Choice(["lowest", "highest", "input"]), default="lowest", show_default=True,
              help="lowest: the least similar removals first (where a threshold errs); highest; or input order.")
@click.option("--width", default=None, type=int, hidden=True)
def explain_cmd(folder, limit, step_name, order, width):
    """Show removed rows of a dataset FOLDER beside what they duplicated: both whole rows
    (instruction, input, output) and every signal of the decision.

    \b
    Examples:
      kocurate explain out/dedup
      kocurate explain out/dedup --step semantic-dedup --order lowest --limit 50
      kocurate explain out/clean --step decontaminate
    """
    from ..curate.explain import explain_folder

    if width is not None:
        console.print("note: --width is gone: explain now shows whole rows (instruction, input and output)")
    report = explain_folder(folder, limit=limit, step=step_name, order=order)
    if not report.total:
        console.print(f"{folder}: removed/ is empty: no row was removed")
        return
    summary = Table(title=f"{folder}: removed rows", title_justify="left")
    for name in ("step", "reason", "rows"):
        summary.add_column(name, justify="right" if name == "rows" else "left")
    for step, reason, n in report.counts:
        summary.add_row(step, reason, f"{n:,}")
    console.print(summary)
    if not report.removals:
        return
    console.print(f"[bold]{report.title}[/]")
    for item in report.removals:
        table = Table(show_lines=True, title_justify="left", expand=True,
                      title=f"{item.id} ({item.step}: {item.reason})  score {_score(item.score)}")
        table.add_column("", no_wrap=True)
        table.add_column(f"removed: {item.id}", ratio=1, overflow="fold")
        twin_title = f"kept: {item.dup_of}" if item.twin is not None else f"duplicate of: {item.dup_of or '-'}"
        table.add_column(twin_title, ratio=1, overflow="fold")
        for key in ("instruction", "input", "output"):
            right = item.twin[key] if item.twin is not None else ""
            table.add_row(key, escape(item.row[key]), escape(right))
        console.print(table)
        if item.rule:
            console.print(f"  rule: {item.rule}" + (f" ({item.signals['why']})" if item.signals and item.rule == "row" else ""))
        if item.signals:
            from ..curate.dedup import describe_signals

            console.print(f"  signals: {escape(describe_signals(item.signals))}")
        if item.detail:
            console.print(f"  recorded: {escape(item.detail)}")


def _score(value) -> str:
    return "-" if value is None else f"{value:.3f}"


COMMANDS = [dedup_cmd, explain_cmd]
