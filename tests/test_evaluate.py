"""kocurate evaluate: config and CLI, local data folders, the polyglot protocol and NSMC as task YAML,
adapters, result files, tables, compare, and every bad input as one line.

The score-for-score comparison of kocurate's engine with lm-eval's own HF backend is in
test_evaluate_lmeval.py.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kocurate.cli import main
from kocurate.errors import InputError
from kocurate.evaluate import EvalConfig, canonical_task, evaluate, parse_shots
from kocurate.evaluate.metrics import accuracy, macro_f1
from kocurate.evaluate.report import compare, kobest_average, markdown, read

CONFIGS = ("boolq", "copa", "hellaswag", "sentineg", "wic")
_PEOPLE = ["민수", "지영", "할머니", "선생님", "동생", "친구", "아버지", "학생"]
_PLACES = ["시장", "학교", "공원", "도서관", "바닷가", "병원", "회사", "산"]
_ACTS = ["밥을 먹었다", "책을 읽었다", "노래를 불렀다", "편지를 썼다", "운동을 했다", "잠을 잤다", "청소를 했다"]
_FEEL = ["정말 재미있었다", "너무 지루했다", "아주 훌륭했다", "최악이었다", "감동적이었다", "실망스러웠다"]


def _sentence(rnd: random.Random) -> str:
    return f"{rnd.choice(_PEOPLE)}는 {rnd.choice(_PLACES)}에서 {rnd.choice(_ACTS)}."


def _row(config: str, rnd: random.Random, i: int, split: str) -> dict:
    if config == "boolq":
        return {"paragraph": " ".join(_sentence(rnd) for _ in range(2)), "question": f"{rnd.choice(_PEOPLE)}는 갔는가?",
                "label": i % 2}
    if config == "copa":
        return {"premise": _sentence(rnd), "question": rnd.choice(["원인", "결과"]),
                "alternative_1": _sentence(rnd), "alternative_2": _sentence(rnd), "label": rnd.randint(0, 1)}
    if config == "hellaswag":
        return {"context": _sentence(rnd), **{f"ending_{j}": _sentence(rnd) for j in range(1, 5)}, "label": rnd.randint(0, 3)}
    if config == "sentineg":
        return {"sentence": f"이 영화는 {rnd.choice(_FEEL)}.", "label": rnd.randint(0, 1)}
    if config == "nsmc":
        return {"id": str(i), "document": f"이 영화는 {rnd.choice(_FEEL)}", "label": i % 2}
    tail = "\t" if split == "test" and i % 3 == 0 else ""
    return {"word": "배", "context_1": "배가 아프다." + tail, "context_2": "배를 타고 갔다." + tail, "label": i % 2}


def write_folder(folder: Path, configs=CONFIGS, sizes=None, seed: int = 7) -> Path:
    """A data folder in the Hub layout: {config}/{split}.jsonl."""
    sizes = sizes or {"train": 12, "validation": 2, "test": 8}
    for config in configs:
        rnd = random.Random(f"{seed}-{config}")
        (folder / config).mkdir(parents=True, exist_ok=True)
        for split, n in sizes.items():
            if config == "nsmc" and split == "validation":
                continue
            with open(folder / config / f"{split}.jsonl", "w", encoding="utf-8") as handle:
                for i in range(n):
                    handle.write(json.dumps(_row(config, rnd, i, split), ensure_ascii=False) + "\n")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory, samples) -> Path:
    """samples/kobest plus an nsmc/ folder, in one --data-dir."""
    folder = tmp_path_factory.mktemp("data")
    for config in CONFIGS:
        shutil.copytree(samples / "kobest" / config, folder / config)
    return write_folder(folder, configs=("nsmc",))


def _cli(*args):
    return CliRunner().invoke(main, [*map(str, args)])


# -- config ----------------------------------------------------------------------------------------

def test_config_parses_flags_and_refuses_bad_values():
    config = EvalConfig(model="m", tasks="copa, nsmc", shots="0,5,5", batch_size="8", output_dir="out")
    assert config.tasks == ["copa", "nsmc"] and config.shots == [0, 5] and config.batch_size == 8
    assert config.output == "out" and config.fewshot_seed == 1234
    assert EvalConfig(model="m", protocol="polyglot").fewshot_seed == 42
    for kwargs, message in (({"shots": "0,x"}, "not a whole number"), ({"shots": "-1"}, "negative"),
                            ({"limit": 0}, "--limit"), ({"batch_size": "0"}, "--batch-size"),
                            ({"protocol": "old"}, "--protocol"), ({"device_map": "balanced"}, "--device-map")):
        with pytest.raises(InputError, match=message) as err:
            EvalConfig(model="m", **kwargs)
        assert "\n" not in str(err.value)
    assert parse_shots("0, 1,2") == [0, 1, 2]
    assert canonical_task("copa") == "kobest_copa" and canonical_task("polyglot_kobest_wic") == "kobest_wic"


def test_importing_config_and_cli_loads_no_torch_or_lm_eval(repo):
    code = ("import sys, kocurate.cli.evaluate, kocurate.cli.compare; from kocurate.evaluate import EvalConfig; "
            "bad = [m for m in ('torch', 'transformers', 'lm_eval') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo)


def test_evaluate_module_respects_layers(repo):
    for path in (repo / "kocurate" / "evaluate").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for other in ("curate", "train", "publish", "cli", "experiment"):
            assert f"from ..{other}" not in text and f"kocurate.{other}" not in text, (path, other)


# -- task YAML shipped with kocurate ----------------------------------------------------------------

# written out by hand from shared/specs/kobest.md (the legacy polyglot protocol)
POLYGLOT = {
    "boolq": ({"paragraph": "서울은 한국의 수도이다.", "question": "서울은 수도인가?", "label": 1},
              "서울은 한국의 수도이다. 질문: 서울은 수도인가? 답변: ", ["아니오", "예"]),
    "copa": ({"premise": "비가 많이 왔다.", "question": "결과", "alternative_1": "길이 젖었다.", "alternative_2": "해가 떴다.",
              "label": 0}, "비가 많이 왔다. 그래서", ["길이 젖었다.", "해가 떴다."]),
    "hellaswag": ({"context": "그는 냄비에 물을 붓고", "ending_1": "불을 켰다.", "ending_2": "날았다.", "ending_3": "잠들었다.",
                   "ending_4": "노래했다.", "label": 0}, "문장: 그는 냄비에 물을 붓고", ["불을 켰다.", "날았다.", "잠들었다.", "노래했다."]),
    "sentineg": ({"sentence": "정말 재미없는 영화였다.", "label": 0}, "문장: 정말 재미없는 영화였다. 긍부정:", ["부정", "긍정"]),
    "wic": ({"word": "배", "context_1": "배가 아프다.\t", "context_2": "배를 타고 갔다.", "label": 0},
            "문장1: 배가 아프다.\t 문장2: 배를 타고 갔다. 두 문장에서 배가 같은 뜻으로 쓰였나?", ["아니오", "예"]),
}


def _tasks(names, data, shots=(0,)):
    """lm-eval Task objects for `names`, reading `data` (as `evaluate` builds them)."""
    from kocurate.evaluate.run import local_overrides, task_manager

    tmp = data.parent / f"overrides-{'-'.join(names)}"
    tmp.mkdir(exist_ok=True)
    manager = task_manager(names)
    local_overrides(names, manager, data, list(shots), tmp)
    manager = task_manager(names, extra=[tmp])
    return dict(manager.load(names)["tasks"])


def test_polyglot_prompts_are_byte_exact(data):
    tasks = _tasks(["polyglot_kobest"], data)
    for config, (doc, context, choices) in POLYGLOT.items():
        task = tasks[f"polyglot_kobest_{config}"]
        assert task.doc_to_text(doc) == context, config
        assert task.doc_to_choice(doc) == choices, config
        assert task.config.target_delimiter == " " and task.config.fewshot_delimiter == "\n\n"


def test_polyglot_shuffles_docs_then_draws_shots_with_the_same_generator(data):
    from kocurate.records.kobest import load_split

    task = _tasks(["polyglot_kobest_copa"], data)["polyglot_kobest_copa"]
    task.set_fewshot_seed(42)
    test, train = load_split("copa", "test", data), load_split("copa", "train", data)
    rnd = random.Random()
    rnd.seed(42)
    shuffled = list(test)
    rnd.shuffle(shuffled)
    assert [dict(d) for d in task.test_docs()] == shuffled
    expected = [rnd.sample(train, 3) for _ in range(2)]
    assert [[dict(d) for d in task.sampler.sample(3)] for _ in range(2)] == expected


def test_polyglot_loglikelihood_by_hand(tiny_gpt_neox, data):
    """One polyglot doc scored by a plain forward pass: context and continuation encoded apart."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kocurate.records.kobest import load_split

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_gpt_neox).eval(), AutoTokenizer.from_pretrained(tiny_gpt_neox)
    result = evaluate(EvalConfig(model=str(tiny_gpt_neox), tasks=["boolq"], shots=[0], protocol="polyglot",
                                 data_dir=str(data), limit=2, batch_size=4, device="cpu"))
    assert result.results["protocol"] == "polyglot" and result.results["seed"] == 42
    order = list(range(len(load_split("boolq", "test", data))))
    random.Random(42).shuffle(order)
    rows = result.predictions("boolq", 0)
    assert [r["doc_index"] for r in rows] == order[:2]
    doc = load_split("boolq", "test", data)[rows[0]["doc_index"]]
    ctx = tok(f"{doc['paragraph']} 질문: {doc['question']} 답변: ", add_special_tokens=False)["input_ids"]
    expected = []
    for answer in (" 아니오", " 예"):
        cont = tok(answer, add_special_tokens=False)["input_ids"]
        ids = (ctx + cont)[-257:][:-1]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        expected.append(sum(float(logp[len(ids) - len(cont) + t, c]) for t, c in enumerate(cont)))
    assert rows[0]["loglikelihoods"] == pytest.approx(expected, abs=1e-4)
    assert rows[0]["pred"] == (0 if expected[0] >= expected[1] else 1)
    assert rows[0]["gold"] == doc["label"]


