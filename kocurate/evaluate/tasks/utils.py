"""Functions the task YAML beside this file names with `!function utils.<name>`.

`PolyglotTask` is the legacy polyglot protocol's few-shot order: one `random.Random(seed)` (42
unless the run passes another few-shot seed) first shuffles the test docs, then the same generator
draws each doc's shots with `sample(train_docs, k)` in that shuffled order. Context and
continuation are encoded apart by kocurate's model (`kocurate.evaluate.engine`), which knows these
tasks by their `polyglot_` prefix.
"""

from __future__ import annotations

import random

from lm_eval.api.task import ConfigurableTask

from kocurate.evaluate.metrics import macro_f1


class PolyglotTask(ConfigurableTask):
    """ConfigurableTask whose test docs are shuffled by the few-shot generator before any draw."""

    def __init__(self, config: dict | None = None, **kwargs):
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        self._order: list[int] | None = None
        super().__init__(config=config, **kwargs)

    def set_fewshot_seed(self, seed: int | None = None) -> None:
        super().set_fewshot_seed(seed)
        rnd = random.Random(seed)
        order = list(range(len(super().test_docs())))
        rnd.shuffle(order)
        self._order = order
        self.fewshot_rnd = rnd
        if hasattr(self, "sampler"):
            self.sampler.rnd = rnd  # the draws continue the generator that shuffled

    def test_docs(self):
        docs = super().test_docs()
        if self._order is None or docs is None:
            return docs
        return docs.select(self._order)

    @property
    def doc_order(self) -> list[int] | None:
        """Position in the test split of each scored doc, in scoring order (None: split order)."""
        return self._order


def copa_doc_to_text(doc: dict) -> str:
    connector = {"원인": "왜냐하면", "결과": "그래서"}[doc["question"].strip()]
    return f"{doc['premise']} {connector}"


def copa_doc_to_choice(doc: dict) -> list[str]:
    return [doc["alternative_1"], doc["alternative_2"]]


def hellaswag_doc_to_choice(doc: dict) -> list[str]:
    return [doc["ending_1"], doc["ending_2"], doc["ending_3"], doc["ending_4"]]


def macro_f1_score(items) -> float:
    """lm-eval aggregation: items are (gold, pred) pairs; kocurate's one macro F1."""
    golds, preds = zip(*items) if items else ((), ())
    return macro_f1(list(golds), list(preds))
