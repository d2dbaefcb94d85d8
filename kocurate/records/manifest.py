"""manifest.json: how a dataset folder was made (inputs, steps, seed, tool version)."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import InputError


@dataclass
class StepRecord:
    """One step's parameters and what it did."""

    name: str
    params: dict
    rows_in: int
    rows_out: int
    removed: dict[str, int] = field(default_factory=dict)  # reason -> rows
    seconds: float = 0.0
    tool_version: str = __version__
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Manifest:
    """Everything needed to know, and redo, how a folder was made."""

    inputs: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    seed: int | None = None
    tool: str = "kocurate"
    tool_version: str = __version__
    created: str = ""
    rows: int = 0
    removed_rows: int = 0
    columns: list[str] = field(default_factory=list)
    data_fingerprint: str = ""
    recipe: str | None = None
    #: provenance of the inputs' own folders (their manifests), so history is never lost
    parents: list[dict] = field(default_factory=list)
    #: benchmark checks whose row fingerprints cover rows of data/ (see records.checks)
    checks: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Fixed once, so manifest.json and the card rendered from it agree.
        self.created = self.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    def add_step(self, record: StepRecord) -> None:
        self.steps.append(record.to_dict())

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def read_manifest(folder: str | Path) -> dict | None:
    """The folder's manifest, None when it has none; a damaged one is a one-line error."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                         f"rebuild the folder, or delete manifest.json to read data/ without its history") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: malformed manifest ({exc.msg}); rebuild the folder") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror}); fix its permissions") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: a manifest is a JSON object, this holds a {type(value).__name__}; "
                         f"rebuild the folder, or delete manifest.json to read data/ without its history")
    for key in ("inputs", "steps", "checks", "parents"):
        if key in value and not isinstance(value[key], list):
            raise InputError(f"{path}: `{key}` must be a list, found {type(value[key]).__name__}; rebuild the folder")
    return value
