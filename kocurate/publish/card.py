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
#: keys of a decontamination step's `stats` that list matches still present in data/
REMAINING_KEYS = ("remaining_matches", "kept_matches", "matches_kept")
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
    "task": "the task name (CoT-Collection rows)",
    "rationale": "the chain-of-thought rationale (CoT-Collection rows)",
    "target": "the final answer (CoT-Collection rows)",
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
    "type": "the CoT-Collection row type",
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
    """What the folder says about benchmark contamination.

    Read from the manifest's steps named in DECONTAM_STEPS (params, rows, removed counts, stats)
    and from removed/ rows whose `step` is one of them (`reason`, `dup_of` = benchmark item id
    such as kobest/copa/test/17, `similarity` = score). `remaining` counts matches the last
    decontamination step reports as still in data/ (its stats' REMAINING_KEYS: an int or a list
    of {id, dup_of|benchmark_item, similarity}).
    """

    checked: bool = False
    steps: list[dict] = field(default_factory=list)
    removed: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    by_benchmark: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)
    remaining: int = 0
    remaining_examples: list[dict] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.checked and self.remaining == 0

    @property
    def status(self) -> str:
        if not self.checked:
            return "not checked"
        if self.remaining:
            return f"{self.remaining:,} benchmark matches still in data/"
        return f"clean ({self.removed:,} matching row{'s' if self.removed != 1 else ''} removed)"


def read_contamination(folder: Path, manifest: dict) -> Contamination:
    """Tolerant reading: no decontamination step means `checked=False`, never an error."""
    steps = [s for s in manifest.get("steps", []) if str(s.get("name", "")).lower() in DECONTAM_STEPS]
    result = Contamination(checked=bool(steps), steps=steps)
    if not steps:
        return result
    names = {s["name"] for s in steps}
    files = data_files(folder, "removed")
    if files:
        import polars as pl
        import pyarrow.parquet as pq

        wanted = ("step", "reason", "dup_of", "similarity", "id", "instruction")
        scans = []
        for f in files:  # read only the decontamination rows and the columns the card shows
            present = [c for c in wanted if c in pq.read_schema(f).names]
            if "step" in present:
                scans.append(pl.scan_parquet(f).select(present).filter(pl.col("step").is_in(list(names))))
        if scans:
            rows = pl.concat(scans, how="diagonal_relaxed").collect()
            result.removed = rows.height
            if rows.height:
                for col in ("reason", "dup_of", "similarity", "id"):
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
    if not result.removed:  # folders without removed/ still report the step's own counts
        for step in steps:
            for reason, n in (step.get("removed") or {}).items():
                result.by_reason[reason] = result.by_reason.get(reason, 0) + int(n)
        result.removed = sum(result.by_reason.values())
    stats = steps[-1].get("stats") or {}
    for key in REMAINING_KEYS:
        value = stats.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            result.remaining = value
        elif isinstance(value, list):
            result.remaining = len(value)
            result.remaining_examples = [v for v in value[:10] if isinstance(v, dict)]
        break
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


def _sources(manifest: dict) -> list[SourceRow]:
    out = []
    for item in manifest.get("inputs", []):
        preset = item.get("preset")
        hub_id = item.get("path") if item.get("kind") == "hub" else None
        record = lookup(hub_id, preset)
        out.append(SourceRow(item.get("name") or item.get("path") or "?", item.get("kind") or "?", int(item.get("rows") or 0),
                             preset, hub_id or (record.hub_id if record else None), record))
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


