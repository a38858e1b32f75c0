"""`domainft init --data FILE`: a commented starter config for the user's corpus. The format, the text and
label columns and the labels are guessed from the first rows (data/detect.py) and written out for the
user to confirm; the settings people change first follow, commented out at their defaults. The file is
validated as a run would load it before it is written. No Ray."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from domainft.config import ConfigError, validate_dict
from domainft.config.load import parse_yaml
from domainft.data.detect import Layout, detect_layout
from domainft.errors import UserError

DEFAULT_MODELS = {False: "bert-base-uncased", True: "bert-base-chinese"}  # by `Layout.chinese`
DEFAULT_CHAT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"  # chat records (task sft): small, bilingual, ChatML

# The settings people change first: (dotted key, why), shown commented out at their default.
FIRST_SETTINGS = (
    ("optim.lr", "peak learning rate of the top layer; lower layers get less (optim.layer_decay)"),
    ("train.epochs", "passes over the train split; the best epoch is kept"),
    ("train.batch_size", "rows per worker per step"),
    ("data.max_length", "tokens kept per text (longer texts are cut)"),
    ("data.eval_fraction", "share of the corpus held out for evaluation (or give data.eval)"),
    ("scaling.num_workers", "Ray Train workers (one per GPU)"),
    ("scaling.use_gpu", "true on GPU nodes"),
    ("train.precision", "bf16 on GPUs that have it; fp16 is GPU-only"),
    ("deepspeed.zero_stage", "0 (plain data parallel) to 3 (weights sharded too); see `domainft plan`"),
    ("peft.method", "none (full fine-tuning), lora, prefix_tuning, prompt_tuning, selective"),
)


def run_init(data: str, out: str, model: Optional[str] = None, task: Optional[str] = None,
             force: bool = False) -> str:
    """Write the starter config to `out`; returns what to run next. `task` None: sft for chat records, else
    classification. Raises UserError."""
    if os.path.exists(out) and not force:
        raise UserError(f"{out} exists: give another --out, or --force to replace it")
    layout = detect_layout(data)
    if layout.chat_format:
        if task not in (None, "sft"):
            raise UserError(f"{data}: the records are chat conversations ({layout.chat_format}), which task "
                            f"{task} cannot read; leave --task out (sft)")
        text = sft_starter_config(layout, data, model or DEFAULT_CHAT_MODEL, Path(out).stem)
    else:
        text = starter_config(layout, data, model or DEFAULT_MODELS[layout.chinese], task or "classification",
                              Path(out).stem)
    try:
        validate_dict(parse_yaml(text, out), out, check_paths=False)
    except ConfigError as e:  # what init writes must load: anything else is a bug
        raise RuntimeError(f"init wrote a config that does not validate:\n{e}\n---\n{text}") from None
    Path(out).write_text(text, encoding="utf-8")
    return f"wrote {out}: check the guesses marked CHECK, then run `domainft validate {out}`"


def starter_config(layout: Layout, data: str, model: str, task: str, name: str) -> str:
    defaults = _defaults(data, model, task)
    lines = [
        f"# A starter config for {data}, written by `domainft init` from its first {layout.rows} row(s)",
        f"# ({layout.files} file(s)). Lines marked CHECK are guesses: confirm them. Every key and its default:",
        "# `domainft validate` prints the config resolved; docs/config.md explains them.",
        f"task: {task}",
        f"output_dir: runs/{name}",
        "data:",
        f"  train: {data}",
        f"  format: {layout.fmt}   # CHECK: read as {layout.fmt}",
    ]
    if layout.fmt != "folders":
        lines.append(f"  text_column: {layout.text_column}   # CHECK: the column with the most words "
                     f"(columns: {', '.join(layout.columns)})")
        if layout.label_column:
            lines.append(f"  label_column: {layout.label_column}   # CHECK: a column with few distinct values")
        else:
            lines.append("  label_column: label   # CHECK: no column looked like labels")
    if layout.labels:
        shown = ", ".join(layout.labels[:20]) + (", ..." if len(layout.labels) > 20 else "")
        source = "folder names" if layout.fmt == "folders" else f"the first {layout.rows} rows"
        lines.append(f"  # labels in {source}: {shown}. Set data.labels: [...] to fix their order and refuse others.")
    first = _first_settings(defaults)
    lines += first.pop("data", [])  # inside the data section: uncommenting must not make a second `data:`
    lines += [
        "model:",
        f"  name_or_path: {model}   # a local Hugging Face folder (./path) or a hub name; "
        + ("chosen because the texts are mostly Chinese" if layout.chinese else "an English BERT by default"),
        "",
        "# The settings people change first, at their defaults: uncomment to change.",
    ]
    for head, entries in first.items():
        lines += [f"# {head}:", *entries]
    return "\n".join(lines) + "\n"


SFT_FIRST_SETTINGS = (
    ("data.max_length", "tokens per conversation; `prepare` prints a histogram of their lengths"),
    ("data.packing", "several conversations per row, attention kept apart: less padding"),
    ("data.train_on", "all_assistant or last_turn: which answers the loss covers"),
    ("optim.lr", "peak learning rate of the top layer (LoRA: 1e-4 to 2e-4 is usual)"),
    ("train.epochs", "passes over the train split; the best epoch is kept (lowest eval loss)"),
    ("train.batch_size", "rows per worker per step"),
    ("train.gradient_checkpointing", "recompute activations: long conversations in less memory"),
    ("eval.generate_samples", "eval prompts answered after every epoch, for you to read"),
    ("scaling.num_workers", "Ray Train workers (one per GPU)"),
    ("train.precision", "bf16 on GPUs that have it"),
)


def sft_starter_config(layout: Layout, data: str, model: str, name: str) -> str:
    """task sft: chat records, LoRA on every linear layer (what fits most GPUs), the settings people change."""
    defaults = to_defaults({"task": "sft", "output_dir": "x", "data": {"train": data},
                            "model": {"name_or_path": model}})
    lines = [
        f"# A starter config for {data}, written by `domainft init` from its first {layout.rows} row(s)",
        f"# ({layout.files} file(s)): chat records, so task sft (docs/sft.md). Lines marked CHECK are guesses.",
        "# `domainft validate` prints the config resolved; docs/config.md explains every key.",
        "task: sft",
        f"output_dir: runs/{name}",
        "data:",
        f"  train: {data}",
        f"  format: {layout.chat_format}   # CHECK: " + ("records of mixed chat formats, detected one by one"
                                                          if layout.chat_format == "auto" else
                                                          f"{layout.chat_format} records"),
        "  chat_template: auto   # the tokenizer's own; chatml, llama3, deepseek, mistral or alpaca if it has none",
    ]
    first = _first_settings(defaults, SFT_FIRST_SETTINGS)
    lines += first.pop("data", [])
    lines += [
        "model:",
        f"  name_or_path: {model}   # CHECK: your chat model, a local Hugging Face folder (./path) or a hub name",
        "peft:",
        "  method: lora",
        "  target_modules: [all-linear]",
        "  dropout: 0.0",
        "unfreeze:",
        "  every_epochs: 0   # every layer's adapter trains from the start",
        "",
        "# The settings people change first, at their defaults: uncomment to change.",
    ]
    for head, entries in first.items():
        lines += [f"# {head}:", *entries]
    return "\n".join(lines) + "\n"


def _first_settings(defaults: dict, settings=FIRST_SETTINGS) -> dict[str, list[str]]:
    """FIRST_SETTINGS as commented-out YAML lines at their defaults, by section."""
    import yaml

    sections: dict[str, list[str]] = {}
    for key, why in settings:
        head, leaf = key.split(".")
        value = yaml.safe_dump(defaults[head][leaf]).removesuffix("...\n").strip()  # 5.0e-05: a float to YAML
        sections.setdefault(head, []).append(f"{'  # ' if head == 'data' else '#   '}{leaf}: {value}   # {why}")
    return sections


def _defaults(data: str, model: str, task: str) -> dict:
    return to_defaults({"task": task, "output_dir": "x", "data": {"train": data}, "model": {"name_or_path": model}})


def to_defaults(raw: dict) -> dict:
    from domainft.config import to_dict

    return to_dict(validate_dict(raw, check_paths=False))
