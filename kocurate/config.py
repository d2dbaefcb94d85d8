"""Config dataclasses whose fields are CLI flags (TRL-style), and config files that fill them.

A field declares its flag with `option(...)` in its metadata; `kocurate.cli.options.config_options`
turns every such field into a click option, so a new field is a new flag and the two never
drift. `--config FILE` (YAML or JSON) fills the same fields; flags given on the command line win.
Pure Python: importing it loads nothing heavy.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .errors import InputError


def option(flag: str, help: str, *, short: str | None = None, argument: bool = False, choices=None,
           metavar: str | None = None, group: str = "general", aliases: tuple[str, ...] = (),
           required: bool = False, cli: bool = True) -> dict:
    """Field metadata: the flag's spelling, help, choices; `aliases` are extra spellings
    (e.g. --base for --model); `cli=False` keeps a field out of the generated options."""
    return {"flag": flag, "help": help, "short": short, "argument": argument, "choices": choices,
            "metavar": metavar, "group": group, "aliases": tuple(aliases), "required": required, "cli": cli}


def cli_fields(cls) -> list[dataclasses.Field]:
    """The fields of a config class that are CLI flags, in declaration order."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag") and f.metadata.get("cli", True)]


def flag_of(cls, name: str) -> str:
    """The flag of field `name` (for error messages that name the fix)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("flag", name)
    return name


def check_count(flag: str, value, minimum: int = 1, extra: str = "") -> int:
    """A whole number of at least `minimum` (batch sizes, steps, ranks ...), else a one-line error.

    The one place such counts are checked, so every command words the same mistake the same way."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            value = int(float(value))
        except (TypeError, ValueError):
            raise InputError(f"{flag} {value}: must be a whole number, at least {minimum}{extra}") from None
    if value < minimum:
        raise InputError(f"{flag} {value}: must be a whole number, at least {minimum}{extra}")
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A mapping from a YAML or JSON file; one-line errors for every way it can be wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found; pass a YAML or JSON file to --config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 (byte {exc.start}); save the config file as UTF-8") from None
    try:
        if path.suffix == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except (json.JSONDecodeError, ValueError) as exc:
        raise InputError(f"{path}: malformed JSON ({exc}); fix the file") from None
    except Exception as exc:  # yaml.YAMLError carries its line
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path}:{where} malformed YAML ({getattr(exc, 'problem', exc)}); fix the file") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InputError(f"{path}: the config must be a mapping of setting: value, not a {type(values).__name__}")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def pick_fields(cls, values: dict[str, Any], *, source: str = "config", strict: bool = True) -> dict[str, Any]:
    """The entries of `values` that are fields of `cls` (by field name or flag spelling).

    With `strict`, an unknown key is a one-line error listing the close matches."""
    names = {f.name for f in dataclasses.fields(cls)}
    by_flag = {}
    for f in dataclasses.fields(cls):
        for spelling in (f.metadata.get("flag"), *f.metadata.get("aliases", ())):
            if spelling and spelling.startswith("--"):
                by_flag[spelling[2:].replace("-", "_")] = f.name
    out = {}
    for key, value in values.items():
        name = key if key in names else by_flag.get(key)
        if name is None:
            if strict:
                import difflib

                close = difflib.get_close_matches(key, sorted(names), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise InputError(f"{source}: unknown setting '{key}'{hint}; see --help for the settings")
            continue
        out[name] = value
    return out
