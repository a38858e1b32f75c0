"""Label audit on BBC with planted errors: how well `domainft audit` finds them (prints JSON).

5% of data/bbc_demo.jsonl's labels are flipped at random to another class (seeded); the audit runs
on the flipped corpus exactly as `domainft audit` does (K folds as a Ray Tune grid of Ray Train runs
of the pretrained MiniLM, out-of-fold probabilities, cleanlab). Measured on the audited rows (the
prepared train split's originals; flips that landed in the eval split are not audited):

  top_5pct   the top-ranked 5% of audited rows: precision (flips among them) and recall (share of
             the audited flips among them)   goal: recall >= 0.8 and precision >= 0.7
  all        every row cleanlab flags: precision and recall

Sized for a shared 2-core CPU machine (~30 min): max_length 64, 2 epochs, the top layers trained,
two folds at a time (1 worker x 0.5 CPU each).

  python benchmarks/audit.py [--folds 5] [--epochs 2] [--flip 0.05]
"""
from __future__ import annotations

import argparse
import csv
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


def flip_labels(src: Path, dest: Path, share: float, seed: int) -> set[str]:
    """Copy a JSONL corpus with `share` of its labels changed to another label; the flipped source_ids."""
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = sorted({r["label"] for r in rows})
    rng = random.Random(seed)
    flipped = rng.sample(range(len(rows)), round(share * len(rows)))
    for i in flipped:
        rows[i]["label"] = rng.choice([lab for lab in labels if lab != rows[i]["label"]])
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return {f"{dest.name}:{i + 1}" for i in flipped}


def scores(ranked: list[str], flips: set[str], n: int) -> dict:
    top = ranked[:n]
    hit = len(set(top) & flips)
    return {"n": len(top), "flips_found": hit, "precision": round(hit / max(1, len(top)), 4),
            "recall": round(hit / max(1, len(flips)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_audit"))
    args = ap.parse_args()

    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import ray

    from domainft.config import load_config
    from domainft.commands.audit import run_audit

    out = Path(args.out)
    corpus = out / "bbc_flipped.jsonl"
    flips = flip_labels(ROOT / "data" / "bbc_demo.jsonl", corpus, args.flip, args.seed)
    cfg = load_config(ROOT / "configs" / "bbc_demo.yaml", [
        f"output_dir={out / 'run'}", f"data.train={corpus}", "data.eval_fraction=0.1", "data.max_length=64",
        f"train.epochs={args.epochs}", "unfreeze.every_epochs=1", "unfreeze.initial_layers=2", "optim.lr=2e-4",
        "deepspeed.zero_stage=0", "scaling.num_workers=1", "scaling.cpus_per_worker=0.5", "run.keep_checkpoints=1",
        "train.log_every_steps=1000"])
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 1024**2, log_to_driver=False)
    t0 = time.time()
    report = run_audit(cfg, folds=args.folds)
    seconds = round(time.time() - t0, 1)
    train = pq.read_table(os.path.join(cfg.output_dir, "data", "train"), columns=["source_id", "aug_op",
                                                                                  "is_augmented"])
    originals = train.filter(pc.and_(pc.equal(train.column("aug_op"), ""), pc.invert(train.column("is_augmented"))))
    audited_flips = flips & set(originals.column("source_id").to_pylist())
    with open(report["label_issues_csv"], newline="", encoding="utf-8") as f:
        ranked = [r["row_id"] for r in csv.DictReader(f)]
    top_n = round(0.05 * report["rows_audited"])
    top = scores(ranked, audited_flips, top_n)
    result = {
        "corpus": "data/bbc_demo.jsonl", "rows": 1000, "flip_share": args.flip, "flipped": len(flips),
        "folds": args.folds, "epochs": args.epochs, "max_length": 64, "model": "models/minilm",
        "rows_audited": report["rows_audited"], "audited_flips": len(audited_flips),
        "issues_found": report["issues_found"], "out_of_fold": report["out_of_fold"],
        "top_5pct": top, "all": scores(ranked, audited_flips, len(ranked)),
        "fold_seconds": report["fold_seconds"], "seconds": seconds,
        "goal": {"recall_top_5pct": 0.8, "precision_top_5pct": 0.7,
                 "met": top["recall"] >= 0.8 and top["precision"] >= 0.7},
    }
    (out / "audit_benchmark.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
