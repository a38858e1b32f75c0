"""Generative SFT side by side: domainft vs TRL's SFTTrainer vs a plain PyTorch loop (prints JSON and a table).

  domainft   `domainft train` on a config this script writes: task sft, Ray Data prepare, Ray Train + DeepSpeed
             ZeRO-0, 1 worker on both cores, unpacked rows (data.packing false, like the other two)
  trl        TRL's SFTTrainer, conversational prompt-completion records ({"prompt": [system, user],
             "completion": [assistant]}) with completion_only_loss: the loss covers the tokens after the
             rendered prompt (answer, <|im_end|>, newline). TRL's assistant_only_loss needs {% generation %}
             markers that SmolLM2's template lacks, so it is not used; the script checks that TRL's labels are
             the ones domainft's ChatEncoder gives, record by record
  plain      a plain PyTorch loop: ChatEncoder's input ids and labels (-100 on prompt tokens), right padding,
             the model's own loss, AdamW, clipping, LambdaLR

The same model, data (scripts/build_sft_demo.py's BBC headline / section instructions, built here with the
seed), LoRA (r, alpha, dropout, q/k/v/o unless --targets), LR and schedule (warmup (k+1)/(w+1) for the first
ceil(10%) steps, then linear to 0: domainft's; TRL and plain get it as a LambdaLR), AdamW (weight decay 0.01,
betas 0.9/0.999, eps 1e-8), clipping 1.0, batch, one epoch (the same steps), seed, fp32, 2 threads.
After training each adapter is evaluated here the same way on the same records:

  eval loss      token-weighted cross-entropy over the answer tokens of every eval record (ChatEncoder's labels)
  exact match    of greedy answers (up to --max-new-tokens, stop at <|im_end|>) to the held-out prompts file,
                 domainft.core.textmetrics' normalisation; per kind (headline, section) too
  tokens/s       steady-state train samples/s (after the first 3 optimizer steps: domainft's own measure, applied
                 to all three) x the mean tokens per train conversation (prompt included, padding not)
  peak RSS       VmHWM of the process that trains (domainft: its Ray Train worker; the driver and Raylet are not
                 counted), read when training ends

plus end-to-end seconds (domainft: the whole `domainft train`, Ray start, prepare and export included).
Goals (the SFT issue): domainft eval loss within 2% of plain, tokens/s >= 0.9x plain and >= TRL.
Needs TRL (`make bench-sft` installs it pinned).

  python benchmarks/sft.py --json benchmarks/results/sft.json     # make bench-sft (about 11 min on 2 quiet cores)
  python benchmarks/sft.py --repeats 2                              # each method twice, alternating order (22 min)
  python benchmarks/sft.py --quick                                  # a smoke run (24 train rows, 3 steps)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))
for key, value in (("DS_ACCELERATOR", "cpu"), ("RAY_USAGE_STATS_ENABLED", "0"), ("TOKENIZERS_PARALLELISM", "false"),
                   ("HF_HUB_OFFLINE", "1"), ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")):
    os.environ.setdefault(key, value)

MODEL = "models/smollm2-135m-instruct"
METHODS = ("plain", "trl", "domainft")
def warm_steps(steps: int) -> int:
    """Steps left out of the steady-state throughput: domainft's Progress rule, min(3, max(1, steps // 4))."""
    return min(3, max(1, steps // 4))


# -- settings and data --------------------------------------------------------------------------------------
def warmup_steps(total: int, ratio: float = 0.1) -> int:
    return min(total, math.ceil(ratio * total))


def lr_lambda(total: int, warmup: int):
    """domainft's linear schedule (core/schedules.py) written out: the multiplier of the update after `k` steps."""
    def f(k: int) -> float:
        if k < warmup:
            return (k + 1) / (warmup + 1)
        return max(0.0, 1.0 - (k - warmup) / max(1, total - warmup))
    return f


def build_data(work: Path, a) -> dict:
    """train / eval / prompts JSONL in `work`, from scripts/build_sft_demo.py's functions."""
    import build_sft_demo as demo

    articles = demo.read_articles(ROOT / "data" / "bbc_demo.jsonl")
    parts = demo.split(articles, {"eval": a.eval_rows, "prompts": a.prompt_rows, "train": a.train_rows}, a.seed)
    paths = {}
    for name, rows in parts.items():
        records = demo.with_kinds(rows, a.words)
        if name == "train":
            random.Random(a.seed).shuffle(records)
        paths[name] = work / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}


def read_jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def chat_encoder(model: str, max_length: int):
    from domainft.data.chat import ChatEncoder, resolve_template
    from domainft.data.tokenize import load_tokenizer

    tok = load_tokenizer(model)
    return tok, ChatEncoder(tok, resolve_template(tok, "auto"), "all_assistant", max_length, "drop")


def vm_hwm(pid: int | str = "self") -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class StepClock:
    """Wall-clock time at the end of every optimizer step."""

    def __init__(self):
        self.t0, self.ends = time.perf_counter(), []

    def tick(self) -> None:
        self.ends.append(time.perf_counter())

    def steady_seconds(self) -> float:
        """From the end of the warm-up steps to the end of the last step."""
        return self.ends[-1] - self.ends[warm_steps(len(self.ends)) - 1]


# -- the trainers (each in its own process: `--worker plain|trl`) -------------------------------------------------
def lora_model(s: dict):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(s["seed"])
    model = AutoModelForCausalLM.from_pretrained(s["model"], dtype=torch.float32)
    model.config.use_cache = False
    cfg = LoraConfig(r=s["r"], lora_alpha=s["alpha"], lora_dropout=s["dropout"], target_modules=s["targets"],
                     task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def optimizer(model, s: dict, total: int):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, warmup_steps(total)))


