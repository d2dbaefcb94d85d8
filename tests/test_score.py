"""score: KoQuality's perplexity (checked against a direct computation), IFD, the cache, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from kocurate.cli import main
from kocurate.curate import RunContext
from kocurate.curate.score import CharBigramLM, Score, compute_scores, ifd_segments, model_key, ppl_segments
from kocurate.errors import InputError

TEXTS = [
    "오늘은 날씨가 맑아서 공원에 산책을 나갔다.",
    "김치찌개를 끓일 때는 잘 익은 김치와 돼지고기를 먼저 볶는다. " * 30,  # longer than the tiny model's 256 positions
    "서울의 유명한 궁궐을 알려 주세요.",
    "가",
]


def frame(texts=TEXTS, inputs=None) -> pl.DataFrame:
    return pl.DataFrame({
        "id": [f"r{i}" for i in range(len(texts))], "instruction": texts,
        "input": inputs or [""] * len(texts), "output": ["경복궁과 창덕궁이 유명합니다."] * len(texts), "source": ["t"] * len(texts),
    })


def reference_ppl(path, text, window, stride=256, truncation=1024):
    """The Hugging Face perplexity guide's loop, as KoQuality ran it (labels=-100 for context)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = tok(text, return_tensors="pt").input_ids[:, :truncation]
    n, nll, count, prev = ids.size(1), 0.0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        x = ids[:, begin:end]
        y = x.clone()
        y[:, : -(end - prev)] = -100
        with torch.no_grad():
            loss = model(x, labels=y).loss.item()
        k = int((y[:, 1:] != -100).sum())
        nll, count, prev = nll + loss * k, count + k, end
        if end == n:
            break
    return math.exp(nll / count)


def test_segments_score_every_token_once_and_truncate():
    ids = list(range(3000))
    segs = ppl_segments(0, ids, window=1024, stride=256)
    assert sum(s.targets for s in segs) == 1023  # truncated to 1024 tokens; token 0 has no context
    segs = ppl_segments(0, list(range(700)), window=256, stride=256)
    assert sum(s.targets for s in segs) == 699 and all(len(s.ids) <= 256 for s in segs)
    segs = ppl_segments(0, list(range(600)), window=512, stride=256)  # overlapping windows
    assert sum(s.targets for s in segs) == 599 and segs[1].ids[0] == 256
    cond, alone = ifd_segments(0, [1, 2, 3], [7, 8, 9], window=1024)
    assert cond.ids == [1, 2, 3, 7, 8, 9] and cond.targets == 3 and alone.targets == 2


@pytest.mark.parametrize("model_fixture", ["tiny_gpt_neox", "tiny_llama"])
def test_ppl_equals_the_koquality_computation(model_fixture, request, tmp_path):
    path = request.getfixturevalue(model_fixture)
    values, stats = compute_scores(frame(), str(path), "ppl", batch_size=3, cache_dir=tmp_path)
    assert stats["scored"] == 4
    for text, value in zip(TEXTS[:3], values[:3]):
        assert value == pytest.approx(reference_ppl(path, text, window=256), rel=1e-4)
    assert np.isfinite(values[3])  # a one-token text is scored with BOS as context


def test_batching_does_not_change_scores(tiny_gpt_neox, tmp_path):
    a, _ = compute_scores(frame(), str(tiny_gpt_neox), "ppl", batch_size=1, cache_dir=tmp_path / "a")
    b, _ = compute_scores(frame(), str(tiny_gpt_neox), "ppl", batch_size=4, cache_dir=tmp_path / "b")
    np.testing.assert_allclose(a, b, rtol=1e-4)


def test_input_is_joined_onto_the_instruction_like_kullm(tiny_gpt_neox, tmp_path):
    joined, _ = compute_scores(frame(["질문입니다 맥락입니다"]), str(tiny_gpt_neox), "ppl", cache_dir=tmp_path)
    split, _ = compute_scores(frame(["질문입니다"], ["맥락입니다"]), str(tiny_gpt_neox), "ppl", cache_dir=tmp_path)
    assert joined[0] == pytest.approx(split[0])


def test_cache_resumes_and_is_keyed_by_model(tiny_gpt_neox, tiny_llama, tmp_path):
    first, stats = compute_scores(frame(TEXTS[:2]), str(tiny_gpt_neox), "ppl", cache_dir=tmp_path)
    assert stats == {"scored": 2, "cached": 0, "device": "cpu"}
    again, stats = compute_scores(frame(), str(tiny_gpt_neox), "ppl", cache_dir=tmp_path)
    assert (stats["scored"], stats["cached"]) == (2, 2)  # resumed: only the new rows ran
    np.testing.assert_allclose(first, again[:2])
    _, stats = compute_scores(frame(), str(tiny_llama), "ppl", cache_dir=tmp_path)
    assert stats["scored"] == 4  # another model: nothing reused
    assert model_key(str(tiny_gpt_neox)) != model_key(str(tiny_llama))


def test_ifd_is_conditioned_over_unconditioned_loss(tiny_gpt_neox, tmp_path):
    values, _ = compute_scores(frame(TEXTS[:3]), str(tiny_gpt_neox), "ifd", cache_dir=tmp_path)
    assert np.isfinite(values).all() and (values > 0).all()
    # a random model barely uses the prompt: IFD near 1
    assert np.abs(values - 1).max() < 0.3


