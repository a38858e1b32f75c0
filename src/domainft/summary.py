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


def best_lines(s: dict) -> list[str]:
    """A classifier's best epoch: accuracy, macro-F1 and the per-class table."""
    b = s["best"]
    lines = ["", f"best epoch {b['epoch']} by {s['metric_for_best']}: accuracy {b['accuracy']:.4f}, "
                 f"macro-F1 {b['macro_f1']:.4f}", "", "class            precision  recall      f1  support"]
    for name, pc in b["per_class"].items():
        lines.append(f"{name[:16]:<16} {pc['precision']:>9.4f} {pc['recall']:>7.4f} {pc['f1']:>7.4f} "
                     f"{pc['support']:>8}")
    return lines


def format_summary(s: dict, best: list[str]) -> str:
    """The final tables after the live epoch rows: the task's best epoch (`best`, e.g. `best_lines`),
    forgetting of a continual run, warnings, where the model, adapter and plots are."""
    lines = list(best)
    if s.get("continual"):
        lines += format_forgetting(s["continual"])
    for w in s.get("warnings", []):
        lines += ["", f"!!! WARNING {w}"]
    lines += ["", f"model: {s['best_model_dir']}"]
    if s.get("adapter_dir"):
        lines.append(f"adapter ({s['peft_method']}, {s['trainable_params']:,} of {s['total_params']:,} parameters "
                     f"trained): {s['adapter_dir']}")
    lines.append(f"plots: {', '.join(s['plots'].values())}")
    return "\n".join(lines)


def format_forgetting(c: dict) -> list[str]:
    """Continual retraining: accuracy and macro-F1 on the previous eval split and the new one, before
    (the model training started from) and after (best/)."""
    lines = ["", f"continual: previous run {c['previous_output_dir']}", "split            rows   before acc/F1    after acc/F1"]
    for key, title in (("previous_eval", "previous eval"), ("new_eval", "new eval")):
        b, a = c[key].get("before"), c[key]["after"]
        before = f"{b['accuracy']:.4f}/{b['macro_f1']:.4f}" if b else "          -"
        lines.append(f"{title:<14} {a['rows']:>6}   {before:>13}   {a['accuracy']:.4f}/{a['macro_f1']:.4f}")
    if "forgetting_macro_f1" in c:
        lines.append(f"forgetting (previous eval macro-F1, before - after): {c['forgetting_macro_f1']:+.4f}")
    return lines


def format_distillation(d: dict) -> str:
    """Teacher vs student, side by side, with ratios."""
    t, s, r = d["teacher"], d["student"], d["ratios"]
    lines = ["", "                 teacher     student   student/teacher",
             f"parameters  {t['params']:>12,} {s['params']:>11,} {r['params']:>13.3f}",
             f"accuracy    {t['accuracy']:>12.4f} {s['accuracy']:>11.4f}",
             f"macro-F1    {t['macro_f1']:>12.4f} {s['macro_f1']:>11.4f} {r['macro_f1'] or 0:>13.3f}",
             f"CPU ms (b1) {t['cpu_latency_ms_b1_s128']:>12.2f} {s['cpu_latency_ms_b1_s128']:>11.2f} "
             f"{r['latency']:>13.3f}"]
    for name in t["per_class_f1"]:
        lines.append(f"F1 {name[:8]:<8} {t['per_class_f1'][name]:>12.4f} {s['per_class_f1'][name]:>11.4f}")
    return "\n".join(lines)
