"""Ray Serve under load: the OpenAI-compatible LLM API over loopback, batched vs unbatched decoding (prints JSON).

A load generator (aiohttp, streaming chat completions parsed from their SSE `data:` lines) runs against
`domainft.distributed.serve` (deployment ChatLM) on a local Ray started in this process: concurrency 1, 8 and
32, each client sending its next request when the last one answered, the same number of requests per client.
Every request: `stream: true` with `stream_options.include_usage`, temperature 0, a fixed max_tokens, one
prompt of a varied pool (headline / section / summary instructions over BBC excerpts of 15 to 60 words from
data/bbc_demo.jsonl, else short fixed questions). Per level: requests/s, output tokens/s (the usage of the
last chunk), time to first token (first chunk with text; the role chunk comes before any decoding) p50/p99,
time per output token p50, latency p50/p99, errors (anything but 200, a stream without usage or [DONE], an
error event). Configurations: one replica (1 CPU reserved, 1 torch thread: see THREADS), batched
(max_batch_size 16, batch_wait_ms 10) and unbatched (max_batch_size 1), max_ongoing 64 and max_queued 256 so
nothing is shed.
Correctness: at concurrency 8 both configurations get the same prompts; greedy answers must be equal.

Models: `tiny`, the tests' 2-layer random Qwen2 chat LM (tests/tiny_models.py, built into
runs/bench_serve_llm/; random answers run to max_tokens), and `smollm2`, SmolLM2-135M-Instruct at
models/smollm2-135m-instruct (`make smollm2`; skipped with a line in the JSON when absent).

Goal (issue 26): batching gives >= 2x the output tokens/s of max_batch_size 1 at concurrency 8, 0 errors.

  python benchmarks/serve_llm.py --json benchmarks/results/serve_llm.json   (make bench-serve-llm, ~5 min)
  python benchmarks/serve_llm.py --quick --models tiny                       (smoke run, ~1 min)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
for k, v in (("RAY_USAGE_STATS_ENABLED", "0"), ("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_OFFLINE", "1")):
    os.environ.setdefault(k, v)

from serve import free_port, percentile_ms  # noqa: E402  (benchmarks/serve.py: the classifier's benchmark)

OUT = ROOT / "runs" / "bench_serve_llm"
SMOLLM2 = ROOT / "models" / "smollm2-135m-instruct"
# name -> max_tokens per answer, requests per client, requests per level at least (the clients of a low level
# send more each). SmolLM2 unbatched decodes one answer at a time: its 32 x 48 tokens at c=32 are most of the run.
MODELS = {"tiny": {"max_tokens": 32, "per_client": 4, "min_requests": 16},
          "smollm2": {"max_tokens": 48, "per_client": 1, "min_requests": 24}}
GOAL_RATIO, GOAL_LEVEL = 2.0, 8
# The server's default health timeout (10 s): the probe decodes its token on its own, taking turns with the
# batches' steps, and a replica still finishing steps is busy, not wedged. (The first version of the server
# probed through the batch queue, behind every request: at SmolLM2 c=8 the replica was declared unhealthy and
# answered 503 to everything; this benchmark found it.)
HEALTH_TIMEOUT_S = 10.0
HEALTH_TIMEOUT_WHY = "the server's default"
# The replica shares the 2 cores with Serve's proxy and controller and this load generator: 2 torch threads then
# wait on each other (SmolLM2 offline on this machine under load: 260 ms a decode step at batch 1 and 500 ms at
# batch 16 with 2 threads, 70 ms and 165 ms with 1), so the replica runs 1, as ServeConfig's default does.
THREADS = 1
THREADS_WHY = ("the replica shares the 2 cores with the proxy, controller and load generator: 2 torch threads "
               "made a SmolLM2 decode step 3x slower than 1 on this machine under load")
INSTRUCTIONS = ("Write a headline for this news excerpt:\n\n{}",
                "Which section of a news site (business, entertainment, politics, sport, tech) is this from? "
                "Say why in one sentence.\n\n{}",
                "Summarise in one sentence:\n\n{}",
                "List three facts from this text:\n\n{}")
FIXED = ("Hello, who are you?", "Explain what a central bank does.", "Write a haiku about the sea.",
         "Give three tips for a job interview.", "What is the capital of France? Answer in one word.",
         "Summarise: shares rose 5% after the results.", "Translate 'good morning' into Spanish.",
         "Why is the sky blue?")


def prompt_pool(n: int = 64) -> list[str]:
    """`n` instructions over BBC excerpts of 15 to 60 words (varied lengths, so batches pad), else FIXED."""
    path = ROOT / "data" / "bbc_demo.jsonl"
    if not path.exists():
        return list(FIXED)
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    step = max(1, len(rows) // n)
    out = []
    for i in range(n):
        words = rows[(i * step) % len(rows)]["text"].split()
        out.append(INSTRUCTIONS[i % len(INSTRUCTIONS)].format(" ".join(words[: 15 + (i * 7) % 46])))
    return out


def tiny_chat_lm() -> Path:
    """The tests' tiny random Qwen2 chat LM (tests/tiny_models.py), built once into runs/bench_serve_llm/."""
    dest = OUT / "tiny_chat_lm"
    if not (dest / "config.json").exists():
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import save_tiny_chat_lm

        save_tiny_chat_lm(dest, family="qwen2", style="qwen")
    return dest


