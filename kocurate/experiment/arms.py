"""Data arms of an experiment: `NAME=DATA` and generated random controls `NAME=random:ARM`."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..records import Loaded, Manifest, load_records, parse_mapping, write_dataset_folder

BASE = "base"
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")


@dataclass(frozen=True)
class ArmSpec:
    """One arm as the user wrote it.

    `random:SIZE_ARM` draws as many rows as SIZE_ARM has from POOL_ARM (`random:SIZE_ARM:POOL_ARM`;
    by default the largest data arm): the control that tells whether a selection beat chance at
    the same size. A fresh draw is made for every training seed (`draw_seed`), so the interval of
    a comparison with the control covers the choice of rows as well as training noise.
    """

    name: str
    data: str | None = None  # path, folder or Hub id; None for the base model
    random_of: str | None = None  # size arm of a random control
    pool: str | None = None  # pool arm of a random control

    @property
    def is_base(self) -> bool:
        return self.data is None and self.random_of is None

    @property
    def is_control(self) -> bool:
        return self.random_of is not None


def parse_arm(text: str) -> ArmSpec:
    if "=" not in text:
        raise InputError(f"--arm '{text}' is not NAME=DATA (e.g. --arm full=out/clean or --arm ctrl=random:selected)")
    name, value = (part.strip() for part in text.split("=", 1))
    if not _NAME.match(name) or name == BASE:
        raise InputError(f"--arm name '{name}' must be letters, digits, '.', '_' or '-' and not '{BASE}' (the base model is always an arm)")
    if not value:
        raise InputError(f"--arm {name}= names no data; give a dataset folder, file or Hub id")
    if value.startswith("random:"):
        parts = value.split(":")[1:]
        if not 1 <= len(parts) <= 2 or not all(parts):
            raise InputError(f"--arm {name}={value}: write random:SIZE_ARM or random:SIZE_ARM:POOL_ARM")
        return ArmSpec(name, random_of=parts[0], pool=parts[1] if len(parts) == 2 else None)
    return ArmSpec(name, data=value)


def parse_arms(texts: list[str]) -> list[ArmSpec]:
    """Parse `--arm` values, check references, and put the base model first."""
    arms = [parse_arm(t) for t in texts]
    names = [a.name for a in arms]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise InputError(f"--arm name(s) used twice: {', '.join(sorted(dupes))}")
    data_arms = {a.name for a in arms if a.data}
    for arm in arms:
        for ref in (arm.random_of, arm.pool):
            if ref is not None and ref not in data_arms:
                raise InputError(f"--arm {arm.name}: '{ref}' is not a data arm; known: {', '.join(sorted(data_arms)) or '(none)'}")
    if arms and not data_arms:
        raise InputError("a random control needs at least one data arm to draw from")
    return [ArmSpec(BASE), *arms]


def draw_seed(arm: str, training_seed: int) -> int:
    """The seed of a control's row draw for one training seed: distinct per seed and per control."""
    return zlib.crc32(f"{arm}:{training_seed}".encode("utf-8"))


def materialize_control(arm: ArmSpec, loaded: dict[str, Loaded], folder: Path, seed: int) -> Path:
    """Write the random control's rows as a dataset folder (reused when already written)."""
    size = loaded[arm.random_of].frame.height
    pool_name = arm.pool or max(loaded, key=lambda n: loaded[n].frame.height)
    pool = loaded[pool_name].frame
    if size > pool.height:
        raise InputError(f"--arm {arm.name}: {arm.random_of} has {size} rows but the pool {pool_name} only {pool.height}")
    if (folder / "manifest.json").is_file():
        existing = load_records(folder)
        made = existing.manifest or {}
        pool_print = (made.get("inputs") or [{}])[0].get("fingerprint")
        # Reuse only a draw of the same size, seed and pool: a re-curated pool needs a new control.
        if existing.frame.height == size and made.get("seed") == seed and pool_print == loaded[pool_name].info.fingerprint:
            return folder
    rows = pool.sample(n=size, seed=seed, shuffle=True)
    manifest = Manifest(seed=seed, inputs=[loaded[pool_name].info.to_dict()])
    manifest.steps.append({
        "name": "random-control", "params": {"size_of": arm.random_of, "pool": pool_name, "seed": seed},
        "rows_in": pool.height, "rows_out": size, "removed": {}, "seconds": 0.0,
    })
    write_dataset_folder(folder, rows, None, manifest, overwrite=True)
    return folder


def load_arm_data(arms: list[ArmSpec], preset: str | None = None, mapping: str | None = None,
                  split: str = "train") -> dict[str, Loaded]:
    """Every data arm's rows, read as `train` reads them (the same --preset, --map and --split)."""
    parsed = parse_mapping(mapping)
    return {a.name: load_records(a.data, preset=preset, mapping=parsed, split=split) for a in arms if a.data}

