"""The bad-input table (tests/bad_inputs.tsv): every row is a command, its input and the one line it must print.

Each row runs the real CLI on files made for it and must end with exit code 2 and exactly one
line on stderr, `error: ...`, holding the row's expected text; no traceback, no output folder.
Add a row to the table to add a case.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from kocurate.cli import main

TABLE = Path(__file__).with_name("bad_inputs.tsv")
PROGRESS = re.compile(r"^step \d+/\d+ [\w-]+: ")
KOBEST = Path(__file__).resolve().parent.parent / "samples" / "kobest"
ROWS = [{"id": "r1", "instruction": "한국의 수도는 어디인가요?", "output": "서울입니다."},
        {"id": "r2", "instruction": "광합성이란 무엇인가요?", "output": "빛으로 양분을 만드는 과정입니다."}]


def read_table() -> list[dict]:
    rows = []
    for number, line in enumerate(TABLE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        assert len(parts) == 4, f"{TABLE}:{number}: expected 4 tab-separated fields, found {len(parts)}"
        name, command, files, expected = parts
        rows.append({"name": name, "command": command, "files": files, "expected": expected, "line": number})
    return rows


# ------------------------------------------------------------------------------ makers


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _folder(path: Path, rows=ROWS, steps=()) -> Path:
    from kocurate.curate import RunContext, run_pipeline
    from kocurate.publish.card import default_card_renderer
    from kocurate.records import load_records

    source = load_records(_jsonl(path.parent / f"{path.name}.rows.jsonl", rows))
    run_pipeline([source], list(steps), path, ctx=RunContext(render_card=default_card_renderer))
    return path


def parquet_list(path):
    pl.DataFrame({"instruction": [None, ["x"]], "output": ["a", "b"]}).write_parquet(path)


def parquet_binary(path):
    pl.DataFrame({"instruction": ["a"], "output": [b"x"]}).write_parquet(path)


def parquet_struct(path):
    pl.DataFrame({"instruction": [{"a": 1}], "output": ["x"]}).write_parquet(path)


def cp949_jsonl(path):
    path.write_bytes('{"instruction": "안녕하세요", "output": "x"}\n'.encode("cp949"))


def cp949_token(path):
    path.write_bytes("토큰입니다".encode("cp949"))


def kobest(path):
    return KOBEST


def user_folder(path):
    path.mkdir()
    (path / "notes.txt").write_text("사용자 파일", encoding="utf-8")


def dataset_folder(path):
    _folder(path)


def folder_manifest_list(path):
    _folder(path)
    (path / "manifest.json").write_text("[1, 2]", encoding="utf-8")


def folder_manifest_cp949(path):
    _folder(path)
    (path / "manifest.json").write_bytes('{"inputs": [], "note": "안녕"}'.encode("cp949"))


def folder_manifest_steps_dict(path):
    _folder(path)
    (path / "manifest.json").write_text('{"steps": {}}', encoding="utf-8")


def decontaminated_plus_raw(path):
    from kocurate.curate import RunContext, run_pipeline
    from kocurate.curate.decontam import Decontaminate
    from kocurate.publish.card import default_card_renderer
    from kocurate.records import load_records

    clean = _folder(path.parent / "clean", steps=[Decontaminate(data_dir=str(KOBEST), embedder="lexical")])
    raw = _jsonl(path.parent / "raw.jsonl", [{"id": "x1", "instruction": "새로 들어온 행", "output": "확인 안 됨"}])
    run_pipeline([load_records(clean), load_records(raw)], [], path, ctx=RunContext(render_card=default_card_renderer))


def adapter_folder(path):
    """What `kocurate train` leaves: an adapter config, weights and a report (contents faked)."""
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "m"}))
    (path / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    (path / "train_report.json").write_text(json.dumps({"config": {"model": "m"}}))


MAKERS = {f.__name__: f for f in (adapter_folder, parquet_list, parquet_binary, parquet_struct, cp949_jsonl, cp949_token, kobest, user_folder,
                                  dataset_folder, folder_manifest_list, folder_manifest_cp949, folder_manifest_steps_dict,
                                  decontaminated_plus_raw)}


def materialise(spec: str, root: Path) -> dict[str, str]:
    paths = {"dir": str(root)}
    for part in filter(None, (p.strip() for p in spec.split(" ;; "))):
        name, content = part.split("=", 1)
        path = root / name
        if content.startswith("@"):
            made = MAKERS[content[1:]](path)
            path = made or path
        else:
            path.write_text(json.loads(content), encoding="utf-8", errors="surrogatepass")
        paths[name] = str(path)
    return paths


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


ROWS_TABLE = read_table()


def test_table_is_well_formed():
    names = [r["name"] for r in ROWS_TABLE]
    assert len(names) == len(set(names)) and len(names) >= 30
    for row in ROWS_TABLE:
        for part in filter(None, (p.strip() for p in row["files"].split(" ;; "))):
            content = part.split("=", 1)[1]
            assert content[1:] in MAKERS if content.startswith("@") else isinstance(json.loads(content), str), row["name"]


@pytest.mark.parametrize("row", ROWS_TABLE, ids=[r["name"] for r in ROWS_TABLE])
def test_bad_input_gives_one_line(row, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    paths = materialise(row["files"], tmp_path)
    command = row["command"]
    for name, path in paths.items():
        command = command.replace("{" + name + "}", shlex.quote(path))
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(main, shlex.split(command))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, f"{TABLE.name}:{row['line']} {row['name']}: exit {result.exit_code}\n{result.output}"
    # progress lines ("step 2/3 select: ...", printed when stderr is not a terminal) may come first
    lines = [line for line in result.stderr.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert row["expected"] in lines[0], f"{TABLE.name}:{row['line']}: expected {row['expected']!r} in {lines[0]!r}"
    assert "Traceback" not in result.output
    # the inputs are byte for byte as they were, and nothing new was written beside them
    # (no output folder, no temporaries, no lock)
    assert _snapshot(tmp_path) == before
