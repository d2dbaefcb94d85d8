"""`kocurate score`, `select`, `cap` and `build`: KoQuality selection, CoT capping, recipes."""

from __future__ import annotations

import click
from rich.table import Table

from ..curate import run_pipeline
from ..curate.cap import Cap
from ..curate.score import IFD_TEMPLATE, METRICS, STRIDE, TRUNCATION, Score
from ..curate.select import METHODS, Select
from .options import apply, cache_options, input_options, load_inputs, output_options, run_context
from .render import console, print_written

# --------------------------------------------------------------------------------------------


@click.command("score")
@click.argument("inputs", nargs=-1, required=True)
@apply(input_options)
@apply(output_options)
@click.option("--model", "-m", required=True, metavar="ID|PATH|charlm",
              help="Causal LM: a Hub id (KoQuality used EleutherAI/polyglot-ko-1.3b), a local folder saved with "
                   "save_pretrained, or `charlm` (character bigrams fitted on the input: offline, no download).")
@click.option("--metric", type=click.Choice(METRICS), default="ppl", show_default=True,
              help="ppl: perplexity of instruction(+input); ifd: loss(output | prompt) / loss(output).")
@click.option("--column", default=None, help="Name of the score column (default: the metric's name).")
@click.option("--batch-size", default=8, show_default=True, help="Sequences per forward pass.")
@click.option("--max-length", default=TRUNCATION, show_default=True, help="Truncate texts to this many tokens (KoQuality: 1024).")
@click.option("--stride", default=STRIDE, show_default=True, help="Sliding-window stride for texts longer than the model's window.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA + bf16 when present), cpu, cuda, cuda:1 ...")
@click.option("--template", default=IFD_TEMPLATE, show_default=True, help="IFD prompt; {prompt} is instruction(+input).")
@apply(cache_options)
def score_cmd(inputs, preset, mapping, split, output, overwrite, seed, model, metric, column, batch_size, max_length,
              stride, device, template, cache_dir, no_cache):
    """Add a perplexity (`ppl`) or IFD column to every row, computed with a causal LM.

    \b
    ppl is KoQuality's exactly: the instruction (with " " + input when there is one) is
    tokenized, truncated to 1024 tokens and scored with a sliding window (stride 256);
    ppl = exp(mean NLL of the predicted tokens). Lower = more fluent to the model.
    ifd = mean NLL(output | prompt) / mean NLL(output)  (Superfiltering). Higher = harder.

    \b
    Scores are cached by model, settings and text hash: an interrupted run resumes where it
    stopped, and a rerun scores nothing. Uses CUDA and bf16 when a GPU is present.

    \b
    Examples:
      kocurate score data.jsonl -o out/scored --model EleutherAI/polyglot-ko-1.3b
      kocurate score data.jsonl -o out/scored --model charlm          # offline
      kocurate score out/scored -o out/ifd --model ./my-lm --metric ifd
    """
    step = Score(model=model, metric=metric, column=column, batch_size=batch_size, max_length=max_length,
                 stride=stride, device=device, template=template)
    sources = load_inputs(inputs, preset, mapping, split)
    result = run_pipeline(sources, [step], output, ctx=run_context(seed, cache_dir, no_cache), overwrite=overwrite)
    stats = result.records[-1].stats
    table = Table(title=f"{metric} scores", title_justify="left", show_header=False)
    for label, key in (("column", "column"), ("rows scored now", "scored"), ("rows from cache", "cached"),
                       ("undefined (null)", "undefined"), ("mean", "mean"), ("median", "median"), ("device", "device")):
        if key in stats:
            value = stats[key]
            table.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
    print_written(result)


# --------------------------------------------------------------------------------------------


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
@click.option("--niter", default=20, show_default=True, help="k-means iterations.")
@click.option("--n-init", default=1, show_default=True,
              help="k-means restarts, the lowest inertia wins (KoQuality's sklearn run used 10; see benchmarks/results/select.md).")
@click.option("--kmeans", "kmeans_backend", type=click.Choice(["faiss", "sklearn"]), default="faiss", show_default=True,
              help="k-means engine; sklearn --n-init 10 --seed 42 is KoQuality's own (about 100x slower).")
@click.option("--init", "kmeans_init", type=click.Choice(["k-means++", "random"]), default="k-means++", show_default=True,
              help="FAISS seeding; random is FAISS's own (faster, much worse on skewed cluster sizes).")
@apply(cache_options)
def select_cmd(inputs, preset, mapping, split, output, overwrite, seed, ratio, size, method, length_groups, clusters,
               embedder, embeddings, score_column, scorer, tau, niter, n_init, kmeans_backend, kmeans_init, cache_dir,
               no_cache):
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
    sources = load_inputs(inputs, preset, mapping, split)
    result = run_pipeline(sources, [step], output, ctx=run_context(seed, cache_dir, no_cache), overwrite=overwrite)
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
    print_written(result)


# --------------------------------------------------------------------------------------------


