"""Dataset cards: Hub metadata computed from the folder, prose rendered from its manifest.

`render_card(folder, manifest)` is a card renderer in the sense of
`records.write_dataset_folder(render_card=...)`: it reads only the folder being written (data/,
removed/) and its manifest, so every command can use it as its default card.

The YAML metadata (language, license, task_categories, size_categories, source_datasets,
pretty_name, tags, configs, dataset_info) is built here in Python and dumped with PyYAML, so it
is always valid YAML; the Jinja2 templates in `datasets_cards/` write only the prose and share
their sections through `{% extends "generic.md.j2" %}` blocks.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, KocurateError
from .licenses import SourceLicense, combined_license, commercial_status, lookup

#: manifest step names that count as a decontamination step
DECONTAM_STEPS = ("decontaminate", "decontam", "decontamination")
#: Hub size categories, by upper bound
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
          (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]
SIZE_CATEGORIES = [s for _, s in _SIZES] + ["n>1T"]

#: recipe name -> template file (any recipe without one uses generic.md.j2)
RECIPE_TEMPLATES = {"kopen-platypus": "kopen-platypus.md.j2", "koquality": "koquality.md.j2",
                    "cot-capped": "cot-capped.md.j2"}

COLUMN_DOCS = {
    "id": "stable unique row id (kept from the source, else derived from the source name and row position)",
    "instruction": "the instruction or question",
    "input": "optional context for the instruction (may be empty)",
    "output": "the response to train on",
    "source": "the dataset (or sub-dataset) the row came from",
    "task": "the task each row belongs to",
    "rationale": "the reasoning written before the answer (chain of thought)",
    "target": "the final answer",
    "license": "the license of the row",
    "len": "character length of the instruction",
    "len_group": "length group (quantile bucket of `len`)",
    "cluster": "k-means cluster id inside its length group",
    "group": "length group and cluster, as in KoQuality's release",
    "ppl": "perplexity of the instruction under the scoring model",
    "dup_of": "id of what caused a removal (the kept twin, or a benchmark item)",
    "similarity": "the score that decided a removal",
    "step": "the step that removed the row",
    "reason": "why the step removed it",
    "detail": "free-text detail of the removal",
    "type": "the row type",
}


# --------------------------------------------------------------------------------------------
# reading the folder


def data_files(folder: Path, split_dir: str = "data") -> list[Path]:
    return sorted((Path(folder) / split_dir).glob("train-*.parquet"))


def size_category(rows: int) -> str:
    """The Hub's size_categories value for a row count (n<1K, 1K<n<10K, ...)."""
    for bound, name in _SIZES:
        if rows < bound:
            return name
    return "n>1T"


def _dtype(arrow_type) -> dict:
    """One feature in the Hub's dataset_info YAML, mirroring `datasets.Features._to_yaml_list`."""
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_struct(t):
        return {"struct": [{"name": f.name, **_dtype(f.type)} for f in t]}
    if pa.types.is_large_list(t) or pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        inner = _dtype(t.value_type)
        key = "large_list" if pa.types.is_large_list(t) else "list"
        return {key: inner["dtype"] if list(inner) == ["dtype"] else inner}
    if pa.types.is_null(t):
        return {"dtype": "null"}
    if pa.types.is_boolean(t):
        return {"dtype": "bool"}
    if pa.types.is_floating(t):
        return {"dtype": {"halffloat": "float16", "float": "float32", "double": "float64"}.get(str(t), str(t))}
    if hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t):
        return {"dtype": "string"}
    return {"dtype": str(t)}


def config_info(folder: Path, split_dir: str, config_name: str) -> dict | None:
    """dataset_info for one config: features from the parquet schema, split size from its metadata."""
    import pyarrow.parquet as pq

    files = data_files(folder, split_dir)
    if not files:
        return None
    schema = pq.read_schema(files[0])
    rows = num_bytes = 0
    for path in files:
        meta = pq.read_metadata(path)
        rows += meta.num_rows
        num_bytes += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    download = sum(p.stat().st_size for p in files)
    return {
        "config_name": config_name,
        "features": [{"name": f.name, **_dtype(f.type)} for f in schema],
        "splits": [{"name": "train", "num_bytes": int(num_bytes), "num_examples": int(rows)}],
        "download_size": int(download),
        "dataset_size": int(num_bytes),
    }


