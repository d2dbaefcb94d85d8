"""`push-to-hub`: validate a dataset folder locally, then upload it to the Hub in ONE commit.

Everything that can be checked without the network is checked first (`plan_push`): the folder
has data, a manifest and a card that validates against its files, the repo id is well formed,
a folder that went through decontamination holds no row the check did not see (rows added
later, by fingerprint: records.checks), and a token exists. removed/ is published without
the rows that matched benchmark items unless asked (they are near copies of test sets); when
anything is left out, the card uploaded is rendered for exactly what goes. Only then
does `push` talk to the Hub: create the repo (private by default, idempotent), create the branch
for `--revision` if needed, and one `create_commit` holding every file, so a failed upload
leaves the remote exactly as it was. Transient errors (429, 5xx, dropped connections) are
retried with exponential backoff; huggingface_hub itself also retries its preupload, LFS and
upload calls, but not repo creation or the commit, which is why this module wraps those.

An adapter folder (adapter_config.json, from `kocurate train`) goes to a model repo instead
(`plan_adapter_push`): the adapter, tokenizer, model card, report and log, never checkpoints/,
train_run.json or dotfiles, merged/ only when asked; absolute local paths in the uploaded JSON
files and card are replaced in staged copies, and no file holding the token is sent.

The token is read from --token-file, HF_TOKEN or the huggingface_hub login and handed to
huggingface_hub only, which sends it in the Authorization header; it is never printed, logged,
stored in the plan or written anywhere.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import InputError, KocurateError
from .card import (
    DECONTAM_STEPS,
    Contamination,
    PublishView,
    check_folder,
    read_contamination,
    render_card,
    validate_card,
)

#: the layout a kocurate folder publishes; anything else in the folder stays local. checks/
#: holds the row fingerprints behind the card's contamination claim, so anyone can re-derive it.
PUBLISHED = ("README.md", "manifest.json", "data/*.parquet", "removed/*.parquet", "checks/*.parquet")
#: what push does with removed/: publish every row, all but the benchmark-matched ones, or none
REMOVED_POLICIES = ("all", "no-benchmark", "none")
DEFAULT_ENDPOINT = "https://huggingface.co"
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
#: seconds before the first retry (doubles each time); tests shorten it
RETRY_WAIT = 1.0
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class PushError(KocurateError):
    """The Hub refused or failed the upload; the message says what to do."""


@dataclass
class PlannedFile:
    path_in_repo: str
    local: Path
    size: int


@dataclass
class PushPlan:
    folder: Path
    repo_id: str
    files: list[PlannedFile]
    skipped: list[str]
    contamination: Contamination | None
    rows: int
    endpoint: str
    private: bool = True
    revision: str | None = None
    create_pr: bool = False
    commit_message: str = ""
    token_source: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: removed rows not published, and why (None: everything in removed/ goes)
    view: PublishView | None = None
    #: a temporary folder holding the re-rendered card and filtered removed/ shards
    staging: Path | None = None
    #: "dataset" for a dataset folder, "model" for an adapter folder (plan_adapter_push)
    repo_type: str = "dataset"
    #: the commit description (default: rows and files of a dataset)
    description: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def cleanup(self) -> None:
        """Remove the staging folder (call when the push is done or abandoned)."""
        if self.staging is not None:
            import shutil

            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None


@dataclass
class PushResult:
    plan: PushPlan
    repo_url: str
    commit_url: str
    commit_oid: str
    pr_url: str | None
    attempts: dict[str, int]
    seconds: float


def check_repo_id(repo_id: str) -> str:
    """NAMESPACE/NAME as the Hub accepts it, or a one-line error."""
    fix = "expected NAMESPACE/NAME of letters, digits, '-', '_' and '.' (e.g. me/koquality-1pct)"
    if not repo_id or not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.endswith(".git") or len(repo_id) > 96:
        raise InputError(f"invalid repo id '{repo_id}': {fix}")
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)
    except Exception as exc:  # HFValidationError
        raise InputError(f"invalid repo id '{repo_id}': {' '.join(str(exc).split())}; {fix}") from None
    return repo_id


def check_endpoint(endpoint: str | None) -> str:
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", endpoint):
        raise InputError(f"--endpoint '{endpoint}' is not an http(s) URL; pass e.g. https://huggingface.co or http://127.0.0.1:8080")
    return endpoint


def resolve_token(token_file: str | os.PathLike | None = None) -> tuple[str | None, str | None]:
    """(token, where it came from). Order: --token-file, HF_TOKEN, the huggingface_hub login."""
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise InputError(f"--token-file {path}: no such file; write your Hub token into it (one line) or use HF_TOKEN")
        try:
            token = path.read_bytes().decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            raise InputError(f"--token-file {path}: not UTF-8 text; write the token into it as plain text (one line)") from None
        except OSError as exc:
            raise InputError(f"--token-file {path}: cannot read ({exc.strerror}); fix its permissions") from None
        if not token:
            raise InputError(f"--token-file {path}: the file is empty; put your Hub token in it (one line)")
        if "\n" in token or " " in token:
            raise InputError(f"--token-file {path}: expected one token on one line")
        return token, f"--token-file {path}"
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        return token, "HF_TOKEN"
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # a broken login file or OIDC setup: treat as no login
        token = None
    if token:
        return token, "huggingface_hub login"
    return None, None


def plan_push(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    allow_contaminated: bool = False,
    endpoint: str | None = None,
    private: bool = True,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    removed: str = "no-benchmark",
    license: str | None = None,
) -> PushPlan:
    """Every local check, in the order a user would fix them; no network.

    removed: `no-benchmark` (default) publishes removed/ without the rows that matched
    benchmark items (near copies of test sets), `none` publishes no removed/ at all, `all`
    everything. When something is left out (or `license` is declared) the card is re-rendered
    for what is published, in a staging folder, and says what was left out.
    """
    if removed not in REMOVED_POLICIES:
        raise ValueError(f"removed must be one of {REMOVED_POLICIES}")
    folder, manifest = check_folder(folder)
    repo_id = check_repo_id(repo_id)
    endpoint = check_endpoint(endpoint)
    if revision is not None and (not revision.strip() or revision.startswith(("/", "-")) or ".." in revision or " " in revision):
        raise InputError(f"--revision '{revision}' is not a valid branch name; pass e.g. --revision main or --revision v2")

    readme = folder / "README.md"
    if not readme.is_file():
        raise InputError(f"{readme}: missing; render the dataset card with `kocurate card {folder}` first")
    problems = validate_card(readme.read_text(encoding="utf-8"), folder)
    if problems:
        raise InputError(f"{readme}: {problems[0]}; refresh it with `kocurate card {folder}`")

    if license is not None:
        from .card import check_license

        license = check_license(license)
    contamination = read_contamination(folder, manifest)
    if contamination.checked and contamination.unchecked and not allow_contaminated:
        if contamination.unverified:
            raise InputError(
                f"{folder}: a decontamination step ran but recorded no fingerprints of the rows it checked, so nothing says "
                f"the {contamination.rows:,} rows in data/ are clean; run `kocurate decontaminate` on it again, "
                f"or pass --allow-contaminated to publish anyway"
            )
        example = f" (e.g. row {contamination.unchecked_example})" if contamination.unchecked_example else ""
        raise InputError(
            f"{folder}: {contamination.unchecked:,} of {contamination.rows:,} rows in data/ were never checked against "
            f"{contamination.benchmarks}{example}: they entered after the decontamination step; run `kocurate decontaminate` "
            f"on this folder again, or pass --allow-contaminated to publish anyway"
        )

    view, staging = _stage(folder, manifest, contamination, removed, license, repo_id)
    files, skipped = [], []
    published: set[Path] = set()
    for pattern in PUBLISHED:
        staged = staging is not None and (pattern == "README.md" or pattern.startswith("removed/"))
        root = staging if staged else folder
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                published.add(folder / path.relative_to(root))
                files.append(PlannedFile(path.relative_to(root).as_posix(), path, path.stat().st_size))
    for path in sorted(folder.rglob("*")):
        if staging is not None and path.parent == folder / "removed":
            continue  # rows left out of removed/ are reported by the view, not as stray files
        if path.is_file() and path not in published:
            skipped.append(path.relative_to(folder).as_posix())

    import pyarrow.parquet as pq

    rows = sum(pq.read_metadata(f.local).num_rows for f in files if f.path_in_repo.startswith("data/"))
    if rows == 0:
        if staging is not None:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"{folder}: data/ holds 0 rows; there is nothing to publish")
    warnings = []
    if not contamination.checked:
        warnings.append("no decontamination step ran on this data; the card says so")
    elif contamination.unchecked:
        warnings.append(f"publishing with {contamination.unchecked:,} rows never checked for benchmark contamination (--allow-contaminated)")
    if view is not None and view.left_out:
        if view.what == "all":
            warnings.append(f"removed/ ({view.left_out:,} rows) is not published (--exclude-removed); the card says so")
        else:
            warnings.append(f"removed/: {view.left_out:,} benchmark-matched rows are left out (near copies of test sets; "
                            f"--include-benchmark-matches publishes them); the card says so")
    if staging is not None:
        warnings.append("README.md is re-rendered for what is published (the local card is left as it is)")
    text = (staging / "README.md" if staging is not None else readme).read_text(encoding="utf-8")
    if repo_id not in text:
        warnings.append(f"the card's load example does not name {repo_id}; `kocurate card {folder} --repo-id {repo_id}` fixes it")
    message = commit_message or f"Upload {folder.name} ({rows:,} rows) with kocurate"
    return PushPlan(folder, repo_id, files, skipped, contamination, rows, endpoint, private, revision, create_pr,
                    message, warnings=warnings, view=view, staging=staging)


def _stage(folder: Path, manifest: dict, contamination: Contamination, removed: str, license: str | None,
           repo_id: str) -> tuple[PublishView | None, Path | None]:
    """When the published copy differs from the folder (rows left out of removed/, a declared
    license), build it in a temporary folder: data/, checks/ and manifest.json linked, removed/
    filtered, README.md rendered for exactly those files. Nothing to change: (view, None)."""
    import tempfile

    import polars as pl
    import pyarrow.parquet as pq

    from ..records import read_removed, removed_files
    from ..records.folder import write_split

    all_removed = sum(pq.read_metadata(f).num_rows for f in removed_files(folder))
    keep = None
    view = None
    if removed == "none" and all_removed:
        view = PublishView(all_removed, "all", dict(contamination.by_benchmark))
        keep = pl.DataFrame()
    elif removed == "no-benchmark" and all_removed:
        rows = read_removed(folder)
        if "step" in rows.columns:
            steps = set(DECONTAM_STEPS) | {str(c.get("step")) for cov in contamination.coverage for c in cov.checks}
            matched = pl.col("step").cast(pl.String).str.to_lowercase().is_in(sorted(steps)).fill_null(False)
            left = rows.filter(matched)
            if left.height:
                keep = rows.filter(~matched)
                view = PublishView(left.height, "benchmark", dict(contamination.by_benchmark))
    if view is None and license is None:
        return None, None
    staging = Path(tempfile.mkdtemp(prefix="kocurate-push-"))
    try:
        for name in ("data", "checks", "manifest.json"):
            if (folder / name).exists():
                (staging / name).symlink_to((folder / name).resolve())
        if keep is None:
            if (folder / "removed").exists():
                (staging / "removed").symlink_to((folder / "removed").resolve())
        elif keep.height:
            write_split(staging / "removed", keep)
        text = render_card(staging, manifest, repo_id=repo_id, pretty_name=folder.name, license=license, view=view,
                           contamination=contamination)
        problems = validate_card(text, staging)
        if problems:
            raise KocurateError(f"the card rendered for the published files is invalid: {problems[0]}")
        (staging / "README.md").write_text(text, encoding="utf-8")
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    return view, staging


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _transient(exc: BaseException) -> bool:
    status = _status(exc)
    if status is not None:
        return status in TRANSIENT_STATUS
    name = type(exc).__name__
    return any(k in name for k in ("Timeout", "NetworkError", "ConnectError", "RemoteProtocolError", "ReadError", "WriteError"))


def _with_retries(what: str, call: Callable, attempts: dict, retries: int, on_retry: Callable | None):
    for attempt in range(retries + 1):
        attempts[what] = attempt + 1
        try:
            return call()
        except Exception as exc:
            if attempt < retries and _transient(exc):
                wait = RETRY_WAIT * (2 ** attempt)
                if on_retry:
                    on_retry(what, attempt + 1, _status(exc) or type(exc).__name__, wait)
                time.sleep(wait)
                continue
            raise


def _explain(exc: BaseException, plan: PushPlan, what: str, token_source: str | None, attempts: dict) -> PushError:
    """One line for the user: what the Hub said, and what to do."""
    status = _status(exc)
    where = plan.endpoint
    nothing = "nothing was committed"
    if status == 401:
        return PushError(f"the Hub at {where} rejected the token from {token_source} (401 Unauthorized) during {what}; "
                         f"create a write token at {where}/settings/tokens and pass it with --token-file, HF_TOKEN or `hf auth login`")
    if status == 403:
        namespace = plan.repo_id.split("/")[0]
        return PushError(f"the token from {token_source} may not write to {plan.repo_id} (403 Forbidden) during {what}; "
                         f"use a token with write access to '{namespace}'; {nothing}")
    if status == 404:
        rev = f" or revision '{plan.revision}'" if plan.revision else ""
        return PushError(f"{plan.repo_id}{rev} not found at {where} (404) during {what}; check the repo id and --revision; {nothing}")
    if status in TRANSIENT_STATUS:
        return PushError(f"the Hub at {where} kept failing with HTTP {status} during {what} after {attempts.get(what, 1)} attempts; "
                         f"{nothing} (the upload is one commit): run the same command again later")
    if status is not None:
        detail = " ".join(str(getattr(exc, "server_message", "") or exc).split())[:200]
        return PushError(f"the Hub at {where} answered HTTP {status} during {what}: {detail}; {nothing}")
    if _transient(exc):
        return PushError(f"cannot reach {where} during {what} ({type(exc).__name__}); check --endpoint and the network; {nothing}")
    detail = " ".join(str(exc).split())[:200]
    return PushError(f"upload to {where} failed during {what}: {type(exc).__name__}: {detail}; {nothing}")


def push(
    plan: PushPlan,
    token: str,
    *,
    token_source: str | None = None,
    retries: int = 4,
    on_retry: Callable | None = None,
) -> PushResult:
    """Create the repo (if needed) and upload the planned files in one commit."""
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    if not token:
        raise InputError("no Hub token: pass --token-file FILE, set HF_TOKEN, or log in with `hf auth login`")
    if constants.is_offline_mode():
        raise InputError("HF_HUB_OFFLINE is set, so huggingface_hub will not upload; unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) to push")
    check_no_token(plan, token)
    start = time.perf_counter()
    api = HfApi(endpoint=plan.endpoint, token=token, library_name="kocurate")
    attempts: dict[str, int] = {}
    what = "create repo"
    try:
        repo_url = _with_retries(what, lambda: api.create_repo(plan.repo_id, repo_type=plan.repo_type, private=plan.private,
                                                                exist_ok=True),
                                 attempts, retries, on_retry)
        if plan.revision and plan.revision != "main" and not plan.create_pr:
            what = "create branch"
            _with_retries(what, lambda: api.create_branch(plan.repo_id, branch=plan.revision, repo_type=plan.repo_type,
                                                          exist_ok=True),
                          attempts, retries, on_retry)
        what = "commit"

        def commit():
            operations = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local)) for f in plan.files]
            return api.create_commit(
                plan.repo_id,
                operations,
                commit_message=plan.commit_message,
                commit_description=plan.description or f"{plan.rows:,} rows; {len(plan.files)} files; made with kocurate",
                repo_type=plan.repo_type,
                revision=plan.revision,
                create_pr=plan.create_pr,
            )

        info = _with_retries(what, commit, attempts, retries, on_retry)
    except KocurateError:
        raise
    except Exception as exc:
        error = _explain(exc, plan, what, token_source, attempts)
        message = str(error).replace(token, "***") if token else str(error)
        raise PushError(message) from None
    return PushResult(plan, str(repo_url), str(info.commit_url), str(info.oid), getattr(info, "pr_url", None), attempts,
                      round(time.perf_counter() - start, 2))


# ------------------------------------------------------------------------------------------------
# adapter folders (`kocurate train -o OUT`): pushed as a model repo


#: what an adapter folder publishes (top level); checkpoints/, train_run.json, dotfiles and
#: anything else stay local, and merged/ goes only when asked
ADAPTER_FILES = ("README.md", "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin",
                 "train_report.json", "train_log.jsonl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model", "chat_template.jinja", "chat_template.json")
#: files whose JSON values may hold local paths (the run's data, base model, output): scrubbed in the upload
_JSON_SCRUBBED = ("train_report.json", "adapter_config.json", "tokenizer_config.json", "config.json",
                  "generation_config.json")
#: files the token check reads before anything is sent (small text files; weights are not read)
_TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".txt", ".jinja", ".yaml", ".yml")
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{30,}")


def is_adapter_folder(folder: str | os.PathLike) -> bool:
    """A folder holding adapter_config.json is an adapter (written by `kocurate train` or PEFT)."""
    return (Path(folder) / "adapter_config.json").is_file()


def _local_replacement(path: str, roots: list[Path]) -> str:
    """What an absolute local path becomes in the uploaded copy: relative to the adapter folder when
    inside it (`roots`: the folder now, and where the run wrote it, should it have moved since), else
    `<local>/NAME` (the name says what it was; where it lives on this machine does not go)."""
    candidate = Path(os.path.expanduser(path))
    for root in roots:
        for a, b in ((candidate, root), (candidate.resolve(), root.resolve())):
            try:
                return a.relative_to(b).as_posix() or "."
            except ValueError:
                continue
    name = candidate.name or "path"
    return f"<local>/{name}"


def _is_local_path(value: str) -> bool:
    return (0 < len(value) < 4096 and "\n" not in value and "://" not in value
            and (value.startswith("/") or value.startswith("~/") or bool(re.match(r"^[A-Za-z]:[\\/]", value))))


def scrub_local_paths(value, roots: list[Path], found: dict[str, str]):
    """A copy of a JSON value with every absolute local path string replaced (see `_local_replacement`);
    the paths met and their replacements are added to `found`, so the same text can be scrubbed elsewhere."""
    if isinstance(value, dict):
        return {k: scrub_local_paths(v, roots, found) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_local_paths(v, roots, found) for v in value]
    if isinstance(value, str):
        if _is_local_path(value):
            found[value] = _local_replacement(value, roots)
            return found[value]
        return _scrub_text(value, found, roots)
    return value


def _scrub_text(text: str, found: dict[str, str], roots: list[Path]) -> str:
    """`text` with every path in `found`, the folder's own path and the home folder replaced."""
    pairs = dict(found)
    for root in roots:
        pairs.setdefault(str(root.resolve()), ".")
        pairs.setdefault(str(root), ".")
    home = os.path.expanduser("~")
    if home not in ("", "/"):
        pairs.setdefault(home, "~")
    for path in sorted(pairs, key=len, reverse=True):
        if path and path in text:
            text = text.replace(path, pairs[path])
    return _HF_TOKEN.sub("hf_***", text)


