"""`kocurate train` on TRL's SFTTrainer: templates and labels (through TRL's completion-only loss),
packing without cross-row attention, PEFT defaults and dry-run counts, training on tiny models,
adapter reload, Trainer-checkpoint resume, merge, the model card, the output lock, and one-line
errors for bad input. CPU only; tiny models."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kocurate.cli import main
from kocurate.errors import InputError
from kocurate.train import TEMPLATES, TrainConfig, get_template, train
from kocurate.config import cli_fields
from kocurate.train.templates import IGNORE_INDEX, check_max_length, encode_rows

# peft 0.21 still calls transformers' pre-v5 names; that is theirs to fix, not a failure here
pytestmark = pytest.mark.filterwarnings("ignore:.*will be removed in v6:FutureWarning")

CONFIGS = Path(__file__).parent / "data" / "configs"

ROWS = [
    {"instruction": "서울의 유명한 궁궐을 알려 주세요.", "input": "", "output": "경복궁과 창덕궁이 유명합니다."},
    {"instruction": "김치찌개는 어떻게 끓이나요?", "input": "", "output": "잘 익은 김치와 돼지고기를 먼저 볶은 뒤 물을 붓고 끓입니다."},
    {"instruction": "다음 문장의 감정을 분류하세요.", "input": "영화가 정말 지루했다.", "output": "부정"},
    {"instruction": "지구는 태양 주위를 도나요?", "input": "", "output": "예, 지구는 일 년에 한 번 태양 주위를 돕니다."},
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads, and idle threads spinning on a shared 2-core box cost a lot."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_rows(path: Path, rows: list[dict], repeat: int = 1) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows * repeat) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("train-data") / "rows.jsonl", ROWS, repeat=4)


def _scaled_head(src: Path, dst: Path, scale: float = 10.0) -> Path:
    """The fixture model with its output head scaled up, as a pretrained head would be.

    A random head of std 0.02 over a 64-wide LayerNorm output caps every logit margin near 1.3, so no
    adapter can push the loss far below ln(vocab); scaling the (frozen) head lifts that ceiling.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (dst / "config.json").is_file():
        return dst
    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(scale)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def neox(tiny_gpt_neox, tmp_path_factory) -> Path:
    return _scaled_head(tiny_gpt_neox, tmp_path_factory.mktemp("neox-head"))


@pytest.fixture(scope="module")
def llama(tiny_llama, tmp_path_factory) -> Path:
    return _scaled_head(tiny_llama, tmp_path_factory.mktemp("llama-head"))


def cfg(data, base, out, **kw) -> TrainConfig:
    values = dict(data=str(data), model=str(base), output=out, max_steps=30, batch_size=4, template="koalpaca",
                  warmup_ratio=0.0, lr_scheduler="constant", logging_steps=10, learning_rate=1e-2)
    values.update(kw)
    return TrainConfig(**values)


