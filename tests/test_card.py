"""Dataset cards: Hub metadata from the files, prose from the manifest, round trip through datasets."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from kocurate.cli import main
from kocurate.errors import InputError
from kocurate.publish import card as cards
from kocurate.publish.card import render_card, size_category, validate_card
from kocurate.publish.licenses import (
    LICENSES,
    combined_license,
    commercial_status,
    lookup,
)
from kocurate.records import (
    Manifest,
    StepRecord,
    new_check,
    removal_frame,
    write_dataset_folder,
)

ROWS = [
    ("ko-0", "한국의 수도는 어디인가요?", "", "대한민국의 수도는 서울입니다."),
    ("ko-1", "김치찌개 끓이는 법을 알려 주세요.", "", "김치와 돼지고기를 볶은 뒤 물을 붓고 끓입니다."),
    ("ko-2", "다음 문장을 영어로 번역하세요.", "오늘 날씨가 좋네요.", "The weather is nice today."),
    ("ko-3", "광합성이란 무엇인가요?", "", "식물이 빛 에너지로 양분을 만드는 과정입니다."),
    ("ko-4", "세종대왕의 업적을 | 표로 정리해 줘.", "", "| 업적 | 연도 |\n| 한글 창제 | 1443 |"),
]


def kept_frame(extra: bool = False) -> pl.DataFrame:
    frame = pl.DataFrame({"id": [r[0] for r in ROWS], "instruction": [r[1] for r in ROWS], "input": [r[2] for r in ROWS],
                          "output": [r[3] for r in ROWS], "source": ["kopen-platypus"] * len(ROWS)})
    if extra:  # KoQuality-style columns of other types
        frame = frame.with_columns(pl.Series("len", [13, 18, 16, 12, 19], dtype=pl.Int64),
                                   pl.Series("ppl", [12.5, 30.1, 8.2, 15.0, 22.2]),
                                   pl.Series("cluster", [0, 1, 0, 2, 1], dtype=pl.Int32))
    return frame


def build(tmp_path, *, recipe=None, decontam=True, inputs=None, extra=False, name="ko-curated"):
    dropped = pl.DataFrame({"id": ["ko-8", "ko-9"], "instruction": ["한국의 수도는 어디?", "남자가 넘어졌다. 원인은?"],
                            "input": ["", ""], "output": ["서울.", "바닥이 미끄러웠다."], "source": ["kopen-platypus"] * 2})
    parts = [removal_frame(dropped.head(1), "dedup", "near-duplicate", "ko-0", 0.93)]
    manifest = Manifest(seed=42, recipe=recipe)
    manifest.inputs.extend(inputs or [{"name": "kyujinpy/KOpen-platypus", "kind": "hub", "path": "kyujinpy/KOpen-platypus",
                                       "fingerprint": "rev", "rows": 7, "preset": "kopen-platypus", "mapping": {}, "split": "train"}])
    manifest.add_step(StepRecord("dedup", {"threshold": 0.7, "embedder": "lexical"}, 7, 6, {"near-duplicate": 1}, 0.12))
    if decontam:
        parts.append(removal_frame(dropped.tail(1), "decontaminate", "benchmark-match", "kobest/copa/test/17", 0.912))
        manifest.add_step(StepRecord("decontaminate", {"against": "kobest", "threshold": 0.8}, 6, 5, {"benchmark-match": 1}, 0.2))
    removed = pl.concat(parts, how="diagonal_relaxed")
    # the check a real decontaminate step records: every kept row passed it
    checks = [new_check({"step": "decontaminate", "benchmark": "kobest", "configs": ["copa"],
                         "origin": {"kind": "hub", "path": "skt/kobest_v1", "commit": "unresolved"}}, kept_frame(extra))] if decontam else None
    return write_dataset_folder(tmp_path / name, kept_frame(extra), removed, manifest, render_card=render_card, checks=checks)


def test_round_trip_load_dataset_and_card_validates(tmp_path):
    import datasets
    import pyarrow.parquet as pq
    from huggingface_hub import DatasetCard

    folder = build(tmp_path, recipe="recipes/kopen-platypus.yaml", extra=True)
    ds = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == len(ROWS) and ds["instruction"][4] == ROWS[4][1]
    removed = datasets.load_dataset(str(folder), "removed", split="train", cache_dir=str(tmp_path / "cache"))
    assert sorted(removed["reason"]) == ["benchmark-match", "near-duplicate"]

    card = DatasetCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["language"] == ["ko"] and data["size_categories"] == ["n<1K"] and data["task_categories"] == ["text-generation"]
    assert data["license"] == "cc-by-4.0" and data["source_datasets"] == ["kyujinpy/KOpen-platypus"]
    assert data["pretty_name"] == "ko-curated"  # the temp folder's name never leaks into the card
    assert [c["config_name"] for c in data["configs"]] == ["default", "removed"]
    info = {i["config_name"]: i for i in data["dataset_info"]}
    assert info["default"]["splits"][0]["num_examples"] == len(ROWS) and info["removed"]["splits"][0]["num_examples"] == 2
    # features are exactly what `datasets` derives from the parquet schema
    for config, sub in (("default", "data"), ("removed", "removed")):
        schema = pq.read_schema(next((folder / sub).glob("*.parquet")))
        assert info[config]["features"] == datasets.Features.from_arrow_schema(schema)._to_yaml_list()
    assert validate_card((folder / "README.md").read_text(), folder) == []
    assert "kopen-platypus" in data["tags"] and "decontaminated" in data["tags"]


def test_prose_carries_steps_removals_contamination_and_columns(tmp_path):
    text = (build(tmp_path) / "README.md").read_text()
    assert "| 1 | `dedup` | threshold=0.7, embedder=lexical | 7 | 6 | near-duplicate: 1 |" in text
    assert "| 2 | `decontaminate` | against=kobest, threshold=0.8 | 6 | 5 | benchmark-match: 1 |" in text
    assert "| near-duplicate | 1 |" in text and "| benchmark-match | 1 |" in text
    assert "Result: **clean**" in text and "| kobest/copa/test | 1 |" in text
    assert "| ko-9 | kobest/copa/test/17 | 0.912 | benchmark-match |" in text
    assert "| `instruction` | large_string | the instruction or question |" in text
    assert 'load_dataset("YOUR_NAME/ko-curated", "removed", split="train")' in text
    assert "arXiv:2308.07317" in text  # the original work to cite
    assert "Not checked" not in text


def test_no_decontamination_step_is_stated(tmp_path):
    folder = build(tmp_path, decontam=False)
    text = (folder / "README.md").read_text()
    assert "**Not checked.** No decontamination step ran" in text
    assert "Benchmark contamination was not checked." in text
    assert "decontaminated" not in yaml.safe_load(text.split("---")[1])["tags"]
    assert cards.read_contamination(folder, json.loads((folder / "manifest.json").read_text())).status == "not checked"


def test_mixed_and_noncommercial_licenses_are_flagged(tmp_path):
    inputs = [
        {"name": "oig", "kind": "file", "path": "oig.jsonl", "fingerprint": "x", "rows": 3, "preset": "oig-ko", "mapping": {}, "split": None},
        {"name": "kaist-ai/CoT-Collection", "kind": "hub", "path": "kaist-ai/CoT-Collection", "fingerprint": "r", "rows": 4,
         "preset": "cot-collection", "mapping": {}, "split": "train"},
    ]
    text = (build(tmp_path, inputs=inputs, recipe="cot-capped") / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["license"] == "other" and meta["license_name"] == "mixed-see-card"
    assert meta["source_datasets"] == ["heegyu/OIG-small-chip2-ko", "kaist-ai/CoT-Collection"]
    assert "Commercial use: **no**" in text
    assert "non-commercial research only" in text and "different licenses (apache-2.0, cc-by-4.0)" in text
    assert "non-commercial use only" in text  # CoT-Collection's own repository disagrees with its Hub card
    assert "[RESULT]" in text  # the cot-capped template's method section


def test_license_table_rules():
    assert set(LICENSES) >= {h.lower() for h in ("garage-bAInd/Open-Platypus", "kyujinpy/KOpen-platypus", "beomi/KoAlpaca-v1.1a",
                                                 "nlpai-lab/kullm-v2", "heegyu/OIG-small-chip2-ko", "kaist-ai/CoT-Collection",
                                                 "DILAB-HYU/KoQuality")}
    oig, kopen, koalpaca = lookup(preset="oig-ko"), lookup("KYUJINPY/KOpen-platypus"), lookup(preset="koalpaca")
    assert combined_license([oig]) == ("apache-2.0", None) and commercial_status([oig]) == "yes"
    assert commercial_status([oig, kopen]) == "no"  # translation of non-commercial parts
    assert combined_license([oig, koalpaca]) == ("other", "mixed-see-card") and commercial_status([oig, None]) == "unclear"
    assert lookup("someone/unknown") is None


@pytest.mark.parametrize("rows,expected", [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (4_006, "1K<n<10K"),
                                           (24_926, "10K<n<100K"), (384_067, "100K<n<1M"), (1_837_928, "1M<n<10M")])
def test_size_categories(rows, expected):
    assert size_category(rows) == expected


@pytest.mark.parametrize("recipe,marker", [("kopen-platypus", "Platypus refinement"),
                                           ("koquality (recipes/koquality.yaml)", "KoQuality (HCLT 2023)"),
                                           ("cot-capped", "caps the CoT Collection per task"), (None, None)])
def test_recipe_templates_render_and_validate(tmp_path, recipe, marker):
    folder = build(tmp_path, recipe=recipe)
    text = (folder / "README.md").read_text()
    assert validate_card(text, folder) == []
    if marker:
        assert marker in text
    else:
        assert "## Method" not in text


def test_custom_template_extends_generic_and_missing_template_errors(tmp_path):
    folder = build(tmp_path)
    custom = tmp_path / "mine.md.j2"
    custom.write_text('{% extends "generic.md.j2" %}{% block method %}\n## 우리 방법\n\n직접 고른 행입니다.\n{% endblock %}\n')
    manifest = json.loads((folder / "manifest.json").read_text())
    text = render_card(folder, manifest, str(custom))
    assert "## 우리 방법" in text and validate_card(text, folder) == []
    with pytest.raises(InputError, match=r"card template .nope. not found .*generic, kopen-platypus, koquality"):
        render_card(folder, manifest, "nope")
    with pytest.raises(InputError, match="missing.j2 not found"):
        render_card(folder, manifest, str(tmp_path / "missing.j2"))
    broken = tmp_path / "broken.md.j2"
    broken.write_text("---\n{{ metadata_yaml }}---\n{{ no_such_variable }}\n")
    with pytest.raises(InputError, match="broken.md.j2.*no_such_variable.*fix the template"):
        render_card(folder, manifest, str(broken))


def test_default_renderer_falls_back_to_minimal_card(tmp_path, monkeypatch):
    from kocurate.publish.card import default_card_renderer

    def boom(folder, manifest, template=None, **kw):
        raise InputError("card template x.md.j2:3: broken; fix the template")

    monkeypatch.setattr(cards, "render_card", boom)
    manifest = Manifest(seed=1)
    manifest.inputs.append({"name": "s", "kind": "file", "path": "s.jsonl", "fingerprint": "x", "rows": 5, "preset": None,
                            "mapping": {}, "split": None})
    folder = write_dataset_folder(tmp_path / "fallback", kept_frame(), None, manifest, render_card=default_card_renderer)
    text = (folder / "README.md").read_text()
    assert "configs:" in text and "the full card failed (card template x.md.j2:3: broken" in text


def test_validate_card_catches_stale_and_broken_cards(tmp_path):
    folder = build(tmp_path)
    text = (folder / "README.md").read_text()
    stale = text.replace("num_examples: 5", "num_examples: 50")
    assert any("has 50 rows, data/ holds 5" in p for p in validate_card(stale, folder))
    assert validate_card("# no metadata\n") == ["README.md has no YAML metadata block (it must start with ---)"]
    assert validate_card("---\nlanguage: [ko\n---\n")[0].startswith("metadata does not parse")
    assert "metadata lacks `license`" in validate_card("---\nlanguage:\n- ko\n---\n")


def test_card_command_refreshes_checks_and_prints(tmp_path):
    folder = build(tmp_path)
    (folder / "README.md").write_text("---\nlanguage:\n- ko\n---\nold card\n")
    runner = CliRunner()
    result = runner.invoke(main, ["card", str(folder), "--check"])
    assert result.exit_code == 2 and "kocurate card" in result.stderr
    result = runner.invoke(main, ["card", str(folder), "--repo-id", "me/ko-curated", "--card-template", "koquality"])
    assert result.exit_code == 0, result.output
    for text in ("koquality.md.j2", "cc-by-4.0", "clean against kobest", "dedup -> decontaminate", "validated"):
        assert text in result.output
    readme = (folder / "README.md").read_text()
    assert 'load_dataset("me/ko-curated", split="train")' in readme and "KoQuality (HCLT 2023)" in readme
    assert runner.invoke(main, ["card", str(folder), "--check"]).exit_code == 0
    printed = runner.invoke(main, ["card", str(folder), "--stdout"])
    assert printed.exit_code == 0 and printed.output.startswith("---\nlanguage:")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(main, ["card", str(empty)])
    assert result.exit_code == 2 and "no data/train-*.parquet" in result.stderr


# ------------------------------------------------------------------------------ every sentence from the rows


def _local_folder(tmp_path, rows, name="local-set"):
    from kocurate.curate import RunContext, run_pipeline
    from kocurate.records import load_records

    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / name
    run_pipeline([load_records(path)], [], out, ctx=RunContext(render_card=render_card))
    return out


def _meta(text):
    return yaml.safe_load(text.split("---")[1])


def test_local_card_states_only_what_its_rows_say(tmp_path):
    rows = [{"instruction": f"질문 {i}", "output": f"답 {i}", "source": f"corpus-{i % 10}", "task": f"task-{i % 4}",
             "rationale": "생각", "target": "답"} for i in range(20)]
    text = (_local_folder(tmp_path, rows) / "README.md").read_text()
    assert "(10 sources)" in text and "| corpus-0 | 2 |" in text
    for claim in ("machine-translat", "machine translation", "generated by language models", "CoT-Collection rows"):
        assert claim not in text, claim
    assert "| `task` | large_string | the task each row belongs to: 4 distinct values (`task-0`, `task-1`, `task-2`, ...) |" in text
    assert _meta(text)["license"] == "other" and "decontaminated" not in _meta(text)["tags"]
    assert "Benchmark contamination was not checked." in text


def test_sources_whose_cards_say_so_get_the_limitation(tmp_path):
    inputs = [{"name": "nlpai-lab/kullm-v2", "kind": "hub", "path": "nlpai-lab/kullm-v2", "fingerprint": "r", "rows": 7,
               "preset": "kullm", "mapping": {}, "split": "train"}]
    text = (build(tmp_path, inputs=inputs) / "README.md").read_text()
    assert "Rows from nlpai-lab/kullm-v2 are machine translations (as their own cards say)" in text
    assert "Rows from nlpai-lab/kullm-v2 contain text generated by language models" in text


def test_license_flag_and_per_row_license_column(tmp_path):
    rows = [{"instruction": f"질문 {i}", "output": f"답 {i}", "license": "cc-by-4.0" if i < 3 else "apache-2.0"} for i in range(5)]
    folder = _local_folder(tmp_path, rows)
    text = (folder / "README.md").read_text()
    assert _meta(text)["license"] == "other" and _meta(text)["license_name"] == "mixed-see-card"
    assert "| cc-by-4.0 | 3 |" in text and "| apache-2.0 | 2 |" in text and "Commercial use: **yes**" in text

    one = _local_folder(tmp_path, [{"instruction": "질문", "output": "답", "license": "cc-by-nc-4.0"}], name="one")
    text = (one / "README.md").read_text()
    assert _meta(text)["license"] == "cc-by-nc-4.0" and "Commercial use: **no**" in text

    result = CliRunner().invoke(main, ["card", str(folder), "--license", "mit"])
    assert result.exit_code == 0, result.output
    text = (folder / "README.md").read_text()
    assert _meta(text)["license"] == "mit" and "License declared by the publisher: `mit`" in text
    assert json.loads((folder / "manifest.json").read_text())["license"] == "mit"  # later cards keep it
    assert _meta(CliRunner().invoke(main, ["card", str(folder), "--stdout"]).output)["license"] == "mit"
    custom = CliRunner().invoke(main, ["card", str(folder), "--license", "My Lab Terms 1.0", "--stdout"])
    assert _meta(custom.output)["license"] == "other" and _meta(custom.output)["license_name"] == "my-lab-terms-1.0"


def test_old_template_flag_still_works_with_a_hint(tmp_path):
    folder = build(tmp_path)
    result = CliRunner().invoke(main, ["card", str(folder), "--template", "koquality", "--stdout"])
    assert result.exit_code == 0 and "KoQuality (HCLT 2023)" in result.stdout
    assert "`card --template` is now `--card-template`" in result.stderr
    both = CliRunner().invoke(main, ["card", str(folder), "--template", "koquality", "--card-template", "generic"])
    assert both.exit_code == 2 and "pass only --card-template" in both.stderr


def test_a_truncated_benchmark_search_is_never_called_clean():
    """A GPU top-k search that cut rows' neighbour lists short may have missed a match."""
    from kocurate.publish.card import Contamination

    class Complete:
        complete, unchecked, rows, benchmark, unchecked_example = True, 0, 10, "kobest", None

    full = Contamination(checked=True, steps=[{"name": "decontaminate"}], coverage=[Complete()], rows=10)
    assert full.clean and full.status.startswith("clean against kobest")
    cut = Contamination(checked=True, steps=[{"name": "decontaminate"}], coverage=[Complete()], rows=10,
                        search_truncated=3)
    assert not cut.clean and cut.status.startswith("not verified") and "3 rows" in cut.status
