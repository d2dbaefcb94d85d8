"""Which test docs are scored, in which order, and which train docs each one gets as shots.

The draws are exactly those of the two reference harnesses (shared/specs/kobest.md):

- ``harness``: one ``random.Random(seed)`` per task (seed 1234); test docs in dataset order (the
  first ``limit`` of them); for each doc ``rnd.sample(train_docs, k)`` from the same generator.
- ``polyglot``: one ``random.Random(seed)`` per task (seed 42); it first shuffles the test docs,
  the first ``limit`` of the shuffled order are kept, then for each in that order the same
  generator draws ``rnd.sample(train_docs, k)``.

``random.sample`` depends only on the population's length, so sampling indices gives the same
draw as sampling the docs themselves; indices keep the draws cheap to record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import InputError
from .tasks import Protocol


@dataclass(frozen=True)
class Draw:
    doc_index: int               # position of the test doc in its split
    shot_indices: tuple[int, ...]  # positions of the shots in the train split, in prompt order


def draw_fewshot(protocol: Protocol, n_docs: int, n_train: int, k: int, *, limit: int | None = None,
                 seed: int | None = None, task: str = "task") -> list[Draw]:
    """The scored docs in scoring order, each with its shots."""
    if k > n_train:
        raise InputError(f"{task}: {k}-shot asks for more examples than the train split has ({n_train} rows); "
                         f"lower --shots to at most {n_train}")
    rnd = random.Random(protocol.seed if seed is None else seed)
    order = list(range(n_docs))
    if protocol.shuffle_docs:
        rnd.shuffle(order)
    if limit is not None:
        order = order[:limit]
    population = list(range(n_train))
    return [Draw(i, tuple(rnd.sample(population, k)) if k > 0 else ()) for i in order]