def run_plain(s: dict, out: Path) -> dict:
    import torch

    tok, enc = chat_encoder(s["model"], s["max_length"])
    rows = [e for e in enc.encode_batch([r["messages"] for r in read_jsonl(s["train"])]) if e.dropped is None]
    model = lora_model(s)
    steps = len(rows) // s["batch"]
    opt, sched = optimizer(model, s, steps)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(s["seed"])).tolist()
    pad = tok.pad_token_id
    model.train()
    clock, step_tokens = StepClock(), []
    for step in range(steps):
        batch = [rows[i] for i in order[step * s["batch"]:(step + 1) * s["batch"]]]
        ids, labels, mask = _padded(batch, pad)
        step_tokens.append(int(mask.sum()))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss  # mean over the answer tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        clock.tick()
    peak = vm_hwm()
    model.save_pretrained(out / "adapter")
    return {"steps": steps, "rows": steps * s["batch"], "step_tokens": step_tokens, "clock": clock.ends, "t0": clock.t0,
            "steady_seconds": clock.steady_seconds(), "peak_rss_bytes": peak}


def _padded(batch: list, pad: int) -> tuple:
    """ChatEncoder rows right-padded to the batch's longest (no rounding up): domainft's own SFT collate."""
    import numpy as np

    from domainft.core.sft_batching import pad_sft_batch

    out = pad_sft_batch({"input_ids": [np.asarray(e.input_ids) for e in batch],
                         "labels": [np.asarray(e.labels) for e in batch],
                         "position_ids": [np.arange(len(e.input_ids)) for e in batch]}, pad, pad_to_multiple_of=1)
    return out["input_ids"], out["labels"], out["attention_mask"]


def run_trl(s: dict, out: Path) -> dict:
    import datasets
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    records = read_jsonl(s["train"])
    data = datasets.Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]}
                                       for r in records])
    model = lora_model(s)
    steps = len(records) // s["batch"]
    opt, sched = optimizer(model, s, steps)
    clock = StepClock()

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            clock.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            clock.tick()

    args = SFTConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=s["batch"], num_train_epochs=1, max_steps=steps,
        learning_rate=s["lr"], weight_decay=0.01, max_grad_norm=1.0, seed=s["seed"], data_seed=s["seed"],
        completion_only_loss=True, packing=False, max_length=s["max_length"], bf16=False, fp16=False, use_cpu=True,
        dataloader_drop_last=True, dataloader_num_workers=0, logging_steps=10**6, save_strategy="no",
        eval_strategy="no", report_to=[], disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, optimizers=(opt, sched), callbacks=[Clock()])
    same = same_labels_as_chat_encoder(trainer.train_dataset, s)
    trainer.train()
    peak = vm_hwm()
    model.save_pretrained(out / "adapter")
    return {"steps": len(clock.ends), "rows": len(clock.ends) * s["batch"], "clock": clock.ends, "t0": clock.t0,
            "steady_seconds": clock.steady_seconds(), "peak_rss_bytes": peak, "labels_match_chat_encoder": same}


