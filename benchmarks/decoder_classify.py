"""A decoder LLM as a text classifier beside an encoder, on one BBC split (prints JSON and a table).

  minilm_full     models/minilm (6-layer encoder, 22.7 M parameters), full fine-tuning: the reference
  <dec>_lora      the decoder (default SmolLM2-135M-Instruct, `make smollm2`), LoRA r 8 on the attention
                  projections q/k/v/o (domainft's decoder default) + the new head
  <dec>_full      the decoder, full fine-tuning
  <dec>_qlora     the decoder's LoRA over its frozen base loaded as 4-bit NF4 (model.load_in_4bit; QLoRA)

Each regime is a real `domainft train` run (`prepare` once per model, then `train_prepared`: Ray Train,
DeepSpeed ZeRO-0, 1 worker on both cores) on the same rows of BBC News: the benchmark writes a stratified,
seeded train file and eval file (data.train and data.eval, so no split differs between tokenizers).
A decoder classifies from its last non-pad token; its tokenizer's pad token (else its EOS) pads.
Reported: trainable parameters, optimizer-state bytes (every tensor of the optimizer state in the saved
checkpoint), the worker's peak RSS, train samples/s (mean over epochs), eval macro-F1 / accuracy of the
best epoch, wall seconds. Every regime trains all its parameters from the first step (no gradual
unfreezing); LR: warmup 10%, linear decay, head x5; the encoder keeps its layer decay 0.9, the decoder
runs take one LR for all layers (layer_decay 1.0): --lr-encoder, --lr-full, --lr-adapter.

  python benchmarks/decoder_classify.py --json benchmarks/results/decoder_classify.json   # make bench-decoder
  python benchmarks/decoder_classify.py --model models/tiny-deepseek-v3 --quick            # a dry run (2-3 min)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")

from peft_regimes import PeakRSS, optimizer_state_bytes  # noqa: E402  (same measurements as peft_regimes.py)

ENCODER = "models/minilm"
DECODER = "models/smollm2-135m-instruct"
REGIMES = {  # name -> (decoder?, lr kind, overrides)
    "minilm_full": (False, "encoder", []),
    "lora": (True, "adapter", ["peft.method=lora", "peft.r=8", "peft.alpha=16", "peft.dropout=0.05"]),
    "full": (True, "full", []),
    "qlora": (True, "adapter", ["peft.method=lora", "peft.r=8", "peft.alpha=16", "peft.dropout=0.05",
                                "model.load_in_4bit=true"]),
}


def split_rows(train_rows: int, eval_rows: int, seed: int = 42) -> tuple[list[str], list[str]]:
    """The same number of rows per class from data/bbc_demo.jsonl, drawn with a seed: (train, eval)."""
    by_label: dict[str, list[str]] = {}
    for line in open(ROOT / "data" / "bbc_demo.jsonl", encoding="utf-8"):
        if line.strip():
            by_label.setdefault(json.loads(line)["label"], []).append(line)
    n_train, n_eval = train_rows // len(by_label), eval_rows // len(by_label)
    rng = random.Random(seed)
    train, evals = [], []
    for label in sorted(by_label):
        picked = rng.sample(by_label[label], n_train + n_eval)
        train += picked[:n_train]
        evals += picked[n_train:]
    return train, evals


def base_config(model: str, decoder: bool, a, out: Path) -> dict:
    tag = Path(model).name
    return {"output_dir": str(out / f"prepared_{tag}"), "model": {"name_or_path": str(ROOT / model)},
            "data": {"train": str(out / "bbc_train.jsonl"), "eval": str(out / "bbc_eval.jsonl"), "format": "jsonl",
                     "max_length": a.max_length},
            "optim": {"layer_decay": 1.0 if decoder else 0.9, "head_lr_mult": 5.0, "warmup_ratio": 0.1,
                      "weight_decay": 0.01},
            "unfreeze": {"every_epochs": 0},  # every regime trains all its parameters from the start
            "train": {"epochs": a.epochs, "batch_size": a.batch, "seed": 42, "log_every_steps": 10**6},
            "deepspeed": {"zero_stage": 0},
            "scaling": {"num_workers": 1, "cpus_per_worker": 2.0},
            "run": {"max_failures": 0}}


def run_regime(name: str, label: str, model: str, base: dict, report: dict, out: Path, lr: float,
               keep: bool) -> dict:
    from domainft.commands.train import train_prepared
    from domainft.config import apply_overrides, validate_dict

    overrides = REGIMES[name][2] + [f"output_dir={out / label}", f"optim.lr={lr}"]
    cfg = validate_dict(apply_overrides(base, overrides))
    watcher = PeakRSS(os.path.join(cfg.output_dir, "workers", "rank0.pid"))
    watcher.start()
    summary = train_prepared(cfg, report, quiet=True)
    watcher.done.set()
    watcher.join()
    best, history = summary["best"], summary["history"]
    row = {"regime": label, "model": model, "method": name if name != "minilm_full" else "full",
           "lr": cfg.optim.lr, "trainable_params": summary["trainable_params"],
           "total_params": summary["total_params"],
           "trainable_pct": round(100 * summary["trainable_params"] / summary["total_params"], 3),
           "optimizer_state_bytes": optimizer_state_bytes(summary["checkpoint"]),
           "peak_rss_bytes": watcher.peak,
           "train_samples_per_s": round(sum(h["train_samples_per_s"] for h in history) / len(history), 3),
           "macro_f1": round(best["macro_f1"], 4), "accuracy": round(best["accuracy"], 4),
           "best_epoch": best["epoch"], "seconds": summary["seconds"]}
    if not keep:  # a 135 M model's checkpoint and export are about 2 GB per run
        shutil.rmtree(cfg.output_dir, ignore_errors=True)
    return row


def table(results: list[dict]) -> str:
    head = ("regime", "trainable", "% of all", "optim state MB", "peak RSS MB", "train samples/s", "macro-F1",
            "accuracy", "seconds")
    rows = [(r["regime"], f"{r['trainable_params']:,}", f"{r['trainable_pct']:.2f}",
             f"{r['optimizer_state_bytes'] / 1e6:.1f}", f"{r['peak_rss_bytes'] / 1e6:.0f}",
             f"{r['train_samples_per_s']:.2f}", f"{r['macro_f1']:.3f}", f"{r['accuracy']:.3f}", f"{r['seconds']:.0f}")
            for r in results]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DECODER, help="the decoder folder (relative to the repository)")
    ap.add_argument("--train-rows", type=int, default=250, help="train rows (the same number per class)")
    ap.add_argument("--eval-rows", type=int, default=100, help="eval rows (the same number per class)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr-encoder", type=float, default=1e-4, help="MiniLM, full fine-tuning")
    ap.add_argument("--lr-full", type=float, default=3e-5, help="the decoder, full fine-tuning")
    ap.add_argument("--lr-adapter", type=float, default=5e-4, help="the decoder's LoRA and QLoRA")
    ap.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    ap.add_argument("--quick", action="store_true", help="a dry run: 50 train / 25 eval rows, 32 tokens, 1 epoch")
    ap.add_argument("--json", default=None, help="also write the JSON here (e.g. benchmarks/results/decoder_classify.json)")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep each run's output folder (checkpoints, best/)")
    a = ap.parse_args()
    if a.quick:
        a.train_rows, a.eval_rows, a.max_length, a.epochs = 50, 25, 32, 1
    if not (ROOT / a.model / "config.json").is_file():
        hint = " (run `make smollm2`)" if Path(a.model) == Path(DECODER) else ""
        sys.exit(f"{a.model}: no model folder{hint}")
    import ray

    from domainft.commands.prepare import run_prepare
    from domainft.config import validate_dict

    out = Path(a.out or tempfile.mkdtemp(prefix="domainft_decoder_bench_"))
    out.mkdir(parents=True, exist_ok=True)
    train, evals = split_rows(a.train_rows, a.eval_rows)
    (out / "bbc_train.jsonl").write_text("".join(train), encoding="utf-8")
    (out / "bbc_eval.jsonl").write_text("".join(evals), encoding="utf-8")
    token = out / "ray_auth_token"  # this process's own Ray token (ray.init would write ~/.ray/auth_token)
    token.write_text(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    load_before = os.getloadavg()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=512 * 1024**2,
             runtime_env={"env_vars": {k: os.environ[k] for k in ("DS_ACCELERATOR", "HF_HUB_OFFLINE",
                                                                  "TOKENIZERS_PARALLELISM")}})
    tag = "smollm2" if Path(a.model) == Path(DECODER) else Path(a.model).name.replace("-", "_")
    lrs = {"encoder": a.lr_encoder, "full": a.lr_full, "adapter": a.lr_adapter}
    results, reports = [], {}
    try:
        for name in a.regimes:
            decoder, kind, _ = REGIMES[name]
            model = a.model if decoder else ENCODER
            base = base_config(model, decoder, a, out)
            if model not in reports:  # tokenized once per model; its progress on stderr (stdout is the JSON)
                with contextlib.redirect_stdout(sys.stderr):
                    reports[model] = run_prepare(validate_dict(base), force=True)
            label = f"{tag}_{name}" if decoder else name
            t0 = time.time()
            results.append(run_regime(name, label, model, base, reports[model], out, lrs[kind], a.keep))
            print(f"[bench] {label}: {json.dumps(results[-1])} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    report = next(iter(reports.values()))
    record = {"data": {"corpus": "data/bbc_demo.jsonl", "train_rows": report["train_rows"],
                       "eval_rows": report["eval_rows"], "max_length": a.max_length, "split_seed": 42},
              "decoder": a.model, "encoder": ENCODER, "epochs": a.epochs, "batch": a.batch,
              "zero_stage": 0, "workers": 1, "cpu_count": os.cpu_count(),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "results": results}
    text = json.dumps(record, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n", encoding="utf-8")
    print("\n" + table(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