@dataclass
class Contamination:
    """What the folder's rows have earned about benchmark contamination.

    Read from the checks the folder records (records.checks: which rows of data/ passed which
    benchmark check, by row fingerprint), the decontamination steps of the manifest (params,
    rows) and removed/ rows those steps dropped (`reason`, `dup_of` = benchmark item id such as
    kobest/copa/test/17, `similarity` = score). "clean" needs every row now in data/ to have
    passed a check against each benchmark named; rows that came in later (another input, a raw
    file) are unchecked, and so are all rows of a folder whose steps record no fingerprints.
    """

    checked: bool = False
    steps: list[dict] = field(default_factory=list)
    removed: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    by_benchmark: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)
    coverage: list = field(default_factory=list)  # records.checks.Coverage, one per benchmark
    rows: int = 0
    #: rows whose benchmark neighbours a GPU top-k search cut short: a match may have been missed
    search_truncated: int = 0

    @property
    def unverified(self) -> bool:
        """A decontamination step ran, but no row fingerprints say which rows it saw."""
        return bool(self.steps) and not self.coverage

    @property
    def unchecked(self) -> int:
        """Rows of data/ that some benchmark's checks never saw (0 when clean)."""
        if self.unverified:
            return self.rows
        return max((c.unchecked for c in self.coverage), default=0)

    @property
    def unchecked_example(self) -> str | None:
        return next((c.unchecked_example for c in self.coverage if c.unchecked_example), None)

    @property
    def clean(self) -> bool:
        return (self.checked and bool(self.coverage) and all(c.complete for c in self.coverage)
                and not self.search_truncated)

    @property
    def benchmarks(self) -> str:
        return ", ".join(c.benchmark for c in self.coverage) or "a benchmark"

    @property
    def status(self) -> str:
        if not self.checked:
            return "not checked"
        if self.unverified:
            return "not verified: the decontamination step recorded no row fingerprints; run `kocurate decontaminate` again"
        if self.search_truncated:
            return (f"not verified: the search cut the benchmark neighbours of {self.search_truncated:,} rows short "
                    "(GPU top-k); run `kocurate decontaminate` again on the CPU")
        if not self.clean:
            parts = [f"{c.unchecked:,} of {c.rows:,} rows in data/ never checked against {c.benchmark}"
                     for c in self.coverage if not c.complete]
            return "; ".join(parts)
        return (f"clean against {self.benchmarks} ({self.removed:,} matching row{'s' if self.removed != 1 else ''} removed; "
                f"every row in data/ checked)")


def origin_text(origin: dict | None) -> str:
    """Where a check's benchmark data came from, in words for the card."""
    origin = origin or {}
    kind, path = origin.get("kind"), origin.get("path", "?")
    if kind == "hub":
        commit = origin.get("commit") or "unresolved"
        at = f"commit `{commit[:12]}`" if commit != "unresolved" else "an unresolved commit"
        return f"`{path}` from the Hugging Face Hub at {at}"
    if kind == "local-folder":
        hub = f", not `{origin['hub_id']}` as published on the Hub" if origin.get("hub_id") else ""
        return f"a local sample folder (`{Path(path).name}`){hub}; the check is only as complete as that folder"
    if kind in ("file", "folder"):
        return f"the local {kind} `{Path(path).name}`"
    return "an unrecorded source"


