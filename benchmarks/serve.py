"""Ray Serve under load: the classifier API over loopback, batching on vs off, torch vs ONNX int8 (prints JSON).

A real load generator (aiohttp, one request = one text) runs against `domainft.distributed.serve` on a
local Ray (in this process): concurrency 1, 8 and 32, each client sending its next request when the last
one answered. Per level: requests/s, p50/p99 latency, errors (anything but 200), and whether every answer
equals the offline model's (the same predictor, loaded here, on the same texts: same label, probabilities
within 1e-4). Configurations: max batch 32 (batching on) and max batch 1 (off), for the torch `best/`
folder and, when `domainft export` is installed, the ONNX int8 export of it. Then an overload probe: a burst
far over what the deployment holds, to show what Ray Serve's proxy answers (503 + Retry-After) and that the
server still answers afterwards.

The model is a fine-tuned MiniLM: `--model DIR`, else runs/bbc_demo/best (`make demo`) if present, else
models/minilm fine-tuned here briefly on data/bbc_demo.jsonl (a plain PyTorch loop, exported with domainft's
export_hf) and cached in runs/bench_serve/minilm_bbc/ with its held-out texts.

Goal (issue 13): at concurrency 32, batching gives >= 3x the requests/s of batch size 1 with p99 < 1 s on a
2-core machine, 0 errors, answers equal to the offline model's.

  python benchmarks/serve.py                         (~10 min on 2 cores once the model is cached)
  python benchmarks/serve.py --model runs/bbc_demo/best --backends torch
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
for k, v in (("RAY_USAGE_STATS_ENABLED", "0"), ("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_OFFLINE", "1")):
    os.environ.setdefault(k, v)

OUT = ROOT / "runs" / "bench_serve"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile_ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else float("nan")


async def load(url: str, texts: list[str], concurrency: int) -> dict:
    """Each of `concurrency` clients POSTs one text at a time until `texts` are used up."""
    import aiohttp

    queue = list(enumerate(texts))[::-1]
    results: list = [None] * len(texts)
    latencies, statuses = [], {}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as s:
        async def client():
            while queue:
                i, text = queue.pop()
                t0 = time.perf_counter()
                try:
                    async with s.post(f"{url}/v1/classify", json={"texts": [text]}) as r:
                        body = await r.read()
                        status = r.status
                        retry_after = r.headers.get("Retry-After")
                except aiohttp.ClientError as e:
                    status, body, retry_after = type(e).__name__, b"", None
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
                results[i] = (status, body, retry_after, latencies[-1])
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ok = [r for r in results if r[0] == 200]
    return {"requests": len(texts), "concurrency": concurrency, "wall_s": round(wall, 2),
            "requests_per_s": round(len(ok) / wall, 1), "p50_ms": percentile_ms(latencies, 50),
            "p99_ms": percentile_ms(latencies, 99), "errors": len(texts) - len(ok),
            "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)}, "_results": results}


def answers_equal(results: list, texts: list[str], reference: dict[str, np.ndarray], labels: list[str]) -> dict:
    """Every 200 answer against the offline model's probabilities for its text."""
    worst, mismatched = 0.0, 0
    for (status, body, _, _), text in zip(results, texts):
        if status != 200:
            continue
        (pred,) = json.loads(body)["predictions"]
        probs = np.array([pred["scores"][k] for k in labels])
        ref = reference[text]
        worst = max(worst, float(np.abs(probs - ref).max()))
        mismatched += pred["label"] != labels[int(ref.argmax())]
    return {"label_mismatches": mismatched, "max_abs_prob_diff": float(f"{worst:.2e}"),
            "equal": mismatched == 0 and worst <= 1e-4}


