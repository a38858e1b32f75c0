"""Cross-field and file checks. Each returns a list of problems (dotted key: message)."""
from __future__ import annotations

import glob
import json
import os

from domainft.config.paths import is_uri, looks_local
from domainft.config.schema import Config

# DeepSpeed keys that would break what domainft guarantees (see README, "DeepSpeed overrides").
FORBIDDEN_DS_KEYS = {
    "scheduler": "a DeepSpeed scheduler block sets one LR for every group and flattens layer-wise LR "
                 "(DeepSpeed issue 7713); use optim.schedule",
    "optimizer": "a DeepSpeed optimizer block replaces the per-layer parameter groups (and compiles FusedAdam); "
                 "use optim.*",
    "train_batch_size": "derived from train.batch_size x train.grad_accum x scaling.num_workers",
    "train_micro_batch_size_per_gpu": "use train.batch_size",
    "gradient_accumulation_steps": "use train.grad_accum",
    "gradient_clipping": "use train.max_grad_norm",
    "fp16": "use train.precision",
    "bf16": "use train.precision",
    "zero_optimization.stage": "use deepspeed.zero_stage",
}


def _flat_keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.append(key)
        if isinstance(v, dict):
            out.extend(_flat_keys(v, key + "."))
    return out


def cross_field_problems(cfg: Config) -> list[str]:
    p: list[str] = []
    t, ds, sc, uf, op = cfg.train, cfg.deepspeed, cfg.scaling, cfg.unfreeze, cfg.optim
    if t.precision == "fp16" and not sc.use_gpu:
        p.append("train.precision: fp16 needs a GPU (scaling.use_gpu: true); use bf16 or fp32 on CPU")
    if ds.offload_optimizer and ds.zero_stage == 0:
        p.append("deepspeed.offload_optimizer: needs deepspeed.zero_stage >= 1")
    if ds.offload_params and ds.zero_stage != 3:
        p.append("deepspeed.offload_params: needs deepspeed.zero_stage: 3")
    for key in _flat_keys(ds.overrides):
        if key in FORBIDDEN_DS_KEYS:
            p.append(f"deepspeed.overrides.{key}: not allowed: {FORBIDDEN_DS_KEYS[key]}")
    if uf.every_steps is not None and "every_epochs" in uf.model_fields_set and uf.every_epochs != 0:
        p.append("unfreeze.every_steps: set either every_steps or every_epochs, not both")
    if uf.train_top_fraction is not None and gradual(cfg):
        p.append("unfreeze.train_top_fraction: fixed partial training excludes gradual unfreezing; "
                 "set unfreeze.every_epochs: 0")
    if op.layer_lrs is not None and any(lr <= 0 for lr in op.layer_lrs):
        p.append("optim.layer_lrs: every LR must be > 0")
    if op.betas and not all(0.0 <= b < 1.0 for b in op.betas):
        p.append("optim.betas: each beta must be in [0, 1)")
    if cfg.data.eval is not None and "eval_fraction" in cfg.data.model_fields_set:
        p.append("data.eval_fraction: ignored when data.eval is given; remove one of them")
    if cfg.data.labels is not None:
        if len(cfg.data.labels) < 2:
            p.append("data.labels: need at least 2 labels")
        if len(set(cfg.data.labels)) != len(cfg.data.labels):
            p.append("data.labels: duplicate labels")
        if any(not str(lab).strip() for lab in cfg.data.labels):
            p.append("data.labels: empty label")
    if cfg.data.text_column == cfg.data.label_column:
        p.append("data.label_column: must differ from data.text_column")
    try:
        "x".encode(cfg.data.encoding)
    except LookupError:
        p.append(f"data.encoding: unknown encoding {cfg.data.encoding!r}")
    bt = cfg.augment.backtranslation
    if cfg.augment.enabled and cfg.augment.ops.backtranslate > 0 and bt.backend == "marian":
        if not bt.forward or not bt.backward:
            p.append("augment.backtranslation: backend marian needs both `forward` and `backward` models")
    if cfg.augment.ab and not cfg.augment.enabled:
        p.append("augment.ab: needs augment.enabled: true")
    p += _continual_problems(cfg)
    return p + peft_problems(cfg) + distill_problems(cfg)


# peft keys and the methods that read them
_PEFT_KEYS = {"r": ("lora",), "alpha": ("lora",), "dropout": ("lora",), "target_modules": ("lora",),
              "num_virtual_tokens": ("prompt_tuning", "prefix_tuning"), "trainable": ("selective",),
              "export": ("lora", "prompt_tuning", "prefix_tuning")}


