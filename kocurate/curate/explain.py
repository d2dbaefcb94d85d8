"""Why each row of a dataset folder was removed: the logic behind `kocurate explain`.

`explain_folder(folder)` reads the folder's removed/ and data/ rows and returns an
`Explanation`: counts per step and reason, and for the removals shown, the WHOLE removed row
and the whole row it duplicated (instruction, input, output), the score the step recorded,
its detail, and, for near-duplicate removals, every signal of the row rule recomputed from the
two rows (cosine as recorded, prompt / input / output n-gram overlaps, numbers, entities) and
which rule fired. The CLI only renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ..errors import InputError
from .dedup import RowCheck, RowView, compare

#: --order values and the title each gives the listing.
ORDERS = {
    "lowest": "lowest score first",
    "highest": "highest score first",
    "input": "input order",
}
TEXT_FIELDS = ("instruction", "input", "output")
#: Steps whose dup_of is another row of the data (the others point at benchmark items etc.).
ROW_STEPS = ("exact-dedup", "semantic-dedup", "minhash-dedup")


@dataclass
class Removal:
    """One removed row beside what it duplicated."""

    id: str
    step: str
    reason: str
    score: float | None
    detail: str
    dup_of: str | None
    row: dict
    twin: dict | None  # the row it duplicated (None when dup_of is not a row of this folder)
    rule: str | None = None  # "row" / "instruction" for near-duplicate removals
    signals: dict | None = None  # recomputed second-stage signals (row pairs only)


@dataclass
class Explanation:
    folder: Path
    counts: list[tuple[str, str, int]]  # (step, reason, rows)
    total: int
    order: str
    removals: list[Removal] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{len(self.removals)} of {self.total:,} removals ({ORDERS[self.order]})"


def _read(folder: Path, sub: str) -> pl.DataFrame:
    """A folder's rows (data/) or removed rows (removed/), through the records room's readers."""
    from ..records import data_files, read_removed, read_table

    if sub == "removed":
        return read_removed(folder)
    files = data_files(folder)
    if not files:
        return pl.DataFrame()
    return pl.concat([read_table(f) for f in files], how="diagonal_relaxed")


def _text_row(row: dict) -> dict:
    return {k: (row.get(k) or "") for k in TEXT_FIELDS}


def _rule_of(step: str, detail: str) -> str | None:
    if step != "semantic-dedup":
        return "exact" if step == "exact-dedup" else None
    if detail.startswith("instruction rule") or detail.startswith("cosine >"):
        return "instruction"
    return "row"


def explain_folder(folder: str | Path, *, limit: int = 20, step: str | None = None, order: str = "lowest") -> Explanation:
    """The removals of a dataset folder, explained (see the module docstring)."""
    folder = Path(folder)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InputError(f"--limit {limit}: must be a whole number >= 0 (how many removals to show)")
    if order not in ORDERS:
        raise InputError(f"--order {order}: unknown; use one of {', '.join(ORDERS)}")
    if not (folder / "manifest.json").is_file() and not (folder / "data").is_dir():
        raise InputError(f"{folder}: not a kocurate dataset folder (no manifest.json or data/); pass the -o of a dedup run")
    removed = _read(folder, "removed")
    if not removed.height:
        return Explanation(folder, [], 0, order)
    if step:
        steps = sorted(set(removed["step"].to_list()))
        removed = removed.filter(pl.col("step") == step)
        if not removed.height:
            raise InputError(f"{folder}: no rows removed by step '{step}'; steps there: {', '.join(steps)}")
    counts = [(s, r, int(n)) for s, r, n in removed.group_by("step", "reason").len().sort("len", descending=True).iter_rows()]
    if order != "input":
        removed = removed.sort("similarity", descending=order == "highest", nulls_last=True)
    shown = removed.head(limit)
    kept = _read(folder, "data")
    lookup: dict[str, dict] = {}
    twins = {t for t in shown["dup_of"].to_list() if t} if "dup_of" in shown.columns else set()
    for frame in (kept, removed):
        if frame.height and "id" in frame.columns:
            for row in frame.filter(pl.col("id").is_in(list(twins))).iter_rows(named=True):
                lookup.setdefault(row["id"], _text_row(row))
    check = RowCheck()
    out = []
    for row in shown.iter_rows(named=True):
        detail = row.get("detail") or ""
        twin_id = row.get("dup_of")
        twin = lookup.get(twin_id) if twin_id and row["step"] in ROW_STEPS else None
        rule = _rule_of(row["step"], detail)
        signals = None
        if twin is not None and row["step"] in ("semantic-dedup", "minhash-dedup", "exact-dedup"):
            cosine = row.get("similarity") if row["step"] == "semantic-dedup" else None
            signals = compare(RowView.of(twin, check), RowView.of(_text_row(row), check), cosine, check, full=True)
        out.append(Removal(id=row["id"], step=row["step"], reason=row["reason"], score=row.get("similarity"), detail=detail,
                           dup_of=twin_id, row=_text_row(row), twin=twin, rule=rule, signals=signals))
    return Explanation(folder, counts, removed.height, order, out)


__all__ = ["ORDERS", "Explanation", "Removal", "explain_folder"]