def test_charlm_is_offline_and_prefers_familiar_text():
    lm = CharBigramLM(["김치찌개를 끓인다."] * 20 + ["서울 여행"])
    assert lm.ppl("김치찌개를 끓인다.") < lm.ppl("끓인다 김치찌개를.")
    values, stats = compute_scores(frame(), "charlm", "ppl")
    assert np.isfinite(values).all() and stats["scored"] == 4


def test_score_step_adds_the_column(tiny_gpt_neox, tmp_path):
    result = Score(model=str(tiny_gpt_neox), metric="ppl").run(frame(), RunContext(cache_dir=tmp_path))
    assert result.kept["ppl"].null_count() == 0 and result.stats["column"] == "ppl"


def test_bad_model_and_metric_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="no such model folder.*--model charlm"):
        compute_scores(frame(), str(tmp_path / "no-such-model"), "ppl", cache_dir=tmp_path)
    with pytest.raises(InputError, match="unknown; use one of ppl, ifd"):
        compute_scores(frame(), "charlm", "bleu")
    with pytest.raises(InputError, match="charlm scores only --metric ppl"):
        compute_scores(frame(), "charlm", "ifd")


def test_cli_score(tiny_gpt_neox, tmp_path):
    src = tmp_path / "ko.jsonl"
    src.write_text("\n".join(json.dumps({"instruction": t, "output": "네"}, ensure_ascii=False) for t in TEXTS[:3]),
                   encoding="utf-8")
    out = tmp_path / "scored"
    res = CliRunner().invoke(main, ["score", str(src), "-o", str(out), "--model", str(tiny_gpt_neox),
                                    "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "ppl scores" in res.output and "rows scored now" in res.output
    scored = pl.read_parquet(next((out / "data").glob("*.parquet")))
    assert scored["ppl"].null_count() == 0


def test_importing_score_stays_light():
    code = "import sys, kocurate.curate.score, kocurate.cli.score; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_score_step_needs_a_model():
    with pytest.raises(InputError, match="score needs a model"):
        Score()


def test_unwritable_score_cache_warns_once_and_scores_without_it(tiny_gpt_neox, tmp_path):
    """The cache folder cannot be created (its parent is a file): true for root too, as in CI."""
    from kocurate.curate.score import ScoreCache

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="score cache .* not writable.*continuing without caching") as caught:
        values, stats = compute_scores(frame(TEXTS[:2]), str(tiny_gpt_neox), "ppl", cache_dir=blocker / "scores")
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert np.isfinite(values).all() and stats["scored"] == 2
    with pytest.warns(RuntimeWarning):
        cache = ScoreCache(blocker / "scores")
    assert cache.get_many(["k"]) == {} and cache.put_many({"k": 1.0}) is None
    cache.close()


def test_model_folder_without_tokenizer_files_is_refused(tiny_gpt_neox, tmp_path):
    import shutil

    bare = tmp_path / "weights-only"
    bare.mkdir()
    for path in tiny_gpt_neox.iterdir():
        if path.name in ("config.json", "model.safetensors"):
            shutil.copy(path, bare / path.name)
    with pytest.raises(InputError, match="no tokenizer files.*save_pretrained"):
        compute_scores(frame(TEXTS[:2]), str(bare), "ppl")


@pytest.mark.parametrize("column", ["output", "instruction", "id"])
def test_score_never_overwrites_a_canonical_column(tmp_path, column):
    with pytest.raises(InputError, match=f"--column {column}: that name holds the rows' own data"):
        Score(model="charlm", metric="ppl", column=column).run(frame(), RunContext())


def test_score_overwrites_an_existing_column_only_with_replace(tmp_path):
    scored = frame().with_columns(pl.lit(1.0).alias("ppl"))
    with pytest.raises(InputError, match="already has that column; pass --replace"):
        Score(model="charlm", metric="ppl").run(scored, RunContext())
    result = Score(model="charlm", metric="ppl", replace=True).run(scored, RunContext())
    assert result.kept["ppl"].to_list() != [1.0] * scored.height


def test_score_step_without_a_cache_dir_caches_nothing(tiny_gpt_neox, tmp_path, monkeypatch):
    monkeypatch.setenv("KOCURATE_CACHE", str(tmp_path / "default-cache"))
    result = Score(model=str(tiny_gpt_neox), metric="ppl").run(frame(TEXTS[:2]), RunContext())
    assert result.stats["scored"] == 2 and not (tmp_path / "default-cache").exists()
    result = Score(model=str(tiny_gpt_neox), metric="ppl").run(frame(TEXTS[:2]), RunContext(cache_dir=tmp_path / "c"))
    assert (tmp_path / "c" / "scores" / "scores.sqlite").is_file()


def test_score_cache_that_cannot_be_created_warns_and_scores(tiny_gpt_neox, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")  # works as root too: no folder can be made under a file
    with pytest.warns(RuntimeWarning, match="score cache .* not writable.*continuing without caching") as caught:
        values, stats = compute_scores(frame(TEXTS[:2]), str(tiny_gpt_neox), "ppl", cache_dir=blocker / "scores")
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert np.isfinite(values).all() and (stats["scored"], stats["cached"]) == (2, 0)
