"""Distillation on BBC with the shipped MiniLM teacher: how much of the teacher a smaller student keeps
(prints JSON, one run, same data and seed for every student).

  teacher        MiniLM (6 layers, hidden 384, 22.7M parameters) fine-tuned on data/bbc_demo.jsonl by the
                 demo config (configs/bbc_demo.yaml); reused from --teacher when given
  half_layers    student_layers [1, 3, 5]: half the layers, the teacher's width (goal >= 0.98x macro-F1)
  small          student_layers [1, 3, 5] and student_hidden_size 160: <= 0.3x the parameters (goal >= 0.95x)

Every student trains through `domainft distill` (Ray Train, 2 workers, DeepSpeed ZeRO-2) on the same
prepared split; scores are on the eval split; CPU latency is batch 1, 128 tokens.

  python benchmarks/distill.py [--teacher runs/bbc_demo/best] [--epochs 6]   (~30-60 min on 2 cores)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
for k, v in (("DS_ACCELERATOR", "cpu"), ("RAY_USAGE_STATS_ENABLED", "0"), ("TOKENIZERS_PARALLELISM", "false"),
             ("HF_HUB_OFFLINE", "1"), ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")):
    os.environ.setdefault(k, v)

STUDENTS = {"half_layers": {"distill.student_layers": [1, 3, 5]},
            "small": {"distill.student_layers": [1, 3, 5], "distill.student_hidden_size": 160}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=None, help="an exported best/ (default: train one with configs/bbc_demo.yaml)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--students", default=",".join(STUDENTS))
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_distill"))
    args = ap.parse_args()

    import ray

    from domainft.config import apply_overrides, load_config, to_dict, validate_dict
    from domainft.commands.distill import distill_prepared, student_run_config
    from domainft.commands.prepare import ensure_prepared
    from domainft.commands.train import train_prepared

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 1024**2, log_to_driver=False)
    out = Path(args.out)
    base = load_config(ROOT / "configs" / "bbc_demo.yaml", [f"output_dir={out / 'teacher'}"])
    teacher = args.teacher
    results = {}
    if teacher is None:
        t0 = time.time()
        summary = train_prepared(base, ensure_prepared(base), quiet=True)
        teacher = summary["best_model_dir"]
        results["teacher_training_s"] = round(time.time() - t0, 1)
    for name in args.students.split(","):
        raw = apply_overrides(to_dict(base), [f"output_dir={out / name}", f"distill.teacher={teacher}",
                                              f"train.epochs={args.epochs}", "unfreeze.every_epochs=0",
                                              "optim.lr=3e-4", "optim.layer_decay=0.95"])
        for key, value in STUDENTS[name].items():
            raw = apply_overrides(raw, [f"{key}={json.dumps(value)}"])
        cfg = student_run_config(validate_dict(raw))
        t0 = time.time()
        s = distill_prepared(cfg, ensure_prepared(cfg), quiet=True)
        d = s["distillation"]
        results[name] = {"seconds": round(time.time() - t0, 1), "teacher": {k: d["teacher"][k] for k in (
            "params", "accuracy", "macro_f1", "cpu_latency_ms_b1_s128")}, "student": {k: d["student"][k] for k in (
                "params", "accuracy", "macro_f1", "cpu_latency_ms_b1_s128", "per_class_f1")}, "ratios": d["ratios"]}
        print(json.dumps({name: results[name]}), flush=True)
    goals = {"small": ("params <= 0.3 and macro_f1 >= 0.95", lambda r: r["params"] <= 0.3 and r["macro_f1"] >= 0.95),
             "half_layers": ("macro_f1 >= 0.98", lambda r: r["macro_f1"] >= 0.98)}
    results["goals"] = {n: {"goal": goals[n][0], "met": goals[n][1](results[n]["ratios"])} for n in goals if n in results}
    (out / "distill.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results["goals"]))


if __name__ == "__main__":
    main()