def finetuned_minilm(out: Path, steps: int, max_length: int, batch: int = 16, seed: int = 0) -> Path:
    """models/minilm fine-tuned on 80% of data/bbc_demo.jsonl with a plain PyTorch loop, exported with
    domainft's export_hf to out/best; the other 20% go to out/heldout.jsonl. Cached: an existing out/best is
    reused."""
    import torch

    from domainft.core.export import export_hf
    from domainft.core.model import build_model, build_tokenizer

    best = out / "best"
    if (best / "model.safetensors").exists() and (out / "heldout.jsonl").exists():
        return best
    rows = [json.loads(line) for line in open(ROOT / "data" / "bbc_demo.jsonl", encoding="utf-8")]
    names = sorted({r["label"] for r in rows})
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(len(rows))[: len(rows) // 5].tolist())
    train = [r for i, r in enumerate(rows) if i not in held]
    base = str(ROOT / "models" / "minilm")
    torch.manual_seed(seed)
    tok, model = build_tokenizer(base), build_model(base, names).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * (1 - s / steps))
    t0 = time.time()
    for step in range(steps):
        picked = [train[i] for i in rng.integers(0, len(train), batch)]
        enc = tok([r["text"] for r in picked], truncation=True, max_length=max_length, padding=True,
                  return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([names.index(r["label"]) for r in picked])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        if step % 20 == 0 or step == steps - 1:
            print(f"# finetune step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    export_hf(model.state_dict(), base, names, base, best)
    with open(out / "heldout.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": r["text"], "label": r["label"]}) + "\n"
                     for i, r in enumerate(rows) if i in held)
    return best


def model_and_texts(a) -> tuple[Path, list[str], list[str]]:
    """(best/ folder, texts to send, their labels): runs/bbc_demo/best with the last 200 demo texts (some it
    was trained on: any texts do for speed and equality), else the cached fine-tuned MiniLM and its held-out
    texts."""
    demo = ROOT / "runs" / "bbc_demo" / "best"
    if a.model or (demo / "model.safetensors").exists():
        rows = [json.loads(line) for line in open(ROOT / "data" / "bbc_demo.jsonl", encoding="utf-8")][-200:]
        return Path(a.model or demo), [r["text"] for r in rows], [r["label"] for r in rows]
    best = finetuned_minilm(OUT / "minilm_bbc", a.finetune_steps, a.max_length)
    rows = [json.loads(line) for line in open(best.parent / "heldout.jsonl", encoding="utf-8")]
    return best, [r["text"] for r in rows], [r["label"] for r in rows]


def onnx_folder(best: Path, a) -> Path | None:
    """The int8 export of `best` (domainft export), or None where domainft.export is not installed."""
    try:
        from domainft.export.pipeline import run_export
    except ImportError:
        return None
    out = OUT / "onnx"
    if not (out / "model.int8.onnx").exists():
        report = run_export(best, out, quantize="int8", max_length=a.max_length, threads=a.threads)
        print(f"# export passed={report['passed']} {report['failures']}", file=sys.stderr, flush=True)
    return out


def run_config(name: str, cfg, texts: list[str], gold: list[str], levels: list[int], per_client: int,
               minimum: int) -> dict:
    from ray import serve

    from domainft.distributed.serve import APP_NAME, start_application, wait_ready
    from domainft.serving.predictors import load_predictor

    offline = load_predictor(cfg.model_dir, cfg.backend, cfg.variant, max_length=cfg.max_length,
                             batch_size=32, threads=cfg.intra_op_threads)
    probs = offline.predict_proba(texts)
    reference = dict(zip(texts, probs))
    accuracy = float(np.mean([offline.labels[i] == g for i, g in zip(probs.argmax(-1), gold)]))
    del offline
    t0 = time.perf_counter()
    url = start_application(cfg, "127.0.0.1", PORT)
    wait_ready(url)
    out = {"config": name, "max_batch_size": cfg.max_batch_size, "backend": cfg.backend, "variant": cfg.variant,
           "offline_accuracy": round(accuracy, 4), "ready_s": round(time.perf_counter() - t0, 1), "levels": {}}
    labels = cfg_labels(url)
    asyncio.run(load(url, texts[:16], 8))  # warm-up: first batches of each size, connection set-up
    for c in levels:
        n = max(minimum, per_client * c)
        sample = [texts[i % len(texts)] for i in range(n)]
        r = asyncio.run(load(url, sample, c))
        r["answers"] = answers_equal(r.pop("_results"), sample, reference, labels)
        out["levels"][str(c)] = r
        print(f"# {name} c={c}: {r['requests_per_s']} req/s p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms "
              f"errors {r['errors']} answers equal {r['answers']['equal']}", file=sys.stderr, flush=True)
    serve.delete(APP_NAME)
    return out


def cfg_labels(url: str) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as r:
        return json.loads(r.read())["labels"]