def tokenizer_of(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# ------------------------------------------------------------------------------------------------
# config <-> CLI


def test_every_config_field_is_one_cli_option_and_back():
    command = main.get_command(None, "train")
    params = {p.name: p for p in command.params if p.name not in ("help", "config_file", "sft_arg", "old_output_dir")}
    fields = {f.name: f for f in cli_fields(TrainConfig)}
    assert set(params) == set(fields)
    for name, f in fields.items():
        if f.metadata["argument"]:
            assert params[name].param_type_name == "argument"
        else:
            assert f.metadata["flag"] in params[name].opts, (name, params[name].opts)
    assert {"--model", "--base"} <= set(params["model"].opts)
    assert {"-o", "--output"} <= set(params["output"].opts)
    assert "sft_args" not in params  # reached through --sft-arg / --config, not a generated option
    r = CliRunner().invoke(main, ["train", "d", "--model", "m", "--output-dir", "out/a"])
    assert r.exit_code == 2 and "the flag is now -o/--output" in r.output and r.output.count("\n") == 1


def test_train_help_loads_no_model_library_and_names_the_sft_settings():
    code = ("import sys; from click.testing import CliRunner; from kocurate.cli import main; "
            "r = CliRunner().invoke(main, ['train', '--help'], terminal_width=200); assert r.exit_code == 0, r.output; "
            "assert '--lora-r' in r.output and 'koalpaca' in r.output, r.output; "
            "assert '--sft-arg' in r.output and 'lr_scheduler_kwargs' in r.output and 'deepspeed_zero2.json' in r.output; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate', 'trl') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_config_rejects_bad_values_in_one_line():
    with pytest.raises(InputError, match="--method dora"):
        TrainConfig(data="x", model="y", output="z", method="dora")
    with pytest.raises(InputError, match="--resume and --overwrite"):
        TrainConfig(data="x", model="y", output="z", resume=True, overwrite=True)
    with pytest.raises(InputError, match="-o/--output is required"):
        TrainConfig(data="x", model="y")
    assert TrainConfig(data="x", model="y", dry_run=True).output is None
    assert TrainConfig(data="x", model="y", output="z", target_modules="q_proj, v_proj").target_modules == ("q_proj", "v_proj")
    # issue 13: negative or NaN learning rate, negative seed
    for bad, pattern in ((dict(learning_rate=-1e-4), "--learning-rate -0.0001: must be above 0"),
                         (dict(learning_rate=float("nan")), "--learning-rate nan: must be a finite number"),
                         (dict(seed=-1), "--seed -1: must be a whole number, 0 or more"),
                         (dict(epochs=float("nan")), "--epochs nan: must be a finite number"),
                         (dict(learning_rate="fast"), "--learning-rate fast: must be a number")):
        with pytest.raises(InputError, match=pattern) as err:
            TrainConfig(data="x", model="y", output="z", **bad)
        assert "\n" not in str(err.value)
    assert TrainConfig(data="x", model="y", output="z", learning_rate="3e-4").learning_rate == 3e-4  # YAML's 3e-4 is text


def test_cli_bad_numbers_are_one_line_errors(tmp_path):
    for args, pattern in ((["--learning-rate", "-1"], "--learning-rate -1.0: must be above 0"),
                          (["--learning-rate", "nan"], "--learning-rate nan: must be a finite number"),
                          (["--seed", "-3"], "--seed -3: must be a whole number")):
        r = CliRunner().invoke(main, ["train", "x.jsonl", "--model", "m", "-o", str(tmp_path / "a"), *args])
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: ") and pattern in r.output and r.output.count("\n") == 1, r.output


# ------------------------------------------------------------------------------------------------
# templates and labels


def test_templates_hold_the_spec_strings():
    row = {"instruction": "I", "input": "", "output": "O"}
    with_input = {"instruction": "I", "input": "C", "output": "O"}

    def full(name, r):
        prompt, response = TEMPLATES[name].render(r)
        return prompt + response

    assert full("koalpaca", row) == "### 질문: I\n\n### 답변: O"
    assert full("koalpaca", with_input) == "### 질문: I\n\n### 맥락: C\n\n### 답변: O"
    assert full("kullm", with_input) == (
        "아래는 작업을 설명하는 명령어와 추가 컨텍스트를 제공하는 입력이 짝을 이루는 예제입니다. 요청을 적절히 완료하는 "
        "응답을 작성하세요.\n\n### 명령어:\nI\n\n### 입력:\nC\n\n### 응답:\nO")
    assert full("kullm", row) == ("아래는 작업을 설명하는 명령어입니다. 요청을 적절히 완료하는 응답을 작성하세요.\n\n"
                                  "### 명령어:\nI\n\n### 응답:\nO")
    assert full("koquality", row) == "### 질문: I### 답변: O"
    assert full("alpaca", row).startswith("Below is an instruction that describes a task. Write a response")
    assert full("alpaca", with_input).endswith("### Instruction:\nI\n\n### Input:\nC\n\n### Response:\nO")
    assert full("cot", {"instruction": "Q", "output": "because [RESULT] A"}) == "Q\n\nbecause [RESULT] A"
    # the space before {output} belongs to the answer, so the answer's first word tokenizes as in running text
    assert TEMPLATES["koalpaca"].render(row) == ("### 질문: I\n\n### 답변:", " O")


def test_custom_template_from_file(tmp_path):
    (tmp_path / "t.txt").write_text("<질문> {instruction} {input}\n<답> {output}\n", encoding="utf-8")
    prompt, response = get_template(str(tmp_path / "t.txt")).render({"instruction": "I", "output": "O"})
    assert (prompt, response) == ("<질문> I \n<답>", " O")
    (tmp_path / "t.json").write_text(json.dumps({"with_input": "Q {instruction} C {input} A {output}",
                                                 "without_input": "Q {instruction} A {output}"}), encoding="utf-8")
    assert "".join(get_template(str(tmp_path / "t.json")).render({"instruction": "I", "output": "O"})) == "Q I A O"
    (tmp_path / "bad.txt").write_text("{instruction} {answer}", encoding="utf-8")
    with pytest.raises(InputError, match=r"unknown field \{answer\}"):
        get_template(str(tmp_path / "bad.txt"))


def test_prompt_labels_are_masked_and_response_labels_are_not(tiny_gpt_neox):
    tok = tokenizer_of(tiny_gpt_neox)
    template = TEMPLATES["kullm"]
    enc = encode_rows(ROWS, template, tok, max_length=256)
    for row, ids, labels in zip(ROWS, enc.input_ids, enc.labels):
        prompt, response = template.render(row)
        n_prompt = len(tok(prompt)["input_ids"])
        assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:] and all(t != IGNORE_INDEX for t in labels[n_prompt:])
        assert ids[-1] == tok.eos_token_id  # EOS appended and trained on
        assert tok.decode(ids[n_prompt:-1]) == response
    both = encode_rows(ROWS, template, tok, max_length=256, train_on_inputs=True)
    assert both.labels == both.input_ids


def test_template_file_without_a_completion_marker(tmp_path):
    (tmp_path / "t.txt").write_text("<질문> {instruction}\n<답>\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"t.txt: the template has no completion marker \{output\}; put \{output\}") as err:
        get_template(str(tmp_path / "t.txt"))
    assert "\n" not in str(err.value)
    (tmp_path / "b.txt").write_text("{instruction} {output", encoding="utf-8")
    with pytest.raises(InputError, match="b.txt: template 'b'"):
        get_template(str(tmp_path / "b.txt"))


def test_max_length_cuts_rows_and_counts_them(tiny_gpt_neox):
    tok = tokenizer_of(tiny_gpt_neox)
    template = TEMPLATES["koalpaca"]
    full = encode_rows(ROWS, template, tok, max_length=512)
    cut = max(len(x) for x in full.input_ids) - 3
    enc = encode_rows(ROWS, template, tok, max_length=cut)
    assert enc.truncated == sum(len(x) > cut for x in full.input_ids) >= 1
    assert max(len(x) for x in enc.input_ids) == cut
    shortest_prompt = min(len(tok(template.render(r)[0])["input_ids"]) for r in ROWS)
    few = encode_rows(ROWS, template, tok, max_length=shortest_prompt + 1)
    assert few.dropped_prompt_too_long >= 1 and len(few.input_ids) == len(ROWS) - few.dropped_prompt_too_long


def _sft_trainer(base: Path, rows, **kw):
    """The SFTTrainer `train` builds for `rows` (same dataset, config and collator), without training."""
    from kocurate.lm import load_causal_lm, load_tokenizer
    from kocurate.train.peft_setup import peft_config, resolve_targets
    from kocurate.train.sft import build_sft_config, make_trainer, sft_dataset

    config = TrainConfig(data="unused", model=str(base), output="unused", template="koalpaca", **kw)
    tok = load_tokenizer(str(base), padding_side="right")
    encoded = encode_rows(rows, TEMPLATES["koalpaca"], tok, config.max_length, train_on_inputs=config.train_on_inputs)
    args = build_sft_config(config, Path("/nonexistent-out"), use_bf16=False, cuda=False, show=False)
    model = load_causal_lm(str(base), device="cpu", place=False)[0]
    trainer = make_trainer(model, args, sft_dataset(encoded), tok, peft_config(config, resolve_targets(model, config)),
                           None, show=False)
    return trainer, encoded


def test_trl_builds_exactly_our_labels_from_the_completion_mask(tiny_gpt_neox):
    trainer, encoded = _sft_trainer(tiny_gpt_neox, ROWS * 2, max_length=256)
    assert trainer.train_dataset["input_ids"] == encoded.input_ids
    assert trainer.train_dataset["labels"] == encoded.labels  # prompt -100, completion + EOS kept
    both, encoded = _sft_trainer(tiny_gpt_neox, ROWS, max_length=256, train_on_inputs=True)
    assert both.train_dataset["labels"] == encoded.input_ids


def test_packing_is_padding_free_and_rows_never_attend_to_each_other(tiny_gpt_neox):
    import torch

    trainer, encoded = _sft_trainer(tiny_gpt_neox, ROWS, max_length=128, packing=True, batch_size=4)
    blocks = [len(x) for x in trainer.train_dataset["input_ids"]]
    assert len(blocks) < len(ROWS) and max(blocks) <= 128 and sum(blocks) == encoded.tokens  # packed, nothing cut
    batch = next(iter(trainer.get_train_dataloader()))  # the whole (small) set in one padding-free batch
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    assert batch["input_ids"].shape[1] == encoded.tokens  # no pad token anywhere
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == len(ROWS)
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        bounds = starts + [batch["input_ids"].shape[1]]
        for begin, end in zip(bounds, bounds[1:]):
            alone = model(input_ids=batch["input_ids"][:, begin:end]).logits[0]
            torch.testing.assert_close(packed[begin:end], alone, rtol=1e-4, atol=1e-4)
    # labels: completion tokens of every row kept, the first token of each row never predicted across rows
    assert int((batch["labels"][0] != IGNORE_INDEX).sum()) == encoded.label_tokens
    assert all(batch["labels"][0, i] == IGNORE_INDEX for i in starts)


# ------------------------------------------------------------------------------------------------
# PEFT defaults and dry-run counts


@pytest.mark.parametrize("name, method, expected", [
    ("polyglot-ko-5.8b", "lora", 3_670_016), ("polyglot-ko-5.8b", "ia3", 802_816),
    ("polyglot-ko-1.3b", "lora", 1_572_864), ("polyglot-ko-1.3b", "ia3", 344_064),
    ("llama-2-ko-7b", "lora", 4_194_304), ("llama-2-ko-7b", "ia3", 614_400),
])
def test_dry_run_counts_match_the_published_runs(name, method, expected, data_file):
    result = train(TrainConfig(data=str(data_file), model=str(CONFIGS / f"{name}.json"), method=method, lora_r=8,
                               dry_run=True))
    assert result.report["trainable_params"] == expected
    assert result.report["total_params"] > 1_000_000_000
    assert result.report["rows"] == 16 and result.adapter_dir is None


def test_dry_run_cli_needs_no_output_and_prints_counts_and_modules(tmp_path, data_file):
    folder = tmp_path / "polyglot"
    folder.mkdir()
    shutil.copy(CONFIGS / "polyglot-ko-5.8b.json", folder / "config.json")  # a model folder without weights
    r = CliRunner().invoke(main, ["train", str(data_file), "--base", str(folder), "--method", "ia3", "--dry-run"],
                           terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "802,816" in r.output and "query_key_value, dense_4h_to_h" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["polyglot"]  # nothing written


def test_dry_run_reads_data_so_a_missing_or_malformed_file_fails_there_too(tmp_path):
    model = str(CONFIGS / "polyglot-ko-1.3b.json")
    with pytest.raises(InputError, match="no such file or folder"):
        train(TrainConfig(data=str(tmp_path / "missing.jsonl"), model=model, dry_run=True))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n', encoding="utf-8")
    r = CliRunner().invoke(main, ["train", str(bad), "--model", model, "--dry-run"])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "bad.jsonl" in r.output, r.output
    assert r.output.count("\n") == 1


def test_target_modules_that_match_nothing_name_the_linear_layers(data_file):
    config = TrainConfig(data=str(data_file), model=str(CONFIGS / "llama-2-ko-7b.json"),
                         target_modules="query_key_value", dry_run=True)
    with pytest.raises(InputError) as err:
        train(config)
    message = str(err.value)
    assert "query_key_value matches no module" in message and "q_proj, k_proj, v_proj, o_proj" in message
    assert "\n" not in message
    r = train(dataclasses.replace(config, target_modules=("all-linear",), method="ia3"))
    assert r.report["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert r.report["feedforward_modules"] == ["down_proj"]


# ------------------------------------------------------------------------------------------------
# training on tiny models


@pytest.mark.parametrize("arch, method, lr", [("neox", "lora", 2e-2), ("neox", "ia3", 1.0),
                                              ("llama", "lora", 2e-2), ("llama", "ia3", 1.0)])
def test_training_lowers_the_loss_well_below_its_start(arch, method, lr, request, data_file, tmp_path):
    base = request.getfixturevalue(arch)
    result = train(cfg(data_file, base, tmp_path / "a", method=method, learning_rate=lr, max_steps=40), progress=False)
    r = result.report
    assert r["steps"] == 40 and r["tokens"] > 0 and r["tokens_per_second"] > 0
    assert r["final_loss"] < 0.7 * r["first_loss"], (r["first_loss"], r["final_loss"])
    saved = json.loads((tmp_path / "a" / "train_report.json").read_text(encoding="utf-8"))
    assert saved["data_fingerprint"].startswith("sha256:") and saved["config"]["method"] == method
    assert saved["rows"] == 16 and saved["peak_memory_bytes"] > 0
    log = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [1, 10, 20, 30, 40]  # the first step, every --logging-steps, the last
    assert all(x["tokens_per_second"] and x["peak_memory_bytes"] > 0 for x in log[1:])


def _logits(model, tok):
    import torch

    ids = tok(["### 질문: 서울의 유명한 궁궐을 알려 주세요.\n\n### 답변:"], return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


@pytest.mark.parametrize("arch, method", [("neox", "lora"), ("llama", "ia3")])
def test_saved_adapter_reloads_with_the_same_logits(arch, method, request, data_file, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = request.getfixturevalue(arch)
    result = train(cfg(data_file, base, tmp_path / "a", method=method, max_steps=8, learning_rate=5e-2),
                   progress=False, keep_model=True)
    tok = tokenizer_of(base)
    result.model.eval()
    trained = _logits(result.model, tok)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(result.adapter_dir)).eval()
    torch.testing.assert_close(_logits(reloaded, tok), trained, rtol=1e-5, atol=1e-5)
    plain = _logits(AutoModelForCausalLM.from_pretrained(base).eval(), tok)
    assert (plain - trained).abs().max() > 1e-3  # the adapter did change the model


def test_resume_continues_the_step_count_and_matches_an_unbroken_run(neox, data_file, tmp_path):
    from safetensors.torch import load_file

    whole = train(cfg(data_file, neox, tmp_path / "whole", max_steps=12, save_steps=4, save_total_limit=5,
                      lr_scheduler="cosine"), progress=False)
    assert sorted(p.name for p in (tmp_path / "whole" / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-12", "checkpoint-4", "checkpoint-8"]  # Trainer checkpoints
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "whole", broken)
    shutil.rmtree(broken / "checkpoints" / "checkpoint-12")  # as if killed after step 11
    (broken / "train_report.json").unlink()
    (broken / "adapter_model.safetensors").unlink()
    stray = broken / "checkpoints" / "checkpoint-11"  # a save killed half-way is not a checkpoint
    stray.mkdir()
    (stray / "adapter_config.json").write_text("{}")
    resumed = train(cfg(data_file, neox, broken, max_steps=12, save_steps=4, save_total_limit=5,
                        lr_scheduler="cosine", resume=True), progress=False)
    assert resumed.report["resumed_from_step"] == 8 and resumed.report["steps"] == 12
    a = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    b = load_file(broken / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max() < 1e-5, key
    assert resumed.report["final_loss"] == pytest.approx(whole.report["final_loss"], rel=1e-4)

    longer = train(cfg(data_file, neox, broken, max_steps=16, save_steps=4, save_total_limit=5,
                       lr_scheduler="cosine", resume=True), progress=False)
    assert longer.report["resumed_from_step"] == 12 and longer.report["steps"] == 16
    with pytest.raises(InputError, match="already at step 16 of 16"):
        train(cfg(data_file, neox, broken, max_steps=16, save_steps=4, lr_scheduler="cosine", resume=True),
              progress=False)
    with pytest.raises(InputError, match="lora_r=4, but the run was started with 8"):
        train(cfg(data_file, neox, broken, max_steps=20, lora_r=4, lr_scheduler="cosine", resume=True),
              progress=False)


def test_merge_writes_a_16bit_model_with_the_adapter_logits(neox, data_file, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = train(cfg(data_file, neox, tmp_path / "a", max_steps=6, learning_rate=5e-2, merge=True,
                       gradient_checkpointing=True), progress=False)
    merged_dir = Path(result.report["merged_dir"])
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert merged.dtype == torch.bfloat16 and not any("lora" in n for n, _ in merged.named_parameters())
    tok = tokenizer_of(merged_dir)
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(neox), str(result.adapter_dir)).eval()
    want = _logits(adapter, tok)
    got = _logits(merged.eval(), tok).float()
    assert (got - want).abs().max() / want.abs().max() < 0.05  # bf16 rounding only


# ------------------------------------------------------------------------------------------------
# bad input: one line each, naming the problem and the fix


def test_dataset_without_a_response_column(neox, tmp_path):
    data = write_rows(tmp_path / "q.jsonl", [{"instruction": "질문", "answer": "답"}])
    with pytest.raises(InputError, match=r"missing required column 'output'.*--map output=COLUMN") as err:
        train(cfg(data, neox, tmp_path / "a"), progress=False)
    assert "\n" not in str(err.value)


def test_unknown_template(neox, data_file, tmp_path):
    with pytest.raises(InputError, match="--template vicuna: unknown template; use one of alpaca, koalpaca"):
        train(cfg(data_file, neox, tmp_path / "a", template="vicuna"), progress=False)


def test_target_modules_that_match_nothing_on_a_real_load(neox, data_file, tmp_path):
    with pytest.raises(InputError, match="q_proj matches no module of this gpt_neox model; its linear layers are: "
                                         "query_key_value, dense, dense_h_to_4h, dense_4h_to_h"):
        train(cfg(data_file, neox, tmp_path / "a", target_modules="q_proj"), progress=False)


def test_max_length_below_the_templates_own_length(neox, data_file, tmp_path):
    tok = tokenizer_of(neox)
    with pytest.raises(InputError, match=r"--max-length 8 is not above template 'kullm''s own length \(\d+ tokens"):
        check_max_length(TEMPLATES["kullm"], tok, 8)
    with pytest.raises(InputError, match="raise --max-length"):
        train(cfg(data_file, neox, tmp_path / "a", template="kullm", max_length=8), progress=False)
    # longer than the template, shorter than every row's prompt: nothing left to learn from
    shortest_prompt = min(len(tok(TEMPLATES["koalpaca"].render(r)[0])["input_ids"]) for r in ROWS)
    with pytest.raises(InputError, match=f"every row's prompt fills --max-length {shortest_prompt}; raise --max-length"):
        train(cfg(data_file, neox, tmp_path / "a", max_length=shortest_prompt), progress=False)
    assert not (tmp_path / "a").exists()  # a refused run leaves no folder behind


def test_model_folder_without_tokenizer_files(neox, data_file, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for item in neox.iterdir():
        if item.name.startswith(("config", "model", "generation")):
            shutil.copy(item, bare / item.name)
    with pytest.raises(InputError, match="the folder has no tokenizer files") as err:
        train(cfg(data_file, bare, tmp_path / "a"), progress=False)
    assert "tokenizer.save_pretrained" in str(err.value) and "\n" not in str(err.value)


def test_a_second_run_into_a_locked_output_is_refused(neox, data_file, tmp_path):
    import fcntl

    out = tmp_path / "a"
    with open(tmp_path / ".a.lock", "a+") as held:  # another kocurate run writing `a` (the house lock)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="another kocurate run .*is writing this output right now") as err:
            train(cfg(data_file, neox, out, max_steps=2), progress=False)
        assert "\n" not in str(err.value) and not out.exists()
    r = train(cfg(data_file, neox, out, max_steps=2), progress=False)  # released: the run goes ahead
    assert r.report["steps"] == 2


def test_output_folder_that_holds_another_run(neox, data_file, tmp_path):
    out = tmp_path / "a"
    out.mkdir()
    (out / "train_report.json").write_text("{}")
    with pytest.raises(InputError, match="holds another run .*pass --resume to continue it, --overwrite to replace it"):
        train(cfg(data_file, neox, out, max_steps=2), progress=False)
    with pytest.raises(InputError, match="no checkpoint to resume from"):
        train(cfg(data_file, neox, out, max_steps=2, resume=True), progress=False)
    r = train(cfg(data_file, neox, out, max_steps=2, overwrite=True), progress=False)
    assert r.report["steps"] == 2


def test_cli_prints_one_line_error_and_exits_2(neox, data_file, tmp_path):
    r = CliRunner().invoke(main, ["train", str(data_file), "--base", str(neox), "-o", str(tmp_path / "a"),
                                  "--template", "vicuna"])
    assert r.exit_code == 2
    assert r.output.strip().startswith("error: --template vicuna: unknown template") and r.output.count("\n") == 1


def test_load_in_4bit_without_a_gpu_says_why(neox, data_file, tmp_path):
    with pytest.raises(InputError, match="--load-in-4bit needs"):
        train(cfg(data_file, neox, tmp_path / "a", load_in_4bit=True), progress=False)


def test_cli_trains_and_ends_with_a_summary_table(neox, data_file, tmp_path):
    r = CliRunner().invoke(main, ["train", str(data_file), "--base", str(neox), "-o", str(tmp_path / "a"),
                                  "--template", "koalpaca", "--max-steps", "4", "--logging-steps", "2",
                                  "--packing", "--max-length", "64"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "training summary" in r.output and "tokens per second" in r.output and "(packed)" in r.output
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    card = (tmp_path / "a" / "README.md").read_text(encoding="utf-8")
    report = json.loads((tmp_path / "a" / "train_report.json").read_text(encoding="utf-8"))
    assert card.startswith("---\n") and "library_name: peft" in card and "More Information Needed" not in card
    assert str(neox) in card and report["data_fingerprint"] in card and "LoRA" in card
    assert "| max length | 64 |" in card and "| packing | True |" in card and f"{report['tokens']:,}" in card


def test_sft_args_reach_sftconfig_and_owned_or_unknown_keys_are_refused(tmp_path):
    from kocurate.train.sft import build_sft_config

    def build(**kw):
        config = TrainConfig(data="x", model="y", output=tmp_path / "a", **kw)
        return build_sft_config(config, tmp_path / "a", use_bf16=False, cuda=False, show=False)

    args = build(sft_args={"optim": "sgd", "adam_beta2": 0.95}, report_to="none", learning_rate=2e-3, lr_scheduler="constant")
    assert args.optim == "sgd" and args.adam_beta2 == 0.95
    assert args.learning_rate == 2e-3 and args.lr_scheduler_type == "constant_with_warmup"
    assert args.completion_only_loss is True and args.gradient_checkpointing is False and args.bf16 is False
    assert args.output_dir == str(tmp_path / "a" / "checkpoints") and args.report_to in ("none", [], ["none"])
    with pytest.raises(InputError, match="--sft-arg learning_rate: kocurate sets it from --learning-rate"):
        build(sft_args={"learning_rate": 1.0})
    with pytest.raises(InputError, match=r"--sft-arg optimm: not an SFTConfig setting \(did you mean optim"):
        build(sft_args={"optimm": "sgd"})


def test_report_to_passes_through_and_a_missing_integration_is_one_line(neox, data_file, tmp_path):
    from kocurate.train.sft import build_sft_config

    config = TrainConfig(data="x", model="y", output=tmp_path / "a", report_to="tensorboard,wandb")
    assert build_sft_config(config, tmp_path / "a", False, False, False).report_to == ["tensorboard", "wandb"]
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        with pytest.raises(InputError, match="SFTTrainer refused the run .*tensorboard") as err:
            train(cfg(data_file, neox, tmp_path / "a", max_steps=2, report_to="tensorboard"), progress=False)
        assert "\n" not in str(err.value) and not (tmp_path / "a").exists()


def test_deepspeed_zero2_config_is_shipped_and_needs_deepspeed(tmp_path):
    import importlib.util

    from kocurate.train.sft import DEEPSPEED_ZERO2, build_sft_config

    shipped = json.loads(DEEPSPEED_ZERO2.read_text(encoding="utf-8"))
    assert shipped["zero_optimization"]["stage"] == 2 and shipped["train_micro_batch_size_per_gpu"] == "auto"
    config = TrainConfig(data="x", model="y", output=tmp_path / "a", deepspeed="zero2")
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(InputError, match="--deepspeed needs DeepSpeed: pip install deepspeed"):
            build_sft_config(config, tmp_path / "a", False, False, False)
    with pytest.raises(InputError, match="--deepspeed nope.json: no such file"):
        build_sft_config(dataclasses.replace(config, deepspeed="nope.json"), tmp_path / "a", False, False, False)


def test_model_card_cites_the_data_folder_manifest_and_the_figures(tmp_path):
    from kocurate.publish.model_card import render_model_card, write_model_card

    report = {"model": "EleutherAI/polyglot-ko-1.3b", "method": "ia3", "template": "koalpaca", "rows": 1200,
              "rows_used": 1190, "rows_truncated": 3, "rows_dropped_prompt_too_long": 10,
              "data": {"name": "koquality-1pct", "kind": "folder", "path": "out/koquality-1pct"},
              "data_fingerprint": "sha256:abc123", "data_manifest": {"data_fingerprint": "sha256:abc123",
                                                                     "steps": ["normalize", "dedup", "select"]},
              "target_modules": ["query_key_value", "dense_4h_to_h"], "feedforward_modules": ["dense_4h_to_h"],
              "params": {"trainable": 344064, "total": 1331154944}, "steps": 300, "epochs": 2.0,
              "first_loss": 2.5, "final_loss": 1.25, "tokens": 456789, "tokens_per_second": 12345.6, "mfu": 0.412,
              "peak_memory_bytes": 3 * 2**30, "peak_memory_kind": "cuda max_memory_allocated",
              "environment": {"device": "NVIDIA H200", "processes": 1, "bf16": True},
              "config": {"learning_rate_used": 3e-3, "lr_scheduler": "cosine", "warmup_ratio": 0.03, "epochs": 2.0,
                         "batch_size": 8, "grad_accum": 2, "max_length": 1024, "seed": 7,
                         "sft_args": {"optim": "adamw_torch_fused"}}}
    card = render_model_card(report, tmp_path / "ia3-kq")
    import yaml

    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "EleutherAI/polyglot-ko-1.3b" and meta["library_name"] == "peft" and "ia3" in meta["tags"]
    assert "datasets" not in meta  # a local folder is not a Hub dataset id
    for text in ("An IA3 adapter of `EleutherAI/polyglot-ko-1.3b`", "`sha256:abc123`", "normalize, dedup, select",
                 "| trainable / total parameters | 344,064 / 1,331,154,944 |", "| learning rate | 0.003 |",
                 "| batch size x grad accum x processes | 8 x 2 x 1 |", "| SFTConfig `optim` | `adamw_torch_fused` |",
                 "2.5000 -> 1.2500", "456,789", "12,346", "41.2%", "3.00 GiB", "NVIDIA H200 x1", "| seed | 7 |"):
        assert text in card, text
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "train_report.json").write_text(json.dumps(report), encoding="utf-8")
    assert write_model_card(folder).read_text(encoding="utf-8") == render_model_card(report, folder)
    with pytest.raises(InputError, match="no train_report.json"):
        write_model_card(tmp_path)


def test_cli_sft_arg_and_config_file_fill_the_settings(tmp_path):
    from kocurate.cli.train import train_settings

    (tmp_path / "run.yaml").write_text("model: m\nlearning-rate: 3e-4\nlora_r: 16\noptim: sgd\n"
                                       "sft_args: {adam_beta2: 0.9}\n", encoding="utf-8")
    settings = train_settings({"data": "d", "lora_r": 4, "output": tmp_path / "o"}, tmp_path / "run.yaml",
                              ("neftune_noise_alpha=5", "lr_scheduler_kwargs={min_lr: 1.0e-5}"))
    config = TrainConfig(**settings)
    assert config.lora_r == 4 and config.learning_rate == 3e-4 and config.model == "m"  # the flag wins over the file
    assert config.sft_args == {"optim": "sgd", "adam_beta2": 0.9, "neftune_noise_alpha": 5,
                               "lr_scheduler_kwargs": {"min_lr": 1e-05}}
    r = CliRunner().invoke(main, ["train", "d", "--model", "m", "-o", str(tmp_path / "o"), "--sft-arg", "optim"])
    assert r.exit_code == 2 and "--sft-arg optim: use KEY=VALUE" in r.output and r.output.count("\n") == 1


def test_two_processes_under_torchrun_train_one_adapter(neox, data_file, tmp_path):
    """The multi-GPU path (DDP through accelerate), run on CPU with gloo: same command, two processes."""
    torchrun = Path(sys.executable).with_name("torchrun")
    kocurate = Path(sys.executable).with_name("kocurate")
    if not torchrun.is_file() or not kocurate.is_file():
        pytest.skip("torchrun / kocurate console scripts not installed beside this python")
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp"
    done = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(port), str(kocurate), "train",
                           str(data_file), "--base", str(neox), "-o", str(out), "--template", "koalpaca",
                           "--max-steps", "4", "--batch-size", "2", "--grad-accum", "2", "--logging-steps", "2"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "train_report.json").read_text(encoding="utf-8"))
    assert report["environment"]["processes"] == 2 and report["steps"] == 4
    assert report["epochs"] == 2  # 16 rows, 2 rows x 2 micro-batches x 2 processes per step
    assert done.stdout.count("training summary") == 1


def test_bf16_path_keeps_the_base_in_bf16_and_the_adapter_in_fp32(neox, data_file, tmp_path):
    """The GPU recipe (bf16 base, fp32 adapter, bf16 autocast), exercised on CPU with --bf16 true."""
    import torch

    with pytest.warns(UserWarning, match="bfloat16 autocast on CPU is slow"):
        result = train(cfg(data_file, neox, tmp_path / "a", max_steps=2, bf16="true"), progress=False, keep_model=True)
    assert result.report["environment"]["bf16"] is True
    dtypes = {n: p.dtype for n, p in result.model.named_parameters()}
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n)
    assert all(d == torch.bfloat16 for n, d in dtypes.items() if "lora_" not in n)
    assert result.report["final_loss"] == result.report["final_loss"]  # not NaN


# ------------------------------------------------------------------------------------------------
# one atomic-write home (issue 11/13): merged/, the adapter files, train-eval --overwrite


def test_merge_and_adapter_writes_replace_through_the_house_guard(neox, data_file, tmp_path, monkeypatch):
    """merged/ is swapped in whole (the old model stays when the new save fails), and write_adapter leaves
    no temporary or lock behind, and no train_report.json claiming an adapter it did not finish."""
    from kocurate.train import sft

    out = tmp_path / "a"
    result = train(cfg(data_file, neox, out, max_steps=2, merge=True), progress=False)
    merged = Path(result.report["merged_dir"])
    assert merged == out / "merged" and (merged / "config.json").is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no .merged.tmp, no lock, no .adapter
    old = {p.name: p.read_bytes() for p in merged.iterdir()}

    import transformers

    def broken_save(self, *args, **kwargs):
        Path(args[0], "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", broken_save)
    from transformers import AutoTokenizer

    with pytest.raises(OSError, match="No space"):
        sft.merge_adapter(str(neox), out, AutoTokenizer.from_pretrained(out))
    assert {p.name: p.read_bytes() for p in merged.iterdir()} == old  # the old merged model, untouched
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # the temporary is gone
    monkeypatch.undo()

    class FailingModel:
        def save_pretrained(self, folder):
            Path(folder, "adapter_model.safetensors").write_bytes(b"half")
            raise OSError(28, "No space left on device")

    adapter_before = (out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(OSError, match="No space"):
        sft.write_adapter(FailingModel(), AutoTokenizer.from_pretrained(out), out)
    assert (out / "adapter_model.safetensors").read_bytes() == adapter_before and (out / "train_report.json").is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_train_eval_overwrite_keeps_the_old_run_until_the_new_one_is_whole(data_file, tmp_path, monkeypatch):
    """`train-eval --overwrite` builds the new run beside OUT and swaps it in: a run that fails leaves the old
    report folder as it was, one that ends replaces it whole, and the result points into OUT."""
    from kocurate.experiment import runner
    from kocurate.experiment.config import ExperimentConfig

    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("the old run")
    (out / runner.MARKER).write_text("{}")
    seen = []

    def failing_run(config, arms, loaded, folder, log, progress):
        seen.append(folder)
        (folder / "arms").mkdir()
        raise InputError("the model refused")

    monkeypatch.setattr(runner, "_run", failing_run)
    config = ExperimentConfig(arms=[f"full={data_file}"], output=out, overwrite=True, train={"model": "no/such-model"})
    with pytest.raises(InputError, match="refused"):
        runner.run_experiment(config, log=lambda _: None)
    assert seen[0] != out and seen[0].parent == out.parent  # it never wrote into OUT itself
    assert sorted(p.name for p in out.iterdir()) == sorted(["report.md", runner.MARKER])
    assert (out / "report.md").read_text() == "the old run"
    assert [p.name for p in tmp_path.iterdir() if p.name != "report"] == []  # no temporary or lock left beside OUT

    def good_run(config, arms, loaded, folder, log, progress):
        units = runner.plan_units(config, arms, folder)
        for unit in units:
            unit.folder.mkdir(parents=True)
            (unit.folder / "scores.json").write_text("{}")
        return runner.ExperimentResult(config, arms, units, {}, {})

    monkeypatch.setattr(runner, "_run", good_run)
    result = runner.run_experiment(config, log=lambda _: None)
    assert not (out / "report.md").exists() and (out / runner.MARKER).is_file() and (out / runner.LOG_FILE).is_file()
    assert [u.folder for u in result.units] == [out / "arms" / "base" / "eval-only", out / "arms" / "full" / "seed-1"]
    assert all((u.folder / "scores.json").is_file() for u in result.units)
    assert [p.name for p in tmp_path.iterdir() if p.name != "report"] == []