def same_labels_as_chat_encoder(tokenized, s: dict) -> dict:
    """Whether TRL trains each record on exactly the tokens ChatEncoder labels (input ids and loss mask)."""
    _, enc = chat_encoder(s["model"], s["max_length"])
    mine = enc.encode_batch([r["messages"] for r in read_jsonl(s["train"])])
    col = "completion_mask" if "completion_mask" in tokenized.column_names else None
    equal = 0
    for e, row in zip(mine, tokenized):
        if col is not None:
            trained = [t for t, m in zip(row["input_ids"], row[col]) if m]
        else:
            trained = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
        equal += row["input_ids"] == e.input_ids and trained == [t for t in e.labels if t != -100]
    return {"records": len(mine), "equal": equal}


def worker_main(method: str, settings_path: str) -> int:
    s = json.loads(Path(settings_path).read_text())
    out = Path(s["work"]) / method
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(s["threads"])
    result = (run_plain if method == "plain" else run_trl)(s, out)
    (out / "result.json").write_text(json.dumps(result))
    return 0


# -- domainft (a real `domainft train`) -------------------------------------------------------------------------
class PeakRSS(threading.Thread):
    """Polls the training worker's VmHWM and thread count through the pid file the worker writes."""

    def __init__(self, pid_file: Path):
        super().__init__(daemon=True)
        self.pid_file, self.peak, self.omp, self.done = pid_file, 0, None, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                pid = int(self.pid_file.read_text())
                self.peak = max(self.peak, vm_hwm(pid))
                if self.omp is None:
                    env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                    self.omp = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"OMP_NUM_THREADS=")),
                                    "unset")
            except (OSError, ValueError):
                continue


def domainft_config(s: dict, out: Path) -> dict:
    return {
        "output_dir": str(out), "task": "sft",
        "data": {"train": s["train"], "eval": s["eval"], "max_length": s["max_length"], "packing": s["packing"]},
        "model": {"name_or_path": s["model"]},
        "peft": {"method": "lora", "r": s["r"], "alpha": s["alpha"], "dropout": s["dropout"],
                 "target_modules": s["targets"]},
        "optim": {"lr": s["lr"], "layer_decay": 1.0, "warmup_ratio": 0.1, "schedule": "linear", "weight_decay": 0.01},
        "unfreeze": {"every_epochs": 0},
        "train": {"epochs": 1, "batch_size": s["batch"], "precision": "fp32", "seed": s["seed"],
                  "max_grad_norm": 1.0, "log_every_steps": 10**6},
        "deepspeed": {"zero_stage": 0},
        "scaling": {"num_workers": 1, "cpus_per_worker": float(s["threads"])},
        "run": {"max_failures": 0},
        "eval": {"generate_samples": 0},  # answers are generated below, the same way for all three
    }


