"""`kocurate cap`: at most N rows per task (the CoT-Collection recipe)."""

from __future__ import annotations

import click
from rich.table import Table

from ..curate.cap import Cap
from .options import apply, engine_options, input_options, output_options, run_context, run_steps
from .render import console, print_written


@click.command("cap")
@click.argument("inputs", nargs=-1, required=True)
@apply(input_options)
@apply(output_options)
@click.option("--per-task", default=100, show_default=True, help="Keep at most this many rows of each task.")
@click.option("--task-column", default="task", show_default=True, help="Column naming each row's task.")
@click.option("--show", default=30, show_default=True, help="How many tasks to list (largest first).")
@apply(engine_options)
def cap_cmd(inputs, preset, mapping, split, output, overwrite, seed, per_task, task_column, show, engine, ray_address):
    """Cap every task at --per-task rows: the CoT-Collection recipe (100 per task).

    A task with at most N rows stays whole; a larger one keeps a seeded random sample of N
    (the sample of a task depends only on --seed and that task's rows). Dropped rows go to
    removed/ with reason `over-cap`.

    \b
    Example:
      kocurate cap kaist-ai/CoT-Collection -o out/cot-capped --per-task 100
      kocurate cap samples/ko_cot.jsonl --preset cot-collection -o out/cot-capped
    """
    result = run_steps(inputs, [Cap(per_task=per_task, task_column=task_column)], output,
                       ctx=run_context(seed, None, no_cache=True), overwrite=overwrite, engine=engine,
                       ray_address=ray_address, preset=preset, mapping=mapping, split=split)
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


COMMANDS = [cap_cmd]
