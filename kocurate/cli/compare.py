"""`kocurate compare`: results files side by side in the seeds' tables (kocurate's or lm-eval's)."""

from __future__ import annotations

import click


@click.command("compare")
@click.argument("results", nargs=-1, required=True, metavar="RESULTS...")
def compare_cmd(results):
    """Print the tables of two or more results files side by side (a Δ row when there are two).

    Each RESULTS is a results.json written by `kocurate evaluate` (or its folder), or a results
    file written by lm-evaluation-harness (`lm_eval --output_path`).

    \b
    Example:
      kocurate compare out/eval/results.json out/eval-lora/results.json
    """
    from ..evaluate.report import compare

    click.echo(compare(list(results)))


COMMANDS = [compare_cmd]
