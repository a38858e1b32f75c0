"""Continual retraining on BBC: how much a model forgets when it learns new classes, with and without
replay (prints JSON).

data/bbc_demo.jsonl (5 classes x 200) is cut, per class and seeded, into two disjoint halves.

  v1          trained on half A of 3 classes (business, entertainment, politics), from models/minilm
  v2          continued from v1's best/ with half B: the 2 new classes (sports, tech) in full and the
              3 old ones at 10% (new data arrives mostly for the new classes); label set grows to 5,
              the old classes keep their ids (the head is widened)
  v2_replay   the same, plus data.replay {from: v1, fraction: 0.2}: 20% of v1's train rows

Reported for each v2: macro-F1 and accuracy on v1's eval split (the 3 old classes) before (v1's
best/) and after, i.e. forgetting, and on v2's own eval split. Sized for a shared 2-core machine
(~30 min): max_length 64, 3 epochs, one worker.

  python benchmarks/continual.py [--epochs 3] [--old-share 0.1] [--fraction 0.2]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
for k, v in (("DS_ACCELERATOR", "cpu"), ("RAY_USAGE_STATS_ENABLED", "0"), ("TOKENIZERS_PARALLELISM", "false"),
             ("HF_HUB_OFFLINE", "1"), ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")):
    os.environ.setdefault(k, v)

OLD, NEW = ["business", "entertainment", "politics"], ["sports", "tech"]


def halves(src: Path, seed: int) -> tuple[dict, dict]:
    """label -> rows, for two disjoint halves of every class."""
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(seed)
    a, b = {}, {}
    for label in OLD + NEW:
        mine = [r for r in rows if r["label"] == label]
        rng.shuffle(mine)
        a[label], b[label] = mine[:len(mine) // 2], mine[len(mine) // 2:]
    return a, b


def write(path: Path, rows: list[dict], seed: int) -> Path:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--old-share", type=float, default=0.1, help="share of the old classes' half-B rows in v2")
    ap.add_argument("--fraction", type=float, default=0.2, help="data.replay.fraction")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_continual"))
    args = ap.parse_args()

    import ray

    from domainft.config import load_config
    from domainft.commands.train import run_train

    out = Path(args.out)
    a, b = halves(ROOT / "data" / "bbc_demo.jsonl", args.seed)
    v1_data = write(out / "v1.jsonl", [r for lab in OLD for r in a[lab]], 1)
    keep = round(args.old_share * len(b[OLD[0]]))
    v2_data = write(out / "v2.jsonl", [r for lab in NEW for r in b[lab]] + [r for lab in OLD for r in b[lab][:keep]], 2)
    common = ["data.eval_fraction=0.2", "data.max_length=64", f"train.epochs={args.epochs}", "optim.lr=2e-4",
              "unfreeze.every_epochs=1", "unfreeze.initial_layers=2", "deepspeed.zero_stage=0",
              "scaling.num_workers=1", "scaling.cpus_per_worker=1", "run.keep_checkpoints=1",
              "train.log_every_steps=1000"]
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 1024**2, log_to_driver=False)
    results: dict = {"corpus": "data/bbc_demo.jsonl", "old_classes": OLD, "new_classes": NEW, "epochs": args.epochs,
                     "max_length": 64, "old_share_in_v2": args.old_share, "replay_fraction": args.fraction}
    t0 = time.time()
    v1 = run_train(load_config(ROOT / "configs" / "bbc_demo.yaml",
                               [f"output_dir={out / 'v1'}", f"data.train={v1_data}", *common]))
    results["v1"] = {"seconds": v1["seconds"], "eval_macro_f1": v1["best"]["macro_f1"],
                     "eval_accuracy": v1["best"]["accuracy"], "train_rows": v1["data"]["train_rows"]}
    print(json.dumps({"v1": results["v1"]}), flush=True)
    for name, extra in (("v2", []), ("v2_replay", [f"data.replay.from={out / 'v1'}",
                                                   f"data.replay.fraction={args.fraction}"])):
        s = run_train(load_config(ROOT / "configs" / "bbc_demo.yaml", [
            f"output_dir={out / name}", f"data.train={v2_data}", f"model.name_or_path={v1['best_model_dir']}",
            *common, *extra]))
        c = s["continual"]
        prev, new = c["previous_eval"], c["new_eval"]
        results[name] = {
            "seconds": s["seconds"], "train_rows": s["data"]["train_rows"],
            "old_eval_macro_f1_before": prev["before"]["macro_f1"], "old_eval_macro_f1_after": prev["after"]["macro_f1"],
            "old_eval_accuracy_before": prev["before"]["accuracy"], "old_eval_accuracy_after": prev["after"]["accuracy"],
            "forgetting_macro_f1": c["forgetting_macro_f1"],
            "new_eval_macro_f1_after": new["after"]["macro_f1"], "new_eval_accuracy_after": new["after"]["accuracy"],
            "new_eval_macro_f1_before": new["before"]["macro_f1"],
            "old_eval_per_class_f1_after": {n: prev["after"]["per_class"][n]["f1"] for n in OLD}}
        print(json.dumps({name: results[name]}), flush=True)
    results["seconds"] = round(time.time() - t0, 1)
    (out / "continual_benchmark.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
