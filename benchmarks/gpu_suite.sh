#!/usr/bin/env bash
# The GPU checks in one prepared script (issue 15), printing JSON lines (also to $OUT/suite.jsonl when
# $OUT is set, with each part's log beside it):
#   1. benchmarks/train_step.py: BERT-base from a config, sequence 128, bf16, batch 128 then 32: the
#      domainft worker path (Ray Train + DeepSpeed) vs a plain PyTorch loop vs HF Trainer, samples/s,
#      ratios and MFU; at batch 128 also the bottom half frozen by the unfreezing schedule, bf16 through
#      DeepSpeed's torch autocast, and a LoRA and an 8-bit AdamW run when the PEFT work has landed
#      (else a line saying it is skipped);
#   2. pytest -m gpu (tests/gpu: fp16 and bf16 DeepSpeed training on CUDA).
#
#   benchmarks/gpu_suite.sh            on a GPU machine: installs the wheels in .whl/ (made here by
#                                      benchmarks/fetch_gpu_wheels.sh; `carry` them), under 8 minutes
#   benchmarks/gpu_suite.sh --dry-run  here, on CPU, with the project's .venv: the same code paths at
#                                      toy size (tiny BERT, a few steps, bf16 on CPU, gpu tests' bf16
#                                      cases on CPU), so the script is known to work before device time
#                                      is spent
# Exit status: 0 when every part ran (a measured goal missed is a figure, not a failure), 1 otherwise.
set -uo pipefail
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
START=$(date +%s)
BUDGET=${SUITE_BUDGET_S:-470}  # the GPU run must end within 8 minutes, install included
LOGS=${OUT:-$(mktemp -d)}
mkdir -p "$LOGS"
JSONL="$LOGS/suite.jsonl"
: > "$JSONL"
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0

if [ "$DRY" = 1 ]; then
  PY=${PYTHON:-$top/.venv/bin/python}
  export DS_ACCELERATOR=cpu CUDA_VISIBLE_DEVICES="" DOMAINFT_GPU_TESTS_ON_CPU=1 PYTHONPATH="$top/src"
  STEP_ARGS=(--model tiny --seq 32 --batch 8,4 --steps 3 --warm 1)
  PYTEST_K=(-k "not fp16")  # DeepSpeed has no fp16 on CPU
  BUDGET=${SUITE_BUDGET_S:-3600}
else
  PY=python3
  export DS_ACCELERATOR=cuda
  STEP_ARGS=(--model bert-base --seq 128 --batch 128,32 --steps 60 --warm 10)
  PYTEST_K=()
fi

emit() {  # emit KEY=VALUE... as one JSON line (values that parse as JSON stay JSON)
  "$PY" - "$@" <<'PY' | tee -a "$JSONL"
import json, sys
out = {"suite": "gpu"}
for kv in sys.argv[1:]:
    k, _, v = kv.partition("=")
    try:
        out[k] = json.loads(v)
    except ValueError:
        out[k] = v
print(json.dumps(out))
PY
}
left() { echo $((BUDGET - ($(date +%s) - START))); }
FAILED=()

if [ ! -x "$(command -v "$PY")" ]; then
  echo "{\"suite\": \"gpu\", \"error\": \"no python at $PY: run make venv (or set PYTHON)\"}" | tee -a "$JSONL"
  exit 1
fi

# -- 0. the wheels (GPU machine only) and what this machine has
if [ "$DRY" = 0 ]; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    emit part=install error="no .whl/ here: run benchmarks/fetch_gpu_wheels.sh beside the repo and carry .whl"
    exit 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl > "$LOGS/install.log" 2>&1 || { emit part=install error="pip install of .whl failed: see install.log"; exit 1; }
  export PYTHONPATH=/tmp/site:$top/src
fi
"$PY" - "$DRY" <<'PY' 2>"$LOGS/preflight.log" | tee -a "$JSONL"
import importlib, json, platform, sys
out = {"suite": "gpu", "part": "preflight", "mode": "dry-run" if sys.argv[1] == "1" else "gpu",
       "python": platform.python_version()}
import torch
out |= {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
versions, missing = {}, {}
for name in ("transformers", "ray", "deepspeed", "pydantic", "peft", "bitsandbytes",
             "domainft.distributed.trainer", "domainft.engine.build"):
    try:
        versions[name] = getattr(importlib.import_module(name), "__version__", "ok")
    except Exception as e:  # native libraries raise more than ImportError
        missing[name] = f"{type(e).__name__}: {e}"[:200]
out |= {"versions": versions, "missing": missing}
print(json.dumps(out))
sys.exit(1 if any(k.startswith("domainft") or k in ("ray", "deepspeed") for k in missing) else 0)
PY
[ "${PIPESTATUS[0]}" = 0 ] || FAILED+=(preflight)

# -- 1. throughput: domainft vs plain vs HF Trainer, frozen half, autocast, LoRA / 8-bit AdamW
t=$(( $(left) - 120 ))  # what pytest needs after it
timeout --kill-after=20 "$((t > 30 ? t : 30))" "$PY" benchmarks/train_step.py "${STEP_ARGS[@]}" --precision bf16 \
  --only plain,hf_trainer,domainft \
  --extra domainft_frozen_bottom_half,domainft_autocast,domainft_lora,domainft_adamw8bit \
  2>"$LOGS/train_step.log" | tee -a "$JSONL"
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || { FAILED+=(train_step); emit part=train_step rc="$rc" log=train_step.log \
  tail="$(tail -c 1500 "$LOGS/train_step.log")"; }

# -- 2. tests marked gpu
t=$(( $(left) - 10 ))
timeout --kill-after=20 "$((t > 30 ? t : 30))" "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider \
  "${PYTEST_K[@]}" --junitxml="$LOGS/pytest_gpu.xml" > "$LOGS/pytest_gpu.log" 2>&1
rc=$?
"$PY" - "$LOGS/pytest_gpu.xml" "$rc" <<'PY' | tee -a "$JSONL"
import json, sys, xml.etree.ElementTree as ET
out = {"suite": "gpu", "part": "pytest_gpu", "rc": int(sys.argv[2])}
try:
    suite = ET.parse(sys.argv[1]).getroot().find("testsuite")
    out |= {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    out["time_s"] = float(suite.get("time", 0))
    out["failed"] = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None
                     or c.find("error") is not None]
except Exception as e:
    out["error"] = f"no junit report: {e}"
print(json.dumps(out))
PY
[ "$rc" = 0 ] || FAILED+=(pytest_gpu)

emit part=done wall_s="$(( $(date +%s) - START ))" failed="$("$PY" -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "${FAILED[@]}")" \
  logs="$LOGS"
[ "${#FAILED[@]}" = 0 ]
