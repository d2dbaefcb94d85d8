"""Load a Hub id, a local file (jsonl/json/parquet/csv) or a dataset folder as canonical rows."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from ..errors import InputError, first_line
from .manifest import read_manifest
from .presets import Preset, get_preset, preset_for_hub_id
from .schema import CANONICAL, OPTIONAL, REQUIRED_TEXT, canonical_order

FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class InputInfo:
    """Where rows came from, recorded in the manifest."""

    name: str
    kind: str  # "hub" | "file" | "folder"
    path: str
    fingerprint: str  # sha256 of the file bytes, the folder's data fingerprint, or the Hub revision
    rows: int
    preset: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    split: str | None = None
    #: Hub inputs: the revision asked for (None: the default branch) and the commit it resolved
    #: to, or "unresolved" when neither the local Hub cache nor the Hub could say
    revision: str | None = None
    commit: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Loaded:
    """Canonical rows plus their provenance (and the manifest when the input is a kocurate folder)."""

    frame: pl.DataFrame
    info: InputInfo
    manifest: dict | None = None


def looks_like_hub_id(source: str) -> bool:
    # "data/foo.jsonl" that does not exist is a missing file, not a Hub repository.
    return bool(_HUB_ID.match(source)) and not Path(source).exists() and not source.lower().endswith(FILE_SUFFIXES)


def load_records(
    source: str | Path,
    *,
    preset: str | None = None,
    mapping: dict[str, str] | None = None,
    split: str = "train",
    require: tuple[str, ...] = REQUIRED_TEXT,
    revision: str | None = None,
) -> Loaded:
    """Load `source` and map it onto the canonical columns.

    `preset` names a known dataset's mapping; `mapping` ({canonical: column}) overrides it.
    A Hub id whose preset is known gets that preset without asking. `revision` (a branch, tag
    or commit) applies to Hub ids; the commit it resolves to is recorded.
    """
    source = str(source)
    mapping = dict(mapping or {})
    path = Path(source)
    manifest = None
    commit = None
    if revision is not None and not looks_like_hub_id(source):
        raise InputError(f"--revision {revision}: applies to Hub ids only, and {source} is a local path; drop --revision")
    if path.is_dir():
        raw, fingerprint, manifest = _read_folder(path)
        kind, name = "folder", path.name
    elif path.is_file():
        raw = read_table(path)
        if not raw.height:
            raise InputError(f"{path}: no rows (a header or an empty list only); nothing to load")
        fingerprint, kind, name = file_sha256(path), "file", path.stem
    elif looks_like_hub_id(source):
        raw, commit = read_hub(source, split, revision)
        fingerprint = f"hub:{source}@{commit}"
        kind, name = "hub", source
        if preset is None and (known := preset_for_hub_id(source)):
            preset = known.name
    else:
        raise InputError(f"{source}: no such file or folder (and not a Hub id of the form owner/name)")

    chosen = get_preset(preset) if preset else None
    frame = to_canonical(raw, where=source, name=_slug(chosen.name if chosen else name), preset=chosen,
                         mapping=mapping, require=require)
    info = InputInfo(name=name, kind=kind, path=source, fingerprint=fingerprint, rows=frame.height,
                     preset=chosen.name if chosen else None, mapping=mapping,
                     split=split if kind == "hub" else None, revision=revision if kind == "hub" else None, commit=commit)
    return Loaded(frame=frame, info=info, manifest=manifest)


# --------------------------------------------------------------------------------------------
# mapping onto the canonical columns


def to_canonical(
    raw: pl.DataFrame,
    *,
    where: str,
    name: str,
    preset: Preset | None = None,
    mapping: dict[str, str] | None = None,
    require: tuple[str, ...] = REQUIRED_TEXT,
) -> pl.DataFrame:
    """Rename, derive and fill columns so that `raw` has the canonical schema."""
    wanted = dict(preset.columns) if preset else {}
    wanted.update(mapping or {})
    for key in list(wanted):
        if key not in (*CANONICAL, *OPTIONAL):
            raise InputError(
                f"--map names '{key}', which is not a canonical column; use one of {', '.join((*CANONICAL, *OPTIONAL))}"
            )
    # Canonical columns already present under their own name map to themselves, unless a
    # mapping consumed that column for something else (CoT-Collection's `source` is the question).
    consumed = set(wanted.values())
    for key in (*CANONICAL, *OPTIONAL):
        if key not in wanted and key in raw.columns and key not in consumed:
            wanted[key] = key
    absent = {key: col for key, col in wanted.items() if col not in raw.columns}
    for key, col in absent.items():
        if key in require and not (preset and preset.derive and key == "output"):
            hint = f"--map {key}=COLUMN" if key == col else f"--map {key}=COLUMN (the mapping asked for '{col}')"
            raise InputError(
                f"{where}: missing required column '{key}'; columns found: {', '.join(raw.columns) or '(none)'}; "
                f"pass {hint} or --preset NAME"
            )
        del wanted[key]
    used = set(wanted.values())
    selected = [pl.col(col).alias(key) for key, col in wanted.items()]
    extras = [pl.col(c) for c in raw.columns if c not in used and c not in wanted]
    frame = raw.select(selected + extras)
    if preset and preset.derive:
        frame = preset.derive(frame)
    for key in require:
        if key not in frame.columns:
            raise InputError(
                f"{where}: missing required column '{key}'; columns found: {', '.join(raw.columns)}; "
                f"pass --map {key}=COLUMN or --preset NAME"
            )
    text = [c for c in ("instruction", "input", "output", "source", *OPTIONAL) if c in frame.columns]
    _check_text_columns(frame, text, where, wanted)
    frame = frame.with_columns([pl.col(c).cast(pl.String) for c in text])
    _check_nul(frame, text, where)
    if "input" not in frame.columns:
        frame = frame.with_columns(pl.lit("", dtype=pl.String).alias("input"))
    if "source" not in frame.columns:
        frame = frame.with_columns(pl.lit(name, dtype=pl.String).alias("source"))
    frame = frame.with_columns(pl.col("input").fill_null(""), pl.col("source").fill_null(name))
    frame = _with_ids(frame, where=where, name=name)
    return canonical_order(frame)


def _kind_of(dtype) -> str | None:
    """What a non-text column holds, in words; None for text or a scalar that reads as text."""
    if isinstance(dtype, pl.Struct):
        return "objects (structs)"
    if isinstance(dtype, (pl.List, pl.Array)):
        return "lists"
    if dtype == pl.Binary:
        return "binary values"
    if dtype == pl.Object:
        return "Python objects"
    return None


def _check_text_columns(frame: pl.DataFrame, columns: list[str], where: str, wanted: dict[str, str]) -> None:
    """Refuse a text column that holds lists, structs or bytes (they would become text like `{1}`)."""
    for column in columns:
        kind = _kind_of(frame.schema[column])
        if kind is None:
            continue
        rows = frame.select(pl.col(column).is_not_null().arg_true().first()).item()
        row = f" (row {rows + 1})" if rows is not None else ""
        origin = wanted.get(column, column)
        named = f"'{column}'" if origin == column else f"'{column}' (from column '{origin}')"
        raise InputError(
            f"{where}: column {named} holds {kind}, not text{row}; map a text column with --map {column}=COLUMN, "
            f"or convert that column to text first"
        )


def _check_nul(frame: pl.DataFrame, columns: list[str], where: str) -> None:
    """Refuse NUL characters in text (a JSON lone surrogate such as \\ud800 is read as NUL)."""
    for column in columns:
        row = frame.select(pl.col(column).str.contains("\x00", literal=True).arg_true().first()).item()
        if row is not None:
            raise InputError(
                f"{where}: row {row + 1}, column '{column}' contains a NUL character (in JSON often a lone surrogate "
                f"escape such as \\ud800, which is not text); fix or delete that row"
            )


def _with_ids(frame: pl.DataFrame, *, where: str, name: str) -> pl.DataFrame:
    """Keep source ids when present (they must be unique), else derive name-position ids."""
    if "id" in frame.columns:
        frame = frame.with_columns(pl.col("id").cast(pl.String))
        nulls = frame.with_row_index("_row").filter(pl.col("id").is_null())
        if nulls.height:
            raise InputError(
                f"{where}: row {nulls['_row'][0] + 1} has no id; fill the 'id' column or remove it to derive ids from row positions"
            )
        dupes = frame.with_row_index("_row").filter(pl.col("id").is_duplicated()).head(2)
        if dupes.height:
            rows = " and ".join(str(r + 1) for r in dupes["_row"])
            raise InputError(
                f"{where}: id '{dupes['id'][0]}' is not unique (rows {rows}); make ids unique, "
                f"or drop the 'id' column to derive ids from row positions"
            )
        return frame
    width = max(6, len(str(frame.height)))
    ids = pl.format(f"{name}-{{}}", pl.int_range(pl.len(), dtype=pl.Int64).cast(pl.String).str.zfill(width))
    return frame.with_columns(ids.alias("id"))


def _slug(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z가-힣._-]+", "-", name.split("/")[-1]).strip("-").lower() or "rows"


# --------------------------------------------------------------------------------------------
# readers


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def read_table(path: Path) -> pl.DataFrame:
    """Read one local file; every failure becomes a one-line error naming the file and line."""
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise InputError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(FILE_SUFFIXES)}")
    if suffix == ".parquet":
        try:
            return pl.read_parquet(path)
        except Exception as exc:  # polars raises several types for a corrupt file
            raise InputError(f"{path}: not a readable parquet file ({first_line(exc)})") from None
    data = path.read_bytes()
    text = _decode_utf8(path, data)
    if not text.strip():
        raise InputError(f"{path}: empty file (no rows); nothing to load")
    if suffix in (".csv", ".tsv"):
        try:
            return pl.read_csv(data, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=0)
        except Exception as exc:
            raise InputError(f"{path}: malformed {suffix[1:].upper()} ({first_line(exc)}); check quoting and column counts") from None
    if suffix == ".json":
        stripped = text.lstrip()
        if stripped.startswith("["):
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno}); fix that line") from None
            if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
                _check_json_rows(path, [(n + 1, r) for n, r in enumerate(rows)])
            return _rows_to_frame(path, rows)
        # Many ".json" files on the Hub are JSON Lines.
    return _read_jsonl(path, data, text)


def _decode_utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); "
            f"re-save the file as UTF-8 (e.g. iconv -f cp949 -t utf-8)"
        ) from None


_NESTED = re.compile(rb'"\s*:\s*[\[{]')
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_json_rows(path: Path, rows: list[tuple[int, dict]]) -> None:
    """A key whose values are text in some rows and objects/lists in others is refused, naming
    the row (polars would silently turn the object into text); so is a lone surrogate."""
    first_text: dict[str, int] = {}
    first_nested: dict[str, tuple[int, str]] = {}
    for number, row in rows:
        for key, value in row.items():
            if isinstance(value, str):
                if _SURROGATE.search(value):
                    raise InputError(f"{path}:{number}: '{key}' holds a lone surrogate escape (e.g. \\ud800), which is not text; "
                                     f"fix or delete that line")
                first_text.setdefault(key, number)
            elif isinstance(value, (dict, list)):
                first_nested.setdefault(key, (number, "an object" if isinstance(value, dict) else "a list"))
    for key, (number, kind) in first_nested.items():
        if key in first_text:
            raise InputError(f"{path}:{number}: '{key}' holds {kind} where line {first_text[key]} holds text; "
                             f"make '{key}' text on every line (or drop that line)")


def _read_jsonl(path: Path, data: bytes, text: str) -> pl.DataFrame:
    if not text.strip():
        raise InputError(f"{path}: empty file (no rows); nothing to load")
    try:
        frame = pl.read_ndjson(data, infer_schema_length=None)
        if frame.height or not text.strip():
            if _NESTED.search(data):  # objects or lists somewhere: check the rows polars may have flattened
                _check_json_rows(path, [(n, json.loads(line)) for n, line in enumerate(text.splitlines(), 1) if line.strip()])
            return frame
    except InputError:
        raise
    except Exception:
        pass
    # Slow path: find the line at fault so the error can name it.
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}:{number}: malformed JSON line ({exc.msg} at column {exc.colno}); fix or delete that line"
            ) from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number}: expected a JSON object per line, found {type(row).__name__}")
        rows.append(row)
    _check_json_rows(path, [(n, r) for n, r in zip(_numbers(text), rows)])
    return _rows_to_frame(path, rows)


def _numbers(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _rows_to_frame(path: Path, rows) -> pl.DataFrame:
    if not isinstance(rows, list) or any(not isinstance(r, dict) for r in rows):
        raise InputError(f"{path}: expected a list of JSON objects (one per row)")
    try:
        return pl.DataFrame(rows, infer_schema_length=None)
    except Exception as exc:
        raise InputError(f"{path}: rows have inconsistent types ({first_line(exc)}); make each column one type") from None


def data_files(folder: Path, split: str = "train") -> list[Path]:
    """The parquet shards of `split` in a Hub-layout folder."""
    return sorted((folder / "data").glob(f"{split}-*.parquet"))


def _read_folder(folder: Path) -> tuple[pl.DataFrame, str, dict | None]:
    files = data_files(folder)
    if not files:
        supported = sorted(p for p in folder.iterdir() if p.suffix.lower() in FILE_SUFFIXES)
        if len(supported) == 1:
            return read_table(supported[0]), file_sha256(supported[0]), None
        raise InputError(
            f"{folder}: no data/train-*.parquet shards (not a dataset folder); pass a file or a folder written by kocurate"
        )
    frame = pl.concat([read_table(f) for f in files], how="diagonal_relaxed")
    manifest = read_manifest(folder)
    fingerprint = (manifest or {}).get("data_fingerprint") or files_fingerprint(files)
    return frame, fingerprint, manifest


def files_fingerprint(files: list[Path]) -> str:
    """One fingerprint for a list of files (streamed; the order of the list counts)."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(file_sha256(f).encode())
    return "sha256:" + digest.hexdigest()