def metadata(folder: Path, manifest: dict, *, pretty_name: str | None = None) -> dict:
    """The card's YAML metadata as a dict (what DatasetCardData reads back)."""
    folder = Path(folder)
    sources = _sources(manifest)
    records = [s.license for s in sources]
    license_id, license_name = combined_license(records)
    default = config_info(folder, "data", "default")
    removed = config_info(folder, "removed", "removed")
    rows = default["splits"][0]["num_examples"] if default else int(manifest.get("rows") or 0)
    contamination = read_contamination(folder, manifest)
    recipe = _recipe_name(manifest)
    tags = ["kocurate", "korean", "instruction-tuning"]
    if recipe:
        tags.append(recipe)
    if contamination.clean:
        tags.append("decontaminated")
    meta: dict = {
        "language": ["ko"],
        "license": license_id,
    }
    if license_name:
        meta["license_name"] = license_name
    meta.update({
        "task_categories": ["text-generation"],
        "size_categories": [size_category(rows)],
        "pretty_name": pretty_name or _pretty_name(folder),
        "tags": tags,
    })
    hub_sources = sorted({s.hub_id for s in sources if s.hub_id})
    if hub_sources:
        meta["source_datasets"] = hub_sources
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    if removed:
        configs.append({"config_name": "removed", "data_files": [{"split": "train", "path": "removed/train-*"}]})
    meta["configs"] = configs
    meta["dataset_info"] = [c for c in (default, removed) if c]
    return meta


def card_context(folder: Path, manifest: dict, *, repo_id: str | None = None, pretty_name: str | None = None) -> dict:
    """Everything a template may use."""
    import yaml

    folder = Path(folder)
    meta = metadata(folder, manifest, pretty_name=pretty_name)
    sources = _sources(manifest)
    records = [s.license for s in sources]
    contamination = read_contamination(folder, manifest)
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
    columns = [{"name": f["name"], "dtype": _feature_type(f), "doc": COLUMN_DOCS.get(f["name"], "")} for f in features]
    rows = default_info["splits"][0]["num_examples"] if default_info else int(manifest.get("rows") or 0)
    removed_rows = sum(c["splits"][0]["num_examples"] for c in meta["dataset_info"] if c["config_name"] == "removed")
    commercial = commercial_status(records)
    declared = sorted({r.license for r in records if r and r.license})
    license_warnings = []
    if commercial == "no":
        license_warnings.append("At least one source restricts commercial use: this dataset is for non-commercial research only.")
    elif commercial == "unclear":
        license_warnings.append("At least one source has no clear license or carries model-generated text under its provider's terms: check before commercial use.")
    if len(declared) > 1:
        license_warnings.append(f"The sources declare different licenses ({', '.join(declared)}); every row keeps its source's terms.")
    citations = []
    for r in records:
        if r and r.bibtex and r.bibtex not in citations:
            citations.append(r.bibtex)
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
        "steps": steps,
        "removed_totals": dict(sorted(removed_totals.items(), key=lambda kv: -kv[1])),
        "contamination": contamination,
        "decontam_steps": [{"name": s.get("name"), "params": _params(s.get("params") or {}),
                            "rows_in": int(s.get("rows_in") or 0), "rows_out": int(s.get("rows_out") or 0)}
                           for s in contamination.steps],
        "columns": columns,
        "license": meta["license"],
        "license_name": meta.get("license_name"),
        "commercial": commercial,
        "license_warnings": license_warnings,
        "citations": citations,
        "size_category": meta["size_categories"][0],
        "has_removed": removed_rows > 0,
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
                repo_id: str | None = None, pretty_name: str | None = None) -> str:
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
        text = env.get_template(name).render(**card_context(Path(folder), manifest, repo_id=repo_id, pretty_name=pretty_name))
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
              pretty_name: str | None = None, write: bool = True) -> CardResult:
    """Render, validate and (atomically) write OUT/README.md."""
    folder, manifest = check_folder(folder)
    _, name = resolve_template(manifest, template)
    text = render_card(folder, manifest, template, repo_id=repo_id, pretty_name=pretty_name)
    problems = validate_card(text, folder)
    if problems:
        raise KocurateError(f"the rendered card for {folder} is invalid: {problems[0]}; fix the template ({name})")
    path = folder / "README.md"
    if write:
        tmp = folder / ".README.md.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    context = card_context(folder, manifest, repo_id=repo_id, pretty_name=pretty_name)
    return CardResult(path, text, name, context, write)
