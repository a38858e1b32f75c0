"""CPU inference: PyTorch vs ONNX Runtime fp32 vs int8, one run, same model and inputs (prints JSON).

The model is a fine-tuned MiniLM classifier: `--model DIR` (e.g. a `domainft train` run's
`runs/bbc_demo/best/`), else models/minilm fine-tuned here briefly on data/bbc_demo.jsonl with a
plain PyTorch loop (cached in runs/bench_inference/). The model is exported with the real
`domainft export` path (fusions, int8 with the default settings, parity checks), then timed at
batch 1 and 32, sequence 128: latency p50/p99, throughput, ratios vs PyTorch, argmax agreement with
PyTorch on the held-out texts. torch threads = ONNX Runtime intra-op threads.

Goal (issue 12): int8 >= 2x PyTorch at batch 1, with int8 argmax agreement >= 0.99 and an accuracy
drop <= 0.01. The CPU's flags (AVX-512 VNNI, AVX2, AMX) are printed with the result: int8 matmuls
are fast only with VNNI (or AMX); without it the int8 gain shrinks.

  python benchmarks/inference.py                     (fine-tunes once, ~5 min on 2 cores, then cached)
  python benchmarks/inference.py --model runs/bbc_demo/best --check runs/bbc_demo/data/eval
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CACHE = ROOT / "runs" / "bench_inference"


def _split(labels: list[str], held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, held-out) row indices."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    labels_arr = np.asarray(labels)
    for name in sorted(set(labels)):
        idx = rng.permutation(np.flatnonzero(labels_arr == name))
        k = max(1, round(len(idx) * held_out))
        test += idx[:k].tolist()
        train += idx[k:].tolist()
    return rng.permutation(train), np.sort(test)


def finetune_minilm(out: Path, corpus: Path, base: Path, steps: int, batch: int, max_length: int, seed: int = 0) -> Path:
    """models/minilm + a classification head, trained briefly with a plain loop; writes out/best (HF
    directory), out/train.jsonl and out/heldout.jsonl. Cached: an existing out/best is reused."""
    from domainft.core.model import build_model, build_tokenizer
    from domainft.export.checkdata import read_labelled_texts, write_jsonl

    best = out / "best"
    if (best / "model.safetensors").exists() and (out / "heldout.jsonl").exists():
        return best
    texts, labels = read_labelled_texts(str(corpus))
    names = sorted(set(labels))
    train_idx, test_idx = _split(labels, 0.2, seed)
    write_jsonl(str(out / "train.jsonl"), [texts[i] for i in train_idx], [labels[i] for i in train_idx])
    write_jsonl(str(out / "heldout.jsonl"), [texts[i] for i in test_idx], [labels[i] for i in test_idx])
    torch.manual_seed(seed)
    tok = build_tokenizer(str(base))
    model = build_model(str(base), names).train()
    label_id = {n: i for i, n in enumerate(names)}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, 1 - s / steps))
    order, t0 = [], time.time()
    for step in range(steps):
        if len(order) < batch:
            order += np.random.default_rng(seed + step).permutation(train_idx).tolist()
        rows, order = order[:batch], order[batch:]
        enc = tok([texts[i] for i in rows], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([label_id[labels[i]] for i in rows])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 20 == 0 or step == steps - 1:
            print(f"# finetune step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    model.eval().save_pretrained(best)
    tok.save_pretrained(best)
    return best


STUDY = {  # int8 settings compared by --study (name -> Int8Settings keyword arguments)
    "per_tensor_all_ops": dict(per_channel=False, op_types=("MatMul", "Attention", "Gather", "EmbedLayerNormalization")),
    "per_channel_all_ops": dict(per_channel=True, op_types=("MatMul", "Attention", "Gather", "EmbedLayerNormalization")),
    "per_tensor_fp32_embeddings": dict(per_channel=False),
    "per_channel_fp32_embeddings (default)": dict(per_channel=True),
    "per_channel_reduce_range": dict(per_channel=True, reduce_range=True),
    "per_channel_fp32_attention": dict(per_channel=True, exclude_attention=True),
    "per_channel_fp32_last_layer": dict(per_channel=True, exclude_last_layers=1),
}


def fixed_length_rows(rows: list[list[int]], seq: int, pad_id: int) -> list[np.ndarray]:
    """Every row exactly `seq` tokens: truncated, or repeated body tokens for short texts (no padding,
    so that every engine computes the same full-length attention)."""
    out = []
    for r in rows:
        r = np.asarray(r[:seq], dtype=np.int64)
        if len(r) < seq:
            body = r[1:-1] if len(r) > 2 else np.array([pad_id + 1000])
            r = np.concatenate([r[:1], np.resize(body, seq - 2), r[-1:]])
        out.append(r)
    return out


def _batches(rows: list[np.ndarray], batch: int, n: int) -> list[dict]:
    out = []
    for i in range(n):
        b = np.stack([rows[(i * batch + k) % len(rows)] for k in range(batch)])
        out.append({"input_ids": b, "attention_mask": np.ones_like(b)})
    return out


def time_engines(runners: dict, rows: list[np.ndarray], batch: int, calls: int, warmup: int) -> dict:
    """Latency per call and throughput of each engine on the same batches, engines taking turns."""
    from domainft.export.machine import latencies

    feeds = _batches(rows, batch, calls + warmup)
    timed = latencies({n: (lambda i, run=run: run(feeds[i])) for n, run in runners.items()}, calls, warmup)
    return {n: {**t, "rows_per_s": batch * 1000.0 / t["mean_ms"]} for n, t in timed.items()}


def study_int8(fp32_path: Path, out: Path, reference: np.ndarray, rows, labels, pad_id: int, threads: int,
               timing_rows, calls: int) -> dict:
    """Agreement, accuracy drop and batch-1 latency of each STUDY setting (same fused fp32 graph)."""
    from domainft.export.parity import compare
    from domainft.export.quantize import Int8Settings, quantize_int8
    from domainft.export.runtime import batched_logits, graph_runner, open_session

    results = {}
    for name, kwargs in STUDY.items():
        path = out / f"study_{len(results)}.onnx"
        info = quantize_int8(fp32_path, path, Int8Settings(**kwargs))
        run = graph_runner(open_session(path, threads))
        c = compare(reference, batched_logits(run, rows, pad_id, reference.shape[1]), labels)
        t = time_engines({"int8": run}, timing_rows, 1, calls, 3)["int8"]
        results[name] = {"argmax_agreement": round(c["argmax_agreement"], 4),
                         "accuracy_drop": None if c["accuracy_drop"] is None else round(c["accuracy_drop"], 4),
                         "max_abs_logit_diff": round(c["max_abs_diff"], 4), "batch1_p50_ms": round(t["p50_ms"], 2),
                         "size_mb": round(path.stat().st_size / 1e6, 1), "kept_fp32_nodes": len(info["kept_fp32"])}
        path.unlink()
        print(f"# study {name}: {results[name]}", file=sys.stderr, flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a fine-tuned HF classifier folder (default: fine-tune MiniLM)")
    ap.add_argument("--check", default=None, help="labelled texts for agreement/accuracy (default: the held-out split)")
    ap.add_argument("--steps", type=int, default=240, help="fine-tuning steps when no --model is given")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--calls", type=int, default=60, help="timed calls per engine and batch size (batch 32: a sixth)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads = ORT intra-op threads")
    ap.add_argument("--study", action="store_true", help="also compare int8 settings (agreement, drop, latency)")
    ap.add_argument("--prepare-only", action="store_true", help="only fine-tune (and cache) the model")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model_dir = Path(a.model) if a.model else finetune_minilm(CACHE, ROOT / "data" / "bbc_demo.jsonl",
                                                             ROOT / "models" / "minilm", a.steps, 16, a.seq)
    if a.prepare_only:
        print(json.dumps({"model": str(model_dir)}))
        return
    from transformers import AutoModelForSequenceClassification

    from domainft.export.machine import cpu_info
    from domainft.export.parity import compare, torch_runner
    from domainft.export.pipeline import run_export
    from domainft.export.runtime import OnnxClassifier, batched_logits

    check = a.check or (str(CACHE / "heldout.jsonl") if not a.model else None)
    out = CACHE / "onnx"
    t0 = time.time()
    report = run_export(model_dir, out, quantize="int8", check=check, max_length=a.seq, threads=a.threads)
    print(f"# export {time.time() - t0:.0f} s, passed={report['passed']} {report['failures']}", file=sys.stderr)
    engines = {"onnx_fp32": OnnxClassifier(out, "fp32", threads=a.threads),
               "onnx_int8": OnnxClassifier(out, "int8", threads=a.threads)}
    # The PyTorch baseline as a user runs it: default (SDPA) attention, fp32, no autograd.
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    runners = {"pytorch": torch_runner(model), **{k: v.run for k, v in engines.items()}}

    fp32 = engines["onnx_fp32"]
    if check:
        from domainft.export.checkdata import load_check_data

        data = load_check_data(check, fp32.labels)
        rows, labels = fp32.encode(data.texts), data.labels
    else:
        from domainft.export.parity import random_rows

        rows, labels = random_rows(256, a.seq, model.config.vocab_size), None
    reference = batched_logits(runners["pytorch"], rows, fp32.pad_id, len(fp32.labels))
    quality = {k: compare(reference, batched_logits(v, rows, fp32.pad_id, len(fp32.labels)), labels)
               for k, v in runners.items() if k != "pytorch"}
    timing_rows = fixed_length_rows(rows, a.seq, fp32.pad_id)

    results: dict = {"model": str(model_dir), "check": check or "random token rows (accuracy not checked)",
                     "rows_checked": len(rows), "seq": a.seq, "threads": a.threads, "cpu": cpu_info(),
                     "load_average_before": os.getloadavg(), "versions": report["versions"],
                     "export": {k: report[k] for k in ("passed", "failures", "optimizer")} | {
                         "fp32_max_abs_diff": report["fp32"]["max_abs_diff"], "int8_settings": report["int8"]["settings"]},
                     "accuracy_pytorch": quality["onnx_fp32"]["accuracy_torch"], "engines": {}}
    for name in runners:
        results["engines"][name] = {"argmax_agreement_vs_pytorch": 1.0 if name == "pytorch" else
                                    quality[name]["argmax_agreement"],
                                    "accuracy": quality["onnx_fp32"]["accuracy_torch"] if name == "pytorch" else
                                    quality[name]["accuracy"]}
    for batch in (int(b) for b in a.batches.split(",")):
        calls = a.calls if batch == 1 else max(5, a.calls // 6)
        for name, t in time_engines(runners, timing_rows, batch, calls, 3).items():
            results["engines"][name][f"batch{batch}"] = {k: round(v, 2) for k, v in t.items()}
            print(f"# batch {batch} {name}: {t}", file=sys.stderr, flush=True)
    base = results["engines"]["pytorch"]
    results["ratios_vs_pytorch"] = {
        name: {f"batch{b}_{m}": round(base[f"batch{b}"][key] / e[f"batch{b}"][key] if m == "speedup_p50"
                                      else e[f"batch{b}"][key] / base[f"batch{b}"][key], 2)
               for b in (int(x) for x in a.batches.split(",")) for m, key in (("speedup_p50", "p50_ms"),
                                                                               ("throughput", "rows_per_s"))}
        for name, e in results["engines"].items() if name != "pytorch"}
    int8 = results["engines"]["onnx_int8"]
    speedup = results["ratios_vs_pytorch"]["onnx_int8"].get("batch1_speedup_p50")
    drop = quality["onnx_int8"]["accuracy_drop"]
    results["goal"] = {"int8_batch1_speedup_vs_pytorch": speedup, "needed": 2.0,
                       "int8_argmax_agreement": int8["argmax_agreement_vs_pytorch"], "agreement_needed": 0.99,
                       "int8_accuracy_drop": drop, "drop_allowed": 0.01,
                       "met": bool(speedup and speedup >= 2.0 and int8["argmax_agreement_vs_pytorch"] >= 0.99
                                   and (drop is None or drop <= 0.01))}
    if a.study:
        results["int8_study"] = study_int8(out / "model.onnx", out, reference, rows, labels, fp32.pad_id, a.threads,
                                           timing_rows, max(10, a.calls // 2))
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
