"""Dataset folders in Hub layout, and the one way every command writes its output.

Nothing a user owns is lost. Every command that writes (dataset folders, adapters, evaluation
results, reports) goes through `output_guard`:

* the output may not be an input, lie inside one, or hold one; a non-empty output is refused
  without `overwrite`; an output under a file or in an unwritable folder is a one-line error;
* a lock (``.NAME.lock`` beside the output, `fcntl.flock`) is held for the whole run: a second
  concurrent writer to the same output gets a one-line error instead of racing the first;
* everything is written to a temporary sibling folder ``.NAME.tmp-PID-RAND`` and moved into
  place with one rename. Replacing an existing output (`overwrite`) swaps the two folders with
  ``renameat2(RENAME_EXCHANGE)`` where the kernel and file system offer it, so the output path
  always holds either the old or the new folder. Elsewhere it falls back to two renames (old
  -> ``.NAME.old-PID``, new -> NAME); a run killed between them leaves ``.NAME.old-*`` and no
  output, and the next run on that output puts the old folder back before doing anything;
* temporaries left by killed runs (``.NAME.tmp-*``, ``.NAME.old-*`` beside a present output)
  are removed by the next run on that output, under the lock, so they cannot belong to a live run;
* folders are created with mode 0777 and files with 0666, both less the umask (never 0700),
  so teammates on a shared server can read them when the umask lets them.

`write_text_atomic` / `write_json_atomic` / `write_bytes_atomic` are the same promise for one
file: a temporary sibling, fsync, `os.replace`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import secrets
import shutil
import signal
import threading
from pathlib import Path
from typing import Callable, Iterator

import polars as pl

from ..errors import InputError
from .load import files_fingerprint
from .manifest import Manifest
from .schema import canonical_order

#: Rows per parquet shard; the Hub names shards train-00000-of-0000N.parquet.
SHARD_ROWS = 500_000

CardRenderer = Callable[[Path, dict], str]

# --------------------------------------------------------------------------------------------
# the guard


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path("/")


def check_output(out: str | Path, inputs: list[str | Path] | tuple = (), overwrite: bool = False) -> Path:
    """Refuse an output that is an input, lies inside one, holds one, or holds something (without
    overwrite); that lies under a file; or whose folder cannot be written. Returns it resolved."""
    out = Path(out).expanduser().resolve()
    for source in inputs:
        src = Path(source).expanduser()
        if not src.exists():
            continue
        src = src.resolve()
        if out == src or src in out.parents or (src.is_dir() and out.is_relative_to(src)):
            raise InputError(f"{out}: the output would be written over or inside the input {src}; choose another -o")
        if out.is_dir() and src.is_relative_to(out):
            raise InputError(f"{out}: the output folder holds the input {src}; choose another -o")
    existing = _nearest_existing(out)
    if existing != out and not existing.is_dir():
        raise InputError(f"{out}: {existing} is a file, so no folder can be made under it; choose another -o")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another -o")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: folder exists and is not empty; pass --overwrite to replace it, or choose another -o")
    writable = existing if existing != out else out.parent
    if not os.access(writable, os.W_OK | os.X_OK):
        raise InputError(f"{out}: cannot write in {writable} (permission denied); choose another -o")
    return out


def _make_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # mode 0777 less the umask
    except (NotADirectoryError, FileExistsError):
        raise InputError(f"{out}: {_nearest_existing(out.parent)} is a file, so no folder can be made under it; choose another -o") from None
    except PermissionError:
        raise InputError(f"{out}: cannot create {out.parent} (permission denied); choose another -o") from None
    except OSError as exc:
        raise InputError(f"{out}: cannot create {out.parent} ({exc.strerror}); choose another -o") from None


def _os_error(out: Path, exc: OSError, doing: str) -> InputError:
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputError(f"{out}: cannot {doing} in {out.parent} ({exc.strerror}); choose another -o or fix its permissions")
    return InputError(f"{out}: cannot {doing} ({exc.strerror or exc}); choose another -o")


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold ``.NAME.lock`` beside `out` for the block; a second holder gets a one-line error.

    The lock file is removed on release. A process that opened it just before that retries on
    the new file (the inode check), so two writers can never both believe they hold the lock.
    """
    out = Path(out)
    lock = out.with_name(f".{out.name}.lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise _os_error(out, exc, "create the lock file") from None
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise InputError(
                f"{out}: another kocurate run{who} is writing this output right now; wait for it to finish or choose another -o"
            ) from None
        except ImportError:  # no fcntl (Windows): no lock, the rest still holds
            pass
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file we locked was removed by its previous holder: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield out
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _siblings(out: Path, kind: str) -> list[Path]:
    prefix = f".{out.name}.{kind}-"
    try:
        return sorted(p for p in out.parent.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []


def recover(out: str | Path) -> list[str]:
    """Undo what killed runs left beside `out` (call with the lock held). Returns what was done.

    A ``.NAME.old-*`` folder with no NAME is the user's previous output caught between the two
    renames of a replace: it is put back. Every ``.NAME.tmp-*`` and any other ``.NAME.old-*`` is
    a dead run's temporary and is removed.
    """
    out = Path(out)
    done = []
    olds = _siblings(out, "old")
    if olds and not out.exists():
        keep = max(olds, key=lambda p: p.stat().st_mtime)
        keep.rename(out)
        olds.remove(keep)
        done.append(f"restored {out} from {keep.name}")
    for stale in olds + _siblings(out, "tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                stale.unlink()
        done.append(f"removed {stale.name}")
    return done


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _commit(tmp: Path, out: Path) -> None:
    """Move `tmp` to `out`; an existing `out` is replaced so that one of the two is always there."""
    if not out.exists():
        tmp.rename(out)
        return
    if _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old output
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{secrets.token_hex(3)}")
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit for the block, so `kill` cleans the temporary up too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def output_guard(out: str | Path, inputs: list[str | Path] | tuple = (), overwrite: bool = False) -> Iterator[Path]:
    """The guard every writing command uses: yields an empty temporary folder to write into.

    On a normal exit of the block the temporary becomes `out` (one rename, or an atomic swap
    when replacing); on any exception, Ctrl-C or SIGTERM it is removed and `out` is untouched.
    The lock on `out` is held from before the checks until after the rename.
    """
    out = check_output(out, inputs, overwrite)
    _make_parent(out)
    with output_lock(out):
        recover(out)
        check_output(out, inputs, overwrite)  # again: a restored folder, or another run's output
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
        try:
            tmp.mkdir(0o777)  # less the umask, like any folder a user makes
        except OSError as exc:
            raise _os_error(out, exc, "create a temporary folder") from None
        try:
            with _sigterm_as_exit():
                yield tmp
                _commit(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


# --------------------------------------------------------------------------------------------
# one file, atomically


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `path` through a temporary sibling and one `os.replace` (fsync'd first).

    A new file gets 0666 less the umask; an existing file keeps its mode. Temporaries of dead
    processes beside `path` are removed.
    """
    path = Path(path)
    _make_parent(path)
    for stale in _siblings(path, "tmp"):
        pid = stale.name.rsplit(".tmp-", 1)[-1].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                stale.unlink()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        mode = path.stat().st_mode & 0o7777 if path.exists() else None
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise _os_error(path, exc, "write a file") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | Path, value) -> Path:
    return write_text_atomic(path, json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------
# dataset folders


def write_dataset_folder(
    out: str | Path,
    kept: pl.DataFrame,
    removed: pl.DataFrame | None,
    manifest: Manifest,
    *,
    overwrite: bool = False,
    render_card: CardRenderer | None = None,
    inputs: list[str | Path] | tuple = (),
    checks: list | None = None,
) -> Path:
    """Write data/, removed/, checks/, manifest.json and README.md to `out` through `output_guard`."""
    out = Path(out)
    with output_guard(out, inputs, overwrite=overwrite) as tmp:
        fill_dataset_folder(tmp, kept, removed, manifest, render_card=render_card, checks=checks)
    return out.expanduser().resolve()


def fill_dataset_folder(
    folder: Path,
    kept: pl.DataFrame,
    removed: pl.DataFrame | None,
    manifest: Manifest,
    *,
    render_card: CardRenderer | None = None,
    checks: list | None = None,
) -> None:
    """Write a dataset folder's files into `folder` (the guard's temporary folder)."""
    from .checks import write_checks

    kept = canonical_order(kept)
    shards = write_split(folder / "data", kept)
    if removed is not None and removed.height:
        write_split(folder / "removed", canonical_order(removed))
    manifest.rows = kept.height
    manifest.removed_rows = removed.height if removed is not None else 0
    manifest.columns = kept.columns
    manifest.data_fingerprint = files_fingerprint(shards)
    manifest.checks = write_checks(folder, kept, checks or [])
    manifest.write(folder / "manifest.json")
    render = render_card or minimal_card
    (folder / "README.md").write_text(render(folder, manifest.to_dict()), encoding="utf-8")


def write_split(folder: Path, frame: pl.DataFrame, split: str = "train") -> list[Path]:
    """Write `frame` as the Hub's shards of `split` into `folder` (created)."""
    folder.mkdir(parents=True)
    count = max(1, -(-frame.height // SHARD_ROWS))
    paths = []
    for index in range(count):
        path = folder / f"{split}-{index:05d}-of-{count:05d}.parquet"
        frame.slice(index * SHARD_ROWS, SHARD_ROWS).write_parquet(path, compression="zstd")
        paths.append(path)
    return paths


def removed_files(folder: str | Path) -> list[Path]:
    """The parquet shards of a folder's removed/ (rows steps dropped)."""
    return sorted((Path(folder) / "removed").glob("train-*.parquet"))


def read_removed(folder: str | Path, columns: list[str] | None = None, steps: list[str] | None = None) -> pl.DataFrame:
    """A folder's removed/ rows (empty frame when none), optionally only some columns or steps."""
    from .load import read_table

    files = removed_files(folder)
    if not files:
        return pl.DataFrame()
    if columns is None and steps is None:
        return pl.concat([read_table(f) for f in files], how="diagonal_relaxed")
    import pyarrow.parquet as pq

    scans = []
    for f in files:
        names = pq.read_schema(f).names
        if steps is not None and "step" not in names:
            continue
        scan = pl.scan_parquet(f)
        if steps is not None:
            scan = scan.filter(pl.col("step").is_in(list(steps)))
        if columns is not None:
            scan = scan.select([c for c in columns if c in names])
        scans.append(scan)
    if not scans:
        return pl.DataFrame()
    return pl.concat(scans, how="diagonal_relaxed").collect()


def hub_configs(folder: str | Path) -> list[dict]:
    """The card's `configs`: data/ is the default config, removed/ (when it has rows) its own."""
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    if removed_files(folder):
        configs.append({"config_name": "removed", "data_files": [{"split": "train", "path": "removed/train-*"}]})
    return configs


def hub_configs_yaml(folder: Path) -> str:
    """`hub_configs` as the YAML block a card starts with."""
    lines = ["configs:"]
    for config in hub_configs(folder):
        lines += [f"- config_name: {config['config_name']}", "  data_files:"]
        for spec in config["data_files"]:
            lines += [f"  - split: {spec['split']}", f"    path: {spec['path']}"]
    return "\n".join(lines)


def minimal_card(folder: Path, manifest: dict) -> str:
    """A small valid card; the publish room renders the full one."""
    steps = "\n".join(
        f"- `{s['name']}`: {s['rows_in']} -> {s['rows_out']} rows" for s in manifest.get("steps", [])
    ) or "- (no steps)"
    inputs = "\n".join(f"- {i['name']} ({i['kind']}, {i['rows']} rows)" for i in manifest.get("inputs", []))
    return (
        "---\n"
        "language:\n- ko\n"
        f"{hub_configs_yaml(folder)}\n"
        "tags:\n- kocurate\n"
        "---\n\n"
        f"# {folder.name.split('.tmp-')[0].lstrip('.')}\n\n"
        f"Made by kocurate {manifest.get('tool_version')}: {manifest.get('rows')} rows.\n\n"
        f"## Inputs\n\n{inputs}\n\n## Steps\n\n{steps}\n"
    )
