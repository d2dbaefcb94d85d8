"""Decontamination against KoBEST-format folders and other datasets."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from kocurate.cli import main
from kocurate.curate import RunContext
from kocurate.curate.decontam import Decontaminate, NgramMatcher, kobest_items
from kocurate.errors import InputError

BOOLQ_PARAGRAPH = ("조선의 세종대왕은 집현전 학자들과 함께 백성을 가르치는 바른 소리인 훈민정음을 만들었으며, "
                   "이 문자는 오늘날 한글이라고 불리며 세계에서 가장 과학적인 문자 가운데 하나로 평가받는다.")
COPA_PREMISE = "남자는 우산을 챙기지 않고 집을 나섰다."

KOBEST = {
    "boolq": [{"paragraph": BOOLQ_PARAGRAPH, "question": "훈민정음은 세종대왕이 만들었는가?", "label": 1}],
    "copa": [{"premise": COPA_PREMISE, "question": "결과", "alternative_1": "그는 비에 흠뻑 젖었다.",
              "alternative_2": "그는 배가 고팠다.", "label": 0},
             {"premise": "아이가 넘어졌다.", "question": "원인", "alternative_1": "바닥이 미끄러웠다.",
              "alternative_2": "하늘이 맑았다.", "label": 0}],
    "hellaswag": [{"context": "요리사가 양파를 썰고 있다.", "ending_1": "그는 양파를 냄비에 넣는다.", "ending_2": "그는 잠을 잔다.",
                   "ending_3": "그는 축구를 한다.", "ending_4": "그는 노래를 부른다.", "label": 0}],
    "sentineg": [{"sentence": "이 영화는 정말 지루하고 최악이었다.", "label": 0}],
    "wic": [{"word": "배", "context_1": "배가 아파서 병원에 갔다.\t", "context_2": "배를 타고 섬으로 갔다.", "label": 0}],
}

TRAIN = [
    {"id": "t1", "instruction": "남자는 우산을 챙기지 않고 집을 나섰다. 그 결과는 무엇일까요?", "input": "", "output": "비에 젖었다."},
    {"id": "t2", "instruction": "남자가 우산을 챙기지 않은 채 집을 나섰다.", "input": "", "output": "그는 젖었다."},
    {"id": "t3", "instruction": "다음 글을 요약하세요.", "input": "", "output": BOOLQ_PARAGRAPH + " 요약: 세종이 한글을 만들었다."},
    {"id": "t4", "instruction": "파이썬으로 리스트를 정렬하는 코드를 작성하세요.", "input": "", "output": "sorted(xs)"},
    {"id": "t5", "instruction": "지구의 자전 주기는 얼마인가요?", "input": "", "output": "약 24시간입니다."},
]


def write_kobest(root: Path, configs=tuple(KOBEST)) -> Path:
    for config in configs:
        folder = root / config
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "test.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in KOBEST[config]) + "\n", encoding="utf-8")
    return root


def train_frame() -> pl.DataFrame:
    return pl.DataFrame([{**r, "source": "t"} for r in TRAIN])


def test_kobest_items_cover_all_text_fields(tmp_path):
    items = kobest_items(write_kobest(tmp_path / "kb"))
    assert set(items.counts) == {"boolq", "copa", "hellaswag", "sentineg", "wic"}
    # each text field, plus all fields of a row joined (copa: 2 rows x (3 + 1), hellaswag: 5 + 1)
    assert items.counts["copa"] == 8 and items.counts["hellaswag"] == 6
    assert "kobest/copa/test/1" in items.ids and "copa.all" in items.fields
    assert items.texts[items.ids.index("kobest/wic/test/0")] == "배가 아파서 병원에 갔다."


def test_every_row_above_threshold_goes_with_item_and_score(tmp_path):
    step = Decontaminate(data_dir=str(write_kobest(tmp_path / "kb")), threshold=0.8)
    result = step.run(train_frame(), RunContext())
    removed = {r["id"]: r for r in result.removed.iter_rows(named=True)}
    # t1 and t2 both restate the same copa premise: BOTH go (Platypus dropped only the nearest)
    assert {"t1", "t2"} <= set(removed)
    assert removed["t2"]["dup_of"] == "kobest/copa/test/0" and removed["t2"]["similarity"] >= 0.8
    assert removed["t2"]["reason"] == "benchmark-semantic" and "copa.premise" in removed["t2"]["detail"]
    # t3 copies a boolq paragraph into its output: caught by the 50-character overlap
    assert removed["t3"]["reason"] == "benchmark-ngram" and removed["t3"]["dup_of"] == "kobest/boolq/test/0"
    assert result.kept["id"].to_list() == ["t4", "t5"]
    assert result.stats["contaminated"] == 3


def test_ngram_off_keeps_verbatim_output_copy(tmp_path):
    step = Decontaminate(data_dir=str(write_kobest(tmp_path / "kb")), ngram=0)
    result = step.run(train_frame(), RunContext())
    assert "t3" in result.kept["id"].to_list()


def test_ngram_matcher_short_items_must_appear_whole(tmp_path):
    items = kobest_items(write_kobest(tmp_path / "kb"))
    matcher = NgramMatcher(items, ngram=50, min_chars=15)
    hit, rule = matcher.match("리뷰: 이 영화는 정말 지루하고 최악이었다. 라고 썼다")
    assert hit == items.texts.index("이 영화는 정말 지루하고 최악이었다.") and "whole" in rule
    assert matcher.match("이 영화는 정말 재미있었다.") == (-1, "")


def test_whole_copa_item_pasted_into_a_prompt_is_caught(tmp_path):
    """Premise and both alternatives are each under 20 characters, but together they are the item."""
    items = kobest_items(write_kobest(tmp_path / "kb"))
    matcher = NgramMatcher(items)
    prompt = "다음 중 원인으로 알맞은 것은? 아이가 넘어졌다. 1. 바닥이 미끄러웠다. 2. 하늘이 맑았다."
    hit, rule = matcher.match(prompt)
    assert items.ids[hit] == "kobest/copa/test/1" and rule == "contains every text field of the item"
    assert matcher.match("아이가 넘어졌다. 1. 바닥이 미끄러웠다. 2. 비가 왔다.") == (-1, "")


def test_missing_config_is_a_clear_error_or_a_recorded_skip(tmp_path):
    kb = write_kobest(tmp_path / "kb", configs=("boolq", "copa", "hellaswag", "sentineg"))
    with pytest.raises(InputError) as err:
        Decontaminate(data_dir=str(kb)).run(train_frame(), RunContext())
    message = str(err.value)
    assert "wic/test.jsonl: missing" in message and "--configs boolq,copa,hellaswag,sentineg" in message and "\n" not in message
    result = Decontaminate(data_dir=str(kb), skip_missing=True).run(train_frame(), RunContext())
    assert result.stats["skipped_configs"] == ["wic"]
    only = Decontaminate(data_dir=str(kb), configs=("copa",)).run(train_frame(), RunContext())
    assert set(only.stats["items_per_config"]) == {"copa"}


def test_bad_threshold_and_unknown_config(tmp_path):
    with pytest.raises(InputError, match=r"must be in \(0, 1\]"):
        Decontaminate(threshold=1.2)
    with pytest.raises(InputError, match="unknown KoBEST config"):
        kobest_items(write_kobest(tmp_path / "kb"), configs=("copa", "nli"))


def test_any_dataset_as_benchmark(tmp_path):
    bench = tmp_path / "my_eval.jsonl"
    bench.write_text(json.dumps({"question": "지구의 자전 주기는 얼마인가요?", "answer": "24시간"}, ensure_ascii=False) + "\n", encoding="utf-8")
    result = Decontaminate(against=str(bench), fields=("question",)).run(train_frame(), RunContext())
    assert result.removed["id"].to_list() == ["t5"]
    assert result.removed["dup_of"].to_list() == ["my_eval/test/0"]
    with pytest.raises(InputError, match="column\\(s\\) prompt not found"):
        Decontaminate(against=str(bench), fields=("prompt",)).load_items()


def test_cli_decontaminate(tmp_path):
    kb = write_kobest(tmp_path / "kb")
    src = tmp_path / "train.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in TRAIN) + "\n", encoding="utf-8")
    out = tmp_path / "clean"
    runner = CliRunner()
    result = runner.invoke(main, ["decontaminate", str(src), "-o", str(out), "--against", "kobest", "--data-dir", str(kb),
                                  "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "benchmark-semantic" in result.output and "decontaminate" in result.output
    removed = pl.read_parquet(next((out / "removed").glob("*.parquet")))
    assert set(removed["id"]) == {"t1", "t2", "t3"}
    shown = runner.invoke(main, ["explain", str(out), "--step", "decontaminate"])
    assert shown.exit_code == 0 and "kobest/copa/test/0" in shown.output
    missing = runner.invoke(main, ["decontaminate", str(src), "-o", str(tmp_path / "x"), "--data-dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "error:" in missing.output and "nowhere" in missing.output


def _dataset_folder(root: Path, split: str) -> Path:
    (root / "data").mkdir(parents=True)
    pl.DataFrame({"question": ["지구의 자전 주기는 얼마인가요?"]}).write_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def test_folder_benchmark_ids_name_the_split_actually_read(tmp_path):
    only_train = _dataset_folder(tmp_path / "evalset", "train")
    result = Decontaminate(against=str(only_train), fields=("question",)).run(train_frame(), RunContext())
    assert result.removed["id"].to_list() == ["t5"]
    assert result.removed["dup_of"].to_list() == ["evalset/train/0"]  # not evalset/test/0: there is no test split
    with_test = _dataset_folder(tmp_path / "withtest", "test")
    result = Decontaminate(against=str(with_test), fields=("question",)).run(train_frame(), RunContext())
    assert result.removed["dup_of"].to_list() == ["withtest/test/0"]


def test_folder_benchmark_without_the_split_names_bench_split(tmp_path):
    folder = _dataset_folder(tmp_path / "evalset", "validation")
    with pytest.raises(InputError, match="no data files for split 'test'; pass --bench-split") as err:
        Decontaminate(against=str(folder), fields=("question",)).load_items()
    assert "\n" not in str(err.value)


def test_hub_benchmark_load_failure_names_bench_split(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def fail(*args, **kwargs):
        raise ValueError("Unknown split \"test\".\nShould be one of ['train'].")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(InputError) as err:
        Decontaminate(against="someone/no-such-eval").load_items()
    msg = str(err.value)
    assert "--bench-split" in msg and "--split " not in msg and "Unknown split" in msg and "\n" not in msg


# ------------------------------------------------------------------------------ claims earned by the rows


def _write_rows(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _tags(folder: Path) -> list[str]:
    import yaml

    return yaml.safe_load((folder / "README.md").read_text().split("---")[1])["tags"]


def test_step_records_a_check_and_keeps_nothing_on_itself(tmp_path):
    from kocurate.curate import run_pipeline
    from kocurate.records import load_records

    kb = write_kobest(tmp_path / "kb")
    step = Decontaminate(data_dir=str(kb), embedder="lexical")
    out = tmp_path / "clean"
    result = run_pipeline([load_records(_write_rows(tmp_path / "train.jsonl", TRAIN))], [step], out, ctx=RunContext())
    assert step.items is None  # the benchmark items are not kept on the step
    check = result.results[-1].check
    assert check["benchmark"] == "kobest" and check["origin"]["kind"] == "local-folder" and check["split"] == "test"
    manifest = json.loads((out / "manifest.json").read_text())
    (recorded,) = manifest["checks"]
    assert recorded["step"] == "decontaminate" and recorded["rows_covered"] == result.kept.height == 3
    assert recorded["origin"]["path"] == str(kb.resolve()) and recorded["configs"] == sorted(KOBEST)
    rows = pl.read_parquet(out / "checks" / "rows.parquet")
    assert rows.height == 3 and set(rows["check"]) == {recorded["id"]}


def test_coverage_follows_the_rows_not_the_step_names(tmp_path):
    from kocurate.curate import run_pipeline
    from kocurate.records import coverage, load_records

    kb = write_kobest(tmp_path / "kb")
    clean = tmp_path / "clean"
    run_pipeline([load_records(_write_rows(tmp_path / "train.jsonl", TRAIN))], [Decontaminate(data_dir=str(kb), embedder="lexical")],
                 clean, ctx=RunContext())
    kept = pl.read_parquet(next((clean / "data").glob("*.parquet")))
    (cov,) = coverage(clean, json.loads((clean / "manifest.json").read_text()))
    assert (cov.rows, cov.covered, cov.complete) == (3, 3, True)

    # the same rows again from a file (same id and text): they were checked
    again = tmp_path / "again"
    same = _write_rows(tmp_path / "same.jsonl", kept.select("id", "instruction", "input", "output").to_dicts())
    run_pipeline([load_records(clean)], [], again)
    (cov,) = coverage(again, json.loads((again / "manifest.json").read_text()))
    assert cov.complete
    # a row whose text changed after the check is unchecked
    edited = tmp_path / "edited"
    changed = kept.with_columns(pl.when(pl.col("id") == "t4").then(pl.lit("바뀐 지시문")).otherwise(pl.col("instruction")).alias("instruction"))
    from kocurate.records import Manifest, read_checks, write_dataset_folder

    manifest = json.loads((clean / "manifest.json").read_text())
    write_dataset_folder(edited, changed, None, Manifest(), checks=read_checks(clean, manifest))
    (cov,) = coverage(edited, json.loads((edited / "manifest.json").read_text()))
    assert (cov.covered, cov.unchecked, cov.unchecked_example) == (2, 1, "t4")
    assert same.exists()
    # data/ changed by hand after the folder was written: the manifest's counts no longer hold
    shard = next((clean / "data").glob("*.parquet"))
    extra = pl.DataFrame({"id": ["hand-1"], "instruction": ["손으로 넣은 행"], "input": [""], "output": ["확인 안 됨"], "source": ["x"]})
    pl.concat([kept, extra], how="diagonal_relaxed").write_parquet(shard)
    (cov,) = coverage(clean, json.loads((clean / "manifest.json").read_text()))
    assert (cov.rows, cov.covered, cov.unchecked_example) == (4, 3, "hand-1")


def test_decontaminated_folder_plus_raw_file_through_cap_is_not_clean(tmp_path):
    """The issue's case, with the real commands: decontaminate, then cap over that folder and a raw
    file restating a COPA item. The card must not say clean nor carry the tag; push must refuse."""
    kb = write_kobest(tmp_path / "kb")
    runner = CliRunner()
    train = _write_rows(tmp_path / "train.jsonl", [{**r, "task": "qa"} for r in TRAIN])
    clean = tmp_path / "clean"
    result = runner.invoke(main, ["decontaminate", str(train), "-o", str(clean), "--data-dir", str(kb), "--embedder", "lexical",
                                  "--no-cache"])
    assert result.exit_code == 0, result.output
    assert "decontaminated" in _tags(clean) and "Result: **clean**" in (clean / "README.md").read_text()
    assert "a local sample folder (`kb`), not `skt/kobest_v1` as published on the Hub" in (clean / "README.md").read_text()

    copy = f"{COPA_PREMISE} 결과로 알맞은 것은? 그는 비에 흠뻑 젖었다. 또는 그는 배가 고팠다."
    raw = _write_rows(tmp_path / "raw.jsonl", [{"id": "raw-1", "instruction": copy, "output": "그는 비에 흠뻑 젖었다.", "task": "copa"}])
    capped = tmp_path / "capped"
    result = runner.invoke(main, ["cap", str(clean), str(raw), "-o", str(capped), "--per-task", "10"])
    assert result.exit_code == 0, result.output
    text = (capped / "README.md").read_text()
    assert "decontaminated" not in _tags(capped)
    assert "Result: **clean**" not in text and "**Not clean: 1 rows in `data/` were never checked**" in text
    assert "e.g. row `raw-1`" in text
    shown = runner.invoke(main, ["card", str(capped)])
    assert shown.exit_code == 0 and "1 of 4 rows in data/ never checked against kobest" in " ".join(shown.output.split())
    pushed = runner.invoke(main, ["push-to-hub", str(capped), "me/ko-set", "--dry-run"])
    assert pushed.exit_code == 2 and "1 of 4 rows in data/ were never checked against kobest (e.g. row raw-1)" in pushed.stderr

    # checking the combined folder again earns the claim back, and drops the COPA copy
    again = tmp_path / "again"
    result = runner.invoke(main, ["decontaminate", str(capped), "-o", str(again), "--data-dir", str(kb), "--embedder", "lexical",
                                  "--no-cache"])
    assert result.exit_code == 0, result.output
    assert "decontaminated" in _tags(again)
    assert "raw-1" in set(pl.read_parquet(next((again / "removed").glob("*.parquet")))["id"])
