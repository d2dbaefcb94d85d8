"""`kocurate train-eval`: what did the curation do to the model?

The options are generated from ExperimentConfig, TrainConfig and EvalConfig (one field, one flag);
this module parses, calls `kocurate.experiment` and renders.
"""

from __future__ import annotations

import click
from rich.table import Table

from ..evaluate import EvalConfig
from ..experiment.config import ExperimentConfig, option_layout
from ..train import TrainConfig
from .options import config_file_option, config_options
from .render import console

_TRAIN_EXCLUDE, _EVAL_EXCLUDE, _EVAL_RENAME = option_layout()

EPILOG = """\b
Example (KoQuality's claim, with the control its paper lacked):
  kocurate train-eval --model EleutherAI/polyglot-ko-1.3b \\
    --arm full=out/clean --arm kq-1pct=out/koquality-1pct \\
    --arm random=random:kq-1pct:full --seeds 1,2,3 --shots 0,5 -o out/report

\b
--config experiment.yaml holds the same settings; flags given on the command line win:
  model: EleutherAI/polyglot-ko-1.3b
  arms: [full=out/clean, kq-1pct=out/koquality-1pct, random=random:kq-1pct:full]
  seeds: [1, 2, 3]
  output: out/report
  train:      {method: lora, lora_r: 16, grad_accum: 4, template: koalpaca}   # any `kocurate train` setting
  evaluate:   {tasks: kobest, shots: [0, 5], batch_size: 32}                  # any `kocurate evaluate` setting

\b
Writes to OUT: report.md, report.html (self-contained) and report.json. The verdict comes first,
one sentence per claim: each curated arm against the full set and against its random controls,
and every data arm against the base model, per shot count for the KoBEST average, with a paired
bootstrap 95% interval (test examples and seeds resampled), Holm's correction over the claims, and
the smallest difference the experiment could detect (80% power). Then score tables, per-task
differences, cost (rows, tokens, seconds, curation cost) and how each arm's data was made.
Library warnings go to OUT/train-eval.log. Rerunning into OUT reuses finished adapters and scores.
"""


@click.command("train-eval", epilog=EPILOG)
@click.option("--arm", "arms", multiple=True, metavar="NAME=DATA",
              help="A data arm: NAME=FOLDER|FILE|HUB_ID, or a random control NAME=random:SIZE_ARM[:POOL_ARM] (a fresh "
                   "draw of SIZE_ARM's row count from POOL_ARM, default the largest arm, per training seed). Repeat. "
                   "The base model without an adapter is always an arm.")
@config_file_option
@config_options(ExperimentConfig, exclude=("arms", "train", "evaluate"))
@config_options(TrainConfig, exclude=_TRAIN_EXCLUDE, prefix="train_")
@config_options(EvalConfig, exclude=_EVAL_EXCLUDE, rename=_EVAL_RENAME, prefix="eval_")
def train_eval_cmd(arms, config_file, **flags):
    """Train an adapter per data arm and seed, score every arm on KoBEST, and state the verdict."""
    from ..experiment import run_experiment, write_report
    from ..experiment.config import build_config
    from ..experiment.report import arm_score
    from ..experiment.runner import LOG_FILE
    from ..experiment.verdict import AVERAGE, average_name

    config = build_config(config_file, arms, flags)
    try:
        result = run_experiment(config, log=_log, progress=_Progress())
    finally:
        _Progress.stop()
    out = config.output
    data = write_report(result, out)

    console.print("\n[bold]Verdict[/]")
    for sentence in data["headline"]:
        console.print(f"  • {sentence}", soft_wrap=False)
    scope = AVERAGE if len(config.tasks) > 1 else config.tasks[0]
    table = Table(title=f"{average_name(config.tasks) if scope == AVERAGE else scope} {config.metric} (mean over seeds)",
                  title_justify="left")
    table.add_column("arm")
    for shots in config.shots:
        table.add_column(f"{shots}-shot", justify="right")
    for arm in result.arms:
        table.add_row(arm.name, *(f"{arm_score(result, arm.name, scope, k, config.metric)[0]:.4f}" for k in config.shots))
    console.print(table)
    console.print(f"report: {out / 'report.md'} (and report.html); library messages: {out / LOG_FILE}")


# ---------------------------------------------------------------------------------------------
# progress: one bar over every unit of work on a terminal, one line per unit elsewhere


class _Progress:
    bar = None

    def __call__(self, tick) -> None:
        eta = "" if tick.eta_seconds is None else f", about {_duration(tick.eta_seconds)} left"
        reused = f", {tick.reused} reused" if tick.reused else ""
        if not console.is_terminal:
            console.print(f"[{tick.done}/{tick.total}] {tick.label}{reused}{eta}", soft_wrap=True, highlight=False)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if _Progress.bar is None:
            _Progress.bar = Progress(TextColumn("train-eval"), BarColumn(), MofNCompleteColumn(), TextColumn("units"),
                                     TimeElapsedColumn(), TextColumn("{task.fields[note]}"), console=console, transient=False)
            _Progress.bar.start()
            _Progress.task = _Progress.bar.add_task("units", total=tick.total, note="")
        _Progress.bar.update(_Progress.task, completed=tick.done, note=f"{tick.label}{reused}{eta}")

    @staticmethod
    def stop() -> None:
        if _Progress.bar is not None:
            _Progress.bar.stop()
            _Progress.bar = None


def _log(line: str) -> None:
    target = _Progress.bar.console if _Progress.bar is not None else console
    target.print(f"[dim]{line}[/]", soft_wrap=True, highlight=False)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


COMMANDS = [train_eval_cmd]