def test_nsmc_has_two_prompt_styles(data):
    tasks = _tasks(["nsmc"], data)
    doc = {"id": "1", "document": "최고의 영화", "label": 1}
    texts = {name: t.doc_to_text(doc) for name, t in tasks.items()}
    assert set(texts) == {"nsmc_prompt1", "nsmc_prompt2"}
    assert all("최고의 영화" in t for t in texts.values()) and len(set(texts.values())) == 2
    assert all(t.doc_to_choice(doc) == ["부정", "긍정"] for t in tasks.values())


# -- a run through the CLI, its files, compare -----------------------------------------------------

def test_cli_run_files_tables_and_compare(tiny_gpt_neox, data, tmp_path):
    out = tmp_path / "eval"
    res = _cli("evaluate", "--model", tiny_gpt_neox, "--tasks", "copa,nsmc", "--shots", "0,2", "--limit", "4",
               "--data-dir", data, "--batch-size", "4", "--device", "cpu", "-o", out)
    assert res.exit_code == 0, res.output
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(record["results"]) == {"kobest_copa", "nsmc_prompt1", "nsmc_prompt2"}
    assert record["results"]["kobest_copa"]["2"]["n"] == 4
    copa = record["results"]["kobest_copa"]["0"]
    preds = record["predictions"]["kobest_copa"]["0"]
    assert copa["acc"] == pytest.approx(accuracy([p["gold"] for p in preds], [p["pred"] for p in preds]))
    assert copa["f1"] == pytest.approx(macro_f1([p["gold"] for p in preds], [p["pred"] for p in preds]))
    assert copa["acc_stderr"] > 0
    lm_file = out / "lm_eval" / "results_2shot.json"
    theirs = json.loads(lm_file.read_text(encoding="utf-8"))
    assert theirs["n-shot"]["kobest_copa"] == 2 and "acc_stderr,none" in theirs["results"]["kobest_copa"]
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "## kobest_copa: macro F1" in md and "| Model | 0-shot | 2-shot |" in md

    again = _cli("evaluate", "--model", tiny_gpt_neox, "--tasks", "copa", "--shots", "0", "--data-dir", data, "-o", out)
    assert again.exit_code == 2 and "--overwrite" in again.output and again.output.count("\n") == 1

    side = _cli("compare", out / "results.json", lm_file)
    assert side.exit_code == 0, side.output
    assert "| Δ (second − first) |" in side.output and "## nsmc_prompt1: accuracy" in side.output
    assert read(lm_file)["results"]["kobest_copa"]["2"]["acc"] == pytest.approx(record["results"]["kobest_copa"]["2"]["acc"])


