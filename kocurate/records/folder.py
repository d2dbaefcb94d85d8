"""Write a dataset folder in Hub layout, atomically, never over its own input."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import polars as pl

from ..errors import InputError
from .load import files_fingerprint
from .manifest import Manifest
from .schema import canonical_order

#: Rows per parquet shard; the Hub names shards train-00000-of-0000N.parquet.
SHARD_ROWS = 500_000

CardRenderer = Callable[[Path, dict], str]

# The CLI installs the publish room's full card renderer here; records cannot import publish.
_DEFAULT_RENDERER: CardRenderer | None = None


def set_default_card_renderer(render: CardRenderer | None) -> None:
    """Make `render` the card of every folder written without an explicit renderer."""
    global _DEFAULT_RENDERER
    _DEFAULT_RENDERER = render


def check_output(out: str | Path, inputs: list[str | Path], overwrite: bool = False) -> Path:
    """Refuse an output that is an input, lies inside one, or holds something (without overwrite)."""
    out = Path(out).resolve()
    for source in inputs:
        src = Path(source)
        if not src.exists():
            continue
        src = src.resolve()
        if out == src or src in out.parents or (src.is_dir() and out.is_relative_to(src)):
            raise InputError(f"{out}: the output would be written over or inside the input {src}; choose another -o")
        if out.is_dir() and src.is_relative_to(out):
            raise InputError(f"{out}: the output folder holds the input {src}; choose another -o")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another -o")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: folder exists and is not empty; pass --overwrite to replace it, or choose another -o")
    return out


def write_dataset_folder(
    out: str | Path,
    kept: pl.DataFrame,
    removed: pl.DataFrame | None,
    manifest: Manifest,
    *,
    overwrite: bool = False,
    render_card: CardRenderer | None = None,
) -> Path:
    """Write data/, removed/, manifest.json and README.md to `out` in one rename.

    Everything is written to a hidden temporary folder beside `out` first, so a killed run
    leaves no half-written output.
    """
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        kept = canonical_order(kept)
        shards = _write_split(tmp / "data", kept)
        removed_shards = []
        if removed is not None and removed.height:
            removed_shards = _write_split(tmp / "removed", canonical_order(removed))
        manifest.rows = kept.height
        manifest.removed_rows = removed.height if removed is not None else 0
        manifest.columns = kept.columns
        manifest.data_fingerprint = files_fingerprint(shards)
        manifest.write(tmp / "manifest.json")
        render = render_card or _DEFAULT_RENDERER or minimal_card
        (tmp / "README.md").write_text(render(tmp, manifest.to_dict()), encoding="utf-8")
        _replace(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_split(folder: Path, frame: pl.DataFrame, split: str = "train") -> list[Path]:
    folder.mkdir(parents=True)
    count = max(1, -(-frame.height // SHARD_ROWS))
    paths = []
    for index in range(count):
        path = folder / f"{split}-{index:05d}-of-{count:05d}.parquet"
        frame.slice(index * SHARD_ROWS, SHARD_ROWS).write_parquet(path, compression="zstd")
        paths.append(path)
    return paths


def _replace(tmp: Path, out: Path, overwrite: bool) -> None:
    if out.exists():
        if any(out.iterdir()) and not overwrite:
            raise InputError(f"{out}: folder exists and is not empty; pass --overwrite to replace it")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def hub_configs_yaml(folder: Path) -> str:
    """The card's `configs` block: data/ is the default config, removed/ its own config."""
    lines = ["configs:", "- config_name: default", "  data_files:", "  - split: train", "    path: data/train-*"]
    if any((folder / "removed").glob("train-*.parquet")):
        lines += ["- config_name: removed", "  data_files:", "  - split: train", "    path: removed/train-*"]
    return "\n".join(lines)


def minimal_card(folder: Path, manifest: dict) -> str:
    """A small valid card; the publish room renders the full one."""
    steps = "\n".join(
        f"- `{s['name']}`: {s['rows_in']} -> {s['rows_out']} rows" for s in manifest.get("steps", [])
    ) or "- (no steps)"
    inputs = "\n".join(f"- {i['name']} ({i['kind']}, {i['rows']} rows)" for i in manifest.get("inputs", []))
    return (
        "---\n"
        "language:\n- ko\n"
        f"{hub_configs_yaml(folder)}\n"
        "tags:\n- kocurate\n"
        "---\n\n"
        f"# {folder.name.split('.tmp-')[0].lstrip('.')}\n\n"
        f"Made by kocurate {manifest.get('tool_version')}: {manifest.get('rows')} rows.\n\n"
        f"## Inputs\n\n{inputs}\n\n## Steps\n\n{steps}\n"
    )