async def chat_stream(s, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    """One streaming chat completion: status, text, completion tokens (usage), TTFT, latency, error if any."""
    import aiohttp

    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, head, pieces, usage, finish, done, error, status = None, None, [], None, None, False, None, None
    try:
        async with s.post(f"{url}/v1/chat/completions", json=body) as r:
            status = r.status
            if status != 200:
                error = (await r.text())[:200]
            else:
                async for raw in r.content:  # one SSE line at a time
                    line = raw.decode("utf-8").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    head = head or time.perf_counter()  # the role chunk: sent before any decoding
                    event = json.loads(data)
                    if "error" in event:
                        error = str(event["error"].get("message"))[:200]
                        break
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or ():
                        if choice["delta"].get("content"):
                            first = first or time.perf_counter()
                            pieces.append(choice["delta"]["content"])
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                            first = first or time.perf_counter()  # an answer with no visible text
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        error = f"{type(e).__name__}: {e}"[:200]
    end = time.perf_counter()
    if error is None and status == 200 and not (done and usage):
        error = f"broken stream: [DONE] {'seen' if done else 'missing'}, usage {'seen' if usage else 'missing'}"
    tokens = usage["completion_tokens"] if usage else 0
    return {"status": status if status is not None else "no response", "ok": error is None, "error": error,
            "text": "".join(pieces), "tokens": tokens, "finish": finish, "latency": end - t0,
            "ttft": (first or end) - t0, "first_chunk": (head or end) - t0}


async def load(url: str, model: str, prompts: list[str], concurrency: int, per_client: int, max_tokens: int) -> dict:
    """`concurrency` clients, each sending `per_client` requests one after the other; request i (client
    i // per_client) asks prompts[i % len(prompts)]."""
    import aiohttp

    results: list = [None] * (concurrency * per_client)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as s:
        async def client(j: int):
            for i in range(j * per_client, (j + 1) * per_client):
                results[i] = await chat_stream(s, url, model, prompts[i % len(prompts)], max_tokens)
        t0 = time.perf_counter()
        await asyncio.gather(*(client(j) for j in range(concurrency)))
        wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    tokens = sum(r["tokens"] for r in ok)
    tpot = [(r["latency"] - r["ttft"]) / (r["tokens"] - 1) for r in ok if r["tokens"] > 1]
    statuses, finishes, errors = {}, {}, []
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        finishes[str(r["finish"])] = finishes.get(str(r["finish"]), 0) + 1
        if r["error"] and len(errors) < 3:
            errors.append(r["error"])
    return {"concurrency": concurrency, "requests": len(results), "per_client": per_client, "wall_s": round(wall, 2),
            "requests_per_s": round(len(ok) / wall, 2), "output_tokens": tokens,
            "output_tokens_per_s": round(tokens / wall, 1),
            "ttft_p50_ms": percentile_ms([r["ttft"] for r in ok], 50),
            "ttft_p99_ms": percentile_ms([r["ttft"] for r in ok], 99),
            "first_chunk_p50_ms": percentile_ms([r["first_chunk"] for r in ok], 50),
            "tpot_p50_ms": percentile_ms(tpot, 50),
            "latency_p50_ms": percentile_ms([r["latency"] for r in ok], 50),
            "latency_p99_ms": percentile_ms([r["latency"] for r in ok], 99),
            "errors": len(results) - len(ok), "statuses": statuses, "finish_reasons": finishes,
            "error_samples": errors, "_results": results}


def run_config(name: str, label: str, cfg, prompts: list[str], levels: list[int], per_client: int,
               min_requests: int, max_tokens: int) -> dict:
    """Deploy `cfg`, warm it, load it at each level; the app is deleted afterwards."""
    from ray import serve

    from domainft.distributed.serve import APP_NAME, start_application, wait_ready

    t0 = time.perf_counter()
    url = start_application(cfg, "127.0.0.1", PORT)
    wait_ready(url)
    out = {"config": label, "max_batch_size": cfg.max_batch_size, "batch_wait_ms": cfg.batch_wait_ms,
           "ready_s": round(time.perf_counter() - t0, 1), "levels": {}}
    asyncio.run(load(url, name, prompts, 4, 1, 4))  # warm-up: connections, first batches
    for c in levels:
        r = asyncio.run(load(url, name, prompts, c, max(per_client, math.ceil(min_requests / c)), max_tokens))
        out["levels"][str(c)] = r
        print(f"# {name} {label} c={c}: {r['requests']} requests {r['requests_per_s']} req/s "
              f"{r['output_tokens_per_s']} tok/s TTFT p50 {r['ttft_p50_ms']} p99 {r['ttft_p99_ms']} ms latency p50 "
              f"{r['latency_p50_ms']} p99 {r['latency_p99_ms']} ms errors {r['errors']} ({r['wall_s']} s, load "
              f"{os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    serve.delete(APP_NAME)
    return out


def same_answers(a: list[dict], b: list[dict]) -> dict:
    """Greedy answers of the same requests (same prompts, same order) under two configurations."""
    pairs = [(i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x["ok"] and y["ok"]]
    bad = [(i, x, y) for i, x, y in pairs if x["text"] != y["text"] or x["tokens"] != y["tokens"]]
    return {"compared": len(pairs), "mismatches": len(bad), "equal": not bad and len(pairs) == len(a),
            "examples": [{"request": i, "batched": x["text"][:120], "unbatched": y["text"][:120]}
                         for i, x, y in bad[:2]]}


def bench_model(name: str, model_dir: Path, a, prompts: list[str], levels: list[int]) -> dict:
    from domainft.config.serve import ServeConfig

    spec = MODELS[name]
    per_client = a.per_client or (1 if a.quick else spec["per_client"])
    min_requests = a.min_requests or (1 if a.quick else spec["min_requests"])
    max_tokens = spec["max_tokens"] // 4 if a.quick else spec["max_tokens"]
    out = {"model_dir": str(model_dir.relative_to(ROOT) if model_dir.is_relative_to(ROOT) else model_dir),
           "max_tokens": max_tokens, "per_client": per_client, "min_requests_per_level": min_requests, "configs": []}
    for label, batch in (("batched", a.batch), ("unbatched", 1)):
        cfg = ServeConfig(model_dir=str(model_dir), served_model_name=name, replicas=1, replica_cpus=1,
                          threads=a.threads, max_batch_size=batch, batch_wait_ms=a.batch_wait_ms, max_ongoing=64,
                          max_queued=256, health_timeout_s=a.health_timeout_s)
        out["configs"].append(run_config(name, label, cfg, prompts, levels, per_client, min_requests, max_tokens))
    on, off = out["configs"]
    out["batched_vs_unbatched_tokens_per_s"] = {
        c: round(on["levels"][c]["output_tokens_per_s"] / off["levels"][c]["output_tokens_per_s"], 2)
        if off["levels"][c]["output_tokens_per_s"] else None for c in on["levels"]}
    if str(GOAL_LEVEL) in on["levels"]:
        out["answers_at_c8"] = same_answers(on["levels"][str(GOAL_LEVEL)]["_results"],
                                            off["levels"][str(GOAL_LEVEL)]["_results"])
    for config in out["configs"]:
        for level in config["levels"].values():
            level.pop("_results")
    ratio = out["batched_vs_unbatched_tokens_per_s"].get(str(GOAL_LEVEL))
    errors = sum(lv["errors"] for config in out["configs"] for lv in config["levels"].values())
    out["goal"] = {f"tokens_per_s_ratio_at_c{GOAL_LEVEL}": ratio, "needed": GOAL_RATIO, "errors": errors,
                   "met": bool(ratio and ratio >= GOAL_RATIO and errors == 0)}
    return out


def table(results: dict) -> str:
    head = ("model", "config", "c", "req", "req/s", "out tok/s", "1st chunk p50", "TTFT p50", "TTFT p99", "TPOT p50",
            "lat p50", "lat p99", "errors")
    rows = [head]
    for name, m in results["models"].items():
        if "skipped" in m:
            rows.append((name, "skipped") + ("",) * (len(head) - 2))
            continue
        for config in m["configs"]:
            for c, lv in config["levels"].items():
                rows.append((name, f"{config['config']} (max {config['max_batch_size']})", c, lv["requests"],
                             lv["requests_per_s"], lv["output_tokens_per_s"], lv["first_chunk_p50_ms"],
                             lv["ttft_p50_ms"], lv["ttft_p99_ms"],
                             lv["tpot_p50_ms"], lv["latency_p50_ms"], lv["latency_p99_ms"], lv["errors"]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(v).rjust(w) for v, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("(times in ms; 1st chunk: the role chunk, sent before decoding; TTFT: first chunk with text; "
                 "TPOT: time per output token after the first)")
    for name, m in results["models"].items():
        if "skipped" in m:
            lines.append(f"{name}: skipped: {m['skipped']}")
            continue
        g, eq = m["goal"], m.get("answers_at_c8", {})
        lines.append(f"{name}: batched / unbatched output tokens/s {m['batched_vs_unbatched_tokens_per_s']}; "
                     f"goal >= {GOAL_RATIO}x at c={GOAL_LEVEL} with 0 errors: {'met' if g['met'] else 'NOT met'} "
                     f"({g[f'tokens_per_s_ratio_at_c{GOAL_LEVEL}']}x, {g['errors']} errors); greedy answers at "
                     f"c={GOAL_LEVEL} batched vs unbatched: {eq.get('mismatches')} mismatches of "
                     f"{eq.get('compared')}")
    return "\n".join(lines)


PORT = 0


def main() -> None:
    global PORT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,smollm2", help="any of tiny, smollm2")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--per-client", type=int, default=None,
                    help="requests per client at each level (default: tiny 4, smollm2 1; --quick 1)")
    ap.add_argument("--min-requests", type=int, default=None, help="at least this many requests per level, the "
                    "clients of a low level sending more each (default: tiny 16, smollm2 4; --quick 1)")
    ap.add_argument("--batch", type=int, default=16, help="max_batch_size of the batched configuration")
    ap.add_argument("--batch-wait-ms", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=THREADS, help="torch threads of the replica (1 CPU reserved)")
    ap.add_argument("--health-timeout-s", type=float, default=HEALTH_TIMEOUT_S,
                    help="ServeConfig.health_timeout_s (default: the server's, 10)")
    ap.add_argument("--json", default=None, help="also write the JSON here (e.g. benchmarks/results/serve_llm.json)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 request per client, a quarter of the tokens")
    a = ap.parse_args()
    names = [n for n in a.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}: choose from {list(MODELS)}")
    levels = [int(c) for c in a.concurrency.split(",")]

    import ray

    prompts = prompt_pool()
    results = {"cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in os.getloadavg()],
               "settings": {"replicas": 1, "replica_cpus": 1, "threads": a.threads, "batched_max_batch_size": a.batch,
                            "batch_wait_ms": a.batch_wait_ms, "max_ongoing": 64, "max_queued": 256,
                            "health_timeout_s": a.health_timeout_s, "concurrency": levels,
                            "health_timeout_why": HEALTH_TIMEOUT_WHY, "threads_why": THREADS_WHY, "quick": a.quick,
                            "prompts": len(prompts),
                            "prompt_source": "data/bbc_demo.jsonl instructions" if len(prompts) > len(FIXED)
                            else "fixed questions", "temperature": 0},
               "client": "aiohttp, streaming chat completions (SSE parsed here), include_usage, one connection per "
                         "client", "models": {}}
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 1024**2)
    PORT = free_port()
    for name in names:
        model_dir = tiny_chat_lm() if name == "tiny" else SMOLLM2
        if name == "smollm2" and not (SMOLLM2 / "config.json").exists():
            results["models"][name] = {"skipped": f"{SMOLLM2.relative_to(ROOT)} is absent (`make smollm2` builds it)"}
            print(f"# {name}: skipped, {SMOLLM2} is absent (make smollm2)", file=sys.stderr, flush=True)
            continue
        results["models"][name] = bench_model(name, model_dir, a, prompts, levels)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results["goal"] = {name: m["goal"]["met"] for name, m in results["models"].items() if "goal" in m}
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    text = json.dumps(results, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n", encoding="utf-8")
    print("\n" + table(results), file=sys.stderr)


if __name__ == "__main__":
    main()
