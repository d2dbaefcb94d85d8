"""Locate files shipped with the package (card templates, recipes, samples).

In a wheel they live inside the package (hatch force-include); in an editable checkout they
live at the repository root beside the package.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Return the folder `name` (e.g. "datasets_cards", "recipes", "samples")."""
    for candidate in (_PKG / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"kocurate resource folder '{name}' not found next to {_PKG}")


def resource_file(name: str, checkout: str) -> Path:
    """Return the shipped file `name` (inside the package in a wheel), or the repository's own
    copy at `checkout` (relative to the repository root) in an editable checkout."""
    for candidate in (_PKG / name, _PKG.parent / checkout):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"kocurate resource '{name}' not found in the package or at {_PKG.parent / checkout}")
