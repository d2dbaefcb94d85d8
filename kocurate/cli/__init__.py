"""The `kocurate` command line. Parses, calls the library, renders with rich; no logic here.

Each module of this package that defines `COMMANDS` contributes its commands, so the rooms
(curate, publish, train, evaluate) each keep their own CLI module. Modules here import only
light things at the top: torch, transformers and peft load inside the command that needs them.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

from .. import __version__
from ..errors import KocurateError

_HELPER_MODULES = {"options", "render"}


class KocurateGroup(click.Group):
    """Collects commands from the package's modules and turns KocurateError into one line."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if info.name in _HELPER_MODULES or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            for command in getattr(module, "COMMANDS", ()):
                self.add_command(command)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KocurateError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was written", err=True)
            sys.exit(130)


@click.group(cls=KocurateGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kocurate")
def main() -> None:
    """Curate Korean instruction-tuning sets and measure what the curation did.

    \b
    Typical flow:
      kocurate inspect samples/ko_instructions.jsonl
      kocurate dedup samples/ko_instructions.jsonl -o out/dedup
      kocurate decontaminate out/dedup -o out/clean --against kobest --data-dir samples/kobest
      kocurate select out/clean -o out/koquality-1pct --ratio 0.01
      kocurate push-to-hub out/koquality-1pct me/my-set --dry-run

    Every command writes a dataset folder in Hub layout (data/, removed/, manifest.json,
    README.md) and never touches its input.
    """
    # Every folder a command writes gets the full dataset card (cheap: jinja2 loads on use).
    from ..publish.card import default_card_renderer
    from ..records.folder import set_default_card_renderer

    set_default_card_renderer(default_card_renderer)