def test_adapter_changes_scores_and_a_foreign_base_is_refused(tiny_gpt_neox, tiny_llama, data, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def lora(base, folder, target):
        torch.manual_seed(1)
        model = AutoModelForCausalLM.from_pretrained(base)
        get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules=target, init_lora_weights=False)).save_pretrained(folder)
        return folder

    adapter = lora(tiny_gpt_neox, tmp_path / "lora", ["query_key_value", "dense_4h_to_h"])
    common = dict(model=str(tiny_gpt_neox), tasks=["copa"], shots=[0], data_dir=str(data), limit=3, batch_size=4, device="cpu")
    base = evaluate(EvalConfig(**common))
    tuned = evaluate(EvalConfig(**common, adapter=str(adapter)))
    assert tuned.results["adapter"] == str(adapter)
    a = [p["loglikelihoods"] for p in base.predictions("copa", 0)]
    b = [p["loglikelihoods"] for p in tuned.predictions("copa", 0)]
    assert all(abs(x - y) > 1e-3 for ra, rb in zip(a, b) for x, y in zip(ra, rb))

    foreign = lora(tiny_llama, tmp_path / "llama-lora", ["q_proj", "v_proj"])
    with pytest.raises(InputError, match="does not match --model") as err:
        evaluate(EvalConfig(**common, adapter=str(foreign)))
    assert "\n" not in str(err.value)


