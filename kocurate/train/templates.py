"""Prompt templates by name (the exact strings the originals trained with) and tokenization.

A template is the full training text with `{output}` as its last field, in two variants (a row
with an `input`, a row without). `{output}` is the completion marker: everything before it is the
prompt, the rest the completion (TRL's prompt / completion pair); the loss is on the completion
only (TRL's `completion_only_loss`, fed a `completion_mask`) unless `train_on_inputs`. A space right before `{output}` goes to the response, so the answer's
first word tokenizes as it would in running text. EOS is appended to every row.

The joined text is tokenized once and character offsets mark where the response starts, so the
labels' boundary is exact and the text tokenizes as it will at inference (alpaca-lora tokenized
the prompt alone to count its tokens, which misplaces the boundary by a token whenever BPE
merges across it; tokenizing the parts separately adds a stray SentencePiece prefix space).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, first_line

IGNORE_INDEX = -100
FIELDS = ("instruction", "input", "output", "rationale", "target", "task")


@dataclass(frozen=True)
class Template:
    """A prompt format: `with_input` for rows whose input is non-empty, `without_input` otherwise."""

    name: str
    with_input: str
    without_input: str
    description: str = ""

    def __post_init__(self) -> None:
        for text in (self.with_input, self.without_input):
            if not isinstance(text, str):
                raise InputError(f"template '{self.name}': with_input / without_input must be text")
            try:
                names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
            except ValueError as exc:
                raise InputError(f"template '{self.name}': {exc} (write a literal brace as {{{{ or }}}})") from None
            unknown = sorted({n for n in names if n not in FIELDS})
            if unknown:
                raise InputError(f"template '{self.name}': unknown field {{{unknown[0]}}}; "
                                 f"use only {', '.join('{' + f + '}' for f in FIELDS)}")
            if names.count("output") != 1:
                raise InputError(f"template '{self.name}': needs {{output}} exactly once (found {names.count('output')})")
            if names[-1] != "output":
                raise InputError(f"template '{self.name}': {{output}} must be the last field (prompt first, then the answer)")

    def render(self, row: dict) -> tuple[str, str]:
        """(prompt, response) for one canonical row; their concatenation is the training text."""
        values = {k: (row.get(k) or "") for k in FIELDS}
        values = {k: str(v) for k, v in values.items()}
        text = self.with_input if values["input"].strip() else self.without_input
        head, tail = text.split("{output}", 1)
        if head.endswith(" "):
            head, lead = head[:-1], " "
        else:
            lead = ""
        prompt = head.format(**values)
        response = lead + values["output"] + tail.format(**values)
        return prompt, response

    def skeleton(self) -> str:
        """The template's own text with every field empty (its fixed cost in tokens)."""
        return self.without_input.format(**{k: "" for k in FIELDS})


_ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                 "Write a response that appropriately completes the request.\n\n"
                 "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}")
_ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
           "### Instruction:\n{instruction}\n\n### Response:\n{output}")
_KULLM_INPUT = ("아래는 작업을 설명하는 명령어와 추가 컨텍스트를 제공하는 입력이 짝을 이루는 예제입니다. "
                "요청을 적절히 완료하는 응답을 작성하세요.\n\n"
                "### 명령어:\n{instruction}\n\n### 입력:\n{input}\n\n### 응답:\n{output}")
_KULLM = ("아래는 작업을 설명하는 명령어입니다. 요청을 적절히 완료하는 응답을 작성하세요.\n\n"
          "### 명령어:\n{instruction}\n\n### 응답:\n{output}")

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in [
        Template("alpaca", _ALPACA_INPUT, _ALPACA, "Stanford Alpaca; Platypus and KO-Platypus trained with it"),
        Template("koalpaca", "### 질문: {instruction}\n\n### 맥락: {input}\n\n### 답변: {output}",
                 "### 질문: {instruction}\n\n### 답변: {output}", "KoAlpaca (beomi)"),
        Template("kullm", _KULLM_INPUT, _KULLM, "KULLM (nlpai-lab)"),
        Template("koquality", "### 질문: {instruction} {input}### 답변: {output}",
                 "### 질문: {instruction}### 답변: {output}",
                 "KoQuality: no separator; input joined to the instruction with a space, as in its KULLM rows"),
        Template("cot", "{instruction}\n\n{input}\n\n{output}", "{instruction}\n\n{output}",
                 "CoT-Collection: source, then '{rationale} [RESULT] {target}' (the cot-collection preset's output)"),
    ]
}


