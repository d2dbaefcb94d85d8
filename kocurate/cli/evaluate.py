"""`kocurate evaluate`: lm-evaluation-harness tasks scored with kocurate's faster model backend.

torch, transformers, peft and lm_eval load inside the command, never at import.
"""

from __future__ import annotations

import click

from ..errors import InputError
from ..evaluate import EvalConfig
from .options import config_file_option, config_options, config_values


@click.command("evaluate")
@click.argument("legacy_model", required=False, metavar="")
@config_file_option
@config_options(EvalConfig)
@click.option("--no-share-context", is_flag=True,
              help="Run every (context, choice) pair on its own, as lm-eval does (slower; same numbers).")
@click.option("--compare", "legacy_compare", nargs=2, hidden=True)
def evaluate_cmd(legacy_model, config_file, no_share_context, legacy_compare, **values):
    """Score --model (and --adapter) on lm-eval tasks: KoBEST, NSMC, KMMLU, the leaderboard tasks, ...

    lm-evaluation-harness owns the tasks, prompts, few-shot draws and metrics; kocurate supplies
    the model backend (each context runs once for all its choices: same numbers, less compute),
    local data folders, the legacy polyglot protocol and NSMC as task YAML, and the tables.

    \b
    Examples:
      kocurate evaluate --model EleutherAI/polyglot-ko-1.3b --tasks kobest --shots 0,5 -o out/eval
      kocurate evaluate --model beomi/llama-2-ko-7b --adapter out/lora --protocol polyglot -o out/eval-lora
      kocurate evaluate --model ./my-model --data-dir samples/kobest --limit 20 --shots 0 -o out/smoke
      kocurate evaluate --model ./my-model --tasks nsmc --data-dir data/ --shots 0,5 -o out/nsmc
      kocurate compare out/eval/results.json out/eval-lora/results.json

    \b
    Writes RESULTS_DIR/results.json (every metric with its standard error, per-doc predictions,
    protocol, model, adapter, data source, seed), RESULTS_DIR/results.md (per task:
    | Model | 0-shot | 5-shot | ... | for macro F1 and accuracy, and the KoBEST average) and
    RESULTS_DIR/lm_eval/results_{k}shot.json (lm-eval's own results files).
    """
    if legacy_compare:
        raise InputError("`evaluate --compare` is now its own command: kocurate compare A.json B.json")
    if legacy_model:
        raise InputError(f"MODEL is now a flag: kocurate evaluate --model {legacy_model} ...")
    settings = config_values(EvalConfig, values, config_file)
    if not settings.get("model"):
        raise InputError("missing --model: pass a Hub id or a local model folder")
    if not settings.get("output"):
        raise InputError("missing -o/--output: the folder for results.json and results.md")
    if no_share_context:
        settings["share_context"] = False
    config = EvalConfig(**settings)

    from rich.console import Console

    from ..evaluate import evaluate
    from ..evaluate.report import markdown

    console = Console(stderr=True)
    with console.status(f"evaluating {config.model} on {', '.join(config.tasks)} at {', '.join(map(str, config.shots))} shots"):
        result = evaluate(config)
    click.echo(markdown([result.results]))
    scored = sum(v.get("n", 0) for t in result.results["results"].values() for v in t.values())
    console.print(f"scored {scored:,} docs in {result.results['seconds']['total']:.1f} s on {result.results['device']} "
                  f"({result.results['dtype']}); wrote {result.files.get('results.json')} and {result.files.get('results.md')}",
                  markup=False, highlight=False)


COMMANDS = [evaluate_cmd]
