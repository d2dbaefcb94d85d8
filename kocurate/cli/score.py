"""`kocurate score`: perplexity / IFD score columns for selection."""

from __future__ import annotations

import click
from rich.table import Table

from ..curate import run_pipeline
from ..curate.score import IFD_TEMPLATE, METRICS, STRIDE, TRUNCATION, Score
from .options import apply, cache_options, input_options, load_inputs, output_options, run_context
from .render import console, print_written


@click.command("score")
@click.argument("inputs", nargs=-1, required=True)
@apply(input_options)
@apply(output_options)
@click.option("--model", "-m", required=True, metavar="ID|PATH|charlm",
              help="Causal LM: a Hub id (KoQuality used EleutherAI/polyglot-ko-1.3b), a local folder saved with "
                   "save_pretrained, or `charlm` (character bigrams fitted on the input: offline, no download).")
@click.option("--metric", type=click.Choice(METRICS), default="ppl", show_default=True,
              help="ppl: perplexity of instruction(+input); ifd: loss(output | prompt) / loss(output).")
@click.option("--column", default=None, help="Name of the score column (default: the metric's name). Never a canonical "
              "column; an existing one only with --replace.")
@click.option("--replace", is_flag=True, help="Overwrite the values of an existing (non-canonical) --column.")
@click.option("--batch-size", default=8, show_default=True, help="Sequences per forward pass.")
@click.option("--max-length", default=TRUNCATION, show_default=True, help="Truncate texts to this many tokens (KoQuality: 1024).")
@click.option("--stride", default=STRIDE, show_default=True, help="Sliding-window stride for texts longer than the model's window.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA + bf16 when present), cpu, cuda, cuda:1 ...")
@click.option("--ifd-prompt", default=IFD_TEMPLATE, show_default=True,
              help="The prompt IFD conditions the output on; {prompt} is instruction(+input).")
@apply(cache_options)
def score_cmd(inputs, preset, mapping, split, output, overwrite, seed, model, metric, column, replace, batch_size,
              max_length, stride, device, ifd_prompt, cache_dir, no_cache):
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
                 stride=stride, device=device, ifd_prompt=ifd_prompt, replace=replace)
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


COMMANDS = [score_cmd]
