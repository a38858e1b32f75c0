"""PNG plots of a run: learning curves per epoch and the LR of every parameter group per step.

Rendered through matplotlib's object API on an Agg canvas: no pyplot, so no global backend switch,
no display needed, and nothing happens at import (matplotlib itself is imported lazily).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

PathLike = Union[str, Path]


def _figure(nrows: int, ncols: int, size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # attaches the Agg canvas; savefig then writes a PNG without pyplot
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_learning_curves(history: Sequence[dict], path: PathLike) -> Path:
    """Train/eval loss and accuracy/macro-F1 per epoch, side by side.

    Args:
        history: One dict per epoch with any of "epoch", "train_loss", "eval_loss", "accuracy",
            "macro_f1" (missing or None values are skipped; "epoch" defaults to 1, 2, ...).
        path: Where the PNG goes (parent folders are created).

    Returns:
        The path written.
    """
    fig, axes = _figure(1, 2, (11, 4.2))
    loss_ax, metric_ax = axes[0]
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for ax, keys, title, ylabel in (
        (loss_ax, (("train_loss", "train loss"), ("eval_loss", "eval loss")), "Loss", "loss"),
        (metric_ax, (("accuracy", "accuracy"), ("macro_f1", "macro F1")), "Eval metrics", "score"),
    ):
        for key, label in keys:
            points = [(e, h[key]) for e, h in zip(epochs, history) if h.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    metric_ax.set_ylim(0.0, 1.02)
    fig.suptitle("Learning curves")
    return _save(fig, path)


def plot_group_lrs(lr_trace: Sequence[dict], path: PathLike, events: Optional[Sequence[dict]] = None) -> Path:
    """LR of each parameter group over optimizer steps, with unfreezing events marked.

    Args:
        lr_trace: [{"step": int, "lrs": {group_name: lr}}, ...] in step order.
        path: Where the PNG goes.
        events: Optional [{"step": int, "depth": int, "name": str}, ...]: a dashed vertical line
            labelled with the name at each thaw.

    Returns:
        The path written. The y axis is logarithmic when every plotted LR is > 0 (layer-wise LRs
        span orders of magnitude); frozen groups (LR 0) force a linear axis.
    """
    fig, axes = _figure(1, 1, (10, 5))
    ax = axes[0][0]
    names: list[str] = []
    for entry in lr_trace:
        names += [n for n in entry["lrs"] if n not in names]
    values = []
    for name in names:
        points = [(e["step"], e["lrs"][name]) for e in lr_trace if name in e["lrs"]]
        xs, ys = zip(*points)
        values += ys
        ax.plot(xs, ys, label=name)
    if values and min(values) > 0:
        ax.set_yscale("log")
    for event in events or ():
        ax.axvline(event["step"], linestyle="--", color="grey", linewidth=1)
        ax.annotate(f"thaw {event.get('name', event.get('depth'))}", xy=(event["step"], 1.0),
                    xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right", fontsize=8)
    ax.set_title("Learning rate per parameter group")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.grid(True, alpha=0.3)
    if names:
        ax.legend(fontsize=8, ncol=2 if len(names) > 8 else 1)
    return _save(fig, path)
