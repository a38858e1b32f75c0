"""Training throughput, side by side in one run, same model and batches (prints JSON).

  plain       a plain PyTorch loop (AdamW, autocast for bf16): the baseline
  hf_trainer  Hugging Face Trainer on the same rows
  domainft    the real `domainft train` worker path: Ray Train + DeepSpeed as `train` configures it,
              fed by Ray Data (full fine-tuning)
  domainft_frozen_bottom_half   the same with the bottom half of the encoder frozen for the run

Goals: domainft >= 0.9x plain on CPU (>= 1.0x plain, >= 1.25x HF Trainer on a GPU); frozen bottom half
<= 0.6x the step time of full fine-tuning.

CPU:  python benchmarks/train_step.py                 (pretrained MiniLM, seq 128, batch 16)
GPU:  python benchmarks/train_step.py --model bert-base --seq 128 --batch 128 --precision bf16 --steps 60
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")

NUM_LABELS = 4


def model_dir(name: str, tmp: Path) -> str:
    """A local model folder: the given path, or BERT-base built from its config (random weights)."""
    if name != "bert-base":
        return name
    from transformers import BertConfig, BertForSequenceClassification

    d = tmp / "bert-base"
    BertForSequenceClassification(BertConfig(num_labels=NUM_LABELS)).save_pretrained(d, safe_serialization=True)
    from tokenizers import Tokenizer, models

    from transformers import PreTrainedTokenizerFast

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

    rows = [{"input_ids": ids[i].tolist(), "attention_mask": [1] * ids.shape[1], "labels": int(labels[i])}
            for i in range(len(ids))]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=NUM_LABELS)
    args = TrainingArguments(output_dir=str(tmp / "hf"), per_device_train_batch_size=batch, max_steps=steps + warm,
                             learning_rate=2e-5, bf16=precision == "bf16", report_to=[], save_strategy="no",
                             logging_strategy="no", dataloader_num_workers=0, use_cpu=device.type == "cpu",
                             max_grad_norm=1.0, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=rows, callbacks=[Timer()]).train()
    _sync(device)
    return {"samples_per_s": steps * batch / (time.perf_counter() - Timer.t0)}


def bench_domainft(path, ids, labels, batch, steps, warm, precision, use_gpu, tmp, zero_stage, frozen_half) -> dict:
    """The real worker path: prepared Parquet -> Ray Data -> TorchTrainer -> DeepSpeed engine."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from domainft.config import validate_dict
    from domainft.distributed.trainer import train_prepared

    name = "frozen" if frozen_half else "full"
    split_dir = tmp / f"splits_{name}"
    for split, (x, y) in (("train", (ids, labels)), ("eval", (ids[:batch], labels[:batch]))):
        (split_dir / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"input_ids": pa.array(list(x), pa.list_(pa.int32())), "label": y.astype("int64")}),
                       split_dir / split / "part-0.parquet")
    from transformers import AutoConfig

    layers = AutoConfig.from_pretrained(path).num_hidden_layers
    unfreeze = ({"every_epochs": 100, "initial_layers": layers // 2} if frozen_half else {"every_epochs": 0})
    cpus = 1 if use_gpu else max(1, (os.cpu_count() or 2))
    cfg = validate_dict({
        "output_dir": str(tmp / f"run_{name}"), "data": {"train": str(split_dir / "train")},
        "model": {"name_or_path": path}, "unfreeze": unfreeze,
        "optim": {"lr": 2e-5, "layer_decay": 0.9, "warmup_ratio": 0.0},
        "train": {"epochs": 1, "batch_size": batch, "precision": precision, "log_every_steps": 10**6},
        "deepspeed": {"zero_stage": zero_stage},
        "scaling": {"num_workers": 1, "use_gpu": use_gpu, "cpus_per_worker": cpus},
        "run": {"max_failures": 0},
    })
    report = {"train_dir": str(split_dir / "train"), "eval_dir": str(split_dir / "eval"),
              "label_names": [str(i) for i in range(NUM_LABELS)], "train_rows": len(ids), "eval_rows": batch}
    summary = train_prepared(cfg, report, quiet=True)
    return {"samples_per_s": summary["history"][0]["train_samples_per_s"], "zero_stage": zero_stage}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "minilm"), help="model folder, or bert-base")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12, help="timed steps (after --warm)")
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--zero-stage", type=int, default=0)
    ap.add_argument("--only", default="plain,hf_trainer,domainft,domainft_frozen_bottom_half")
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 2)  # the Ray worker gets the same cores
    import ray

    ray.init(include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": {k: os.environ[k] for k in ("DS_ACCELERATOR", "HF_HUB_OFFLINE",
                                                                  "TOKENIZERS_PARALLELISM")}})
    results: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{os.cpu_count()}",
                     "torch": torch.__version__, "model": a.model, "seq": a.seq, "batch": a.batch, "steps": a.steps,
                     "precision": a.precision}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = model_dir(a.model, tmp)
        from transformers import AutoConfig

        vocab = AutoConfig.from_pretrained(path).vocab_size
        # domainft's epoch covers warm + steps; other paths get exactly the same rows.
        ids, labels = token_rows((a.steps + a.warm + 1) * a.batch, a.seq, min(vocab, 30000))
        runs = {
            "plain": lambda: bench_plain(path, ids, labels, a.batch, a.steps, a.warm, a.precision, device),
            "hf_trainer": lambda: bench_hf_trainer(path, ids, labels, a.batch, a.steps, a.warm, a.precision,
                                                   device, tmp),
            "domainft": lambda: bench_domainft(path, ids, labels, a.batch, a.steps, a.warm, a.precision,
                                               device.type == "cuda", tmp, a.zero_stage, False),
            "domainft_frozen_bottom_half": lambda: bench_domainft(path, ids, labels, a.batch, a.steps, a.warm,
                                                                  a.precision, device.type == "cuda", tmp,
                                                                  a.zero_stage, True),
        }
        for name in a.only.split(","):
            t0 = time.time()
            results[name] = runs[name]() | {"wall_s": round(time.time() - t0, 1)}
            print(f"# {name}: {results[name]}", file=sys.stderr, flush=True)
    r = {k: v["samples_per_s"] for k, v in results.items() if isinstance(v, dict)}
    ratios = {}
    if "domainft" in r and "plain" in r:
        ratios["domainft_vs_plain"] = r["domainft"] / r["plain"]
    if "domainft" in r and "hf_trainer" in r:
        ratios["domainft_vs_hf_trainer"] = r["domainft"] / r["hf_trainer"]
    if "domainft" in r and "domainft_frozen_bottom_half" in r:
        # step time ratio = inverse throughput ratio
        ratios["frozen_bottom_half_step_time_vs_full"] = r["domainft"] / r["domainft_frozen_bottom_half"]
    results["ratios"] = {k: round(v, 3) for k, v in ratios.items()}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