def run_domainft(s: dict, name: str) -> dict:
    import yaml

    out = Path(s["work"]) / name
    cfg_path = Path(s["work"]) / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(domainft_config(s, out), sort_keys=False))
    watcher = PeakRSS(out / "workers" / "rank0.pid")
    watcher.start()
    t0 = time.time()
    with open(Path(s["work"]) / f"{name}.log", "w") as log:
        rc = subprocess.run([str(Path(sys.executable).parent / "domainft"), "train", str(cfg_path)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.time() - t0
    watcher.done.set()
    watcher.join()
    if rc != 0:
        sys.exit(f"domainft train failed (exit {rc}): see {Path(s['work']) / f'{name}.log'}")
    metrics = json.loads((out / "metrics.json").read_text())
    h = metrics["history"][-1]
    report = json.loads((out / "data" / "data_report.json").read_text())
    return {"steps": h["global_step"], "rows": h["global_step"] * s["batch"], "seconds": round(seconds, 1),
            "steady_samples_per_s": h["train_samples_per_s"], "peak_rss_bytes": watcher.peak,
            "omp_num_threads": watcher.omp, "domainft_eval_loss": h["eval_loss"], "adapter": str(out / "best_adapter"),
            "train_rows_written": report.get("train_rows")}


def run_worker(method: str, s: dict, settings_path: Path) -> dict:
    t0 = time.time()
    with open(Path(s["work"]) / f"{method}.log", "w") as log:
        rc = subprocess.run([sys.executable, __file__, "--worker", method, "--settings", str(settings_path)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"{method} failed (exit {rc}): see {Path(s['work']) / f'{method}.log'}")
    r = json.loads((Path(s["work"]) / method / "result.json").read_text())
    warm = warm_steps(r["steps"])
    steady = (r["steps"] - warm) * s["batch"] / r["steady_seconds"]
    return {"steps": r["steps"], "rows": r["rows"], "seconds": round(time.time() - t0, 1),
            "steady_samples_per_s": steady, "peak_rss_bytes": r["peak_rss_bytes"],
            "adapter": str(Path(s["work"]) / method / "adapter"),
            **({"labels_match_chat_encoder": r["labels_match_chat_encoder"]} if "labels_match_chat_encoder" in r else {}),
            # plain counts its real tokens per step: a check of the mean-based tokens/s
            **({"exact_steady_tokens_per_s": round(sum(r["step_tokens"][warm:]) / r["steady_seconds"], 1)}
               if "step_tokens" in r else {})}


# -- the common evaluation ---------------------------------------------------------------------------------------
def evaluate(s: dict, adapter: str | None) -> dict:
    """Eval loss over the answer tokens of every eval record, and greedy answers to the prompts file."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from domainft.core.textmetrics import exact_match, score_samples

    tok, enc = chat_encoder(s["model"], s["max_length"])
    model = AutoModelForCausalLM.from_pretrained(s["model"], dtype=torch.float32)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    pad = tok.pad_token_id
    rows = enc.encode_batch([r["messages"] for r in read_jsonl(s["eval"])])
    loss_sum, n_tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), 8):
            ids, labels, mask = _padded(rows[i:i + 8], pad)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = labels[:, 1:]
            loss_sum += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                                ignore_index=-100, reduction="sum"))
            n_tokens += int((target != -100).sum())
    # greedy answers to the held-out prompts (the last assistant turn is the reference)
    prompts = read_jsonl(s["prompts"])
    stops = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    stops = sorted({t for t in stops if isinstance(t, int) and t != tok.unk_token_id})
    answers = []
    tok.padding_side = "left"
    with torch.no_grad():
        for i in range(0, len(prompts), 8):
            chunk = prompts[i:i + 8]
            texts = [tok.apply_chat_template(p["messages"][:-1], tokenize=False, add_generation_prompt=True)
                     for p in chunk]
            batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**batch, max_new_tokens=s["max_new_tokens"], do_sample=False, num_beams=1,
                                 eos_token_id=stops, pad_token_id=pad, top_k=None, top_p=None, temperature=None)
            answers += tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    refs = [p["messages"][-1]["content"] for p in prompts]
    scores = score_samples(answers, refs)
    by_kind = {}
    for kind in sorted({p["kind"] for p in prompts}):
        pairs = [(a, r) for a, r, p in zip(answers, refs, prompts) if p["kind"] == kind]
        by_kind[kind] = round(sum(exact_match(a, r) for a, r in pairs) / len(pairs), 4)
    return {"eval_loss": round(loss_sum / n_tokens, 5), "eval_answer_tokens": n_tokens,
            "exact_match": round(scores["exact_match"], 4), "exact_match_by_kind": by_kind,
            "token_f1": round(scores["token_f1"], 4),
            "samples": [{"reference": r, "answer": a} for r, a in list(zip(refs, answers))[:4]]}


# -- report -----------------------------------------------------------------------------------------------------
def table(results: list[dict]) -> str:
    head = ("method", "eval loss", "exact match", "EM headline", "EM section", "tokens/s", "samples/s", "peak RSS MB",
            "seconds")
    rows = []
    for r in results:
        em = r["exact_match_by_kind"]
        rows.append((r["method"], f"{r['eval_loss']:.4f}", f"{r['exact_match']:.3f}", f"{em.get('headline', 0):.3f}",
                     f"{em.get('section', 0):.3f}", f"{r['train_tokens_per_s']:.0f}" if r.get("train_tokens_per_s") else "-",
                     f"{r['train_samples_per_s']:.2f}" if r.get("train_samples_per_s") else "-",
                     f"{r['peak_rss_bytes'] / 1e6:.0f}" if r.get("peak_rss_bytes") else "-",
                     f"{r['seconds']:.0f}" if r.get("seconds") else "-"))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for p in ("torch", "transformers", "peft", "trl", "datasets", "deepspeed", "ray", "domainft"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MODEL, help="a chat causal LM folder (relative to the repository)")
    ap.add_argument("--train-rows", type=int, default=160, help="train records (a multiple of --batch)")
    ap.add_argument("--eval-rows", type=int, default=40)
    ap.add_argument("--prompt-rows", type=int, default=40, help="held-out prompts answered greedily")
    ap.add_argument("--words", type=int, default=45, help="article words in each prompt")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj", help="LoRA target modules, comma-separated")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS) + ["domainft_packed"],
                    help="domainft_packed: domainft with data.packing true as well (not in the default run)")
    ap.add_argument("--repeats", type=int, default=1, help="train each method this many times, in alternating order "
                                                           "(throughput and memory: the means)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 24 train / 8 eval / 8 prompt rows, 8 new tokens")
    ap.add_argument("--json", default=None, help="also write the JSON here (e.g. benchmarks/results/sft.json)")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--worker", choices=["plain", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker_main(a.worker, a.settings)
    if a.quick:
        a.train_rows, a.eval_rows, a.prompt_rows, a.max_new_tokens = 24, 8, 8, 8
    if a.train_rows % a.batch:
        sys.exit(f"--train-rows {a.train_rows} is not a multiple of --batch {a.batch} (every method drops a short batch)")
    if not (ROOT / a.model / "config.json").is_file():
        sys.exit(f"{a.model}: no model folder" + (" (run `make smollm2`)" if a.model == MODEL else ""))
    if "trl" in a.methods:
        import importlib.util

        if importlib.util.find_spec("trl") is None:
            sys.exit("TRL is not installed: run `make bench-sft` (it installs the pinned version)")

    work = Path(a.out or tempfile.mkdtemp(prefix="domainft_sft_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    s = {"model": str(ROOT / a.model), "work": str(work), "batch": a.batch, "lr": a.lr, "r": a.r, "alpha": a.alpha,
         "dropout": a.dropout, "targets": a.targets.split(","), "max_length": a.max_length, "seed": a.seed,
         "threads": 2, "max_new_tokens": a.max_new_tokens, "packing": False, **build_data(work, a)}
    settings_path = work / "settings.json"
    settings_path.write_text(json.dumps(s))
    _, enc = chat_encoder(s["model"], s["max_length"])
    train = enc.encode_batch([r["messages"] for r in read_jsonl(s["train"])])
    total_tokens = sum(len(e.input_ids) for e in train)
    mean_tokens = total_tokens / len(train)
    answer_tokens = sum(sum(t != -100 for t in e.labels) for e in train)

    # Repeats run in alternating order (plain trl domainft, then domainft trl plain, ...): load from other work on
    # a shared machine drifts, and a drift then weighs on every method alike. Each method's throughput and memory
    # are the means over its repeats; its adapter from the first repeat is evaluated.
    order = [m for k in range(a.repeats) for m in (a.methods if k % 2 == 0 else a.methods[::-1])]
    runs: dict[str, list[dict]] = {}
    load = {"before": [round(x, 2) for x in os.getloadavg()], "after_each": []}
    for k, method in enumerate(order):
        s_run = {**s, "work": str(work / f"repeat{k // len(a.methods) + 1}")}
        Path(s_run["work"]).mkdir(exist_ok=True)
        run_settings = Path(s_run["work"]) / "settings.json"
        run_settings.write_text(json.dumps(s_run))
        if method.startswith("domainft"):
            run = run_domainft({**s_run, "packing": method == "domainft_packed"}, method)
        else:
            run = run_worker(method, s_run, run_settings)
        load["after_each"].append([method, round(os.getloadavg()[0], 2)])
        run["train_samples_per_s"] = run.pop("steady_samples_per_s")
        # tokens per row: a packed row (domainft_packed) holds several conversations
        per_row = total_tokens / run["train_rows_written"] if method == "domainft_packed" else mean_tokens
        run["train_tokens_per_s"] = run["train_samples_per_s"] * per_row
        runs.setdefault(method, []).append(run)
        print(f"[bench] {method} ({k + 1}/{len(order)}): {run['train_tokens_per_s']:.1f} tokens/s, "
              f"{run['seconds']:.0f} s", file=sys.stderr, flush=True)
    results = []
    for method in a.methods:
        first = runs[method][0]
        mean = lambda key: sum(r[key] for r in runs[method]) / len(runs[method])  # noqa: E731
        row = {"method": method, **first, "train_samples_per_s": round(mean("train_samples_per_s"), 3),
               "train_tokens_per_s": round(mean("train_tokens_per_s"), 1),
               "train_tokens_per_s_each_repeat": [round(r["train_tokens_per_s"], 1) for r in runs[method]],
               "peak_rss_bytes": round(mean("peak_rss_bytes")), "seconds": round(mean("seconds"), 1)}
        if "exact_steady_tokens_per_s" in first:
            row["exact_steady_tokens_per_s"] = round(mean("exact_steady_tokens_per_s"), 1)
        row.update(evaluate(s, first["adapter"]))
        results.append(row)
        print(f"[bench] {method}: {json.dumps({k: v for k, v in row.items() if k != 'samples'})}",
              file=sys.stderr, flush=True)
    results.append({"method": "base (no training)", **evaluate(s, None)})
    by = {r["method"]: r for r in results}
    ratios, goals = {}, {}
    if "domainft" in by and "plain" in by:
        d, p = by["domainft"], by["plain"]
        ratios["eval_loss_domainft_vs_plain"] = round(d["eval_loss"] / p["eval_loss"], 4)
        ratios["tokens_per_s_domainft_vs_plain"] = round(d["train_tokens_per_s"] / p["train_tokens_per_s"], 3)
        ratios["peak_rss_domainft_vs_plain"] = round(d["peak_rss_bytes"] / p["peak_rss_bytes"], 3)
        goals["eval_loss_within_2pct_of_plain"] = abs(ratios["eval_loss_domainft_vs_plain"] - 1) <= 0.02
        goals["tokens_per_s_ge_0.9x_plain"] = ratios["tokens_per_s_domainft_vs_plain"] >= 0.9
    if "domainft" in by and "trl" in by:
        d, t = by["domainft"], by["trl"]
        ratios["eval_loss_domainft_vs_trl"] = round(d["eval_loss"] / t["eval_loss"], 4)
        ratios["tokens_per_s_domainft_vs_trl"] = round(d["train_tokens_per_s"] / t["train_tokens_per_s"], 3)
        ratios["peak_rss_domainft_vs_trl"] = round(d["peak_rss_bytes"] / t["peak_rss_bytes"], 3)
        goals["tokens_per_s_ge_trl"] = ratios["tokens_per_s_domainft_vs_trl"] >= 1.0
    record = {
        "machine": {"cpu_count": os.cpu_count(), "processor": _cpu_name(), "platform": platform.platform(),
                    "load_average": load},
        "versions": versions(),
        "settings": {"model": a.model, "data": "scripts/build_sft_demo.py on data/bbc_demo.jsonl (headline + section "
                                               "instructions, OpenAI messages, one system prompt)",
                     "train_records": len(train), "eval_records": a.eval_rows, "prompt_records": a.prompt_rows,
                     "article_words": a.words, "mean_tokens_per_train_conversation": round(mean_tokens, 2),
                     "train_tokens": total_tokens, "train_answer_tokens": answer_tokens,
                     "lora": {"r": a.r, "alpha": a.alpha, "dropout": a.dropout, "targets": s["targets"]},
                     "lr": a.lr, "schedule": "warmup ceil(10%) steps as (k+1)/(w+1), then linear to 0 (domainft's; "
                                             "a LambdaLR for trl and plain)",
                     "optimizer": "torch AdamW, weight decay 0.01, betas (0.9, 0.999), eps 1e-8, clip 1.0",
                     "repeats": a.repeats, "order": order, "batch": a.batch, "epochs": 1, "steps": len(train) // a.batch, "seed": a.seed,
                     "precision": "fp32", "threads": 2, "packing": False, "max_length": a.max_length,
                     "max_new_tokens": a.max_new_tokens, "domainft": "domainft train, ZeRO-0, 1 worker x 2 CPUs, "
                                                                     "eval.generate_samples 0",
                     "trl": "SFTTrainer, conversational prompt-completion records, completion_only_loss=True "
                            "(assistant_only_loss needs {% generation %} markers SmolLM2's template lacks), "
                            "packing False, the LoRA applied before the trainer, optimizers=(AdamW, LambdaLR)",
                     "plain": "PyTorch loop over domainft.data.chat.ChatEncoder rows, right padding, model loss",
                     "tokens_per_s": "steady-state samples/s (after the first 3 steps) x mean tokens per train "
                                     "conversation (prompt included, padding not)",
                     "peak_rss": "VmHWM of the training process at the end of training (domainft: its Ray Train "
                                 "worker)"},
        "results": results, "ratios": ratios, "goals": goals}
    text = json.dumps(record, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n", encoding="utf-8")
    print("\n" + table(results), file=sys.stderr)
    print(json.dumps({"ratios": ratios, "goals": goals}), file=sys.stderr)
    return 0


def _cpu_name() -> str:
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