def peft_problems(cfg: Config) -> list[str]:
    """The peft section, optim.eight_bit and model.load_in_8bit against each other and the cluster.
    (What needs the model, e.g. which target modules exist, is checked by planning.model_problems.)"""
    p: list[str] = []
    pf, ds = cfg.peft, cfg.deepspeed
    defaults = type(pf)()
    for key, methods in _PEFT_KEYS.items():
        # "differs from its default", not "was set": a config that went through to_dict has every key set
        if getattr(pf, key) != getattr(defaults, key) and pf.method not in methods:
            what = "full fine-tuning" if pf.method == "none" else pf.method
            p.append(f"peft.{key}: only used with peft.method {' or '.join(methods)}, but peft.method is "
                     f"{pf.method} ({what})")
    if pf.export == "merged" and pf.method in ("prompt_tuning", "prefix_tuning"):
        p.append(f"peft.export: merged is impossible for {pf.method}: its virtual tokens are inputs, not weights, so "
                 f"they cannot be merged into the model; use peft.export: adapter (or auto)")
    if pf.method == "selective":
        if not pf.trainable:
            p.append("peft.trainable: name at least one of ffn, attention, bias, norm (mixture-of-experts models also: "
                     "experts, shared_experts, router)")
        elif len(set(pf.trainable)) != len(pf.trainable):
            p.append("peft.trainable: duplicate kinds")
    if pf.target_modules is not None and (not pf.target_modules or any(not t.strip() for t in pf.target_modules)):
        p.append("peft.target_modules: give module names (e.g. [query, value]), or leave it unset for the default")
    if cfg.model.load_in_8bit and cfg.model.load_in_4bit:
        p.append("model.load_in_4bit: set one of model.load_in_8bit and model.load_in_4bit, not both")
    for key, what, name in (("load_in_8bit", "int8", "LLM.int8"), ("load_in_4bit", "4-bit NF4", "4-bit NF4")):
        if not getattr(cfg.model, key):
            continue
        if pf.method != "lora":
            p.append(f"model.{key}: the {what} base weights are frozen, so an adapter must train: needs "
                     f"peft.method: lora (it is {pf.method})")
        if ds.zero_stage == 3:
            p.append(f"model.{key}: ZeRO-3 does not partition {name} weights (bitsandbytes keeps a whole {what} "
                     f"copy on every rank, so nothing is saved); use deepspeed.zero_stage 0-2")
    if cfg.model.load_in_4bit and not cfg.scaling.use_gpu:
        p.extend(four_bit_problems())
    return p


def four_bit_problems() -> list[str]:
    """Whether the installed bitsandbytes quantizes to 4-bit NF4 on CPU (builds before 0.46 had no CPU kernels)."""
    try:
        import torch
        from bitsandbytes.functional import quantize_4bit

        quantize_4bit(torch.ones(64), quant_type="nf4")
    except Exception as e:  # an old or GPU-only build: import or kernel errors of many kinds
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return [f"model.load_in_4bit: the installed bitsandbytes cannot quantize to 4-bit on CPU ({first}); "
                f"install bitsandbytes>=0.46, or use model.load_in_8bit, or train on GPUs (scaling.use_gpu)"]
    return []


