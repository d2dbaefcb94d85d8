"""The five KoBEST tasks under two protocols, as data.

A task is declarative (how lm-evaluation-harness keeps them): a prompt template over the row's
fields, the choices (fixed labels or row fields), the gold field, the metrics, the delimiters and the
few-shot and tokenization rules. The scoring engine (`scorer.py`) knows nothing about KoBEST.

Protocols (shared/specs/kobest.md):

- ``harness``: lm-evaluation-harness v0.4.x (``lm_eval/tasks/kobest``). Continuation = " " + choice;
  the context's trailing whitespace moves to the front of the continuation and the pair is encoded
  jointly; few-shot draws from ``random.Random(1234)`` over test docs in dataset order.
- ``polyglot``: the legacy polyglot / ko-lm-evaluation-harness branch behind the seeds' tables.
  Continuation = " " + choice, context and continuation encoded separately with nothing moved;
  ``random.Random(42)`` shuffles the test docs, then draws the shots in that shuffled order.

Both build a k-shot prompt as ``"".join(q_i + " " + a_i + "\\n\\n") + q``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InputError
from ..records.kobest import CONFIGS, FIELDS, config_name

PROTOCOLS = ("harness", "polyglot")
TASK_NAMES = tuple(f"kobest_{c}" for c in CONFIGS)

_COPA_QUESTIONS = ("원인", "결과")


@dataclass(frozen=True)
class Protocol:
    """What differs between the two evaluation harnesses, apart from the templates."""

    name: str
    seed: int                     # few-shot RNG seed (one fresh random.Random per task and shot count)
    shuffle_docs: bool            # polyglot shuffles the test docs with the few-shot RNG first
    move_trailing_space: bool     # harness: context's trailing whitespace starts the continuation
    joint_encoding: bool          # harness: cont_ids = encode(ctx + cont)[len(encode(ctx)):]
    target_delimiter: str = " "   # between a question and its answer (shots and continuations)
    fewshot_delimiter: str = "\n\n"  # after each shot
    reference: str = ""


PROTOCOL_DEFS: dict[str, Protocol] = {
    "harness": Protocol("harness", seed=1234, shuffle_docs=False, move_trailing_space=True, joint_encoding=True,
                        reference="EleutherAI/lm-evaluation-harness v0.4.x, lm_eval/tasks/kobest"),
    "polyglot": Protocol("polyglot", seed=42, shuffle_docs=True, move_trailing_space=False, joint_encoding=False,
                         reference="EleutherAI/lm-evaluation-harness polyglot branch, lm_eval/tasks/kobest.py"),
}


@dataclass(frozen=True)
class Task:
    """One KoBEST task under one protocol.

    ``template`` is a ``str.format`` template over the row's fields plus ``derived`` ones
    (name -> (source field, {value: text})); ``choices`` are fixed label texts, or ``None`` when
    ``choice_fields`` name the row fields holding them. ``gold`` is the field with the label index.
    """

    name: str
    config: str
    protocol: Protocol
    template: str
    choices: tuple[str, ...] | None = None
    choice_fields: tuple[str, ...] | None = None
    gold: str = "label"
    metrics: tuple[str, ...] = ("acc", "f1")
    derived: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    train_split: str = "train"
    eval_split: str = "test"

    # -- prompt pieces -------------------------------------------------------------------------
    def doc_to_text(self, doc: dict) -> str:
        values = dict(doc)
        for name, (source, mapping) in self.derived.items():
            key = str(doc[source]).strip()
            if key not in mapping:
                raise InputError(f"{self.name}: row has {source}={doc[source]!r}; expected one of {', '.join(mapping)}")
            values[name] = mapping[key]
        return self.template.format(**values)

    def doc_to_choices(self, doc: dict) -> list[str]:
        if self.choices is not None:
            return list(self.choices)
        return [doc[f] for f in self.choice_fields]

    def doc_to_gold(self, doc: dict) -> int:
        try:
            gold = int(doc[self.gold])
        except (TypeError, ValueError):
            raise InputError(f"{self.name}: label {doc[self.gold]!r} is not an integer") from None
        if not 0 <= gold < len(self.doc_to_choices(doc)):
            raise InputError(f"{self.name}: label {gold} out of range 0..{len(self.doc_to_choices(doc)) - 1}")
        return gold

    def continuations(self, doc: dict) -> list[str]:
        """What is scored for each choice: the target delimiter, then the choice text."""
        return [self.protocol.target_delimiter + c for c in self.doc_to_choices(doc)]

    def shot_text(self, doc: dict) -> str:
        """A solved example: question, delimiter, gold answer, few-shot delimiter."""
        answer = self.doc_to_choices(doc)[self.doc_to_gold(doc)]
        return self.doc_to_text(doc) + self.protocol.target_delimiter + answer + self.protocol.fewshot_delimiter

    def prompt(self, doc: dict, shots: list[dict]) -> str:
        """The full context for `doc` with the given solved examples in front."""
        return "".join(self.shot_text(s) for s in shots) + self.doc_to_text(doc)


_YES_NO = ("아니오", "예")
_TEMPLATES = {
    "boolq": "{paragraph} 질문: {question} 답변: ",
    "copa": "{premise} {connector}",
    "hellaswag": "문장: {context}",
    "sentineg": "문장: {sentence} 긍부정:",
    "wic": "문장1: {context_1} 문장2: {context_2} 두 문장에서 {word}가 같은 뜻으로 쓰였나?",
}
#: harness puts a space inside the connector, and the template adds one more: TWO spaces
_CONNECTORS = {
    "harness": {"원인": " 왜냐하면", "결과": " 그래서"},
    "polyglot": {"원인": "왜냐하면", "결과": "그래서"},
}


def _build(config: str, protocol: str) -> Task:
    proto = PROTOCOL_DEFS[protocol]
    common = dict(name=f"kobest_{config}", config=config, protocol=proto, template=_TEMPLATES[config])
    if config in ("boolq", "wic"):
        return Task(**common, choices=_YES_NO)
    if config == "sentineg":
        return Task(**common, choices=("부정", "긍정"))
    if config == "copa":
        return Task(**common, choice_fields=("alternative_1", "alternative_2"),
                    derived={"connector": ("question", _CONNECTORS[protocol])})
    if config == "hellaswag":
        return Task(**common, choice_fields=("ending_1", "ending_2", "ending_3", "ending_4"),
                    metrics=("acc", "acc_norm", "f1"))
    raise AssertionError(config)


TASKS: dict[tuple[str, str], Task] = {(f"kobest_{c}", p): _build(c, p) for c in CONFIGS for p in PROTOCOLS}
assert all(set(FIELDS[t.config]) >= {t.gold, *(t.choice_fields or ())} for t in TASKS.values())


def get_task(name: str, protocol: str = "harness") -> Task:
    """`kobest_copa` or `copa` under `harness` or `polyglot`; one-line error otherwise."""
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol '{protocol}'; use one of {', '.join(PROTOCOLS)}")
    return TASKS[(f"kobest_{config_name(name.strip())}", protocol)]


def parse_tasks(spec: str | list[str]) -> list[str]:
    """'kobest_copa,hellaswag' or 'all' / 'kobest' -> canonical task names, order kept, no repeats."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        expanded = list(TASK_NAMES) if item in ("all", "kobest") else [f"kobest_{config_name(item)}"]
        names += [n for n in expanded if n not in names]
    if not names:
        raise InputError("no tasks given; pass --tasks with any of " + ", ".join(TASK_NAMES) + " (or 'all')")
    return names


def parse_shots(spec: str | list[int]) -> list[int]:
    """'0,5,10,50' -> [0, 5, 10, 50]; one-line error on anything else."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    shots: list[int] = []
    for item in items:
        try:
            k = int(str(item).strip())
        except ValueError:
            raise InputError(f"--shots: '{item}' is not a whole number; write e.g. --shots 0,5,10,50") from None
        if k < 0:
            raise InputError(f"--shots: {k} is negative; shot counts are 0 or more")
        if k not in shots:
            shots.append(k)
    if not shots:
        raise InputError("--shots is empty; write e.g. --shots 0,5")
    return shots
