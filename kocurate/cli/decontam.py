"""`kocurate decontaminate`: drop training rows that restate a benchmark item."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (
    apply,
    embed_options,
    engine_options,
    input_options,
    load_inputs,
    output_options,
    refuse_empty,
    run_context,
    run_steps,
    threshold_option,
)
from .render import print_settings, print_written


@click.command("decontaminate")
@click.argument("inputs", nargs=-1, required=True)
@apply(input_options)
@apply(output_options)
@click.option("--against", default="kobest", show_default=True, metavar="kobest|PATH|HUB_ID",
              help="kobest: the test sets of all five KoBEST configs; or any dataset (file, folder, Hub id) whose text columns are the items.")
@click.option("--data-dir", default=None, type=click.Path(path_type=Path),
              help="KoBEST data in the Hub's layout ({config}/{split}.jsonl); default: skt/kobest_v1 from the Hub.")
@click.option("--threshold", default=0.8, show_default=True, type=float, metavar="COSINE",
              help="A row goes when its cosine to any benchmark item text is >= this (Platypus: 0.8), in (0, 1].")
@apply(embed_options[:1])
@click.option("--ngram", default=50, show_default=True, metavar="CHARS",
              help="Also drop rows sharing this many consecutive characters (normalised) with an item; 0 turns it off.")
@click.option("--configs", default=None, metavar="NAME,...", help="KoBEST configs to check (default: boolq,copa,hellaswag,sentineg,wic).")
@click.option("--skip-missing", is_flag=True, help="Record a KoBEST config missing from --data-dir as skipped instead of stopping.")
@click.option("--bench-split", default="test", show_default=True, help="Split of the benchmark to check against.")
@click.option("--fields", default=None, metavar="COL,...", help="Text columns of a --against dataset (default: every text column).")
@apply(embed_options[1:])
@apply(engine_options)
def decontaminate_cmd(inputs, preset, mapping, split, output, overwrite, seed, against, data_dir, threshold, embedder, ngram,
                      configs, skip_missing, bench_split, fields, cache_dir, no_cache, engine, ray_address):
    """Drop training rows that restate a benchmark item, by meaning or by a long verbatim overlap.

    Every row whose cosine (instruction + " " + input vs each benchmark text field) is >= --threshold
    goes, not just the nearest one; so does a row sharing --ngram consecutive characters with an
    item. Each removal records the benchmark item (dup_of, e.g. kobest/copa/test/17) and its score.

    \b
    Examples:
      kocurate decontaminate out/dedup -o out/clean --against kobest --data-dir samples/kobest
      kocurate decontaminate data.jsonl -o out/clean --against my_eval.jsonl --fields question,answer
      kocurate explain out/clean --step decontaminate
    """
    from ..curate.decontam import Decontaminate

    step = Decontaminate(
        against=against, data_dir=str(data_dir) if data_dir else None, threshold=threshold_option(threshold), embedder=embedder,
        ngram=ngram, configs=tuple(c.strip() for c in configs.split(",")) if configs else None, split=bench_split,
        fields=tuple(f.strip() for f in fields.split(",")) if fields else None, skip_missing=skip_missing,
    )
    step.items = step.load_items()  # fail on a bad benchmark before loading or embedding the inputs
    sources = None
    if engine == "local":
        sources = load_inputs(inputs, preset, mapping, split)
        refuse_empty(inputs, sources)
    result = run_steps(inputs, [step], output, ctx=run_context(seed, cache_dir, no_cache), overwrite=overwrite,
                       engine=engine, ray_address=ray_address, sources=sources, preset=preset, mapping=mapping,
                       split=split)
    print_settings(result)
    print_written(result)


COMMANDS = [decontaminate_cmd]