def read_contamination(folder: Path, manifest: dict) -> Contamination:
    """Tolerant reading: no decontamination step means `checked=False`, never an error."""
    from ..records import coverage, read_removed

    steps = [s for s in manifest.get("steps", []) if str(s.get("name", "")).lower() in DECONTAM_STEPS]
    cover = coverage(folder, manifest)
    result = Contamination(checked=bool(steps) or bool(cover), steps=steps, coverage=cover,
                           rows=sum(m.num_rows for m in _metas(folder)),
                           search_truncated=sum(int((s.get("stats") or {}).get("search_truncated") or 0) for s in steps))
    if not result.checked:
        return result
    names = sorted({s["name"] for s in steps} | {str(c.get("step")) for cov in cover for c in cov.checks})
    rows = read_removed(folder, columns=["step", "reason", "dup_of", "similarity", "id", "instruction"], steps=names)
    result.removed = rows.height
    if rows.height:
        import polars as pl

        for col in ("reason", "dup_of", "similarity", "id", "instruction"):
            if col not in rows.columns:
                rows = rows.with_columns(pl.lit(None).alias(col))
        result.by_reason = {str(r): int(n) for r, n in rows.group_by("reason").len().sort("len", descending=True).iter_rows()}
        # kobest/copa/test/17 -> kobest/copa/test (ids with fewer than three parts stay whole)
        bench = rows.select(pl.col("dup_of").cast(pl.String).fill_null("").str.replace(r"^(.+/.+)/[^/]+$", "${1}").alias("b"))
        result.by_benchmark = {str(b): int(n) for b, n in bench.group_by("b").len().sort(["len", "b"], descending=[True, False]).iter_rows()}
        top = rows.sort("similarity", descending=True, nulls_last=True).head(10)
        result.examples = [
            {"id": r["id"], "dup_of": r["dup_of"], "similarity": r["similarity"], "reason": r["reason"],
             "instruction": _short(r.get("instruction"))}
            for r in top.iter_rows(named=True)
        ]
    else:  # folders without removed/ still report the steps' own counts
        for step in steps:
            for reason, n in (step.get("removed") or {}).items():
                result.by_reason[reason] = result.by_reason.get(reason, 0) + int(n)
        result.removed = sum(result.by_reason.values())
    return result


def default_card_renderer(folder: Path, manifest: dict) -> str:
    """The renderer every command should pass to write_dataset_folder: the full card, or, if
    rendering fails for any reason, records.minimal_card, so a long run never loses its output
    over its card (`kocurate card OUT` re-renders it later and shows the error)."""
    try:
        return render_card(folder, manifest)
    except Exception as exc:  # noqa: BLE001 - the data matters more than the card
        from ..records import minimal_card

        reason = " ".join(str(exc).split())[:300]
        return minimal_card(folder, manifest) + f"\n<!-- kocurate: the full card failed ({reason}); run `kocurate card` -->\n"


def _short(text, limit: int = 60) -> str:
    text = "" if text is None else " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# the context every template sees


@dataclass
class SourceRow:
    name: str
    kind: str
    rows: int
    preset: str | None
    hub_id: str | None
    license: SourceLicense | None
    #: Hub inputs: the commit the rows came from ("unresolved" when it could not be told)
    commit: str | None = None


def _sources(manifest: dict) -> list[SourceRow]:
    out = []
    for item in manifest.get("inputs", []):
        preset = item.get("preset")
        hub_id = item.get("path") if item.get("kind") == "hub" else None
        record = lookup(hub_id, preset)
        out.append(SourceRow(item.get("name") or item.get("path") or "?", item.get("kind") or "?", int(item.get("rows") or 0),
                             preset, hub_id or (record.hub_id if record else None), record,
                             item.get("commit") if item.get("kind") == "hub" else None))
    return out


def _pretty_name(folder: Path) -> str:
    return Path(folder).name.split(".tmp-")[0].lstrip(".") or "kocurate dataset"


