"""The evaluation report's charts, drawn with matplotlib (Agg backend: no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(
    matrix: np.ndarray,
    normalised: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """Two heat maps side by side: ``matrix`` (K + 1, K + 1) counts (rows true class, columns predicted, index K
    background) and its row-normalised shares ``normalised``."""
    plt = pyplot()
    labels = [*map(str, class_names), "background"]
    size = len(labels)
    side = max(4.5, 0.55 * size + 2.5)
    figure, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side), constrained_layout=True)
    for axis, values, name, fmt in (
        (axes[0], matrix, "counts", "{:d}"),
        (axes[1], normalised, "share of each true class (row)", "{:.2f}"),
    ):
        shown = values.astype(np.float64)
        image = axis.imshow(shown, cmap="Blues", vmin=0)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        axis.set_xticks(range(size), labels, rotation=45, ha="right")
        axis.set_yticks(range(size), labels)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(name)
        if size <= 30:
            peak = shown.max() if shown.size else 0
            for (i, j), value in np.ndenumerate(values):
                if i == size - 1 and j == size - 1:
                    continue
                text = fmt.format(int(value) if fmt == "{:d}" else float(value))
                colour = "white" if peak and shown[i, j] > 0.6 * peak else "black"
                axis.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_error_breakdown(
    delta: dict[str, float],
    per_class_delta: dict[str, dict[str, float]],
    error_types: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """Bar charts of the AP50 each error type costs (as AP50 fractions): overall, and per class when there are at most
    12 classes."""
    plt = pyplot()
    classes = list(per_class_delta)
    per_class = 0 < len(classes) <= 12
    figure, axes = plt.subplots(
        1,
        2 if per_class else 1,
        figsize=(13 if per_class else 6.5, 4.5),
        constrained_layout=True,
        squeeze=False,
    )
    colours = plt.get_cmap("tab10")(np.arange(len(error_types)))
    overall = axes[0, 0]
    values = [max(delta[kind], 0.0) for kind in error_types]
    bars = overall.bar(error_types, values, color=colours)
    overall.bar_label(bars, fmt="%.4f", fontsize=8)
    overall.set_ylabel("AP50 gained by fixing")
    overall.set_title("overall")
    if per_class:
        axis = axes[0, 1]
        width = 0.8 / len(error_types)
        x = np.arange(len(classes))
        for i, kind in enumerate(error_types):
            heights = [max(per_class_delta[name][kind], 0.0) for name in classes]
            axis.bar(
                x + (i - (len(error_types) - 1) / 2) * width, heights, width, label=kind, color=colours[i]
            )
        axis.set_xticks(x, classes, rotation=30, ha="right")
        axis.set_ylabel("AP50 gained by fixing")
        axis.set_title("per class")
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=100)
    plt.close(figure)
