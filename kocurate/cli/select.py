"""`kocurate select`: KoQuality-style selection of a small share."""

from __future__ import annotations

import click
from rich.table import Table

from ..curate.select import METHODS, Select
from .options import apply, cache_options, engine_options, input_options, output_options, run_context, run_steps
from .render import console, print_written


@click.command("select")
@click.argument("inputs", nargs=-1, required=True)
@apply(input_options)
@apply(output_options)
@click.option("--ratio", type=float, default=None, help="Fraction to keep, in (0, 1): 0.01 is KoQuality's 1%.")
@click.option("--size", type=int, default=None, help="Rows to keep instead of a ratio (every method then returns exactly this many).")
@click.option("--method", type=click.Choice(METHODS), default="ppl", show_default=True,
              help="Per-cluster choice: ppl (KoQuality: every int(1/ratio)-th row by ascending ppl), ppl-h, random, "
                   "centroid (nearest the centre), hard (farthest), diverse (DEITA: by score, max cosine <= --tau).")
@click.option("--length-groups", default=5, show_default=True, help="L: groups cut at quantiles of instruction length.")
@click.option("--clusters", default=100, show_default=True, help="K: k-means clusters inside each length group.")
@click.option("--embedder", default="default", show_default=True,
              help="default (offline USE-multilingual), lexical (fast), or st:<Hub id or path> e.g. st:BM-K/KoSimCSE-roberta-multitask.")
@click.option("--embeddings", default=None, metavar="FILE.npy|COLUMN",
              help="Precomputed embeddings instead of --embedder: an .npy with one row per input row, or a column.")
@click.option("--score-column", default=None,
              help="Scores used by ppl, ppl-h and diverse (default: ifd with --scorer ifd:MODEL, else ppl).")
@click.option("--scorer", default=None, metavar="MODEL|ifd:MODEL|charlm",
              help="Score rows that have no score on the fly (else those methods ask for `kocurate score` first).")
@click.option("--tau", default=0.9, show_default=True, help="diverse: max cosine to already chosen rows.")
@click.option("--niter", default=20, show_default=True, help="Most Lloyd iterations per k-means stage (stops earlier once the inertia settles).")
@click.option("--n-init", default=1, show_default=True,
              help="k-means restarts, the lowest inertia wins (KoQuality's sklearn run used 10; see benchmarks/results/select.md).")
@click.option("--kmeans", "kmeans_backend", type=click.Choice(["faiss", "sklearn"]), default="faiss", show_default=True,
              help="k-means engine; sklearn --n-init 10 --seed 42 is KoQuality's own (about 100x slower).")
@click.option("--init", "kmeans_init", type=click.Choice(["k-means++", "random"]), default="k-means++", show_default=True,
              help="k-means++: over-seeded on a sample, merged by Ward's criterion, refined on all rows; "
                   "random: FAISS's own k-means (faster, much worse on skewed cluster sizes).")
@apply(cache_options)
@apply(engine_options)
def select_cmd(inputs, preset, mapping, split, output, overwrite, seed, ratio, size, method, length_groups, clusters,
               embedder, embeddings, score_column, scorer, tau, niter, n_init, kmeans_backend, kmeans_init, cache_dir,
               no_cache, engine, ray_address):
    """Pick a small, diverse, high-quality subset the way KoQuality did (and alternatives).

    \b
    1. len = characters of the instruction (+ " " + input); len_group = L quantile groups
    2. k-means (FAISS, seeded) with K clusters inside each length group on the embeddings
    3. per cluster, --method picks the rows; len, len_group, cluster (and the score) are kept

    \b
    With --ratio, ppl keeps ceil(n / int(1/ratio)) rows of a cluster of n, so small clusters
    keep one row each: KoQuality kept 4,006 of 384,067 (1.04%), not 1%. centroid, hard and
    diverse split round(ratio * N) over the clusters by size; --size S gives exactly S rows.

    \b
    Examples:
      kocurate select out/scored -o out/koquality-1pct --ratio 0.01                 # needs a ppl column
      kocurate select data.jsonl -o out/sel --ratio 0.01 --scorer EleutherAI/polyglot-ko-1.3b
      kocurate select data.jsonl -o out/sel --ratio 0.01 --scorer charlm --clusters 10   # offline
      kocurate select data.jsonl -o out/sel --size 1000 --method centroid --embedder lexical
    """
    step = Select(ratio=ratio, size=size, method=method, length_groups=length_groups, clusters=clusters,
                  embedder=embedder, embeddings=embeddings, score_column=score_column, scorer=scorer, tau=tau, niter=niter,
                  n_init=n_init, kmeans=kmeans_backend, init=kmeans_init)
    result = run_steps(inputs, [step], output, ctx=run_context(seed, cache_dir, no_cache), overwrite=overwrite,
                       engine=engine, ray_address=ray_address, preset=preset, mapping=mapping, split=split)
    stats = result.records[-1].stats
    table = Table(title=f"selection by length group (method {method}, {stats.get('budget')})", title_justify="left")
    for name in ("len_group", "length (chars)", "rows", "clusters", "selected", "share"):
        table.add_column(name, justify="right")
    for g in stats.get("per_group", []):
        lo, hi = g.get("len_from"), g.get("len_to")
        span = f"{lo:,.0f}-{hi:,.0f}" if lo is not None and hi is not None else "-"
        share = g["selected"] / g["rows"] if g["rows"] else 0
        table.add_row(str(g["len_group"]), span, f"{g['rows']:,}", f"{g['clusters']:,}", f"{g['selected']:,}", f"{share:.2%}")
    table.add_section()
    total = result.records[-1].rows_in
    table.add_row("all", "", f"{total:,}", f"{stats.get('clusters_total', 0):,}", f"{stats.get('selected', 0):,}",
                  f"{stats.get('selected_share', 0):.2%}")
    console.print(table)
    if stats.get("groups_with_fewer_rows_than_clusters"):
        console.print(f"[yellow]note:[/] length groups {stats['groups_with_fewer_rows_than_clusters']} had fewer rows than "
                      f"--clusters {clusters}: one cluster per row there")
    if stats.get("diverse_shortfall"):
        console.print(f"[yellow]note:[/] diverse fell {stats['diverse_shortfall']:,} rows short of the budget at --tau {tau}; "
                      f"raise --tau to fill it")
    if stats.get("note"):
        console.print(f"[yellow]note:[/] {stats['note']}")
    print_written(result)


COMMANDS = [select_cmd]
