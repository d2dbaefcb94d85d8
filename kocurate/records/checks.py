"""Which rows of a dataset folder were checked against which benchmark, by row fingerprint.

A claim such as "clean against KoBEST" must be earned by the rows now in data/, not inherited
from a parent's step names. So a check (today: `decontaminate`) records, for every row it let
through, a 64-bit fingerprint of the row (XXH3-64 of id, instruction, input and output, see
`ROW_HASH`, which each check's record names). The
folder keeps them in ``checks/rows.parquet`` (columns `check`, `row`), pruned to the rows still
in data/, and describes each check in manifest.json (`checks`: id, step, benchmark, where the
benchmark data came from, configs, split). A later step that adds rows (another input, a raw
file) adds rows without fingerprints, and one that edits text changes them: either way those
rows count as unchecked, and the folder is no longer "clean".
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ..errors import InputError

CHECKS_FILE = Path("checks") / "rows.parquet"
ROW_FIELDS = ("id", "instruction", "input", "output")
#: how a row's fingerprint is made (recorded in every check, so a reader knows what to recompute)
ROW_HASH = "xxh3-64 of id, instruction, input, output joined by U+001F (UTF-8)"


def row_hashes(frame: pl.DataFrame) -> np.ndarray:
    """One stable 64-bit fingerprint per row (id, instruction, input, output), as uint64.

    XXH3-64 (the `xxhash` package, which `datasets` itself needs): stable across versions and
    machines, unlike polars' own hash, and fast enough to re-derive a card's claim from data/."""
    import xxhash

    if not frame.height:
        return np.zeros(0, dtype=np.uint64)
    parts = [pl.col(c).cast(pl.String).fill_null("") if c in frame.columns else pl.lit("") for c in ROW_FIELDS]
    joined = frame.select(pl.concat_str(parts, separator="\x1f").cast(pl.Binary).alias("k"))["k"].to_list()
    digest = xxhash.xxh3_64_intdigest
    return np.fromiter((digest(b) for b in joined), dtype=np.uint64, count=len(joined))


def _unique(values: np.ndarray) -> np.ndarray:
    # polars' hash-based unique and is_in: much faster than numpy's sort-based ones at 1M rows
    return pl.Series(values, dtype=pl.UInt64).unique().to_numpy()


def _isin(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    return pl.Series(values, dtype=pl.UInt64).is_in(pl.Series(pool, dtype=pl.UInt64).implode()).to_numpy()


@dataclass
class Check:
    """One check's description (as in manifest.json) and the fingerprints of the rows it passed."""

    info: dict
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))

    @property
    def id(self) -> str:
        return self.info["id"]


def new_check(info: dict, passed: pl.DataFrame) -> Check:
    """A check that just ran: `info` describes it, `passed` are the rows it let through."""
    info = {"id": f"c-{secrets.token_hex(6)}", **info, "rows_passed": passed.height, "row_hash": ROW_HASH}
    return Check(info, _unique(row_hashes(passed)))


def merge_checks(checks: list[Check]) -> list[Check]:
    """One Check per id (two inputs descending from one decontaminated folder share a check)."""
    merged: dict[str, Check] = {}
    for check in checks:
        if check.id in merged:
            merged[check.id].hashes = _unique(np.concatenate([merged[check.id].hashes, check.hashes]))
        else:
            merged[check.id] = Check(dict(check.info), check.hashes)
    return list(merged.values())


def write_checks(folder: Path, kept: pl.DataFrame | None, checks: list[Check], hashes: np.ndarray | None = None) -> list[dict]:
    """Write checks/rows.parquet for the rows in `kept` (or the rows whose fingerprints are
    `hashes`, when the rows were streamed rather than held); returns the manifest's `checks` list."""
    checks = merge_checks(checks)
    if not checks:
        return []
    hashes = _unique(row_hashes(kept) if hashes is None else hashes)
    ids, rows, infos = [], [], []
    for check in checks:
        covered = hashes[_isin(hashes, check.hashes)]
        ids.append(np.full(covered.size, check.id, dtype=object))
        rows.append(covered)
        info = {k: v for k, v in check.info.items() if k != "rows_covered"}
        infos.append({**info, "rows_covered": int(covered.size)})
    path = folder / CHECKS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"check": pl.Series(np.concatenate(ids).tolist(), dtype=pl.String),
                  "row": pl.Series(np.concatenate(rows), dtype=pl.UInt64)}).write_parquet(path, compression="zstd")
    return infos


