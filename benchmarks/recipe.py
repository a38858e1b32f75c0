"""Does a first run learn the minority classes? The default recipe against a careful hand-written loop,
on a small imbalanced BBC subset and on the shipped demo corpus, side by side in one run (prints JSON).

Corpora (built from the offline BBC News copy in data/bbc):
  imbalanced   600 documents of 3 classes, 385 / 161 / 54 (business / sports / tech); test set: 300
               other documents in the same proportions
  bbc_demo     data/bbc_demo.jsonl (1,000 documents, 5 classes); test set: 500 other documents

Recipes, all from pretrained MiniLM, 5 epochs, max length 128:
  old_defaults   the user config of issue 9 (2 workers, ZeRO-2, lr 5e-5, LLRD, unfreezing from the top 4
                 layers) with the defaults domainft had before: head_lr_mult 1, no LR scaling, no class weights
  new_defaults   the same user config with today's defaults
  careful_loop   1 process, plain PyTorch, batch 16, head LR 10x, full fine-tuning, the same prepared
                 (3:1 oversampled) train split, linear warmup/decay
  plus any `--variant NAME:key=value,key=value` (overrides on the user config)

Scores: macro-F1 / accuracy on the eval split (best epoch) and on the held-out test set (the exported model).

  python benchmarks/recipe.py                       # both corpora, the three recipes (~40 min on 2 cores)
  python benchmarks/recipe.py --corpora imbalanced --variant head10:optim.head_lr_mult=10
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

import numpy as np  # noqa: E402

BBC = ROOT / "data" / "bbc"
MODEL = ROOT / "models" / "minilm"
IMBALANCED = {"business": (385, 193), "sports": (161, 80), "tech": (54, 27)}  # class: (train, test)
USER = ["scaling.num_workers=2", "scaling.cpus_per_worker=0.5", "deepspeed.zero_stage=2", "optim.lr=5e-5",
        "unfreeze.initial_layers=4", "train.epochs=5", "train.batch_size=16"]
OLD_DEFAULTS = ["optim.head_lr_mult=1", "optim.lr_scaling=none", "train.class_weights=none"]


def _docs(label: str) -> list[str]:
    files = sorted((BBC / label).glob("*.txt"))
    if not files:
        raise SystemExit(f"{BBC / label}: no documents (run `make resources`)")
    return [p.read_text(encoding="utf-8", errors="replace").strip() for p in files]


def build_corpora(out: Path) -> dict[str, dict]:
    """Write each corpus as JSONL plus its test rows; returns {name: {"train": path, "test": [(text, label)]}}."""
    rng = random.Random(0)
    out.mkdir(parents=True, exist_ok=True)
    corpora = {}
    train, test = [], []
    for label, (n_train, n_test) in IMBALANCED.items():
        docs = _docs(label)
        rng.shuffle(docs)
        train += [{"text": t, "label": label} for t in docs[:n_train]]
        test += [(t, label) for t in docs[n_train:n_train + n_test]]
    path = out / "imbalanced.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train), encoding="utf-8")
    corpora["imbalanced"] = {"train": path, "test": test}
    demo = ROOT / "data" / "bbc_demo.jsonl"
    used = {json.loads(line)["text"].strip() for line in demo.open(encoding="utf-8")}
    rest = [(t, label) for label in sorted(p.name for p in BBC.iterdir() if p.is_dir()) for t in _docs(label)
            if t not in used]
    rng.shuffle(rest)
    corpora["bbc_demo"] = {"train": demo, "test": rest[:500]}
    return corpora


def config(corpus: Path, out: Path, overrides: list[str]):
    from domainft.config import apply_overrides, validate_dict

    raw = {"output_dir": str(out), "data": {"train": str(corpus), "eval_fraction": 0.1},
           "model": {"name_or_path": str(MODEL)}, "train": {"log_every_steps": 1000}}
    return validate_dict(apply_overrides(raw, overrides))


def score(model_dir: str, test: list[tuple[str, str]]) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from domainft.core.metrics import confusion_matrix, metrics_from_confusion

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    preds = []
    with torch.no_grad():
        for i in range(0, len(test), 32):
            enc = tok([t for t, _ in test[i:i + 32]], truncation=True, max_length=128, padding=True,
                      return_tensors="pt")
            preds += model(**enc).logits.argmax(-1).tolist()
    labels = [names.index(lab) for _, lab in test]
    m = metrics_from_confusion(confusion_matrix(preds, labels, len(names)), names)
    return {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4),
            "predicted_share": {n: round(preds.count(i) / len(preds), 3) for i, n in enumerate(names)}}


def careful_loop(report: dict, out: Path, epochs: int = 5, batch: int = 16, lr: float = 5e-5) -> str:
    """1 process, plain PyTorch, full fine-tuning, head LR 10x, linear warmup (10%) and decay."""
    import pyarrow.parquet as pq
    import torch

    from domainft.core import build_model
    from domainft.core.batching import pad_batch
    from domainft.core.export import export_hf
    from domainft.core.loop import TorchEngine, train_epoch
    from domainft.core.schedules import base_multiplier

    torch.manual_seed(42)
    model = build_model(str(MODEL), report["label_names"])
    head = [p for n, p in model.named_parameters() if n.startswith(("classifier", "bert.pooler"))]
    body = [p for n, p in model.named_parameters() if not n.startswith(("classifier", "bert.pooler"))]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": 10 * lr}], weight_decay=0.01)
    table = pq.read_table(report["train_dir"], columns=["input_ids", "label"])
    ids, labels = table.column("input_ids").to_pylist(), table.column("label").to_numpy()
    steps_per_epoch = len(ids) // batch
    total = steps_per_epoch * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: base_multiplier(s, total, int(0.1 * total), "linear"))
    engine = TorchEngine(model, opt, sched, max_grad_norm=1.0)
    rng = np.random.default_rng(42)
    for _ in range(epochs):
        order = rng.permutation(len(ids))
        batches = (pad_batch({"input_ids": [ids[j] for j in order[i:i + batch]], "label": labels[order[i:i + batch]]})
                   for i in range(0, steps_per_epoch * batch, batch))
        engine.train()
        train_epoch(engine, batches, steps_per_epoch, torch.device("cpu"))
    best = out / "careful_loop_best"
    export_hf(dict(model.named_parameters()), str(MODEL), report["label_names"], str(MODEL), best)
    return str(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", default="imbalanced,bbc_demo")
    ap.add_argument("--recipes", default="old_defaults,new_defaults,careful_loop")
    ap.add_argument("--variant", action="append", default=[], help="NAME:key=value,key=value (on the user config)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_recipe"))
    args = ap.parse_args()

    import ray

    from domainft.commands.prepare import run_prepare
    from domainft.commands.train import train_prepared

    out = Path(args.out)
    corpora = build_corpora(out / "corpora")
    recipes = {"old_defaults": USER + OLD_DEFAULTS, "new_defaults": USER}
    recipes = {k: v for k, v in recipes.items() if k in args.recipes.split(",")}
    for spec in args.variant:
        name, _, kv = spec.partition(":")
        recipes[name] = USER + [x for x in kv.split(",") if x]
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 1024**2, log_to_driver=True)
    results = []
    for cname in args.corpora.split(","):
        corpus = corpora[cname]
        base = config(corpus["train"], out / cname / "prepared", USER)
        report = run_prepare(base)
        for rname, overrides in recipes.items():
            t0 = time.time()
            cfg = config(corpus["train"], out / cname / rname, overrides)
            os.makedirs(cfg.output_dir, exist_ok=True)
            s = train_prepared(cfg, report, quiet=True)
            row = {"corpus": cname, "recipe": rname, "overrides": overrides, "seconds": round(time.time() - t0, 1),
                   "steps": s["history"][-1]["global_step"], "eval_best": {k: round(s["best"][k], 4) for k in
                                                                          ("accuracy", "macro_f1")},
                   "test": score(s["best_model_dir"], corpus["test"]), "warnings": s["warnings"]}
            results.append(row)
            print(json.dumps(row), flush=True)
        if "careful_loop" in args.recipes.split(","):
            t0 = time.time()
            best = careful_loop(report, out / cname)
            row = {"corpus": cname, "recipe": "careful_loop", "seconds": round(time.time() - t0, 1),
                   "test": score(best, corpus["test"])}
            results.append(row)
            print(json.dumps(row), flush=True)
    summary = {"results": results, "ratios_macro_f1_vs_careful": {}}
    for cname in args.corpora.split(","):
        ref = next((r["test"]["macro_f1"] for r in results if r["corpus"] == cname and r["recipe"] == "careful_loop"),
                   None)
        if ref:
            summary["ratios_macro_f1_vs_careful"][cname] = {
                r["recipe"]: round(r["test"]["macro_f1"] / ref, 3) for r in results if r["corpus"] == cname}
    (out / "recipe.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["ratios_macro_f1_vs_careful"]))


if __name__ == "__main__":
    main()
