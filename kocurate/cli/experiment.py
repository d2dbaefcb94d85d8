"""`kocurate train-eval`: what did the curation do to the model?"""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from .render import console


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a comma-separated list of integers") from None


@click.command("train-eval")
@click.option("--base", required=True, help="Base model: Hub id or local folder (e.g. EleutherAI/polyglot-ko-1.3b).")
@click.option("--arm", "arms", multiple=True, required=True, metavar="NAME=DATA",
              help="A data arm: NAME=FOLDER|FILE|HUB_ID, or a random control NAME=random:SIZE_ARM[:POOL_ARM]. Repeat. "
                   "The base model without an adapter is always an arm.")
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(path_type=Path),
              help="Report folder; rerunning with the same folder reuses finished adapters and scores.")
@click.option("--method", type=click.Choice(["lora", "ia3"]), default="lora", show_default=True)
@click.option("--tasks", default="kobest_boolq,kobest_copa,kobest_hellaswag,kobest_sentineg,kobest_wic", show_default=True)
@click.option("--shots", default="0,5", show_default=True, help="Few-shot counts, comma-separated.")
@click.option("--seeds", default="1", show_default=True, help="Training seeds, comma-separated; intervals then cover seed variance too.")
@click.option("--protocol", type=click.Choice(["harness", "polyglot"]), default="harness", show_default=True)
@click.option("--data-dir", default=None, help="KoBEST data in the Hub's layout ({config}/{split}.jsonl); default: skt/kobest_v1.")
@click.option("--limit", type=int, default=None, help="Score only the first N test examples per task (quick looks).")
@click.option("--template", default="koalpaca", show_default=True, help="Prompt template for training.")
@click.option("--max-steps", type=int, default=None, help="Stop training each adapter after N optimizer steps.")
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--learning-rate", type=float, default=None, help="Default: the trainer's per method (LoRA 3e-4, IA3 3e-3).")
@click.option("--max-length", type=int, default=512, show_default=True)
@click.option("--eval-batch-size", default="auto", show_default=True)
@click.option("--metric", type=click.Choice(["f1", "acc"]), default="f1", show_default=True, help="Macro F1 is what the seeds' tables report.")
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Paired bootstrap resamples for the confidence intervals.")
def train_eval_cmd(**options):
    """Train an adapter per data arm, score every arm on KoBEST, and compare them fairly.

    \b
    Example (KoQuality's claim, with the control its paper lacked):
      kocurate train-eval --base EleutherAI/polyglot-ko-1.3b \\
        --arm full=out/clean --arm koquality=out/koquality-1pct \\
        --arm random=random:koquality:full --seeds 1,2,3 -o out/report

    Writes report.md, report.html (with plots) and report.json: each arm's score per task and
    shot count, its difference to the base model and to its random control with a paired
    bootstrap 95% interval, training cost, and how each arm's data was made.
    """
    from transformers.utils import logging as hf_logging

    from ..experiment import TrainEvalConfig, run_experiment, write_report
    from ..experiment.report import arm_score

    # One line per unit of work is enough; the per-load bars and deprecation notes drown it.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    config = TrainEvalConfig(
        base=options["base"], arms=list(options["arms"]), output_dir=options["output_dir"], method=options["method"],
        tasks=[t.strip() for t in options["tasks"].split(",") if t.strip()], shots=_ints(options["shots"]),
        seeds=_ints(options["seeds"]), protocol=options["protocol"], data_dir=options["data_dir"], limit=options["limit"],
        template=options["template"], max_steps=options["max_steps"], epochs=options["epochs"],
        batch_size=options["batch_size"], learning_rate=options["learning_rate"], max_length=options["max_length"],
        eval_batch_size=options["eval_batch_size"], metric=options["metric"], bootstrap=options["bootstrap"],
    )
    result = run_experiment(config, log=lambda line: console.print(f"[dim]{line}[/]", soft_wrap=True))
    data = write_report(result, Path(config.output_dir))

    table = Table(title=f"{config.metric} by arm (mean over seeds)", title_justify="left")
    table.add_column("arm")
    for task in config.tasks:
        for shots in config.shots:
            table.add_column(f"{task.removeprefix('kobest_')} {shots}", justify="right")
    for arm in result.arms:
        table.add_row(arm.name, *(f"{arm_score(result, arm.name, t, s, config.metric)[0]:.4f}" for t in config.tasks for s in config.shots))
    console.print(table)
    better = [c for c in data["comparisons"] if c["low"] > 0]
    worse = [c for c in data["comparisons"] if c["high"] < 0]
    console.print(f"{len(better)} comparison(s) significantly better, {len(worse)} significantly worse "
                  f"(of {len(data['comparisons'])}); report: {Path(config.output_dir) / 'report.md'}")


COMMANDS = [train_eval_cmd]
