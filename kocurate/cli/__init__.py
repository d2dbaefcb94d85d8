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

#: Spellings renamed for one vocabulary (DESIGN.md): (command, old) -> what to write now.
#: Kept for one release so an old command line gets a one-line hint instead of "no such option".
RENAMED = {
    ("build", "--force"): "--rerun (re-run finished steps)",
    ("train", "--output-dir"): "-o/--output",
    ("score", "--template"): "--ifd-prompt (--template names the training prompt template only)",
    ("evaluate", "--compare"): "the command `kocurate compare A.json B.json`",
    ("train-eval", "--output-dir"): "-o/--output",
}


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
        except click.NoSuchOption as exc:
            command = exc.ctx.command.name if exc.ctx is not None else None
            new = RENAMED.get((command, exc.option_name))
            if new is None:
                _usage_error(exc)
            click.echo(f"error: kocurate {command} {exc.option_name} is now {new}; see kocurate {command} --help",
                       err=True)
            sys.exit(2)
        except click.UsageError as exc:
            _usage_error(exc)
        except KocurateError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was written", err=True)
            sys.exit(130)


def _usage_error(exc: click.UsageError):
    """A usage mistake in one line: what is wrong, and where the command's help is."""
    command = exc.ctx.command_path if exc.ctx is not None else "kocurate"
    message = " ".join(exc.format_message().split())
    click.echo(f"error: {message}; see {command} --help", err=True)
    sys.exit(2)


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
