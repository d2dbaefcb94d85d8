"""`kocurate evaluate`: KoBEST scores of a model (and adapter), identical to lm-evaluation-harness.

torch, transformers and peft load inside the command, never at import.
"""

from __future__ import annotations

import click

from ..errors import InputError

_TASK_LIST = "kobest_boolq, kobest_copa, kobest_hellaswag, kobest_sentineg, kobest_wic"


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        raise InputError(f"--batch-size {value}: use a positive number or 'auto'") from None
    if size < 1:
        raise InputError(f"--batch-size {value}: use a positive number or 'auto'")
    return size


@click.command("evaluate")
@click.argument("model", required=False)
@click.option("--adapter", metavar="DIR", help="A PEFT adapter folder (LoRA, IA3) to apply on top of MODEL.")
@click.option("--tasks", default="all", show_default=True, metavar="LIST",
              help=f"Comma-separated KoBEST tasks ({_TASK_LIST}; the kobest_ prefix is optional) or 'all'.")
@click.option("--shots", default="0,5,10,50", show_default=True, metavar="LIST",
              help="Comma-separated few-shot counts; shots come from the train split.")
@click.option("--protocol", type=click.Choice(["harness", "polyglot"]), default="harness", show_default=True,
              help="harness = lm-evaluation-harness v0.4.x; polyglot = the legacy branch behind the seeds' tables.")
@click.option("--data-dir", metavar="DIR", help="KoBEST in the Hub's layout ({config}/{split}.jsonl) instead of skt/kobest_v1.")
@click.option("--limit", type=int, metavar="N", help="Score only the first N test rows of each task (polyglot: of its shuffled order).")
@click.option("--batch-size", default="auto", show_default=True, metavar="N|auto",
              help="Docs per forward pass; auto = largest that fits on the GPU, 16 on a CPU.")
@click.option("--seed", type=int, help="Few-shot RNG seed  [default: the protocol's: harness 1234, polyglot 42]")
@click.option("--device", default="auto", show_default=True, help="auto (a GPU when present), cpu, cuda, cuda:1, ...")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True,
              help="auto = bfloat16 on a GPU that supports it, float32 on a CPU.")
@click.option("--no-share-context", is_flag=True,
              help="Run every (context, choice) pair on its own like the harness (slower; same numbers).")
@click.option("-o", "--output", "output", metavar="RESULTS_DIR", help="Folder for results.json and results.md.")
@click.option("--compare", nargs=2, metavar="A.json B.json", help="Print two results files' tables side by side, then exit.")
def evaluate_cmd(model, adapter, tasks, shots, protocol, data_dir, limit, batch_size, seed, device, dtype,
                 no_share_context, output, compare):
    """Score MODEL (a Hub id or a local folder) on KoBEST by log-likelihood multiple choice.

    Each task's test split is scored at each shot count; the metrics are accuracy, macro F1
    (sklearn, as the seeds' tables report) and, for hellaswag, length-normalized accuracy.
    Prompts, few-shot draws and tokenization follow the chosen protocol byte for byte, so the
    numbers equal those of lm-evaluation-harness on the same model and data.

    \b
    Examples:
      kocurate evaluate EleutherAI/polyglot-ko-1.3b --tasks copa,hellaswag --shots 0,5 -o out/eval
      kocurate evaluate beomi/llama-2-ko-7b --adapter out/lora --protocol polyglot -o out/eval-lora
      kocurate evaluate ./my-model --data-dir samples/kobest --limit 20 --shots 0 -o out/smoke
      kocurate evaluate --compare out/eval/results.json out/eval-lora/results.json

    \b
    Writes RESULTS_DIR/results.json (every metric, protocol, model, adapter, data source and
    fingerprint, seed, per-example predictions with per-choice log-likelihoods) and
    RESULTS_DIR/results.md (one table per task: | Model | 0-shot | 5-shot | ... |).
    """
    from rich.console import Console

    console = Console()
    if compare:
        from ..evaluate.report import compare as compare_runs

        if model:
            raise InputError("--compare takes two results files and no MODEL; run them separately")
        click.echo(compare_runs(list(compare)))
        return
    if not model:
        raise InputError("missing MODEL: pass a Hub id or a local model folder (or --compare A.json B.json)")
    if not output:
        raise InputError("missing -o RESULTS_DIR: the folder for results.json and results.md")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..evaluate import EvalConfig, evaluate
    from ..evaluate.report import markdown

    config = EvalConfig(model=model, adapter=adapter, tasks=tasks.split(","), shots=shots.split(","),
                        protocol=protocol, data_dir=data_dir, limit=limit, batch_size=_batch_size(batch_size),
                        seed=seed, output_dir=output, device=device, dtype=dtype,
                        share_context=not no_share_context)
    bars: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as bar:
        def progress(label, done, total):
            if label not in bars:
                bars[label] = bar.add_task(label, total=total)
            bar.update(bars[label], completed=done)

        result = evaluate(config, progress=progress)
    console.print(markdown([result.results]), markup=False, highlight=False)
    seconds = result.results["seconds"]["total"]
    scored = sum(v["n"] for t in result.results["results"].values() for v in t.values())
    console.print(f"scored {scored:,} examples in {seconds:.1f} s on {result.results['device']} "
                  f"({result.results['dtype']}); wrote {result.files['results.json']} and {result.files['results.md']}",
                  markup=False, highlight=False)


COMMANDS = [evaluate_cmd]
