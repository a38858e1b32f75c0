"""The run's tables as text: one row per epoch (printed live) and the final summary. Pure: dicts in, text out."""
from __future__ import annotations

EPOCH_HEADER = "epoch  train_loss  eval_loss  accuracy  macro_f1  samples/s  trainable_down_to"

ADVICE = ("what to change: a new classification head needs a higher LR (optim.head_lr_mult, now {head:g}; try 10), "
          "minority classes need weight (train.class_weights=balanced, or a lower data.max_class_ratio), and a small "
          "corpus needs enough optimizer steps ({steps} were taken at a global batch of {batch}: more train.epochs, "
          "or fewer workers / a smaller train.batch_size, or optim.lr_scaling=sqrt)")



def epoch_row(h: dict) -> str:
    return (f"{h['epoch']:>5}  {h['train_loss']:>10.4f}  {h['eval_loss']:>9.4f}  {h['accuracy']:>8.4f}  "
            f"{h['macro_f1']:>8.4f}  {h.get('train_samples_per_s', 0.0):>9.1f}  depth {h['lowest_trainable']}")


def format_summary(s: dict, with_history: bool = True) -> str:
    """The final tables: the epochs (unless already shown live), the best epoch per class, warnings."""
    lines = ["", EPOCH_HEADER] + [epoch_row(h) for h in s["history"]] if with_history else []
    b = s["best"]
    lines += ["", f"best epoch {b['epoch']} by {s['metric_for_best']}: accuracy {b['accuracy']:.4f}, "
                  f"macro-F1 {b['macro_f1']:.4f}", "", "class            precision  recall      f1  support"]
    for name, pc in b["per_class"].items():
        lines.append(f"{name[:16]:<16} {pc['precision']:>9.4f} {pc['recall']:>7.4f} {pc['f1']:>7.4f} "
                     f"{pc['support']:>8}")
    for w in s.get("warnings", []):
        lines += ["", f"!!! WARNING {w}"]
    lines += ["", f"model: {s['best_model_dir']}", f"plots: {', '.join(s['plots'].values())}"]
    return "\n".join(lines)
