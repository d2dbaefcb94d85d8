"""The difference plot: each comparison's estimate with its interval, zero marked, one panel per task."""

from __future__ import annotations

import io

import numpy as np

from .verdict import AVERAGE, Comparison, average_name

#: One colour per shot count (matplotlib's default cycle, colour-blind safe order).
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def difference_plot(comparisons: list[Comparison], tasks: list[str], shots: list[int], metric_name: str) -> bytes:
    """A PNG about 1000 px wide: per panel (KoBEST average first, then each task) one row per
    comparison, one marker per shot count with its 95% interval; filled markers are significant
    (Holm-adjusted for the average, the interval excluding 0 for single tasks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scopes = ([AVERAGE] if len(tasks) > 1 else []) + list(tasks)
    pairs = list(dict.fromkeys((c.arm, c.against) for c in comparisons))
    columns = 1 if len(scopes) == 1 else 2
    rows = -(-len(scopes) // columns)
    panel_height = 0.9 + 0.32 * len(pairs) * max(1, len(shots)) ** 0.5
    fig, axes = plt.subplots(rows, columns, figsize=(10 if columns == 2 else 7, rows * panel_height + 0.6),
                             squeeze=False)
    offsets = np.linspace(-0.25, 0.25, len(shots)) if len(shots) > 1 else np.zeros(1)
    for ax, scope in zip(axes.ravel(), scopes):
        for j, k in enumerate(shots):
            colour = _COLOURS[j % len(_COLOURS)]
            for i, pair in enumerate(pairs):
                c = next((c for c in comparisons if (c.arm, c.against) == pair and c.task == scope and c.shots == k), None)
                if c is None:
                    continue
                d = c.difference
                y = i + offsets[j]
                ax.errorbar(d.delta, y, xerr=[[d.delta - d.low], [d.high - d.delta]], fmt="o", color=colour,
                            markerfacecolor=colour if c.significant else "white", capsize=3, lw=1.4,
                            label=f"{k}-shot" if i == 0 else None)
        ax.axvline(0, color="black", lw=1)
        ax.set_yticks(range(len(pairs)), [f"{a} vs {b}" for a, b in pairs])
        ax.set_ylim(len(pairs) - 0.5, -0.5)
        ax.set_title(average_name(tasks) if scope == AVERAGE else scope.removeprefix("kobest_"), fontsize=11)
        ax.set_xlabel(f"difference in {metric_name}")
        ax.grid(axis="x", alpha=0.3)
        low, high = ax.get_xlim()
        bound = max(abs(low), abs(high))
        ax.set_xlim(-bound, bound)  # zero in the middle: left is worse, right is better
    for ax in axes.ravel()[len(scopes):]:
        ax.set_visible(False)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False,
                   title="filled: significant; hollow: not", title_fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / fig.get_figheight()))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
