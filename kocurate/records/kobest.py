"""KoBEST data in the Hub's layout ({config}/{split}.jsonl), shared by decontamination and evaluation.

Text is returned exactly as stored: KoBEST's wic contexts can end in a tab, and scores depend on it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError, first_line

HUB_ID = "skt/kobest_v1"
SPLITS = ("train", "validation", "test")

#: config -> fields every row must have
FIELDS: dict[str, tuple[str, ...]] = {
    "boolq": ("paragraph", "question", "label"),
    "copa": ("premise", "question", "alternative_1", "alternative_2", "label"),
    "hellaswag": ("context", "ending_1", "ending_2", "ending_3", "ending_4", "label"),
    "sentineg": ("sentence", "label"),
    "wic": ("word", "context_1", "context_2", "label"),
}
#: config -> the fields whose text a training row could restate (for decontamination)
TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "boolq": ("paragraph", "question"),
    "copa": ("premise", "alternative_1", "alternative_2"),
    "hellaswag": ("context", "ending_1", "ending_2", "ending_3", "ending_4"),
    "sentineg": ("sentence",),
    "wic": ("context_1", "context_2"),
}
CONFIGS = tuple(FIELDS)


def config_name(task: str) -> str:
    """Accept `copa` or `kobest_copa`."""
    name = task.removeprefix("kobest_")
    if name not in FIELDS:
        raise InputError(f"unknown KoBEST task '{task}'; known: {', '.join('kobest_' + c for c in CONFIGS)}")
    return name


def load_split(task: str, split: str = "test", data_dir: str | Path | None = None) -> list[dict]:
    """Rows of one KoBEST config and split, from `data_dir` (Hub layout) or the Hub."""
    config = config_name(task)
    if split not in SPLITS:
        raise InputError(f"unknown split '{split}' for kobest_{config}; use one of {', '.join(SPLITS)}")
    rows = _read_local(Path(data_dir), config, split) if data_dir else _read_hub(config, split)
    missing = [f for f in FIELDS[config] if rows and f not in rows[0]]
    if missing:
        where = Path(data_dir) / config / f"{split}.jsonl" if data_dir else f"{HUB_ID}:{config}/{split}"
        raise InputError(f"{where}: missing field(s) {', '.join(missing)}; kobest_{config} needs {', '.join(FIELDS[config])}")
    return rows


def _read_local(data_dir: Path, config: str, split: str) -> list[dict]:
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: KoBEST data folder not found; pass --data-dir with {{config}}/{{split}}.jsonl inside")
    path = data_dir / config / f"{split}.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: missing; a KoBEST data folder needs {config}/{split}.jsonl (Hub layout of {HUB_ID})")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: malformed JSON line ({exc.msg}); fix or delete that line") from None
    return rows


def origin(data_dir: str | Path | None = None) -> dict:
    """Where KoBEST rows come from, for the record: a local folder (not the benchmark as
    published) or the Hub dataset at the commit the local Hub cache (or the Hub) names."""
    if data_dir is not None:
        return {"kind": "local-folder", "path": str(Path(data_dir).resolve()), "hub_id": HUB_ID}
    from .load import hub_commit

    return {"kind": "hub", "path": HUB_ID, "commit": hub_commit(HUB_ID)}


def _read_hub(config: str, split: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(HUB_ID, config, split=split)
    except Exception as exc:
        raise InputError(
            f"{HUB_ID} ({config}/{split}) could not be loaded from the Hub ({first_line(exc, 160)}); "
            f"offline? pass --data-dir with the Hub's layout ({{config}}/{{split}}.jsonl)"
        ) from None
    return [dict(row) for row in ds]
