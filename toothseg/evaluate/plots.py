"""Small matplotlib figures for the HTML report, returned as base64 PNG so the page stays one self-contained file."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLOURS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def fig_to_b64(fig: plt.Figure, title: str) -> str:
    """The figure, titled and laid out, as base64 PNG (the figure is closed)."""
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def training_curves(folds: dict[str, dict[str, list[tuple[float, float]]]], title: str) -> str:
    """One row of panels: losses, validation metrics and learning rate, one colour per fold.

    ``folds`` maps a fold name to ``{column: [(epoch, value), ...]}``.
    """
    panels = [("loss", lambda c: c in ("train_loss_epoch", "train_loss", "val_loss")),
              ("validation metric", lambda c: c.startswith("val_") and "loss" not in c),
              ("learning rate", lambda c: c == "lr" or c.startswith("lr-"))]
    panels = [(name, pick) for name, pick in panels if any(pick(c) for f in folds.values() for c in f)]
    if not panels:
        return ""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.2), squeeze=False)
    for ax, (name, pick) in zip(axes[0], panels):
        for i, (fold, cols) in enumerate(sorted(folds.items())):
            for j, (col, pts) in enumerate(sorted((c, p) for c, p in cols.items() if pick(c) and p)):
                xs, ys = zip(*pts)
                style = ["-", "--", ":", "-."][j % 4]
                ax.plot(xs, ys, style, color=COLOURS[i % len(COLOURS)], marker="o" if len(xs) < 12 else None,
                        ms=3, label=f"{fold} {col}")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if name == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.legend(fontsize=6, ncol=1 if len(folds) < 4 else 2)
    return fig_to_b64(fig, title)


def histograms(series: dict[str, Sequence[float]], title: str, groups: Sequence[str] | None = None) -> str:
    """One histogram per metric; with ``groups`` (one label per value) the groups are stacked in colours."""
    names = [n for n, v in series.items() if any(math.isfinite(x) for x in v)]
    if not names:
        return ""
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.9 * nrows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        vals = np.asarray(series[name], dtype=float)
        ok = np.isfinite(vals)
        if groups is not None:
            labels = sorted(set(groups))
            data = [vals[ok & (np.asarray(groups) == g)] for g in labels]
            ax.hist(data, bins=20, stacked=True, label=labels, color=COLOURS[: len(labels)])
            if len(labels) > 1:
                ax.legend(fontsize=7)
        else:
            ax.hist(vals[ok], bins=20, color=COLOURS[0])
        ax.set_title(f"{name} (median {np.median(vals[ok]):.3g})", fontsize=9)
        ax.set_ylabel("images")
        ax.grid(alpha=0.3)
    return fig_to_b64(fig, title)
