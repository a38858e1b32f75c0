"""The config the training tests start from, in one place: each test states only what it is about.

`run_config(out, train, model, *overrides, optim={...}, train_={...} ...)`: the base below, each section
given by keyword merged over the base's (one level), then dotted overrides (`"peft.method=lora"`), then
validated as a user's YAML is.
"""
from domainft.config import apply_overrides, validate_dict

BASE = {
    # The tiny random models learn the synthetic tasks at one LR for head and body; the default x10 head
    # LR (for a new head on a pretrained body) only makes them less predictable.
    "optim": {"lr": 2e-3, "head_lr_mult": 1.0, "warmup_ratio": 0.05},
    "unfreeze": {"every_epochs": 0},
    "train": {"epochs": 1, "batch_size": 16, "seed": 7, "log_every_steps": 100},
    "deepspeed": {"zero_stage": 2},
    "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
    "run": {"keep_checkpoints": 1},
}


def raw_config(out, train, model, *overrides, **sections) -> dict:
    """The base as a dict (what a YAML file holds); `train_` is the `train` section (`train` is the data)."""
    if "train_" in sections:
        sections["train"] = sections.pop("train_")
    raw = {"output_dir": str(out), "data": {"train": str(train)}, "model": {"name_or_path": str(model)},
           **{k: dict(v) for k, v in BASE.items()}}
    for key, values in sections.items():
        raw[key] = {**raw.get(key, {}), **values}
    return apply_overrides(raw, list(overrides))


def run_config(out, train, model, *overrides, **sections):
    return validate_dict(raw_config(out, train, model, *overrides, **sections))
