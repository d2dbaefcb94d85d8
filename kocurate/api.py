"""The Python API: each curation step as one function over a dataset, as `datasets` users expect.

    import kocurate
    result = kocurate.dedup(ds)            # a datasets.Dataset, a polars frame, or a path
    result.kept                            # the kept rows, as the type that went in
    result.removed                         # every dropped row: step, reason, dup_of, similarity
    print(result)                          # what happened, step by step
    result.explain("koalpaca-000042")      # why one row went, beside the row it duplicates
    result.save("out/dedup")               # the Hub-layout dataset folder the CLI writes

The CLI commands build the same steps and run them through the same pipeline. Each function
accepts the step's parameters as keywords (see the step classes in `kocurate.curate`), plus
`seed`, `cache_dir` (None: no cache), `progress` and, for paths, `preset` / `mapping` / `split`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from .errors import InputError

_DEFAULT_CACHE = object()


@dataclass
class CurationResult:
    """What a curation call did: kept and removed rows, and the manifest entry of every step."""

    kept: Any
    removed: Any
    steps: list[dict]
    #: the underlying run (polars frames, step records and results), for advanced use
    pipeline: Any = field(repr=False)
    _as_input: Any = field(default=None, repr=False)

    @property
    def rows_in(self) -> int:
        return self.pipeline.rows_in

    @property
    def removed_count(self) -> int:
        return self.pipeline.removed.height

    @property
    def removed_ratio(self) -> float:
        return self.removed_count / self.rows_in if self.rows_in else 0.0

    def removed_by_reason(self) -> dict[str, int]:
        return self.pipeline.removed_by_reason()

    def stats(self, step: str | None = None) -> dict:
        """The counters of the last step, or of the step named `step`."""
        records = [r for r in self.pipeline.records if step is None or r.name == step]
        if not records:
            raise KeyError(f"no step named {step!r}; steps: {', '.join(r.name for r in self.pipeline.records)}")
        return dict(records[-1].stats or {})

    def explain(self, row_id: str) -> str:
        """Why the row `row_id` was removed: step, reason, similarity, and the row it duplicates."""
        removed = self.pipeline.removed
        hit = removed.filter(pl.col("id") == row_id)
        if not hit.height:
            kept = self.pipeline.kept
            if kept.height and kept.filter(pl.col("id") == row_id).height:
                return f"{row_id}: kept"
            raise KeyError(f"{row_id}: not among the input rows")
        row = hit.row(0, named=True)
        lines = [f"{row_id}: removed by {row.get('step')} ({row.get('reason')})"]
        if row.get("similarity") is not None:
            lines[0] += f", similarity {row['similarity']:.3f}"
        if row.get("detail"):
            lines.append(f"  detail: {row['detail']}")
        lines.append(f"  this row: {_text(row)}")
        twin_id = row.get("dup_of")
        if twin_id:
            pool = pl.concat([self.pipeline.kept.select(pl.col("id"), *_text_cols(self.pipeline.kept)),
                              removed.select(pl.col("id"), *_text_cols(removed))], how="diagonal_relaxed")
            twin = pool.filter(pl.col("id") == twin_id)
            lines.append(f"  {twin_id}: {_text(twin.row(0, named=True)) if twin.height else '(a benchmark item)'}")
        return "\n".join(lines)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the Hub-layout dataset folder (data/, removed/, manifest.json, README.md)."""
        from .publish.card import default_card_renderer
        from .records import write_dataset_folder

        p = self.pipeline
        return write_dataset_folder(path, p.kept, p.removed, p.manifest, overwrite=overwrite,
                                    render_card=default_card_renderer, checks=getattr(p, "checks", None))

    def __str__(self) -> str:
        lines = [f"{self.rows_in:,} rows in, {self.pipeline.kept.height:,} kept, {self.removed_count:,} removed "
                 f"({self.removed_ratio:.1%})"]
        for record in self.pipeline.records:
            reasons = ", ".join(f"{r}: {n:,}" for r, n in record.removed.items()) or "nothing removed"
            lines.append(f"  {record.name}: {record.rows_in:,} -> {record.rows_out:,} ({reasons}; {record.seconds:.2f} s)")
            note = (record.stats or {}).get("note")
            if note:
                lines.append(f"    note: {note}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle):  # IPython
        printer.text(str(self))


def _text_cols(frame: pl.DataFrame) -> list[str]:
    return [c for c in ("instruction", "input", "output") if c in frame.columns]


def _text(row: dict) -> str:
    parts = [f"{c}={str(row[c])[:200]!r}" for c in ("instruction", "input", "output") if row.get(c)]
    return "; ".join(parts) or "(empty)"


# --------------------------------------------------------------------------------------------
# inputs: a datasets.Dataset, a polars frame, a list of dicts, or a path / Hub id


def _as_loaded(data, *, preset=None, mapping=None, split="train"):
    from .records import Loaded, load_records
    from .records.load import InputInfo, to_canonical
    from .records.presets import get_preset

    if isinstance(data, (str, Path)):
        return load_records(data, preset=preset, mapping=mapping, split=split), "path"
    kind = "polars"
    if isinstance(data, pl.DataFrame):
        raw = data
    elif type(data).__module__.startswith("datasets") and hasattr(data, "data"):
        raw = pl.from_arrow(data.data.table)  # a datasets.Dataset: its Arrow table, no copy through Python
        kind = "datasets"
    elif isinstance(data, Sequence) and (not data or isinstance(data[0], dict)):
        raw = pl.DataFrame(list(data))
        kind = "rows"
    else:
        raise InputError(f"{type(data).__name__}: pass a datasets.Dataset, a polars DataFrame, a list of dicts, "
                         "or a path / Hub id")
    chosen = get_preset(preset) if preset else None
    name = chosen.name if chosen else "rows"
    frame = to_canonical(raw, where=f"<{kind} input>", name=name, preset=chosen, mapping=dict(mapping or {}))
    digest = hashlib.sha256()
    import io

    buffer = io.BytesIO()
    frame.write_ipc(buffer)
    digest.update(buffer.getvalue())
    info = InputInfo(name=name, kind=kind, path=f"<{kind}>", fingerprint="sha256:" + digest.hexdigest(),
                     rows=frame.height, preset=chosen.name if chosen else None, mapping=dict(mapping or {}))
    return Loaded(frame=frame, info=info), kind


def _as_output(frame: pl.DataFrame, kind: str):
    if kind == "datasets":
        import datasets

        return datasets.Dataset(frame.to_arrow())
    if kind == "rows":
        return frame.to_dicts()
    return frame


def run(data, steps: Sequence, *, output: str | Path | None = None, overwrite: bool = False, seed: int = 42,
        cache_dir=_DEFAULT_CACHE, progress: bool = False, preset: str | None = None,
        mapping: dict[str, str] | None = None, split: str = "train") -> CurationResult:
    """Run `steps` (instances of kocurate.curate steps) over `data`; write `output` when given.

    `data` may also be a list of inputs (combined in order, as the CLI's several INPUTs)."""
    from .curate.pipeline import RunContext, default_cache_dir, run_pipeline

    many = list(data) if isinstance(data, (list, tuple)) and data and not isinstance(data[0], dict) else [data]
    loaded = [_as_loaded(d, preset=preset, mapping=mapping, split=split) for d in many]
    kind = loaded[0][1]
    if cache_dir is _DEFAULT_CACHE:
        cache_dir = default_cache_dir()
    from .publish.card import default_card_renderer  # a saved folder gets the CLI's full card

    ctx = RunContext(seed=seed, cache_dir=None if cache_dir is None else Path(cache_dir), show_progress=progress,
                     render_card=default_card_renderer)
    result = run_pipeline([item for item, _ in loaded], list(steps), output, ctx=ctx, overwrite=overwrite)
    steps_done = [r.to_dict() if hasattr(r, "to_dict") else dict(vars(r)) for r in result.records]
    return CurationResult(kept=_as_output(result.kept, kind), removed=_as_output(result.removed, kind),
                          steps=steps_done, pipeline=result)


def _split(kwargs: dict) -> dict:
    """The run-level keywords out of `kwargs` (the rest are the step's parameters)."""
    keys = ("output", "overwrite", "seed", "cache_dir", "progress", "preset", "mapping", "split")
    return {k: kwargs.pop(k) for k in keys if k in kwargs}


def normalize(data, **kwargs) -> CurationResult:
    """Map onto the canonical columns and drop rows with an empty instruction or output."""
    from .curate.normalize import DropEmpty

    run_kw = _split(kwargs)
    return run(data, [DropEmpty(**kwargs)], **run_kw)


def dedup(data, *, exact: bool = True, semantic: bool = True, **kwargs) -> CurationResult:
    """Exact, then near-duplicate removal (the CLI's `kocurate dedup`). Keywords go to the steps
    that accept them (e.g. threshold=, embedder=, columns=, keep=)."""
    from .curate.dedup import ExactDedup, SemanticDedup

    run_kw = _split(kwargs)
    steps = []
    if exact:
        steps.append(ExactDedup(**_fields_of(ExactDedup, kwargs)))
    if semantic:
        steps.append(SemanticDedup(**_fields_of(SemanticDedup, kwargs)))
    _no_leftovers(kwargs, [type(s) for s in steps])
    if not steps:
        raise InputError("dedup: pass exact=True, semantic=True or both")
    return run(data, steps, **run_kw)


def decontaminate(data, *, against: str = "kobest", **kwargs) -> CurationResult:
    """Drop rows that restate a benchmark item (KoBEST by default; `data_dir=` for local files)."""
    from .curate.decontam import Decontaminate

    run_kw = _split(kwargs)
    return run(data, [Decontaminate(against=against, **kwargs)], **run_kw)


def score(data, *, model: str, metric: str = "ppl", **kwargs) -> CurationResult:
    """Add a perplexity (ppl) or IFD column computed with a causal LM (or model="charlm" offline)."""
    from .curate.score import Score

    run_kw = _split(kwargs)
    return run(data, [Score(model=model, metric=metric, **kwargs)], **run_kw)


def cluster(data, **kwargs) -> CurationResult:
    """Length groups x k-means on prompt embeddings: adds len, len_group, cluster, cluster_dist."""
    from .curate.cluster import Cluster

    run_kw = _split(kwargs)
    return run(data, [Cluster(**kwargs)], **run_kw)


def select(data, *, ratio: float | None = None, size: int | None = None, **kwargs) -> CurationResult:
    """KoQuality selection of a share (`ratio=0.01`) or a count (`size=`); see kocurate.curate.select."""
    from .curate.select import Select

    run_kw = _split(kwargs)
    return run(data, [Select(ratio=ratio, size=size, **kwargs)], **run_kw)


def cap(data, *, per_task: int = 100, **kwargs) -> CurationResult:
    """At most `per_task` rows of each task (the CoT-Collection recipe)."""
    from .curate.cap import Cap

    run_kw = _split(kwargs)
    return run(data, [Cap(per_task=per_task, **kwargs)], **run_kw)


def _fields_of(cls, kwargs: dict) -> dict:
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in kwargs.items() if k in names}


def _no_leftovers(kwargs: dict, classes) -> None:
    import dataclasses

    known = {f.name for cls in classes for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise InputError(f"unknown keyword(s) {', '.join(unknown)}; the steps take: {', '.join(sorted(known))}")


__all__ = ["CurationResult", "cap", "cluster", "decontaminate", "dedup", "normalize", "run", "score", "select"]