def _recipe_name(manifest: dict) -> str | None:
    recipe = manifest.get("recipe")
    if not recipe:
        return None
    # kocurate build records "NAME (PATH)"; older folders may hold a bare name or a path
    name = Path(str(recipe).split(" (")[0].strip()).name
    for suffix in (".yaml", ".yml"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _params(params: dict) -> str:
    if not params:
        return "-"
    return ", ".join(f"{k}={v}" for k, v in params.items() if v not in (None, "", [], {}))


@dataclass
class PublishView:
    """What a published copy leaves out of removed/ (push-to-hub), for the card to say so."""

    left_out: int = 0
    #: "benchmark": rows that matched benchmark items; "all": every removed row
    what: str = "benchmark"
    by_benchmark: dict[str, int] = field(default_factory=dict)


def _value_counts(folder: Path, column: str) -> dict[str, int] | None:
    """Distinct values of one data/ column with their row counts (None when the column is absent;
    nulls count under the key None)."""
    import polars as pl
    import pyarrow.parquet as pq

    files = data_files(folder, "data")
    if not files or any(column not in pq.read_schema(f).names for f in files):
        return None
    values = pl.concat([pl.read_parquet(f, columns=[column]) for f in files], how="diagonal_relaxed")
    if values.schema[column] != pl.String:
        values = values.with_columns(pl.col(column).cast(pl.String, strict=False))
    counts = values.group_by(column).len().sort(["len", column], descending=[True, False], nulls_last=True)
    return {k: int(n) for k, n in counts.iter_rows()}


def declared_license(folder: Path, manifest: dict, sources: list[SourceRow], license: str | None = None) -> dict:
    """The card's license, from the most direct statement available.

    1. `license` (--license) or the manifest's `license` (recorded by `kocurate card --license`):
       the publisher's declaration for the whole set;
    2. a per-row `license` column in data/: one value for every row -> that license; several
       (or rows without one) -> `other`, and the card lists rows per license;
    3. else the sources' licenses (publish.licenses), as the inputs name them.
    """
    from .licenses import hub_license, license_commercial

    stated = license or manifest.get("license")
    per_row = _value_counts(folder, "license")
    records = [s.license for s in sources]
    if stated:
        license_id, license_name = hub_license(str(stated))
        commercial = license_commercial(str(stated))
        if any(r is not None for r in records):  # a known source's own terms still bind its rows
            commercial = _worst(commercial, commercial_status(records))
        return {"license": license_id, "license_name": license_name, "basis": "declared", "declared": str(stated),
                "per_row": per_row, "commercial": commercial}
    if per_row:
        named = [k for k in per_row if k]
        if len(named) == 1 and None not in per_row:
            license_id, license_name = hub_license(named[0])
        else:
            license_id, license_name = "other", "mixed-see-card" if named else "unknown-see-card"
        states = [license_commercial(k) for k in named] + (["unclear"] if None in per_row else [])
        commercial = "no" if "no" in states else ("unclear" if "unclear" in states or not states else "yes")
        return {"license": license_id, "license_name": license_name, "basis": "rows", "declared": None,
                "per_row": per_row, "commercial": commercial}
    license_id, license_name = combined_license(records)
    return {"license": license_id, "license_name": license_name, "basis": "sources", "declared": None,
            "per_row": None, "commercial": commercial_status(records)}


def _worst(a: str, b: str) -> str:
    order = {"no": 0, "unclear": 1, "yes": 2}
    return a if order.get(a, 1) <= order.get(b, 1) else b


def metadata(folder: Path, manifest: dict, *, pretty_name: str | None = None, license: str | None = None,
             contamination: Contamination | None = None) -> dict:
    """The card's YAML metadata as a dict (what DatasetCardData reads back)."""
    from ..records import hub_configs

    folder = Path(folder)
    sources = _sources(manifest)
    lic = declared_license(folder, manifest, sources, license)
    default = config_info(folder, "data", "default")
    removed = config_info(folder, "removed", "removed")
    rows = default["splits"][0]["num_examples"] if default else int(manifest.get("rows") or 0)
    contamination = contamination or read_contamination(folder, manifest)
    recipe = _recipe_name(manifest)
    tags = ["kocurate", "korean", "instruction-tuning"]
    if recipe:
        tags.append(recipe)
    if contamination.clean:
        tags.append("decontaminated")
    meta: dict = {
        "language": ["ko"],
        "license": lic["license"],
    }
    if lic["license_name"]:
        meta["license_name"] = lic["license_name"]
    meta.update({
        "task_categories": ["text-generation"],
        "size_categories": [size_category(rows)],
        "pretty_name": pretty_name or _pretty_name(folder),
        "tags": tags,
    })
    hub_sources = sorted({s.hub_id for s in sources if s.hub_id})
    if hub_sources:
        meta["source_datasets"] = hub_sources
    meta["configs"] = hub_configs(folder)
    meta["dataset_info"] = [c for c in (default, removed) if c]
    return meta


def _column_doc(name: str, counts: dict | None) -> str:
    doc = COLUMN_DOCS.get(name, "")
    if counts is not None and name in ("task", "source", "license", "type"):
        named = [str(k) for k in counts if k is not None]
        shown = ", ".join(f"`{k}`" for k in named[:3]) + (", ..." if len(named) > 3 else "")
        doc = f"{doc}: {len(named):,} distinct value{'s' if len(named) != 1 else ''}" + (f" ({shown})" if shown else "")
    return doc


TRAIT_SENTENCES = {
    "machine-translated": "are machine translations (as their own cards say) and may contain translation errors or unnatural Korean",
    "model-generated": "contain text generated by language models (as their own cards say) and may contain factual mistakes",
}


def card_context(folder: Path, manifest: dict, *, repo_id: str | None = None, pretty_name: str | None = None,
                 license: str | None = None, view: PublishView | None = None,
                 contamination: Contamination | None = None) -> dict:
    """Everything a template may use. Every sentence it feeds is derived from the folder's rows
    (data/, removed/, checks/) and its manifest; `license` is the publisher's declaration and
    `view` what a published copy leaves out."""
    import yaml

    folder = Path(folder)
    contamination = contamination or read_contamination(folder, manifest)
    meta = metadata(folder, manifest, pretty_name=pretty_name, license=license, contamination=contamination)
    sources = _sources(manifest)
    records = [s.license for s in sources]
    lic = declared_license(folder, manifest, sources, license)
    steps = []
    removed_totals: dict[str, int] = {}
    for s in manifest.get("steps", []):
        removed = s.get("removed") or {}
        for reason, n in removed.items():
            removed_totals[reason] = removed_totals.get(reason, 0) + int(n)
        steps.append({
            "name": s.get("name", "?"),
            "params": _params(s.get("params") or {}),
            "rows_in": int(s.get("rows_in") or 0),
            "rows_out": int(s.get("rows_out") or 0),
            "removed": ", ".join(f"{r}: {n:,}" for r, n in removed.items()) or "-",
            "seconds": float(s.get("seconds") or 0.0),
            "tool_version": s.get("tool_version", ""),
        })
    default_info = next((c for c in meta["dataset_info"] if c["config_name"] == "default"), None)
    features = default_info["features"] if default_info else [{"name": c, "dtype": "?"} for c in manifest.get("columns", [])]
    summaries = {f["name"]: _value_counts(folder, f["name"]) for f in features if f["name"] in ("task", "source", "license", "type")}
    columns = [{"name": f["name"], "dtype": _feature_type(f), "doc": _column_doc(f["name"], summaries.get(f["name"]))}
               for f in features]
    rows = default_info["splits"][0]["num_examples"] if default_info else int(manifest.get("rows") or 0)
    removed_rows = sum(c["splits"][0]["num_examples"] for c in meta["dataset_info"] if c["config_name"] == "removed")
    by_source = summaries.get("source") or {}
    commercial = lic["commercial"]
    declared = sorted({r.license for r in records if r and r.license})
    license_warnings = []
    if commercial == "no":
        license_warnings.append("At least one source restricts commercial use: this dataset is for non-commercial research only.")
    elif commercial == "unclear":
        license_warnings.append("At least one source has no clear license or carries model-generated text under its provider's terms: check before commercial use.")
    if len(declared) > 1 and lic["basis"] == "sources":
        license_warnings.append(f"The sources declare different licenses ({', '.join(declared)}); every row keeps its source's terms.")
    citations = []
    for r in records:
        if r and r.bibtex and r.bibtex not in citations:
            citations.append(r.bibtex)
    traits = []
    for trait, sentence in TRAIT_SENTENCES.items():
        names = [s.name if s.name == s.license.hub_id else f"{s.name} ({s.license.hub_id})"
                 for s in sources if s.license and trait in s.license.traits]
        if names:
            traits.append(f"Rows from {', '.join(names)} {sentence}.")
    checks = [{"benchmark": c.benchmark, "rows": c.rows, "covered": c.covered, "unchecked": c.unchecked,
               "complete": c.complete, "example": c.unchecked_example,
               "sources": "; ".join(sorted({origin_text(i.get("origin")) for i in c.checks})),
               "configs": ", ".join(sorted({str(x) for i in c.checks for x in i.get("configs") or []})),
               "skipped": ", ".join(sorted({str(x) for i in c.checks for x in i.get("skipped_configs") or []})),
               "local": any((i.get("origin") or {}).get("kind") != "hub" for i in c.checks)}
              for c in contamination.coverage]
    step_names = {s.get("name") for s in manifest.get("steps", [])}
    name = meta["pretty_name"]
    return {
        "metadata_yaml": yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000),
        "meta": meta,
        "pretty_name": name,
        "repo_id": repo_id,
        "load_id": repo_id or f"YOUR_NAME/{name}",
        "recipe": _recipe_name(manifest),
        "manifest": manifest,
        "tool_version": manifest.get("tool_version", ""),
        "created": manifest.get("created", ""),
        "seed": manifest.get("seed"),
        "data_fingerprint": manifest.get("data_fingerprint", ""),
        "rows": rows,
        "removed_rows": removed_rows,
        "rows_in": sum(s.rows for s in sources),
        "sources": sources,
        "n_sources": len([k for k in by_source if k is not None]) if by_source else len(sources),
        "rows_per_source": [(k, n) for k, n in by_source.items()][:20],
        "more_sources": max(0, len(by_source) - 20),
        "steps": steps,
        "removed_totals": dict(sorted(removed_totals.items(), key=lambda kv: -kv[1])),
        "contamination": contamination,
        "checks": checks,
        "decontam_steps": [{"name": s.get("name"), "params": _params(s.get("params") or {}),
                            "rows_in": int(s.get("rows_in") or 0), "rows_out": int(s.get("rows_out") or 0)}
                           for s in contamination.steps],
        "columns": columns,
        "license": meta["license"],
        "license_name": meta.get("license_name"),
        "license_basis": lic["basis"],
        "license_declared": lic["declared"],
        "license_per_row": [(k if k is not None else "(none)", n) for k, n in (lic["per_row"] or {}).items()],
        "commercial": commercial,
        "license_warnings": license_warnings,
        "citations": citations,
        "traits": traits,
        "curated": bool(step_names & {"exact-dedup", "semantic-dedup", "minhash-dedup", "dedup", *DECONTAM_STEPS}),
        "size_category": meta["size_categories"][0],
        "has_removed": removed_rows > 0,
        "view": view,
    }