@click.command("cap")
@click.argument("inputs", nargs=-1, required=True)
@apply(input_options)
@apply(output_options)
@click.option("--per-task", default=100, show_default=True, help="Keep at most this many rows of each task.")
@click.option("--task-column", default="task", show_default=True, help="Column naming each row's task.")
@click.option("--show", default=30, show_default=True, help="How many tasks to list (largest first).")
def cap_cmd(inputs, preset, mapping, split, output, overwrite, seed, per_task, task_column, show):
    """Cap every task at --per-task rows: the CoT-Collection recipe (100 per task).

    A task with at most N rows stays whole; a larger one keeps a seeded random sample of N
    (the sample of a task depends only on --seed and that task's rows). Dropped rows go to
    removed/ with reason `over-cap`.

    \b
    Example:
      kocurate cap kaist-ai/CoT-Collection -o out/cot-capped --per-task 100
      kocurate cap samples/ko_cot.jsonl --preset cot-collection -o out/cot-capped
    """
    sources = load_inputs(inputs, preset, mapping, split)
    result = run_pipeline(sources, [Cap(per_task=per_task, task_column=task_column)], output,
                          ctx=run_context(seed, None, no_cache=True), overwrite=overwrite)
    stats = result.records[-1].stats
    per = sorted(stats.get("per_task", {}).items(), key=lambda kv: (-kv[1][0], kv[0]))
    table = Table(title=f"tasks: {stats.get('tasks', 0):,} ({stats.get('tasks_capped', 0):,} capped at {per_task})",
                  title_justify="left")
    table.add_column("task")
    table.add_column("rows before", justify="right")
    table.add_column("rows after", justify="right")
    for task, (before, after) in per[:show]:
        table.add_row(task, f"{before:,}", f"{after:,}" if after == before else f"[bold]{after:,}[/]")
    if len(per) > show:
        rest = per[show:]
        table.add_row(f"... {len(rest):,} more tasks", f"{sum(b for _, (b, _) in rest):,}", f"{sum(a for _, (_, a) in rest):,}")
    table.add_section()
    table.add_row("all", f"{stats.get('rows_before', 0):,}", f"{stats.get('rows_after', 0):,}")
    console.print(table)
    print_written(result)


# --------------------------------------------------------------------------------------------


@click.command("build")
@click.argument("recipe")
@click.option("--source", "sources", multiple=True, metavar="[NAME=]PATH",
              help="Replace the recipe's input NAME by PATH (keeping its preset), or, without NAME=, replace all inputs.")
@click.option("--model", default=None, help="Use this model in every step with a model (score; select's --scorer).")
@click.option("--embedder", default=None, help="Use this embedder in every step that embeds.")
@click.option("--set", "sets", multiple=True, metavar="STEP.PARAM=VALUE", help="Override one parameter, e.g. --set select.clusters=10.")
@click.option("-o", "--output", default=None, type=click.Path(), help="Output folder (default: the recipe's `output`).")
@click.option("--seed", default=None, type=int, help="Override the recipe's seed.")
@click.option("--force", is_flag=True, help="Rerun every step even when its folder is up to date.")
@apply(cache_options)
def build_cmd(recipe, sources, model, embedder, sets, output, seed, force, cache_dir, no_cache):
    """Run a YAML recipe: inputs, then steps in order, each writing a dataset folder.

    RECIPE is a file or a bundled recipe name: kopen-platypus, koquality, cot-capped.
    Step i writes OUTPUT/NN-<step>/; the last folder is the result. A step whose input and
    parameters are unchanged since the last run is reused, so a crashed or edited build
    resumes where it changed.

    \b
    Examples:
      kocurate build koquality --source samples/ko_instructions.jsonl --model charlm --set select.clusters=10 -o out/kq
      kocurate build cot-capped --source cot=samples/ko_cot.jsonl -o out/cot
      kocurate build my-recipe.yaml --force
    """
    from ..curate.recipe import apply_overrides, build, load_recipe

    spec = load_recipe(recipe)
    spec = apply_overrides(spec, sources=sources, model=model, embedder=embedder, sets=sets, output=output, seed=seed)
    console.print(f"recipe [bold]{spec.name}[/] ({spec.path}): {len(spec.steps)} steps, seed {spec.seed}, "
                  f"inputs {', '.join(i.source for i in spec.inputs)}")

    def announce(outcome):
        verb = "reused" if outcome.reused else "ran"
        console.print(f"  {outcome.index:02d} {outcome.name}: {verb} -> {outcome.folder}")

    result = build(spec, ctx=run_context(spec.seed, cache_dir, no_cache), force=force, on_step=announce)
    table = Table(title=f"build {spec.name}", title_justify="left")
    for name in ("step", "status", "rows in", "rows out", "removed (reason: rows)", "seconds", "folder"):
        table.add_column(name, justify="right" if name in ("rows in", "rows out", "seconds") else "left")
    for o in result.steps:
        removed = ", ".join(f"{r}: {n:,}" for r, n in o.removed.items()) or "-"
        table.add_row(f"{o.index:02d} {o.name}", "reused" if o.reused else "ran", f"{o.rows_in:,}", f"{o.rows_out:,}",
                      removed, f"{o.seconds:.2f}", str(o.folder))
    console.print(table)
    console.print(f"result: [bold]{result.final}[/] ({result.steps[-1].rows_out:,} rows)")


COMMANDS = [score_cmd, select_cmd, cap_cmd, build_cmd]