def _teacher_config(path: str) -> dict:
    try:
        with open(os.path.join(os.path.expanduser(path), "config.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def distill_problems(cfg: Config) -> list[str]:
    """The distill section against the teacher's config.json (no model is loaded here)."""
    d, p = cfg.distill, []
    student_keys = [k for k in ("student_layers", "student_hidden_size") if getattr(d, k) is not None]
    if d.student is not None and student_keys:
        p.append(f"distill.student: give either a student model or {' / '.join(student_keys)}, not both")
    if not d.teacher:
        if d.student is not None or student_keys:
            p.append("distill.teacher: required when a student is described")
        return p
    if d.student is None and not student_keys:
        p.append("distill: describe the student: distill.student, or distill.student_layers and/or "
                 "distill.student_hidden_size")
    t = _teacher_config(d.teacher)
    if not t:
        return p  # a missing teacher folder is reported by path_problems
    if not t.get("id2label") or not any(a.endswith("ForSequenceClassification") for a in t.get("architectures", [])):
        p.append(f"distill.teacher: {d.teacher} is not a sequence classifier (no id2label / *ForSequenceClassification "
                 f"architecture): give a fine-tuned best/ folder")
    layers = t.get("num_hidden_layers", t.get("n_layers"))
    hidden, heads = t.get("hidden_size", t.get("dim")), t.get("num_attention_heads", t.get("n_heads"))
    if d.student_layers is not None and layers:
        sl = d.student_layers
        if not sl or sorted(set(sl)) != sl or sl[0] < 0 or sl[-1] >= layers:
            p.append(f"distill.student_layers: {sl}: need increasing, distinct teacher layers in 0..{layers - 1}")
    if d.student_hidden_size is not None and hidden and heads:
        head = hidden // heads
        if d.student_hidden_size >= hidden or d.student_hidden_size % head:
            p.append(f"distill.student_hidden_size: {d.student_hidden_size}: must be below the teacher's {hidden} "
                     f"and a multiple of its head size {head}")
    if d.hidden_loss > 0 and (d.student is not None or d.student_hidden_size is not None):
        p.append("distill.hidden_loss: matches hidden states, so the student must keep the teacher's hidden size "
                 "(a layer-selected student)")
    inside = os.path.abspath(os.path.expanduser(d.teacher))
    if not is_uri(cfg.output_dir) and inside.startswith(os.path.abspath(os.path.expanduser(cfg.output_dir)) + os.sep):
        p.append(f"output_dir: {cfg.output_dir} holds the teacher ({d.teacher}); distil into another output_dir")
    return p


def _continual_problems(cfg: Config) -> list[str]:
    """Continual retraining writes a new output_dir: the previous run's data and best/ stay as they are."""
    p = []
    out = os.path.abspath(os.path.expanduser(cfg.output_dir)) if not is_uri(cfg.output_dir) else cfg.output_dir
    replay = cfg.data.replay.from_
    if replay and not is_uri(replay) and os.path.abspath(os.path.expanduser(replay)) == out:
        p.append(f"data.replay.from: {replay} is this run's output_dir (its prepared data would be replaced); "
                 f"continue into another output_dir")
    model = cfg.model.name_or_path
    if looks_local(model) and os.path.abspath(os.path.expanduser(model)) == os.path.join(out, "best"):
        p.append(f"model.name_or_path: {model} is this run's own best/ (the export would replace it); continue into "
                 f"another output_dir")
    return p


def continual_path_problems(replay_from, label_fixes) -> list[str]:
    """data.replay.from must be a run's output_dir with prepared data; data.label_fixes a file (local paths)."""
    p = []
    if replay_from and not is_uri(replay_from):
        root = os.path.expanduser(replay_from)
        report = os.path.join(root, "data", "data_report.json")
        if os.path.isdir(root) and not os.path.isfile(report):
            p.append(f"data.replay.from: {replay_from} holds no prepared data (no data/data_report.json): give the "
                     f"output_dir of a run that prepared or trained")
    if label_fixes and not is_uri(label_fixes) and os.path.isdir(os.path.expanduser(label_fixes)):
        p.append(f"data.label_fixes: {label_fixes} is a folder; give the CSV file")
    return p


def gradual(cfg: Config) -> bool:
    """True when layers thaw during training (rather than all trainable from the start)."""
    uf = cfg.unfreeze
    return uf.every_steps is not None or uf.every_epochs > 0


def _local_exists(pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return bool(glob.glob(pattern, recursive=True))
    return os.path.exists(pattern)


def _resolved(value: str) -> str:
    """Where a relative path was looked for: the directory the command runs in, not the config file's."""
    path = os.path.expanduser(value)
    return "" if os.path.isabs(path) else f" (relative paths are read from the current directory, {os.getcwd()})"


def path_problems(raw: dict) -> list[str]:
    """Files the run needs must exist (local paths only; URIs are checked when read).

    Works on the raw dict so that missing files are reported even when other keys fail to validate.
    """
    def get(dotted: str):
        node = raw
        for part in dotted.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node if isinstance(node, str) and node else None

    p: list[str] = []
    for key in ("data.train", "data.eval", "augment.protected_terms", "distill.teacher", "data.label_fixes",
                "data.replay.from"):
        value = get(key)
        if value and not is_uri(value) and not _local_exists(os.path.expanduser(value)):
            p.append(f"{key}: no such file, folder or glob match: {value}{_resolved(value)}")
    p += continual_path_problems(get("data.replay.from"), get("data.label_fixes"))
    name = get("model.name_or_path")
    if name and looks_local(name):  # a path must be a model folder; else it is a hub name
        path = os.path.expanduser(name)
        if not os.path.isdir(path):
            p.append(f"model.name_or_path: no such model folder: {name}{_resolved(name)}")
        elif not os.path.isfile(os.path.join(path, "config.json")):
            p.append(f"model.name_or_path: {name} has no config.json (not a Hugging Face model folder)")
    return p