def overload_probe(cfg, texts: list[str], burst: int) -> dict:
    """A burst of `burst` concurrent requests against a deployment that holds max_ongoing + max_queued."""
    from ray import serve

    from domainft.distributed.serve import APP_NAME, start_application, wait_ready

    url = start_application(cfg, "127.0.0.1", PORT)
    wait_ready(url)
    r = asyncio.run(load(url, [texts[i % len(texts)] for i in range(burst)], burst))
    results = r.pop("_results")
    shed = [x for x in results if x[0] == 503]
    after = asyncio.run(load(url, texts[:8], 2))
    serve.delete(APP_NAME)
    return {"burst": burst, "holds": {"replicas": cfg.replicas, "max_ongoing_per_replica": cfg.ongoing,
                                      "max_queued": cfg.max_queued},
            "statuses": r["statuses"], "retry_after_headers": sorted({x[2] for x in shed}, key=str),
            "p50_ms_of_503": percentile_ms([x[3] for x in shed], 50), "body_of_503": shed[0][1].decode()[:160]
            if shed else None, "after_the_burst": after["statuses"]}


PORT = 0


def main() -> None:
    global PORT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a fine-tuned best/ folder (default: benchmarks/inference.py's)")
    ap.add_argument("--max-length", type=int, default=128, help="tokens per text (the fine-tuning length)")
    ap.add_argument("--finetune-steps", type=int, default=150, help="steps when the model is fine-tuned here")
    ap.add_argument("--backends", default="torch,onnx-int8")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--per-client", type=int, default=12, help="requests per client at each level")
    ap.add_argument("--min-requests", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads of the replica")
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--burst", type=int, default=200, help="requests in the overload probe (0: skip it)")
    a = ap.parse_args()

    import ray

    from domainft.config.serve import ServeConfig

    best, texts, gold = model_and_texts(a)
    levels = [int(c) for c in a.concurrency.split(",")]
    folders = {"torch": (best, "torch", "fp32")}
    if "onnx-int8" in a.backends.split(","):
        onnx = onnx_folder(best, a)
        if onnx is not None:
            folders["onnx-int8"] = (onnx, "onnx", "int8")
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 1024**2)
    PORT = free_port()
    results = {"model": str(best), "texts": len(texts), "max_length": a.max_length, "cpus": os.cpu_count(),
               "threads": a.threads, "batch_wait_ms": a.batch_wait_ms, "load_average_before": os.getloadavg(),
               "client": "aiohttp, one text per request, one connection per client", "configs": []}
    if "onnx-int8" in a.backends.split(",") and "onnx-int8" not in folders:
        results["onnx_int8"] = "skipped: domainft.export (`domainft export`) is not installed"
    for backend in [b for b in a.backends.split(",") if b in folders]:
        folder, kind, variant = folders[backend]
        for batch in (32, 1):
            cfg = ServeConfig(model_dir=str(folder), backend=kind, variant=variant, max_length=a.max_length,
                              replicas=1, replica_cpus=1, threads=a.threads, max_batch_size=batch,
                              batch_wait_ms=a.batch_wait_ms, max_ongoing=max(64, 2 * batch), max_queued=1024)
            results["configs"].append(run_config(f"{backend} batch{batch}", cfg, texts, gold, levels, a.per_client,
                                                 a.min_requests))
    by = {(c["config"].split()[0], c["max_batch_size"]): c for c in results["configs"]}
    top = str(max(levels))
    results["goal"] = {}
    for backend in {k[0] for k in by}:
        on, off = by[(backend, 32)]["levels"][top], by[(backend, 1)]["levels"][top]
        speedup = round(on["requests_per_s"] / off["requests_per_s"], 2) if off["requests_per_s"] else None
        results["goal"][backend] = {
            f"batching_speedup_at_c{top}": speedup, "needed": 3.0, f"p99_ms_at_c{top}": on["p99_ms"],
            "errors": sum(lv["errors"] for c in (by[(backend, 32)], by[(backend, 1)]) for lv in c["levels"].values()),
            "answers_equal": all(lv["answers"]["equal"] for c in (by[(backend, 32)], by[(backend, 1)])
                                 for lv in c["levels"].values()),
        }
        g = results["goal"][backend]
        g["met"] = bool(speedup and speedup >= 3.0 and on["p99_ms"] < 1000 and g["errors"] == 0 and g["answers_equal"])
    if a.burst:
        probe = ServeConfig(model_dir=str(best), max_length=a.max_length, replicas=1, replica_cpus=1,
                            threads=a.threads, max_batch_size=32, max_ongoing=8, max_queued=8, retry_after_s=1)
        results["overload"] = overload_probe(probe, texts, a.burst)
    results["load_average_after"] = os.getloadavg()
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