def _feature_type(feature: dict) -> str:
    for key in ("dtype", "list", "large_list"):
        if key in feature:
            value = feature[key]
            return value if key == "dtype" else f"{key}<{value if isinstance(value, str) else 'struct'}>"
    return "struct"


# --------------------------------------------------------------------------------------------
# templates


def templates_dir() -> Path:
    from ..resources import resource_dir

    return resource_dir("datasets_cards")


def available_templates() -> list[str]:
    try:
        return sorted(p.name[: -len(".md.j2")] for p in templates_dir().glob("*.md.j2"))
    except FileNotFoundError:
        return []


def resolve_template(manifest: dict, template: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(folder to load from, file name) for a template name, a .j2 path, or the manifest's recipe."""
    try:
        shipped = templates_dir()
    except FileNotFoundError as exc:
        raise KocurateError(f"{exc}; reinstall kocurate (the wheel ships kocurate/datasets_cards)") from None
    if template is None:
        recipe = _recipe_name(manifest)
        name = RECIPE_TEMPLATES.get(recipe or "", "generic.md.j2")
        if not (shipped / name).is_file():
            name = "generic.md.j2"
        if not (shipped / name).is_file():
            raise KocurateError(f"card template {shipped / name} is missing; reinstall kocurate or pass --template PATH")
        return shipped, name
    text = str(template)
    path = Path(text)
    if text.endswith(".j2") or os.sep in text or "/" in text:
        if not path.is_file():
            raise InputError(f"card template {path} not found; pass an existing .j2 file or one of: {', '.join(available_templates())}")
        return path.resolve().parent, path.name
    name = text if text.endswith(".md.j2") else f"{text}.md.j2"
    if not (shipped / name).is_file():
        raise InputError(f"card template '{text}' not found in {shipped}; choose one of: {', '.join(available_templates())}, or pass a .j2 path")
    return shipped, name


def render_card(folder: Path, manifest: dict, template: str | os.PathLike | None = None, *,
                repo_id: str | None = None, pretty_name: str | None = None, license: str | None = None,
                view: PublishView | None = None, contamination: Contamination | None = None) -> str:
    """Render the full dataset card for `folder` (a CardRenderer for write_dataset_folder)."""
    import jinja2

    where, name = resolve_template(manifest, template)
    search = [str(where)]
    shipped = str(templates_dir())
    if shipped not in search:
        search.append(shipped)  # custom templates may {% extends "generic.md.j2" %}
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["cell"] = _cell
    env.filters["num"] = lambda n: f"{int(n):,}"
    try:
        text = env.get_template(name).render(**card_context(Path(folder), manifest, repo_id=repo_id, pretty_name=pretty_name, license=license, view=view,
                                 contamination=contamination))
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where_line = f"{getattr(exc, 'filename', None) or name}{f':{line}' if line else ''}"
        raise InputError(f"card template {where_line}: {exc.message if hasattr(exc, 'message') else exc}; fix the template") from None
    return re.sub(r"\n{3,}", "\n\n", text)


def _cell(value) -> str:
    """Make a value safe inside a Markdown table cell."""
    return " ".join(str(value).split()).replace("|", "\\|") if value is not None else ""


# --------------------------------------------------------------------------------------------
# validation


def validate_card(text: str, folder: Path | None = None) -> list[str]:
    """Problems with a card: YAML that huggingface_hub cannot parse, missing Hub metadata, and (with
    `folder`) configs or split sizes that do not match the files. An empty list means valid."""
    from huggingface_hub import DatasetCard

    problems: list[str] = []
    if not text.startswith("---"):
        return ["README.md has no YAML metadata block (it must start with ---)"]
    try:
        card = DatasetCard(text, ignore_metadata_errors=False)
    except Exception as exc:  # huggingface_hub raises ValueError for broken YAML
        return [f"metadata does not parse: {' '.join(str(exc).split())}"]
    data = card.data.to_dict()
    for key in ("language", "license", "task_categories", "size_categories", "pretty_name", "configs", "dataset_info"):
        if not data.get(key):
            problems.append(f"metadata lacks `{key}`")
    sizes = data.get("size_categories") or []
    for size in sizes if isinstance(sizes, list) else [sizes]:
        if size not in SIZE_CATEGORIES + ["other"]:
            problems.append(f"size_categories '{size}' is not one of the Hub's values")
    if data.get("license") == "other" and not data.get("license_name"):
        problems.append("license is `other` but license_name is missing")
    if folder is not None:
        folder = Path(folder)
        for config in data.get("configs") or []:
            for spec in config.get("data_files") or []:
                pattern = spec.get("path", "") if isinstance(spec, dict) else str(spec)
                if not list(folder.glob(pattern)):
                    problems.append(f"config '{config.get('config_name')}' points at {pattern}, which matches no file")
        infos = data.get("dataset_info") or []
        infos = infos if isinstance(infos, list) else [infos]
        for info in infos:
            split_dir = "removed" if info.get("config_name") == "removed" else "data"
            actual = config_info(folder, split_dir, info.get("config_name", "default"))
            if actual is None:
                continue
            want = actual["splits"][0]["num_examples"]
            have = sum(int(s.get("num_examples", -1)) for s in info.get("splits") or [])
            if have != want:
                problems.append(f"dataset_info says config '{info.get('config_name', 'default')}' has {have:,} rows, {split_dir}/ holds {want:,}")
        sizes_now = size_category(sum(m.num_rows for m in _metas(folder)))
        if sizes and sizes_now not in (sizes if isinstance(sizes, list) else [sizes]):
            problems.append(f"size_categories says {sizes}, data/ holds {sizes_now}")
    return problems


def _metas(folder: Path):
    import pyarrow.parquet as pq

    return [pq.read_metadata(p) for p in data_files(folder, "data")]


# --------------------------------------------------------------------------------------------
# the `kocurate card` operation


@dataclass
class CardResult:
    path: Path
    text: str
    template: str
    context: dict
    written: bool


def check_folder(folder: str | os.PathLike) -> tuple[Path, dict]:
    """The folder and its manifest, or a one-line error naming what is missing and the fix."""
    from ..records import read_manifest

    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: no such folder; pass a dataset folder written by a kocurate command")
    if not folder.is_dir():
        raise InputError(f"{folder}: is a file, not a dataset folder; pass the folder a kocurate command wrote (-o)")
    files = data_files(folder, "data")
    if not files:
        raise InputError(f"{folder}: no data/train-*.parquet; build the folder first (e.g. kocurate normalize IN -o {folder})")
    try:
        manifest = read_manifest(folder)
    except ValueError as exc:
        raise InputError(f"{folder / 'manifest.json'}: not valid JSON ({exc}); rebuild the folder with a kocurate command") from None
    if manifest is None:
        raise InputError(f"{folder}: no manifest.json, so the card cannot say how the data was made; build the folder with a kocurate command")
    return folder, manifest


def make_card(folder: str | os.PathLike, *, template: str | None = None, repo_id: str | None = None,
              pretty_name: str | None = None, write: bool = True, license: str | None = None) -> CardResult:
    """Render, validate and (atomically) write OUT/README.md.

    `license` is the publisher's declaration for the whole set; when written, it is also
    recorded in manifest.json (`license`), so every later card of this folder keeps it.
    """
    from ..records import output_lock, write_json_atomic, write_text_atomic

    folder, manifest = check_folder(folder)
    if license is not None:
        license = check_license(license)
        manifest = {**manifest, "license": license}
    _, name = resolve_template(manifest, template)
    contamination = read_contamination(folder, manifest)
    text = render_card(folder, manifest, template, repo_id=repo_id, pretty_name=pretty_name, contamination=contamination)
    problems = validate_card(text, folder)
    if problems:
        raise KocurateError(f"the rendered card for {folder} is invalid: {problems[0]}; fix the template ({name})")
    path = folder / "README.md"
    if write:
        with output_lock(folder):
            if license is not None:
                write_json_atomic(folder / "manifest.json", manifest)
            write_text_atomic(path, text)
    context = card_context(folder, manifest, repo_id=repo_id, pretty_name=pretty_name, contamination=contamination)
    return CardResult(path, text, name, context, write)


def check_license(value: str) -> str:
    """A --license value: a Hub license id (e.g. cc-by-4.0) or a short name of one's own."""
    value = (value or "").strip()
    if not value or len(value) > 64 or not re.match(r"^[A-Za-z0-9][A-Za-z0-9.+_ -]*$", value):
        raise InputError(f"--license '{value}': expected a Hub license id such as cc-by-4.0, apache-2.0 or cc-by-nc-4.0 "
                         f"(or a short name of letters, digits, '.', '-', '+')")
    return value
