"""Training throughput, side by side in one run, same model and batches (prints JSON lines).

  plain       a plain PyTorch loop (AdamW, fused on CUDA; autocast for bf16): the baseline
  hf_trainer  Hugging Face Trainer on the same rows
  domainft    the real `domainft train` worker path: Ray Train + DeepSpeed as `train` configures it,
              fed by Ray Data (full fine-tuning); the driver's export after fit() is left out
  domainft_frozen_bottom_half   the same with the embeddings and bottom half of the encoder frozen by
              the unfreezing schedule for the whole run (step time ratio against domainft)
  domainft_autocast   bf16 through DeepSpeed's torch_autocast (fp32 weights, the client AdamW steps
              them directly) instead of DeepSpeed's pure bf16 weights with fp32 masters
  domainft_lora, domainft_adamw8bit   a LoRA run (peft.method: lora) and an 8-bit AdamW run
              (optim.eight_bit: true); without bitsandbytes, a line with "skipped" and why

Every path line has samples/s, step time and, for full fine-tuning, MFU: model FLOPs per sample
(counted with torch.utils.flop_counter on one forward + backward of the model, eager attention;
the 6 x params x tokens + attention formula beside it) x samples/s over the card's bf16 dense peak,
both the nominal one read off the device name and the matrix-product peak measured in this run.

Goals: domainft >= 0.9x plain on CPU (>= 1.0x plain, >= 1.25x HF Trainer, MFU >= 0.30 on a GPU); frozen
bottom half <= 0.6x the step time of full fine-tuning.

CPU:  python benchmarks/train_step.py --only plain,domainft       (pretrained MiniLM, seq 128, batch 16)
GPU:  python benchmarks/train_step.py --model bert-base --seq 128 --batch 128,32 --precision bf16 --steps 60
      (benchmarks/gpu_suite.sh runs this and the rest of the GPU checks in one go)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_raylet_start_wait_time_s", "300")  # a loaded machine starts the raylet slowly

NUM_LABELS = 4
MAIN = ("plain", "hf_trainer", "domainft")
EXTRA = ("domainft_frozen_bottom_half", "domainft_autocast", "domainft_lora", "domainft_adamw8bit")
# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s), most specific name first.
NOMINAL_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200", 989.0), ("H100", 989.0),
                       ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0))
# Tiny BERT for --model tiny (the dry run): the real code paths in seconds.
TINY = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=128)


def model_dir(name: str, tmp: Path) -> str:
    """A local model folder: the given path, or BERT-base / a tiny BERT built from a config (random weights)."""
    if name not in ("bert-base", "tiny"):
        return name
    from tokenizers import Tokenizer, models
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    d = tmp / name
    torch.manual_seed(0)
    cfg = BertConfig(num_labels=NUM_LABELS, **(TINY if name == "tiny" else {}))
    BertForSequenceClassification(cfg).save_pretrained(d, safe_serialization=True)
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
                                  pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
    tok.save_pretrained(d)
    return str(d)


def token_rows(n: int, seq: int, vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (n, seq)).astype(np.int32)
    return ids, rng.integers(0, NUM_LABELS, n)


def bench_plain(path, ids, labels, batch, steps, warm, precision, device) -> dict:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=NUM_LABELS).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, **({"fused": True} if device.type == "cuda" else {}))
    dtype = torch.bfloat16 if precision == "bf16" else None
    batches = [(torch.as_tensor(ids[i * batch:(i + 1) * batch], dtype=torch.long, device=device),
                torch.as_tensor(labels[i * batch:(i + 1) * batch], device=device)) for i in range(steps + warm)]
    t0 = None
    for i, (x, y) in enumerate(batches):
        if i == warm:
            _sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return {"samples_per_s": steps * batch / (time.perf_counter() - t0)}


def bench_hf_trainer(path, ids, labels, batch, steps, warm, precision, device, tmp) -> dict:
    from transformers import AutoModelForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    class Timer(TrainerCallback):
        t0 = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warm:
                _sync(device)
                Timer.t0 = time.perf_counter()

    n = (steps + warm) * batch
    rows = [{"input_ids": ids[i].tolist(), "attention_mask": [1] * ids.shape[1], "labels": int(labels[i])}
            for i in range(n)]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=NUM_LABELS)
    args = TrainingArguments(output_dir=str(tmp / "hf"), per_device_train_batch_size=batch, max_steps=steps + warm,
                             learning_rate=2e-5, bf16=precision == "bf16", report_to=[], save_strategy="no",
                             logging_strategy="no", dataloader_num_workers=0, use_cpu=device.type == "cpu",
                             max_grad_norm=1.0, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=rows, callbacks=[Timer()]).train()
    _sync(device)
    return {"samples_per_s": steps * batch / (time.perf_counter() - Timer.t0)}


def variant_patches() -> dict[str, Union[dict, str]]:
    """The config patch of each domainft variant; a string instead says why the variant is skipped."""
    out: dict[str, Union[dict, str]] = {
        "domainft": {},
        "domainft_frozen_bottom_half": {"frozen_half": True},
        "domainft_autocast": {"precision": "fp32",
                              "deepspeed": {"overrides": {"torch_autocast": {"enabled": True, "dtype": "bfloat16"}}}},
        "domainft_lora": {"peft": {"method": "lora"}},
        "domainft_adamw8bit": {"optim": {"eight_bit": True}},
    }
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # an import error of a native library is not always ImportError
        out["domainft_adamw8bit"] = f"bitsandbytes does not import here: {type(e).__name__}: {e}"
    return out


def bench_domainft(path, ids, labels, batch, steps, warm, precision, use_gpu, tmp, zero_stage, variant,
                   patch) -> dict:
    """The real worker path: prepared Parquet -> Ray Data -> TorchTrainer -> DeepSpeed engine."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoConfig

    from domainft import console
    from domainft.config import validate_dict
    from domainft.config.load import deep_merge
    from domainft.distributed.progress import LiveProgress
    from domainft.distributed.trainer import build_trainer
    from domainft.planning import build_spec

    patch = dict(patch)
    frozen_half = patch.pop("frozen_half", False)
    split_dir = tmp / f"splits_b{batch}"
    n = (steps + warm + 1) * batch  # domainft's epoch covers warm + steps (+1: its first step is timed apart)
    if not split_dir.exists():
        for split, (x, y) in (("train", (ids[:n], labels[:n])), ("eval", (ids[:batch], labels[:batch]))):
            (split_dir / split).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({"input_ids": pa.array(list(x), pa.list_(pa.int32())),
                                     "label": y.astype("int64")}), split_dir / split / "part-0.parquet")
    layers = AutoConfig.from_pretrained(path).num_hidden_layers
    unfreeze = ({"every_epochs": 100, "initial_layers": layers // 2} if frozen_half else {"every_epochs": 0})
    cpus = 1 if use_gpu else max(1, (os.cpu_count() or 2))
    base = {
        "output_dir": str(tmp / f"run_{variant}_b{batch}"), "data": {"train": str(split_dir / "train")},
        "model": {"name_or_path": path}, "unfreeze": unfreeze,
        "optim": {"lr": 2e-5, "layer_decay": 0.9, "warmup_ratio": 0.0},
        "train": {"epochs": 1, "batch_size": batch, "precision": patch.pop("precision", precision),
                  "log_every_steps": 10**6},
        "deepspeed": {"zero_stage": zero_stage},
        "scaling": {"num_workers": 1, "use_gpu": use_gpu, "cpus_per_worker": cpus},
        "run": {"max_failures": 0},
    }
    cfg = validate_dict(deep_merge(base, patch))
    report = {"train_dir": str(split_dir / "train"), "eval_dir": str(split_dir / "eval"),
              "label_names": [str(i) for i in range(NUM_LABELS)], "train_rows": n, "eval_rows": batch,
              "pad_token_id": 0}
    with LiveProgress() as live, console.to_log():
        result = build_trainer(build_spec(cfg, report), progress_hub=live.hub).fit()
    if result.error is not None:
        raise result.error
    return {"samples_per_s": result.metrics["train_samples_per_s"], "zero_stage": zero_stage}


def train_flops_per_sample(path: str, seq: int, frozen_half: bool = False) -> float:
    """FLOPs of one forward + backward per sample, counted on the model (eager attention, so that the
    attention products are counted as matrix products); frozen_half: the worker's own freezing."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from domainft.core import (GradientStop, build_layer_map, freeze_never_trained, lowest_trainable_depth,
                               thaw_schedule)

    config = AutoConfig.from_pretrained(path, num_labels=NUM_LABELS)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").train()
    if frozen_half:
        lmap = build_layer_map(model)
        schedule = thaw_schedule(lmap.num_layers, lmap.num_layers // 2, 1, every_epochs=100)
        schedule = {d: (s if s == 0 else None) for d, s in schedule.items()}
        freeze_never_trained(model, lmap, schedule)
        GradientStop(model, lmap).set_lowest_trainable(lowest_trainable_depth(schedule, 0))
    x = torch.randint(5, min(config.vocab_size, 30000), (2, seq))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=x, attention_mask=torch.ones_like(x), labels=torch.zeros(2, dtype=torch.long)).loss.backward()
    return counter.get_total_flops() / 2


def param_count(path: str) -> int:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path, num_labels=NUM_LABELS))
    return sum(p.numel() for p in model.parameters())


def formula_flops_per_sample(path: str, seq: int) -> float:
    """6 x (matrix-product params) x tokens + 12 x layers x tokens^2 x hidden (QK^T and AV, x3 for training)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(path, num_labels=NUM_LABELS)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    encoder = sum(m.weight.numel() for n, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and ".encoder." in f".{n}.")
    return 6.0 * encoder * seq + 12.0 * config.num_hidden_layers * seq**2 * config.hidden_size


def nominal_peak_tflops(device_name: str, precision: str) -> Optional[float]:
    if precision != "bf16":
        return None
    return next((v for k, v in NOMINAL_BF16_TFLOPS if k.lower() in device_name.lower()), None)


def measured_matmul_tflops(device: torch.device, precision: str) -> float:
    """The matrix-product rate this card gives now (GPU: 8192^3 bf16; CPU: a small product)."""
    n, reps = (8192, 10) if device.type == "cuda" else (512, 5)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a and b else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "minilm"), help="model folder, bert-base or tiny")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", default="16", help="micro batch, or a comma list (each one gets the --only paths)")
    ap.add_argument("--steps", type=int, default=12, help="timed steps (after --warm)")
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--zero-stage", type=int, default=0)
    ap.add_argument("--only", default="plain,hf_trainer,domainft,domainft_frozen_bottom_half",
                    help=f"paths at every batch size, of {', '.join(MAIN + EXTRA)}")
    ap.add_argument("--extra", default="", help="paths at the first batch size only (after its --only paths)")
    ap.add_argument("--no-flops", action="store_true", help="leave out the FLOP count and MFU")
    a = ap.parse_args()
    # Only the JSON lines go to stdout: everything else that writes to fd 1 (our own progress lines,
    # Ray's raylet and workers, C++ logs) goes to stderr.
    json_out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 2)  # the Ray worker gets the same cores
    import ray

    ray.init(include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {k: os.environ[k] for k in ("DS_ACCELERATOR", "HF_HUB_OFFLINE",
                                                                  "TOKENIZERS_PARALLELISM")}})
    batches = [int(b) for b in a.batch.split(",")]
    only = [p for p in a.only.split(",") if p]
    extra = [p for p in a.extra.split(",") if p and p not in only]
    unknown = [p for p in only + extra if p not in MAIN + EXTRA]
    if unknown:
        ap.error(f"unknown paths {unknown}")
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{os.cpu_count()}"
    head = {"bench": "train_step", "device": dev_name, "torch": torch.__version__, "model": a.model, "seq": a.seq,
            "steps": a.steps, "precision": a.precision}

    def emit(record: dict) -> None:
        print(json.dumps(head | record), file=json_out, flush=True)

    patches = variant_patches()
    if a.precision != "bf16":
        patches["domainft_autocast"] = "needs --precision bf16"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = model_dir(a.model, tmp)
        from transformers import AutoConfig

        vocab = AutoConfig.from_pretrained(path).vocab_size
        ids, labels = token_rows((a.steps + a.warm + 1) * max(batches), a.seq, min(vocab, 30000))
        flops: dict[str, Optional[float]] = {"full": None, "frozen_half": None}
        peaks: dict[str, Optional[float]] = {"nominal": nominal_peak_tflops(dev_name, a.precision), "measured": None}
        if not a.no_flops:
            flops = {"full": train_flops_per_sample(path, a.seq),
                     "frozen_half": train_flops_per_sample(path, a.seq, frozen_half=True)}
            peaks["measured"] = measured_matmul_tflops(device, a.precision)
            emit({"flops_per_sample_counted": flops["full"],
                  "flops_per_sample_formula": formula_flops_per_sample(path, a.seq),
                  "flops_per_sample_frozen_bottom_half": flops["frozen_half"],
                  "flop_ratio_frozen_vs_full": _ratio(flops["frozen_half"], flops["full"]),
                  "params": param_count(path),
                  "peak_tflops_nominal": peaks["nominal"], "peak_matmul_tflops_measured": round(peaks["measured"], 1)})
        for bi, batch in enumerate(batches):
            r: dict[str, float] = {}
            for name in only + (extra if bi == 0 else []):
                rec: dict[str, Any] = {"batch": batch, "path": name}
                patch = patches.get(name)
                if isinstance(patch, str):
                    emit(rec | {"skipped": patch})
                    continue
                t0 = time.time()
                if name == "plain":
                    out = bench_plain(path, ids, labels, batch, a.steps, a.warm, a.precision, device)
                elif name == "hf_trainer":
                    out = bench_hf_trainer(path, ids, labels, batch, a.steps, a.warm, a.precision, device, tmp)
                else:
                    out = bench_domainft(path, ids, labels, batch, a.steps, a.warm, a.precision,
                                         device.type == "cuda", tmp, a.zero_stage, name, patch)
                sps = out.pop("samples_per_s")
                r[name] = sps
                rec |= {"samples_per_s": round(sps, 2), "step_ms": round(1000 * batch / sps, 2)} | out
                f = flops["frozen_half"] if name == "domainft_frozen_bottom_half" else flops["full"]
                if f and name not in ("domainft_lora", "domainft_adamw8bit"):  # their FLOPs are another model's
                    rec["tflops"] = round(sps * f / 1e12, 3)
                    rec["mfu"] = _ratio(sps * f / 1e12, peaks["nominal"])
                    rec["mfu_of_measured_peak"] = _ratio(sps * f / 1e12, peaks["measured"])
                emit(rec | {"wall_s": round(time.time() - t0, 1)})
            ratios = {"domainft_vs_plain": _ratio(r.get("domainft"), r.get("plain")),
                      "domainft_vs_hf_trainer": _ratio(r.get("domainft"), r.get("hf_trainer")),
                      "plain_vs_hf_trainer": _ratio(r.get("plain"), r.get("hf_trainer")),
                      # step time ratio = inverse throughput ratio
                      "frozen_bottom_half_step_time_vs_full": _ratio(r.get("domainft"),
                                                                     r.get("domainft_frozen_bottom_half")),
                      "autocast_vs_pure_bf16": _ratio(r.get("domainft_autocast"), r.get("domainft")),
                      "lora_step_time_vs_full": _ratio(r.get("domainft"), r.get("domainft_lora")),
                      "adamw8bit_vs_adamw": _ratio(r.get("domainft_adamw8bit"), r.get("domainft"))}
            emit({"batch": batch, "ratios": {k: v for k, v in ratios.items() if v is not None}})
    ray.shutdown()


if __name__ == "__main__":
    main()
