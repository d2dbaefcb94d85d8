"""kocurate: curate Korean instruction-tuning sets and measure what the curation did.

The curation steps are functions over a dataset (a `datasets.Dataset`, a polars frame or a
path): `kocurate.dedup`, `decontaminate`, `score`, `cluster`, `select`, `cap`, `normalize`,
and `run` for a list of steps. They load on first use, so `import kocurate` stays light.
"""

__version__ = "0.1.0"

_API = ("CurationResult", "cap", "cluster", "decontaminate", "dedup", "normalize", "run", "score", "select")


def __getattr__(name):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'kocurate' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])


__all__ = ["__version__", *_API]