def read_checks(folder: str | Path, manifest: dict | None) -> list[Check]:
    """The checks a folder records (empty when none); a damaged checks file is a one-line error."""
    infos = [c for c in (manifest or {}).get("checks") or [] if isinstance(c, dict) and c.get("id")]
    if not infos:
        return []
    path = Path(folder) / CHECKS_FILE
    if not path.is_file():
        return [Check(info) for info in infos]  # described but no fingerprints: covers no row
    try:
        table = pl.read_parquet(path, columns=["check", "row"])
    except Exception:
        raise InputError(f"{path}: not a readable checks file; rebuild the folder (rerun its decontaminate step)") from None
    groups = {str(k[0] if isinstance(k, tuple) else k): g["row"].to_numpy().astype(np.uint64)
              for k, g in table.group_by("check")}
    empty = np.zeros(0, dtype=np.uint64)
    # fingerprints made another way cannot be compared with the rows: they cover nothing
    return [Check(info, groups.get(info["id"], empty) if info.get("row_hash") == ROW_HASH else empty)
            for info in infos]


def folder_row_hashes(folder: str | Path) -> tuple[np.ndarray, list[str]]:
    """Fingerprints and ids of the rows in a folder's data/."""
    import pyarrow.parquet as pq

    files = sorted((Path(folder) / "data").glob("train-*.parquet"))
    if not files:
        return np.zeros(0, dtype=np.uint64), []
    frames = []
    for f in files:
        names = pq.read_schema(f).names
        frames.append(pl.read_parquet(f, columns=[c for c in ROW_FIELDS if c in names]))
    frame = pl.concat(frames, how="diagonal_relaxed")
    ids = frame["id"].cast(pl.String).to_list() if "id" in frame.columns else [str(i) for i in range(frame.height)]
    return row_hashes(frame), ids


@dataclass
class Coverage:
    """How many rows now in data/ one benchmark's checks cover."""

    benchmark: str
    checks: list[dict]
    rows: int
    covered: int
    unchecked_example: str | None = None

    @property
    def complete(self) -> bool:
        return self.rows == self.covered

    @property
    def unchecked(self) -> int:
        return self.rows - self.covered


def coverage(folder: str | Path, manifest: dict | None) -> list[Coverage]:
    """Per benchmark (checks against the same benchmark pool their rows): rows covered in data/.

    When data/ is byte for byte what the manifest's `data_fingerprint` names and one check of a
    benchmark covered every row when the folder was written, that is the answer without
    re-hashing the rows; anything else (edited data/, partial coverage) is recomputed from the
    rows and the fingerprints in checks/rows.parquet, so an unchecked row can be named.
    """
    infos = [c for c in (manifest or {}).get("checks") or [] if isinstance(c, dict) and c.get("id")]
    if not infos:
        return []
    groups: dict[str, list[dict]] = {}
    for info in infos:
        groups.setdefault(str(info.get("benchmark") or "?"), []).append(info)
    rows = _rows_if_unchanged(Path(folder), manifest or {})
    result: dict[str, Coverage] = {}
    for benchmark, members in groups.items():
        if rows is not None and any(m.get("row_hash") == ROW_HASH and m.get("rows_covered") == rows for m in members):
            result[benchmark] = Coverage(benchmark, members, rows, rows)
    if len(result) < len(groups):
        checks = {c.id: c for c in read_checks(folder, manifest)}
        hashes, ids = folder_row_hashes(folder)
        for benchmark, members in groups.items():
            if benchmark in result:
                continue
            pool = _unique(np.concatenate([checks[m["id"]].hashes for m in members]))
            hit = _isin(hashes, pool)
            missing = np.flatnonzero(~hit)
            result[benchmark] = Coverage(benchmark, members, int(hashes.size), int(hit.sum()),
                                         ids[missing[0]] if missing.size else None)
    return [result[b] for b in groups]


def _rows_if_unchanged(folder: Path, manifest: dict) -> int | None:
    """data/'s row count when its files are exactly those the manifest fingerprinted, else None."""
    import pyarrow.parquet as pq

    from .load import data_files, files_fingerprint

    files = data_files(folder)
    expected = manifest.get("data_fingerprint")
    if not files or not expected or files_fingerprint(files) != expected:
        return None
    return sum(pq.read_metadata(f).num_rows for f in files)