def plan_adapter_push(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    endpoint: str | None = None,
    private: bool = True,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    include_merged: bool = False,
) -> PushPlan:
    """Every local check for an adapter folder, and the files a model repo gets; no network.

    Published: README.md (the model card; rendered from train_report.json when the folder has
    none), adapter_config.json, the adapter weights, the tokenizer files, train_report.json,
    train_log.jsonl, and merged/ with `include_merged`. Left out: checkpoints/, merged/ (by
    default), train_run.json, dotfiles, anything else. The uploaded JSON files and the card are
    staged copies with absolute local paths replaced (relative to the folder when inside it, else
    `<local>/NAME`) and anything shaped like a Hub token masked; the folder itself is not touched.
    """
    import json
    import tempfile

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; pass an adapter folder written by `kocurate train -o`")
    folder = folder.resolve()
    repo_id = check_repo_id(repo_id)
    endpoint = check_endpoint(endpoint)
    if revision is not None and (not revision.strip() or revision.startswith(("/", "-")) or ".." in revision or " " in revision):
        raise InputError(f"--revision '{revision}' is not a valid branch name; pass e.g. --revision main or --revision v2")
    try:
        adapter_config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{folder / 'adapter_config.json'}: not readable JSON ({' '.join(str(exc).split())[:120]}); "
                         "retrain, or restore the file") from None
    if not isinstance(adapter_config, dict):
        raise InputError(f"{folder / 'adapter_config.json'}: must be a JSON object; retrain, or restore the file")
    if not any((folder / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise InputError(f"{folder}: no adapter_model.safetensors; the run did not finish writing the adapter: "
                         "rerun `kocurate train` with --resume on this folder")
    report = None
    report_path = folder / "train_report.json"
    if report_path.is_file():
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"{report_path}: not readable JSON ({' '.join(str(exc).split())[:120]}); "
                             "rerun `kocurate train` with --resume, or delete the file to publish without it") from None
        if not isinstance(report, dict):
            raise InputError(f"{report_path}: must be a JSON object; rerun `kocurate train` with --resume")
    roots = [folder]
    written_to = ((report or {}).get("config") or {}).get("output") if isinstance((report or {}).get("config"), dict) else None
    if isinstance(written_to, str) and _is_local_path(written_to):
        roots.append(Path(os.path.expanduser(written_to)))  # the folder as the run named it (it may have moved)
    readme = folder / "README.md"
    if not readme.is_file() and report is None:
        raise InputError(f"{folder}: no README.md and no train_report.json to write the model card from; "
                         "write a README.md, or retrain with `kocurate train`")
    merged = folder / "merged"
    if include_merged and not (merged / "config.json").is_file():
        raise InputError(f"{folder}: --include-merged, but there is no merged/ model; train with --merge, or drop --include-merged")

    chosen: list[Path] = [folder / n for n in ADAPTER_FILES + TOKENIZER_FILES if (folder / n).is_file()]
    if include_merged:
        chosen += sorted(p for p in merged.rglob("*")
                         if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    chosen_set = set(chosen)
    skipped: list[str] = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and path not in chosen_set and not path.is_symlink():
            top = rel.parts[0]
            if top == "checkpoints" and len(rel.parts) > 2:
                continue  # listed once as checkpoints/ below
            skipped.append(rel.as_posix())
    if any(folder.glob("checkpoints/*")):
        skipped = [s for s in skipped if not s.startswith("checkpoints/")] + ["checkpoints/"]
    if not include_merged and merged.is_dir():
        skipped = [s for s in skipped if not s.startswith("merged/")] + ["merged/ (--include-merged publishes it)"]

    staging = Path(tempfile.mkdtemp(prefix="kocurate-push-"))
    files: list[PlannedFile] = []
    warnings: list[str] = []
    found: dict[str, str] = {}
    try:
        staged: dict[str, Path] = {}
        for path in chosen:
            rel = path.relative_to(folder).as_posix()
            if path.name in _JSON_SCRUBBED:
                try:
                    value = json.loads(path.read_text(encoding="utf-8"))
                except (UnicodeDecodeError, ValueError):
                    raise InputError(f"{path}: not readable JSON; restore the file or retrain") from None
                before = len(found)
                clean = scrub_local_paths(value, roots, found)
                if clean != value or len(found) != before:
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(json.dumps(clean, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
                    staged[rel] = target
        # the card: the folder's own (paths scrubbed), or rendered from the scrubbed report
        if readme.is_file():
            text = readme.read_text(encoding="utf-8")
        else:
            from .model_card import render_model_card

            text = render_model_card(scrub_local_paths(report, roots, found), folder)
            warnings.append("the folder has no README.md: the uploaded model card is rendered from train_report.json "
                            "(`kocurate train` writes one; the local folder is left as it is)")
        card_text = _scrub_text(text, found, roots)
        _check_model_card(card_text, readme)
        if card_text != text or not readme.is_file():
            (staging / "README.md").write_text(card_text, encoding="utf-8")
            staged["README.md"] = staging / "README.md"
        if not readme.is_file():
            chosen.insert(0, folder / "README.md")
        for path in chosen:
            rel = path.relative_to(folder).as_posix()
            local = staged.get(rel, path)
            if rel == "train_log.jsonl":
                raw = path.read_text(encoding="utf-8", errors="replace")
                clean_log = _scrub_text(raw, found, roots)
                if clean_log != raw:
                    local = staging / rel
                    local.write_text(clean_log, encoding="utf-8")
            files.append(PlannedFile(rel, local, local.stat().st_size))
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    if found:
        shown = ", ".join(sorted({v for v in found.values()})[:4])
        warnings.append(f"{len(found)} local path(s) in the uploaded JSON files and card are replaced ({shown}); "
                        "the local files are unchanged")
    base = adapter_config.get("base_model_name_or_path")
    if isinstance(base, str) and _is_local_path(base):
        warnings.append(f"adapter_config.json names a local base model ({Path(base).name}); people loading the adapter "
                        "from the Hub must load that base themselves")
    if report is None:
        warnings.append("no train_report.json: the upload carries no record of the run")
    steps = (report or {}).get("steps")
    method = str(adapter_config.get("peft_type") or (report or {}).get("method") or "PEFT")
    method = {"LORA": "LoRA", "IA3": "IA3"}.get(method.upper(), method)
    message = commit_message or f"Upload {folder.name} ({method} adapter) with kocurate"
    description = (f"{method} adapter of {Path(str(base)).name if base else 'an unknown base'}"
                   + (f", {steps} steps" if steps else "") + f"; {len(files)} files; made with kocurate")
    return PushPlan(folder, repo_id, files, skipped, None, 0, endpoint, private, revision, create_pr, message,
                    warnings=warnings, staging=staging, repo_type="model", description=description)


def _check_model_card(text: str, readme: Path) -> None:
    """The card's YAML metadata must parse (huggingface_hub's ModelCard, locally)."""
    if not text.startswith("---"):
        return  # a card without metadata is allowed on the Hub; nothing to check
    from huggingface_hub import ModelCard

    try:
        ModelCard(text, ignore_metadata_errors=False)
    except Exception as exc:
        raise InputError(f"{readme}: its YAML metadata does not parse ({' '.join(str(exc).split())[:160]}); fix the block "
                         "between the --- lines, or delete README.md so push renders the card from train_report.json") from None


def check_no_token(plan: PushPlan, token: str | None) -> None:
    """Refuse to upload a file that holds the token (small text files are read; weights are not)."""
    if not token:
        return
    needle = token.encode()
    for f in plan.files:
        if f.local.suffix in _TEXT_SUFFIXES and f.size < 64 * 2**20 and needle in f.local.read_bytes():
            raise InputError(f"{plan.folder / f.path_in_repo}: holds your Hub token; remove it from the file before "
                             "publishing (nothing was sent)")
