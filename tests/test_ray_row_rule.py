"""The row rule on Ray: candidates and the second-stage check run in the workers, the greedy
keep-first on the driver, and the rows removed (and the twin each points at) are the local ones.

Ray runs locally with 2 CPUs, one session for the module (as tests/test_engine.py)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from kocurate.curate.dedup import SemanticDedup
from kocurate.curate.step import RunContext

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def removed_pairs(frame: pl.DataFrame) -> list[tuple]:
    return sorted(frame.select("id", "reason", "dup_of").iter_rows())


def both(frame: pl.DataFrame, ray_executor, tmp_path, cells: int = 6):
    """The row rule (lexical embedder, its default threshold) locally and on Ray, probing every
    cell on Ray (the same candidate pairs as exact search)."""
    ctx = RunContext(seed=7, cache_dir=tmp_path / "cache")
    local = SemanticDedup(embedder="lexical").run(frame, ctx)
    ray_executor.nlist, ray_executor.nprobe = cells, cells
    try:
        remote, record = ray_executor.run_step(SemanticDedup(embedder="lexical"), frame, ctx)
    finally:
        ray_executor.nlist = ray_executor.nprobe = None
    return local, remote, record


def _templated_and_twins() -> list[dict]:
    """One question per article (none may go), plus rows with the same prompt and another answer
    (kept), and the same prompt and answer retyped (removed, found by the exact-text key too)."""
    rows = [{"id": f"art{n}", "instruction": f"헌법 제{n}조는 무엇을 규정하나요?", "input": "",
             "output": f"헌법 제{n}조는 {what}을(를) 규정합니다."}
            for n, what in zip(range(10, 40), ["인간의 존엄", "평등", "신체의 자유", "형벌 불소급", "거주 이전의 자유"] * 6)]
    return rows + [
        {"id": "t1", "instruction": "김치찌개를 맛있게 끓이는 방법을 알려 주세요.", "input": "",
         "output": "잘 익은 김치와 돼지고기를 먼저 볶은 뒤 물을 붓고 푹 끓입니다."},
        {"id": "t2", "instruction": "김치찌개를 맛있게 끓이는 방법을 알려 주세요.", "input": "",
         "output": "돼지고기 대신 참치 통조림을 넣고 신김치를 충분히 볶아서 끓이면 됩니다."},
        {"id": "t3", "instruction": "김치찌개를  맛있게 끓이는 방법을 알려 주세요!", "input": "",
         "output": "잘 익은 김치와 돼지고기를 먼저 볶은 뒤 물을 붓고 푹  끓입니다."},
    ]


def test_samples_and_templated_articles_same_removals_as_local(ray_executor, tmp_path):
    """The samples (planted near-duplicates) and the templated law-article case, in one Ray run."""
    samples = pl.read_ndjson(SAMPLES / "ko_instructions.jsonl").head(1500)  # half the sample: a shorter test
    extra = pl.DataFrame(_templated_and_twins()).with_columns(pl.lit("test").alias("source"))
    frame = pl.concat([samples, extra.select([c for c in samples.columns if c in extra.columns])], how="diagonal_relaxed")
    local, remote, record = both(frame, ray_executor, tmp_path)
    assert local.stats["semantic_duplicates"] > 30  # the sample has planted near-duplicates
    assert removed_pairs(remote.removed) == removed_pairs(local.removed)
    assert remote.kept["id"].to_list() == local.kept["id"].to_list()
    assert record.stats["semantic_duplicates"] == local.stats["semantic_duplicates"]
    assert "second stage in the workers" in record.stats["engine"]  # not gathered to the driver
    # the templated articles all stay; the retyped twin goes, the other answer stays
    gone = dict(remote.removed.select("id", "dup_of").iter_rows())
    assert not [rid for rid in gone if rid.startswith("art")]
    assert gone.get("t3") == "t1" and "t2" not in gone
    # every removal says which path of the row rule fired and its signals, as the local one does
    details = dict(remote.removed.select("id", "detail").iter_rows())
    for rid, detail in local.removed.select("id", "detail").iter_rows():
        assert details[rid].split(": ")[0] == detail.split(": ")[0]
        assert details[rid].startswith("row rule (")
