"""Decontamination: drop training rows that restate a benchmark item.

A training row goes when either test holds against ANY benchmark item (not just its nearest
row, as the Platypus code did):

* semantic: cosine(embedding of the row's instruction + " " + input, embedding of the item's
  text) >= `threshold` (0.8, Platypus's value). Every benchmark text field is its own item
  text (KoBEST fields from `records.kobest.TEXT_FIELDS`).
* verbatim: the row (instruction, input and output, normalised: NFKC, whitespace folded,
  lower-cased) shares a substring of `ngram` = 50 characters with an item's normalised text
  (50 Korean characters are about 13 words, the length GPT-3's contamination check used), or
  contains every text field of one benchmark row whole (fields of 4+ characters, together at
  least 15 characters: a COPA premise with both alternatives), or one field of 15+ characters.

Item texts are each text field of a benchmark row and, for rows with several fields, all of
them joined (field name `<config>.all`), so a row restating a whole item is near it.

Each removed row records the benchmark item (`dup_of`, e.g. ``kobest/copa/test/17``), the
deciding score (`similarity`: the cosine, or 1.0 for a verbatim match) and in `detail` the
benchmark, field, test and the other items it matched.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import polars as pl

from ..errors import InputError
from ..records import removal_frame
from ..records.kobest import CONFIGS, TEXT_FIELDS, load_split
from .dedup import _param, check_threshold, row_texts
from .embed import embed_texts, load_embedder, normalize_text
from .index import search_pairs
from .step import RunContext, Step, StepResult

NGRAM_CHARS = 50
MIN_ITEM_CHARS = 15


@dataclass
class BenchmarkItems:
    """Texts to decontaminate against, each with the id of its benchmark item and its field."""

    name: str
    ids: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    groups: list[list[int]] = field(default_factory=list)  # per benchmark row: indices of its field texts
    #: where the items came from: {"kind": "hub"|"local-folder"|"file"|"folder", "path", "commit"?}
    origin: dict = field(default_factory=dict)

    def add(self, item_id: str, field_name: str, text) -> int:
        if isinstance(text, str) and normalize_text(text):
            self.ids.append(item_id)
            self.fields.append(field_name)
            self.texts.append(normalize_text(text))
            return len(self.ids) - 1
        return -1

    def add_row(self, item_id: str, prefix: str, values: dict) -> None:
        """One benchmark row: each text field is an item text, and so are all of them joined."""
        indices = [i for i in (self.add(item_id, f"{prefix}{name}", text) for name, text in values.items()) if i >= 0]
        if indices:
            self.groups.append(indices)
        if len(indices) > 1:
            self.add(item_id, f"{prefix}all", " ".join(self.texts[i] for i in indices))


def kobest_items(data_dir: str | Path | None = None, configs: Sequence[str] | None = None,
                 split: str = "test", missing: str = "error") -> BenchmarkItems:
    """Every text field of every KoBEST config's test split.

    missing: `error` (default) stops on a config the data folder lacks; `skip` records it in
    `skipped` and goes on with the others.
    """
    if missing not in ("error", "skip"):
        raise ValueError("missing must be 'error' or 'skip'")
    configs = list(configs or CONFIGS)
    unknown = [c for c in configs if c.removeprefix("kobest_") not in CONFIGS]
    if unknown:
        raise InputError(f"--configs {','.join(unknown)}: unknown KoBEST config; use some of {','.join(CONFIGS)}")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise InputError(f"{data_dir}: KoBEST data folder not found; pass --data-dir with {{config}}/{split}.jsonl inside (Hub layout)")
    from ..records.kobest import origin

    items = BenchmarkItems("kobest", origin=origin(data_dir))
    for config in (c.removeprefix("kobest_") for c in configs):
        if data_dir is not None and not (Path(data_dir) / config / f"{split}.jsonl").is_file():
            path = Path(data_dir) / config / f"{split}.jsonl"
            if missing == "skip":
                items.skipped.append(config)
                continue
            raise InputError(
                f"{path}: missing; the KoBEST folder lacks config {config}. Add {config}/{split}.jsonl, or check only the "
                f"configs you have with --configs {','.join(c for c in CONFIGS if c != config)} (or --skip-missing to record a skip)"
            )
        rows = load_split(config, split, data_dir)
        before = len(items.ids)
        for number, row in enumerate(rows):
            items.add_row(f"kobest/{config}/{split}/{number}", f"{config}.", {name: row.get(name) for name in TEXT_FIELDS[config]})
        items.counts[config] = len(items.ids) - before
    if not items.ids:
        raise InputError(f"{data_dir or 'skt/kobest_v1'}: no KoBEST {split} text found; check --data-dir")
    return items


def dataset_items(source: str, split: str = "test", fields: Sequence[str] | None = None) -> BenchmarkItems:
    """Any dataset as benchmark: a local file/folder or a Hub id; `fields` default: every text column."""
    from ..records import (
        data_files,
        file_sha256,
        files_fingerprint,
        looks_like_hub_id,
        read_table,
    )
    from ..records.load import HubLoadError, read_hub

    path = Path(source)
    if path.is_file():
        frame = read_table(path)
        origin = {"kind": "file", "path": str(path.resolve()), "fingerprint": file_sha256(path)}
    elif path.is_dir():
        files = data_files(path, split)
        if not files and data_files(path, "train"):
            # a folder kocurate wrote holds only a train split: use it, and say so in the item ids
            split, files = "train", data_files(path, "train")
        if not files and not (path / "data").is_dir():  # loose files, not the Hub layout
            files = sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json", ".parquet", ".csv"))
        if not files:
            raise InputError(f"{path}: no data files for split '{split}'; pass --bench-split with a split it has, "
                             "a file, or a Hub id")
        frame = pl.concat([read_table(f) for f in files], how="diagonal_relaxed")
        origin = {"kind": "folder", "path": str(path.resolve()), "fingerprint": files_fingerprint(files)}
    elif looks_like_hub_id(source):
        try:
            frame, commit = read_hub(source, split)
        except HubLoadError as exc:
            raise InputError(f"--against {source}: not a local file or folder, and the Hub load of split '{split}' failed "
                             f"({exc.cause}); pass a local file, or --bench-split with a split it has") from None
        origin = {"kind": "hub", "path": source, "commit": commit}
    else:
        raise InputError(f"--against {source}: not a local file or folder, nor a Hub id (owner/name); pass kobest, a file, a folder or a Hub id")
    text_columns = [c for c, t in frame.schema.items() if t == pl.String]
    columns = list(fields) if fields else text_columns
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{source}: column(s) {', '.join(missing)} not found; it has {', '.join(frame.columns)}; fix --fields")
    if not columns:
        raise InputError(f"{source}: no text columns to compare against; name them with --fields")
    name = path.stem if path.exists() else source
    items = BenchmarkItems(name, origin=origin)
    for number, row in enumerate(frame.select(columns).iter_rows(named=True)):
        items.add_row(f"{name}/{split}/{number}", "", row)
    items.counts[name] = len(items.ids)
    if not items.ids:
        raise InputError(f"{source}: no non-empty text in column(s) {', '.join(columns)}")
    return items


class NgramMatcher:
    """Verbatim overlap between training text and benchmark items (all text normalised, lower-cased).

    Two rules:
    * long overlap: a substring of `ngram` (50) characters shared with any item text;
    * whole item: every text field of one benchmark row (fields of 4+ characters, together at
      least `min_chars` = 15 characters) appears whole in the training text, e.g. a COPA
      premise and both alternatives pasted into a prompt; or one field of 15+ characters does.
      Candidates come from shared 8-character windows, then containment is checked.
    """

    KEY = 8

    def __init__(self, items: BenchmarkItems, ngram: int = NGRAM_CHARS, min_chars: int = MIN_ITEM_CHARS):
        self.items = items
        self.ngram = ngram
        self.min_chars = min_chars
        self._lowered = [t.lower() for t in items.texts]
        self.windows: dict[int, int] = {}
        for index, text in enumerate(self._lowered):
            for start in range(len(text) - ngram + 1):
                self.windows.setdefault(hash(text[start:start + ngram]), index)
        # whole-item rule: 8-character windows of each row's fields -> row groups
        self.group_fields: list[list[str]] = []
        self.group_first: list[int] = []
        self.keys: dict[int, set[int]] = {}
        singles = [[i] for group in items.groups for i in group if len(self._lowered[i]) >= min_chars]
        for group in items.groups + singles:
            texts = [self._lowered[i] for i in group if len(self._lowered[i]) >= 4]
            if not texts or sum(map(len, texts)) < min_chars or max(map(len, texts)) < self.KEY:
                continue
            g = len(self.group_fields)
            self.group_fields.append(texts)
            self.group_first.append(group[0])
            for text in texts:
                for start in range(len(text) - self.KEY + 1):
                    self.keys.setdefault(hash(text[start:start + self.KEY]), set()).add(g)

    def match(self, text: str) -> tuple[int, str]:
        """(index of a matched item text, rule) or (-1, "")."""
        text = text.lower()
        windows, n = self.windows, self.ngram
        for start in range(len(text) - n + 1):
            item = windows.get(hash(text[start:start + n]))
            if item is not None and text[start:start + n] in self._lowered[item]:
                return item, f"shares a {n}-character substring"
        seen: set[int] = set()
        keys, k = self.keys, self.KEY
        for start in range(len(text) - k + 1):
            groups = keys.get(hash(text[start:start + k]))
            if not groups:
                continue
            for g in groups - seen:
                seen.add(g)
                if all(field in text for field in self.group_fields[g]):
                    fields = self.group_fields[g]
                    return self.group_first[g], ("contains every text field of the item" if len(fields) > 1
                                                 else "contains an item text field whole")
        return -1, ""


@dataclass
class Decontaminate(Step):
    """Drop every row whose cosine to a benchmark item is >= threshold or that shares a long n-gram.

    against: `kobest` (all five configs' test splits, from data_dir or the Hub) or a dataset
    (file, folder or Hub id) whose text columns (`fields`) are the items.
    """

    against: str = "kobest"
    data_dir: str | None = None
    threshold: float = 0.8
    embedder: str = "default"
    ngram: int = NGRAM_CHARS
    configs: tuple[str, ...] | None = None
    split: str = "test"
    fields: tuple[str, ...] | None = None
    skip_missing: bool = False
    columns: tuple[str, ...] = ("instruction", "input")
    #: benchmark items already loaded (e.g. by a CLI that checks the benchmark before loading
    #: the inputs); an input like the others, not a result: None loads them in `run`
    items: BenchmarkItems | None = field(default=None, repr=False, compare=False)
    name: ClassVar[str] = "decontaminate"

    def __post_init__(self):
        self.threshold = check_threshold(self.threshold)
        if self.ngram and int(self.ngram) < 8:
            raise InputError(f"--ngram {self.ngram}: too short to mean a copy; use at least 8 characters (default {NGRAM_CHARS}), or 0 to turn it off")

    def params(self) -> dict:
        # not dataclasses.asdict: it would deep-copy an Embedder instance passed as `embedder`
        return {f.name: _param(getattr(self, f.name)) for f in fields(self) if f.name != "items"}

    def load_items(self) -> BenchmarkItems:
        """The benchmark items this step checks against (loaded anew on every call)."""
        if self.against == "kobest":
            return kobest_items(self.data_dir, self.configs, self.split, "skip" if self.skip_missing else "error")
        return dataset_items(self.against, self.split, self.fields)

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:
        items = self.items if self.items is not None else self.load_items()
        stats = {"benchmark": items.name, "items": len(items.ids), "items_per_config": items.counts,
                 "skipped_configs": items.skipped}
        check = {"benchmark": items.name, "origin": items.origin, "configs": sorted(items.counts),
                 "skipped_configs": list(items.skipped), "split": self.split, "items": len(items.ids),
                 "threshold": self.threshold, "ngram": self.ngram}
        if not frame.height:
            result = self.keep_all(frame, **stats)
            result.check = check
            return result
        model = load_embedder(self.embedder)
        track = ctx.track if ctx.show_progress else None
        texts = row_texts(frame, self.columns)
        row_vecs = embed_texts(texts, model, cache_dir=ctx.cache_dir, track=track)
        row_vecs[np.array([not t for t in texts], dtype=bool)] = 0.0  # empty text matches nothing
        item_vecs = embed_texts(items.texts, model, cache_dir=ctx.cache_dir, track=track)
        pairs = search_pairs(item_vecs, self.threshold, queries=row_vecs, method="exact" if len(item_vecs) < 200_000 else "auto",
                             track=track)
        n = frame.height
        best_item = np.full(n, -1, dtype=np.int64)
        best_score = np.full(n, np.nan, dtype=np.float64)
        reason = np.array([""] * n, dtype=object)
        detail = np.array([""] * n, dtype=object)
        for row in np.flatnonzero(np.diff(pairs.lims) > 0):
            ids, scores = pairs.of(int(row))
            keep = scores >= self.threshold
            ids, scores = ids[keep], scores[keep]
            if not ids.size:
                continue
            order = np.argsort(-scores)
            ids, scores = ids[order], scores[order]
            best_item[row], best_score[row], reason[row] = ids[0], float(scores[0]), "benchmark-semantic"
            others = [f"{items.ids[i]}:{items.fields[i]} ({s:.3f})" for i, s in zip(ids[1:4], scores[1:4])]
            detail[row] = (f"{items.name} {items.fields[ids[0]]}: cosine {scores[0]:.4f} >= {self.threshold}; "
                           f"{ids.size} item text(s) above" + (f"; also {', '.join(others)}" if others else ""))
        verbatim = 0
        if self.ngram:
            matcher = NgramMatcher(items, self.ngram)
            full = row_texts(frame, ("instruction", "input", "output"))
            iterator = track(range(n), f"checking {self.ngram}-char overlaps", n) if track else range(n)
            for row in iterator:
                hit, rule = matcher.match(full[row])
                if hit < 0:
                    continue
                verbatim += 1
                if best_item[row] < 0:
                    best_item[row], best_score[row], reason[row] = hit, 1.0, "benchmark-ngram"
                    detail[row] = f"{items.name} {items.fields[hit]}: {rule}"
                else:
                    detail[row] += f"; also {rule} of {items.ids[hit]}"
        gone = best_item >= 0
        mask = pl.Series(gone)
        rows = np.flatnonzero(gone)
        removed = removal_frame(
            frame.filter(mask), self.name, pl.Series(reason[rows].tolist(), dtype=pl.String),
            dup_of=pl.Series([items.ids[i] for i in best_item[rows]], dtype=pl.String),
            similarity=pl.Series(best_score[rows]),
            detail=pl.Series(detail[rows].tolist(), dtype=pl.String),
        )
        stats.update({"embedder": model.name, "threshold": self.threshold, "ngram": self.ngram,
                      "semantic": int((reason == "benchmark-semantic").sum()), "ngram_matches": verbatim,
                      "contaminated": int(gone.sum()),
                      # rows whose item list the GPU top-k search cut short (0 on the CPU): matches could be missed
                      "search_truncated": int(getattr(pairs, "truncated", 0))})
        check["embedder"] = model.name
        return StepResult(frame.filter(~mask), removed, stats, check=check)


__all__ = ["MIN_ITEM_CHARS", "NGRAM_CHARS", "BenchmarkItems", "Decontaminate", "NgramMatcher", "dataset_items", "kobest_items"]
