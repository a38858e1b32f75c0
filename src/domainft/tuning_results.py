"""What a sweep leaves behind: one row per trial, the printed table, results.csv, the metric-vs-parameter
plot and best_config.yaml. Pure: plain dicts in, files out; never Ray (matplotlib lazily).

A row is a dict: trial_id, status ("completed", "stopped", "error", "unfinished", "no result"), params (dotted key ->
value), value (the best per-epoch value of the sweep metric), best_epoch, epochs_run, last (the last
epoch's value) and error (a one-line message or None).
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from domainft.config import Config, ConfigError, derive, dump_yaml
from domainft.config.sweep import trial_changes

RESULTS_CSV, PLOT_PNG, BEST_CONFIG = "results.csv", "metric_vs_params.png", "best_config.yaml"


def trial_row(trial_id: str, params: dict[str, Any], history: Sequence[dict], error: Optional[str],
              metric: str, mode: str, planned_epochs: int, finished: bool = True) -> dict:
    """Summarise one trial from its per-epoch reports.

    Args:
        trial_id: Ray Tune's trial id.
        params: The sampled values (dotted key -> value).
        history: One dict per reported epoch, holding "epoch" and the metric.
        error: The trial's error, if it failed.
        metric, mode: The sweep's metric and "max"/"min".
        planned_epochs: train.epochs of this trial: fewer epochs run means it was stopped early.
        finished: False for a trial still pending or running when the sweep was interrupted.

    Returns:
        The row (see the module docstring).
    """
    values = [(h["epoch"], h[metric]) for h in history if _number(h.get(metric)) is not None]
    best_epoch, value = (None, None)
    if values:
        pick = max if mode == "max" else min
        best_epoch, value = pick(values, key=lambda ev: ev[1])
    epochs_run = max((int(h["epoch"]) for h in history if h.get("epoch") is not None), default=0)
    if error:
        status = "error"
    elif not finished:
        status = "unfinished"  # the sweep was interrupted: resuming runs it
    elif epochs_run >= planned_epochs:
        status = "completed"
    elif epochs_run == 0:
        status = "no result"
    else:
        status = "stopped"  # by the scheduler (ASHA), train.early_stopping_patience or time_budget_s
    first_line = error.strip().splitlines()[-1][:300] if error else None
    return {"trial_id": trial_id, "status": status, "params": dict(params), "value": value,
            "best_epoch": best_epoch, "epochs_run": epochs_run, "last": values[-1][1] if values else None,
            "error": first_line}


def _number(x: Any) -> Optional[float]:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def rank(rows: Sequence[dict], mode: str) -> list[dict]:
    """Best first; trials without a value last (in trial-id order)."""
    scored = [r for r in rows if r["value"] is not None]
    scored.sort(key=lambda r: (-r["value"] if mode == "max" else r["value"], r["trial_id"]))
    return scored + sorted((r for r in rows if r["value"] is None), key=lambda r: r["trial_id"])


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    return f"{v:.3g}" if (v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4)) else f"{v:.4g}"


def format_table(rows: Sequence[dict], param_keys: Sequence[str], metric: str) -> str:
    """The results table, ranked rows in, one line per trial; errors listed underneath."""
    head = ["trial", "status", metric, "epoch", "epochs", *param_keys]
    body = [[r["trial_id"], r["status"], "-" if r["value"] is None else f"{r['value']:.4f}", _fmt(r["best_epoch"]),
             _fmt(r["epochs_run"]), *(_fmt(r["params"].get(k)) for k in param_keys)] for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
    errors = [f"  {r['trial_id']}: {r['error']}" for r in rows if r["error"]]
    return "\n".join(lines + (["", "errors:", *errors] if errors else []))


def write_csv(path: str | os.PathLike, rows: Sequence[dict], param_keys: Sequence[str], metric: str) -> Path:
    """results.csv: one row per trial (ranked): id, status, metric (best epoch), epochs, params, error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "status", metric, "best_epoch", "epochs_run", f"last_{metric}", *param_keys, "error"])
        for r in rows:
            w.writerow([r["trial_id"], r["status"], _blank(r["value"]), _blank(r["best_epoch"]), r["epochs_run"],
                        _blank(r["last"]), *(_blank(r["params"].get(k)) for k in param_keys), _blank(r["error"])])
    return path


def _blank(v: Any) -> Any:
    return "" if v is None else v


def plot_metric_vs_params(path: str | os.PathLike, rows: Sequence[dict], param_keys: Sequence[str], metric: str,
                          log_keys: Sequence[str] = (), discrete_keys: Sequence[str] = ()) -> Path:
    """One panel per searched key: the metric of every trial against its value; completed trials filled,
    stopped ones hollow, the best one starred. Log axis for `log_keys`, a tick per value for `discrete_keys`
    (choice/grid)."""
    # matplotlib's object API on an Agg canvas, as in domainft.core.plots: no pyplot, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scored = [r for r in rows if r["value"] is not None]
    best = scored[0] if scored else None  # rows come ranked, best first
    n = max(1, len(param_keys))
    cols, nrows = min(n, 3), (n + 2) // 3
    fig = Figure(figsize=(4.2 * cols, 3.4 * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for i, key in enumerate(param_keys):
        ax = axes[i // cols][i % cols]
        values = [r["params"].get(key) for r in scored]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            xs = values
        else:  # categories in first-seen order
            cats = list(dict.fromkeys(str(v) for v in values))
            xs = [cats.index(str(v)) for v in values]
            ax.set_xticks(range(len(cats)), cats)
        for r, x in zip(scored, xs):
            done = r["status"] == "completed"
            ax.scatter([x], [r["value"]], s=90 if r is best else 36, marker="*" if r is best else "o",
                       facecolors=("C3" if r is best else "C0") if done or r is best else "none",
                       edgecolors="C3" if r is best else "C0")
        if numeric and key in log_keys:
            ax.set_xscale("log")
        elif numeric and key in discrete_keys:
            ax.set_xticks(sorted(set(values)))
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for j in range(len(param_keys), axes.shape[0] * axes.shape[1]):
        axes[j // cols][j % cols].set_visible(False)
    fig.suptitle(f"{metric} (best epoch) per trial: filled = completed, hollow = stopped early, star = best")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def best_config(base: dict, params: dict[str, Any], output_dir: str) -> Config:
    """The base config with the best trial's values: validated exactly as `domainft train` validates it."""
    try:
        return derive(base, trial_changes(params, output_dir), "best_config")
    except ConfigError as e:  # the trial ran with these values, so this is a bug, not a user error
        raise RuntimeError(f"the best trial's config does not validate: {e}") from None


def write_best_config(path: str | os.PathLike, cfg: Config, header: Sequence[str]) -> Path:
    """best_config.yaml: the full resolved train config, with `# ...` header lines saying where it came from."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {line}\n" for line in header) + dump_yaml(cfg)
    path.write_text(text, encoding="utf-8")
    return path