# -- bad input, one line each ----------------------------------------------------------------------

def _one_line_error(*args, match: str):
    res = _cli(*args)
    assert res.exit_code == 2, res.output
    assert match in res.output and res.output.strip().count("\n") == 0, res.output
    assert "Traceback" not in res.output


def test_unknown_task_lists_close_matches(tiny_gpt_neox, data, tmp_path):
    _one_line_error("evaluate", "--model", tiny_gpt_neox, "--tasks", "kobest_copx", "--data-dir", data, "-o", tmp_path / "o",
                    match="did you mean kobest_copa")
    assert not (tmp_path / "o").exists()


def test_a_shot_count_the_data_cannot_serve(tiny_gpt_neox, tmp_path):
    small = write_folder(tmp_path / "small", sizes={"train": 3, "validation": 1, "test": 4})
    _one_line_error("evaluate", "--model", tiny_gpt_neox, "--tasks", "copa", "--shots", "0,5", "--data-dir", small,
                    "-o", tmp_path / "o", match="lower --shots to at most 3")


def test_a_data_folder_missing_a_split_or_a_task(tiny_gpt_neox, data, tmp_path):
    folder = tmp_path / "partial"
    shutil.copytree(data / "copa", folder / "copa")
    (folder / "copa" / "train.jsonl").unlink()
    _one_line_error("evaluate", "--model", tiny_gpt_neox, "--tasks", "copa", "--shots", "0,5", "--data-dir", folder,
                    "-o", tmp_path / "o", match="copa/train.jsonl: missing")
    _one_line_error("evaluate", "--model", tiny_gpt_neox, "--tasks", "wic", "--data-dir", folder, "-o", tmp_path / "o",
                    match="wic: missing")


def test_old_spellings_get_a_hint(tiny_gpt_neox, tmp_path):
    _one_line_error("evaluate", tiny_gpt_neox, "-o", tmp_path / "o", match="--model")
    _one_line_error("evaluate", "--compare", "a.json", "b.json", match="kocurate compare")
    _one_line_error("evaluate", "--tasks", "copa", match="missing --model")


def test_compare_refuses_unknown_shapes(tmp_path):
    cases = {"list.json": "[1, 2]", "other.json": json.dumps({"results": {"x": 1}}), "bad.json": "{nope"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        _one_line_error("compare", tmp_path / name, tmp_path / name, match=name)
    _one_line_error("compare", tmp_path / "absent.json", match="absent.json")


# -- metrics and tables ----------------------------------------------------------------------------

def test_macro_f1_matches_hand_computation():
    golds, preds = [0, 0, 1, 1, 1], [0, 1, 1, 1, 0]
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 2, fp 1, fn 1 -> 2/3
    assert macro_f1(golds, preds) == pytest.approx((0.5 + 2 / 3) / 2)
    assert accuracy(golds, preds) == pytest.approx(0.6)
    assert macro_f1([0, 0], [0, 0], labels=[0, 1]) == pytest.approx(0.5)


def _record(model, f1s, tasks=("kobest_copa",)):
    return {"kocurate_version": "x", "protocol": "polyglot", "model": model, "adapter": None, "limit": None, "seed": 42,
            "data": {"source": "hub"},
            "results": {t: {str(k): {"acc": v, "f1": v, "acc_stderr": 0.01, "n": 1000} for k, v in zip((0, 5, 10, 50), f1s)}
                        for t in tasks}}


def test_tables_in_the_seeds_form_and_the_kobest_average(tmp_path):
    a = _record("EleutherAI/polyglot-ko-1.3b", (0.7196, 0.7193, 0.7204, 0.7206))
    md = markdown([a])
    assert "| Model | 0-shot | 5-shot | 10-shot | 50-shot |" in md
    assert "| EleutherAI/polyglot-ko-1.3b | 0.7196 | 0.7193 | 0.7204 | 0.7206 |" in md
    assert "| 0.7196 ± 0.0100 |" in md  # accuracy rows carry lm-eval's standard error
    full = _record("m", (0.5, 0.6, 0.7, 0.8), tasks=[f"kobest_{c}" for c in CONFIGS])
    full["results"]["kobest_wic"]["0"]["f1"] = 0.0
    assert kobest_average(full) == pytest.approx({0: 0.4, 5: 0.6, 10: 0.7, 50: 0.8})
    assert "## KoBEST average (macro F1 of the five tasks)" in markdown([full])
    paths = []
    for name, r in (("a", a), ("b", _record("me/tuned", (0.73, 0.72, 0.72, 0.74)))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(r), encoding="utf-8")
        paths.append(tmp_path / name)
    side = compare(paths)
    assert "| me/tuned | 0.7300 | 0.7200 | 0.7200 | 0.7400 |" in side and "| Δ (second − first) | +0.0104 |" in side
