"""`kocurate build`: run a recipe of curation steps, resuming finished ones."""

from __future__ import annotations

import click
from rich.table import Table

from .options import apply, cache_options, engine_option_list, run_context
from .render import console


@click.command("build")
@click.argument("recipe")
@click.option("--source", "sources", multiple=True, metavar="[NAME=]PATH",
              help="Replace the recipe's input NAME by PATH (keeping its preset), or, without NAME=, replace all inputs.")
@click.option("--model", default=None, help="Use this model in every step with a model (score; select's --scorer).")
@click.option("--embedder", default=None, help="Use this embedder in every step that embeds.")
@click.option("--set", "sets", multiple=True, metavar="STEP.PARAM=VALUE", help="Override one parameter, e.g. --set select.clusters=10.")
@click.option("-o", "--output", default=None, type=click.Path(), help="Output folder (default: the recipe's `output`).")
@click.option("--seed", default=None, type=click.IntRange(min=0), help="Override the recipe's seed (0 or more).")
@click.option("--rerun", is_flag=True, help="Run every step again even when its folder is up to date.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT when it holds something other than an earlier build of "
              "this recipe (an earlier build is resumed without it).")
@apply(cache_options)
@apply(engine_option_list(default=None))
def build_cmd(recipe, sources, model, embedder, sets, output, seed, rerun, overwrite, cache_dir, no_cache, engine, ray_address):
    """Run a YAML recipe: inputs, then steps in order, each writing a dataset folder.

    RECIPE is a file or a bundled recipe name: kopen-platypus, koquality, cot-capped.
    Step i writes OUTPUT/NN-<step>/; the last folder is the result. A step whose input and
    parameters are unchanged since the last run is reused, so a crashed or edited build
    resumes where it changed.

    \b
    Examples:
      kocurate build koquality --source samples/ko_instructions.jsonl --model charlm --set select.clusters=10 -o out/kq
      kocurate build cot-capped --source cot=samples/ko_cot.jsonl -o out/cot
      kocurate build my-recipe.yaml --rerun
      kocurate build my-recipe.yaml --engine ray --ray-address auto
    """
    from ..curate.recipe import apply_overrides, build, load_recipe

    spec = load_recipe(recipe)
    spec = apply_overrides(spec, sources=sources, model=model, embedder=embedder, sets=sets, output=output, seed=seed,
                           engine=engine, ray_address=ray_address)
    console.print(f"recipe [bold]{spec.name}[/] ({spec.path}): {len(spec.steps)} steps, seed {spec.seed}, "
                  f"inputs {', '.join(i.source for i in spec.inputs)}")

    def announce(outcome):
        verb = "reused" if outcome.reused else "ran"
        console.print(f"  {outcome.index:02d} {outcome.name}: {verb} -> {outcome.folder}")

    result = build(spec, ctx=run_context(spec.seed, cache_dir, no_cache), rerun=rerun, overwrite=overwrite, on_step=announce)
    table = Table(title=f"build {spec.name}", title_justify="left")
    for name in ("step", "status", "rows in", "rows out", "removed (reason: rows)", "seconds", "folder"):
        table.add_column(name, justify="right" if name in ("rows in", "rows out", "seconds") else "left")
    for o in result.steps:
        removed = ", ".join(f"{r}: {n:,}" for r, n in o.removed.items()) or "-"
        table.add_row(f"{o.index:02d} {o.name}", "reused" if o.reused else "ran", f"{o.rows_in:,}", f"{o.rows_out:,}",
                      removed, f"{o.seconds:.2f}", str(o.folder))
    console.print(table)
    console.print(f"result: [bold]{result.final}[/] ({result.steps[-1].rows_out:,} rows)")


COMMANDS = [build_cmd]
