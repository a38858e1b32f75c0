"""`domainft distill CONFIG`: train a small student on the teacher's soft labels, through the same
engine as `train` (Ray Train workers, DeepSpeed ZeRO, layer-wise LR, checkpoints, resume, eval).

setup: the student is `distill.student` (a model sharing the teacher's tokenizer), or built from the
teacher (student_layers / student_hidden_size, core/distill.py) and written to <output_dir>/student_init/;
the run's config is the config with model.name_or_path = the student (its loss, the task's distillation
loss, brings the teacher into every worker); the data is prepared with the student's tokenizer.
run: `train_prepared`. finish: metrics.json gains "distillation": teacher vs student, side by side.
"""
from __future__ import annotations

import os
from pathlib import Path

from domainft import console
from domainft.config import Config, derive
from domainft.errors import UserError

STUDENT_INIT = "student_init"


def teacher_labels(teacher: str) -> list[str]:
    """The teacher's label names in id order (a sequence classifier's config.json id2label)."""
    from domainft.export.source import classifier_labels

    return classifier_labels(Path(teacher))


def build_student(cfg: Config) -> str:
    """The student's model folder: distill.student, or the teacher-initialised one written here."""
    d = cfg.distill
    if d.student:
        return d.student
    import torch
    from transformers import AutoModelForSequenceClassification

    from domainft.core import build_model, build_tokenizer
    from domainft.core.distill import init_student_from_teacher, student_config

    out = Path(cfg.output_dir) / STUDENT_INIT
    teacher = build_model(d.teacher, teacher_labels(d.teacher))
    try:
        scfg = student_config(teacher.config, d.student_layers, d.student_hidden_size)
    except ValueError as e:
        raise UserError(f"distill: {e}") from None
    torch.manual_seed(cfg.train.seed)
    student = AutoModelForSequenceClassification.from_config(scfg)
    init_student_from_teacher(student, teacher, d.student_layers)
    student.save_pretrained(out)
    build_tokenizer(d.teacher).save_pretrained(out)
    return str(out)


def student_run_config(cfg: Config) -> Config:
    """The config that trains the student: `cfg` with model.name_or_path = the student's folder."""
    if not cfg.distill.teacher:
        raise UserError("distill.teacher: `domainft distill` needs the fine-tuned teacher (an exported best/ folder)")
    with console.to_log():
        student = build_student(cfg)
    return derive(cfg, {"model.name_or_path": student}, "the distillation student's run")


def run_distill(cfg: Config) -> dict:
    """Build the student, prepare the data with its tokenizer, train, compare, write metrics."""
    from domainft.tasks import require_labelled

    require_labelled(cfg, "distill")
    from domainft.commands.prepare import ensure_prepared
    from domainft.distributed.cluster import init_ray

    student_cfg = student_run_config(cfg)
    init_ray()
    return distill_prepared(student_cfg, ensure_prepared(student_cfg))


def distill_prepared(student_cfg: Config, report: dict, quiet: bool = False) -> dict:
    """Train the student on prepared splits, then compare it with the teacher (metrics.json, tables)."""
    from domainft.commands.train import train_prepared, write_json
    from domainft.summary import format_distillation, format_summary
    from domainft.tasks import get_task

    summary = train_prepared(student_cfg, report, quiet=True)  # the teacher's labels are checked in the RunSpec
    summary["distillation"] = compare(student_cfg.distill.teacher, summary["best_model_dir"], report)
    write_json(os.path.join(student_cfg.output_dir, "metrics.json"), summary)
    if not quiet:
        print(format_summary(summary, get_task(student_cfg.task).summary_lines(summary)))
        print(format_distillation(summary["distillation"]))
    return summary


def compare(teacher_dir: str, student_dir: str, report: dict) -> dict:
    """Teacher vs student on the prepared eval split: parameters, accuracy, macro-F1, per-class F1,
    CPU latency (batch 1, 128 tokens)."""
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForSequenceClassification

    from domainft.core.metrics import metrics_from_confusion
    from domainft.core.scoring import confusion_of, cpu_latency_ms

    table = pq.read_table(report["eval_dir"], columns=["input_ids", "label"])
    ids, labels = table.column("input_ids").to_pylist(), table.column("label").to_pylist()
    names = report["label_names"]
    out = {}
    threads = torch.get_num_threads()
    for role, path in (("teacher", teacher_dir), ("student", student_dir)):
        with console.to_log():
            model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
        m = metrics_from_confusion(confusion_of(model, ids, labels, len(names)), names)
        out[role] = {"path": path, "params": sum(p.numel() for p in model.parameters()),
                     "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                     "per_class_f1": {n: v["f1"] for n, v in m["per_class"].items()},
                     "cpu_latency_ms_b1_s128": round(cpu_latency_ms(model, vocab=model.config.vocab_size), 2)}
    t, s = out["teacher"], out["student"]
    out["ratios"] = {"params": round(s["params"] / t["params"], 4),
                     "macro_f1": round(s["macro_f1"] / t["macro_f1"], 4) if t["macro_f1"] else None,
                     "latency": round(s["cpu_latency_ms_b1_s128"] / t["cpu_latency_ms_b1_s128"], 4)}
    out["cpu_threads"] = threads
    return out
