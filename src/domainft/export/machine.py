"""What the CPU offers int8 inference (from /proc/cpuinfo), and a small latency timer."""
from __future__ import annotations

import platform
import time
from typing import Callable

import numpy as np

# Flags that decide int8 / fp32 matmul speed on x86: VNNI (int8 dot products in AVX-512 or AVX2
# registers), AMX (int8 / bf16 tile matmuls), and the vector widths.
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """{"model", "flags": {flag: bool}, "int8_note"} for this machine's CPU (flags all False where
    /proc/cpuinfo does not exist, e.g. macOS)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    model, present = platform.processor() or platform.machine(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            present = set(value.split())
            break
    flags = {f: f in present for f in FLAGS}
    if flags["amx_int8"]:
        note = "AMX int8: the fastest int8 path (ONNX Runtime uses it for quantised matmuls)"
    elif flags["avx512_vnni"] or flags["avx_vnni"]:
        note = "VNNI: int8 dot products in one instruction; int8 matmuls run about 2-4x fp32's speed"
    elif flags["avx2"]:
        note = ("no VNNI: int8 matmuls use AVX2 multiply-add pairs (u8s8 can saturate: consider reduce_range); "
                "expect a smaller int8 speed-up")
    else:
        note = "no AVX2 or VNNI flags found: int8 gains unknown on this CPU"
    return {"model": model, "flags": flags, "int8_note": note}


def latencies(runs: dict[str, Callable[[int], object]], repeats: int = 20, warmup: int = 3) -> dict[str, dict]:
    """Wall-clock latency of each `run(i)` (i = call index) over `repeats` calls after `warmup`:
    p50, p99, mean (ms). The runs take turns call by call, rotating who goes first, so that load from
    other processes on a shared machine falls on all of them alike."""
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + repeats):
        for n in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            runs[n](i)
            if i >= warmup:
                times[n].append((time.perf_counter() - t0) * 1000)
    return {n: {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)),
                "mean_ms": float(np.mean(t)), "calls": repeats} for n, t in times.items()}