def get_template(name_or_path: str) -> Template:
    """A named template, or one read from a .txt / .json / .yaml file."""
    if name_or_path in TEMPLATES:
        return TEMPLATES[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise InputError(f"--template {name_or_path}: unknown template; use one of {', '.join(TEMPLATES)} "
                         f"or a file holding one (.txt with {{instruction}} ... {{output}}, or .json/.yaml with "
                         f"with_input and without_input)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 (byte {exc.start}); save the template file as UTF-8") from None
    try:
        return _template_from_file(path, text)
    except InputError as exc:
        message = str(exc)
        if "{output}" in message and "found 0" in message:
            raise InputError(f"{path}: the template has no completion marker {{output}}; put {{output}} where "
                             "the answer starts (the prompt comes before it)") from None
        if message.startswith("template '"):
            raise InputError(f"{path}: {message}") from None
        raise


def _template_from_file(path: Path, text: str) -> Template:
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        try:
            if path.suffix.lower() == ".json":
                spec = json.loads(text)
            else:
                import yaml

                spec = yaml.safe_load(text)
        except Exception as exc:  # json and yaml raise different types
            raise InputError(f"{path}: not a readable template file ({first_line(exc)})") from None
        if not isinstance(spec, dict) or "without_input" not in spec and "with_input" not in spec:
            raise InputError(f"{path}: a template file needs the keys with_input and/or without_input")
        without = spec.get("without_input") or spec["with_input"]
        return Template(path.stem, spec.get("with_input") or without, without, spec.get("description", ""))
    # A plain text file: one template for every row ({input} renders empty when a row has none).
    text = text[:-1] if text.endswith("\n") else text
    return Template(path.stem, text, text, f"from {path}")


# --------------------------------------------------------------------------------------------
# tokenization


@dataclass
class Encoded:
    """Token ids and labels of every usable row, with what happened on the way."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    rows: int = 0
    truncated: int = 0
    #: rows whose prompt alone fills --max-length (nothing of the response would be seen)
    dropped_prompt_too_long: int = 0
    dropped_ids: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(len(x) for x in self.input_ids)

    @property
    def label_tokens(self) -> int:
        return sum(sum(1 for t in lab if t != IGNORE_INDEX) for lab in self.labels)


def template_tokens(template: Template, tokenizer) -> int:
    """Tokens the template costs on its own (empty fields, EOS included)."""
    prompt, response = split_tokens(tokenizer, [template.render({})])[0]
    return len(prompt) + len(response) + 1


def check_max_length(template: Template, tokenizer, max_length: int) -> int:
    need = template_tokens(template, tokenizer)
    if max_length <= need:
        raise InputError(f"--max-length {max_length} is not above template '{template.name}''s own length "
                         f"({need} tokens with every field empty); raise --max-length (e.g. {max(need * 4, 256)})")
    return need


def encode_rows(rows: list[dict], template: Template, tokenizer, max_length: int, *,
                train_on_inputs: bool = False) -> Encoded:
    """Render, tokenize, mask and cut every row to `max_length` (a row whose prompt alone fills it is
    dropped and counted). TRL packs these rows when --packing is on; it never sees a longer row."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("the tokenizer has no EOS token; set eos_token in the base model's tokenizer_config.json")
    pairs = [template.render(r) for r in rows]
    out = Encoded([], [], rows=len(rows))
    for row, (prompt, response) in zip(rows, split_tokens(tokenizer, pairs)):
        ids = prompt + response + [eos]
        labels = (list(ids) if train_on_inputs else [IGNORE_INDEX] * len(prompt) + response + [eos])
        if len(prompt) >= max_length:
            out.dropped_prompt_too_long += 1
            out.dropped_ids.append(str(row.get("id", "")))
            continue
        if len(ids) > max_length:
            out.truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        out.input_ids.append(ids)
        out.labels.append(labels)
    return out


def completion_mask(labels: list[int]) -> list[int]:
    """TRL's `completion_mask` of a row: 1 where the loss is computed (the completion and its EOS)."""
    return [0 if t == IGNORE_INDEX else 1 for t in labels]


def split_tokens(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """Token ids of (prompt, response) for each pair.

    A fast tokenizer tokenizes the joined text once (as running text, so SentencePiece tokenizers
    add no second dummy-prefix space before the answer) and the character offsets decide which
    tokens are the prompt's; a token straddling the boundary counts as response. A slow tokenizer
    tokenizes the two parts separately.
    """
    if not pairs:
        return []
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer([p + r for p, r in pairs], add_special_tokens=True, return_offsets_mapping=True)
        out = []
        for ids, offsets, (prompt, _) in zip(enc["input_ids"], enc["offset_mapping"], pairs):
            cut = len(prompt)
            n = 0
            while n < len(ids) and offsets[n][1] <= cut:
                n += 1
            out.append((list(ids[:n]), list(ids[n:])))
        return out
    p_ids = tokenizer([p for p, _ in pairs], add_special_tokens=True)["input_ids"]
    r_ids = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
    return list(zip(p_ids, r_ids))
