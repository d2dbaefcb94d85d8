"""One vocabulary (DESIGN.md): every command that writes takes -o/--output and --overwrite; the
language model is --model; old spellings get a one-line hint."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kocurate.cli import RENAMED, main

#: Commands that write nothing of their own: they read, print or upload.
READ_ONLY = {"inspect", "explain", "push-to-hub", "compare", "card"}


def _commands():
    ctx = main.make_context("kocurate", ["--help"], resilient_parsing=True)
    return {name: main.get_command(ctx, name) for name in main.list_commands(ctx)}


def _spellings(command) -> set[str]:
    """The option spellings a command documents (hidden ones are old spellings kept for a hint)."""
    return {opt for p in command.params if not getattr(p, "hidden", False)
            for opt in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}


def test_every_writing_command_takes_output_and_overwrite():
    commands = _commands()
    assert {"dedup", "select", "train", "evaluate", "train-eval", "build"} <= set(commands)
    missing = {name: sorted({"-o", "--output", "--overwrite"} - _spellings(cmd))
               for name, cmd in commands.items() if name not in READ_ONLY}
    assert {name: m for name, m in missing.items() if m} == {}


def test_the_language_model_is_model_everywhere():
    commands = _commands()
    for name in ("score", "train", "evaluate", "train-eval"):
        assert "--model" in _spellings(commands[name]), name
    for name in ("train", "train-eval"):
        assert "--base" in _spellings(commands[name]), f"{name} keeps --base as an alias"


def test_template_names_the_prompt_template_only():
    for name, command in _commands().items():
        if "--template" in _spellings(command):
            assert name in ("train", "train-eval"), f"{name} calls something else --template"


@pytest.mark.parametrize("command,old", sorted(k for k in RENAMED if k[0] in ("build", "score")))
def test_old_spellings_get_a_one_line_hint(command, old):
    args = {"build": ["build", "koquality", old], "score": ["score", "x.jsonl", "-o", "out", "--model", "charlm",
                                                             old, "x"]}[command]
    if old == "--force":
        args = ["build", "koquality", "--force"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "is now" in lines[0] and RENAMED[(command, old)].split()[0] in lines[0]