class HubLoadError(InputError):
    """A Hub dataset could not be loaded; `cause` is the first line of what `datasets` said."""

    def __init__(self, message: str, cause: str):
        super().__init__(message)
        self.cause = cause


_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_commit(hub_id: str, revision: str | None = None) -> str:
    """The commit a Hub dataset's `revision` (default branch when None) resolves to, or "unresolved".

    Offline first: the huggingface_hub cache records each ref it downloaded (refs/NAME holds the
    commit). Only when that says nothing and the Hub is not offline does it ask the Hub.
    """
    if revision and _COMMIT.match(revision):
        return revision
    try:
        from huggingface_hub import constants

        ref = Path(constants.HF_HUB_CACHE) / f"datasets--{hub_id.replace('/', '--')}" / "refs" / (revision or "main")
        if ref.is_file():
            commit = ref.read_text(encoding="ascii").strip()
            if _COMMIT.match(commit):
                return commit
        if constants.HF_HUB_OFFLINE:
            return "unresolved"
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(hub_id, revision=revision).sha
        return sha or "unresolved"
    except Exception:  # no cache entry, no network, unknown repo: say so rather than guess
        return "unresolved"


def read_hub(hub_id: str, split: str = "train", revision: str | None = None) -> tuple[pl.DataFrame, str]:
    """Rows of one split of a Hub dataset, and the commit they came from (or "unresolved")."""
    import datasets  # heavy: only when a Hub id is asked for

    try:
        ds = datasets.load_dataset(hub_id, split=split, revision=revision)
    except Exception as exc:
        at = f" at revision {revision}" if revision else ""
        raise HubLoadError(
            f"{hub_id}{at}: could not load from the Hugging Face Hub ({first_line(exc)}); offline or unknown? "
            f"download it once (e.g. `hf download --repo-type dataset {hub_id} --local-dir DIR`) and pass the local path",
            first_line(exc, 160),
        ) from None
    return pl.from_arrow(ds.data.table), hub_commit(hub_id, revision)
