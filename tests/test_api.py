"""The Python API: each step as a function over a datasets.Dataset, a polars frame or a path."""

from __future__ import annotations

import json

import datasets
import polars as pl
import pytest

import kocurate
from kocurate.errors import InputError

ROWS = [
    {"instruction": "김치찌개 끓이는 법을 알려 주세요.", "input": "", "output": "돼지고기와 김치를 볶은 뒤 물을 붓고 끓입니다.", "task": "요리"},
    {"instruction": "김치찌개 끓이는 법을 알려 주세요.", "input": "", "output": "돼지고기와 김치를 볶은 뒤 물을 붓고 끓입니다.", "task": "요리"},
    {"instruction": "헌법 제10조는 무엇을 규정하나요?", "input": "", "output": "인간의 존엄과 가치, 행복추구권을 규정합니다.", "task": "법"},
    {"instruction": "헌법 제26조는 무엇을 규정하나요?", "input": "", "output": "모든 국민의 청원권을 규정합니다.", "task": "법"},
    {"instruction": "파이썬에서 리스트를 뒤집는 방법은?", "input": "", "output": "reverse() 메서드나 [::-1] 슬라이싱을 씁니다.", "task": "코딩"},
    {"instruction": "광합성이란 무엇인가요?", "input": "", "output": "식물이 빛에너지로 양분을 만드는 과정입니다.", "task": "과학"},
]


def test_exact_dedup_on_a_datasets_dataset_returns_a_dataset_and_explains():
    ds = datasets.Dataset.from_list(ROWS)
    result = kocurate.dedup(ds, semantic=False, cache_dir=None)
    assert isinstance(result.kept, datasets.Dataset)
    assert len(result.kept) == 5 and result.removed_count == 1
    removed_id = result.pipeline.removed["id"][0]
    why = result.explain(removed_id)
    assert "removed by" in why and "김치찌개" in why
    assert "5 kept, 1 removed" in str(result)
    assert result.steps[-1]["name"] == "exact-dedup" or result.steps[-1]["name"].startswith("exact")


def test_polars_in_polars_out_and_unknown_keywords_are_refused():
    frame = pl.DataFrame(ROWS)
    result = kocurate.cap(frame, per_task=1, task_column="task", cache_dir=None)
    assert isinstance(result.kept, pl.DataFrame)
    assert sorted(result.kept["task"].to_list()) == ["과학", "법", "요리", "코딩"]
    with pytest.raises(InputError, match="unknown keyword"):
        kocurate.dedup(frame, semantic=False, no_such_setting=3)


def test_save_writes_the_dataset_folder_the_cli_writes(tmp_path):
    result = kocurate.dedup(pl.DataFrame(ROWS), semantic=False, cache_dir=None)
    out = result.save(tmp_path / "out")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows"] == 5
    assert (out / "README.md").is_file()
    loaded = datasets.load_dataset(str(out), split="train")
    assert len(loaded) == 5
    with pytest.raises(InputError, match="--overwrite"):
        result.save(out)


def test_a_path_input_and_a_list_of_dicts_work(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8")
    from_path = kocurate.dedup(str(path), semantic=False, cache_dir=None)
    assert from_path.kept.height == 5
    from_rows = kocurate.dedup(ROWS, semantic=False, cache_dir=None)
    assert isinstance(from_rows.kept, list) and len(from_rows.kept) == 5


def test_cluster_then_select_reuses_the_clusters():
    frame = pl.DataFrame(ROWS * 5).with_columns(pl.Series("ppl", [float(i) for i in range(30)]))
    clustered = kocurate.cluster(frame, clusters=2, length_groups=1, embedder="lexical", cache_dir=None)
    assert {"len_group", "cluster", "cluster_dist"} <= set(clustered.kept.columns)
    picked = kocurate.select(clustered.kept, size=4, clusters=2, length_groups=1, embedder="lexical", cache_dir=None)
    assert picked.kept.height == 4
    assert "cluster_dist" not in picked.kept.columns
    assert picked.stats("select")["clusters_from"] == "input (cluster step)"


def test_import_kocurate_stays_light():
    import subprocess
    import sys

    code = "import sys, kocurate; print(any(m in sys.modules for m in ('torch', 'datasets', 'polars', 'faiss')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
