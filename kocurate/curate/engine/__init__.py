"""The engine seam: an executor runs curation steps over a dataset.

Every step is a per-batch part (normalise, hash, embed, n-gram and benchmark matching, length)
and a global part (duplicate resolution, quotas, capping, k-means). Two executors run them:

* `LocalExecutor` (``--engine local``, the default): today's behaviour, one polars frame in
  process, through `kocurate.curate.pipeline.run_pipeline`.
* `RayExecutor` (``--engine ray``, ``--ray-address``): Ray Data. Per-batch parts run with
  ``map_batches`` (an actor pool where a model is loaded: embedding, scoring), global parts on
  small gathered data (per-task counts, lengths, centroids, duplicate pairs), and keyed steps
  (exact dedup, cap) by a hash shuffle whose partitions each hold whole key groups. Rows and
  vectors never gather on the driver. Ray is imported only when this executor is used.

The steps themselves are untouched: the Ray executor reads their parameters and calls their
own building blocks, so both executors keep the same rows (tests/test_engine.py).
"""

from __future__ import annotations

from .local import LocalExecutor

ENGINES = ("local", "ray")


def get_executor(name: str = "local", address: str | None = None, **options):
    """The executor for ``--engine NAME`` (`local` or `ray`); `address` is ``--ray-address``
    (None: a local Ray is started on first use). Extra options go to `RayExecutor`."""
    from ...errors import InputError

    name = (name or "local").strip().lower()
    if name == "local":
        if address:
            raise InputError(f"--ray-address {address}: only used with --engine ray; add --engine ray or drop it")
        return LocalExecutor()
    if name == "ray":
        from .ray_data import RayExecutor

        return RayExecutor(address=address, **options)
    raise InputError(f"--engine {name}: unknown engine; use one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "LocalExecutor", "get_executor"]
