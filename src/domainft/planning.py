"""`domainft plan`: what a run will do, without Ray and without loading weights.

Parameter groups (params, trainable params, peak LR, when trainable), the unfreezing timeline, the
DeepSpeed config, a per-GPU memory estimate for ZeRO stages 0-3 and, side by side, the trainable
parameters and memory of each PEFT regime. `model_problems` checks the config against the model
(config.json only, on the meta device) for `validate`, `plan` and `train`, before Ray starts.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from domainft.config import Config, ConfigError
from domainft.core import (build_layer_map, build_model_from_config, estimate_all_stages, estimate_memory, peak_lrs,
                           thaw_schedule)
from domainft.core.geometry import geometry
from domainft.core.peft import METHODS, PeftSpec, apply_peft, peft_problems, peft_spec
from domainft.data.layout import PreparedLayout
from domainft.engine.ds_config import build_ds_config, effective_zero_stage
from domainft.errors import UserError


def _train_rows(cfg: Config) -> Optional[int]:
    path = PreparedLayout(cfg.output_dir).report
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f).get("train_rows")
    return None


def _peft(cfg: Config, method: Optional[str] = None) -> PeftSpec:
    values = cfg.peft.model_dump()
    return peft_spec({**values, "method": method or values["method"]})


def _meta_model(cfg: Config, spec: PeftSpec):
    """The run's model (PEFT applied) on the meta device: config.json only, no weights."""
    model = build_model_from_config(cfg.model.name_or_path, ["a", "b"], trust_remote_code=cfg.model.trust_remote_code,
                                    revision=cfg.model.revision)
    return apply_peft(model, spec)


def _geometry(cfg: Config, rows: Optional[int]):
    t, sc = cfg.train, cfg.scaling
    if not rows:
        return None
    try:
        return geometry(rows, sc.num_workers, t.batch_size, t.grad_accum, t.epochs, t.max_steps_per_epoch)
    except ValueError as e:
        raise UserError(f"{cfg.output_dir}/data: {e}") from None


def _schedule(cfg: Config, lmap, model, steps_per_epoch: int) -> dict:
    uf = cfg.unfreeze
    return thaw_schedule(lmap.num_layers, uf.initial_layers, steps_per_epoch, every_epochs=uf.every_epochs,
                         every_steps=uf.every_steps, train_top_fraction=uf.train_top_fraction,
                         param_counts=lmap.param_counts(model))


def model_problems(cfg: Config, train_rows: Optional[int] = None) -> list[str]:
    """The config against its model (core.peft.peft_problems): target modules, virtual tokens,
    whether a soft prompt thaws in the run. Reads config.json only."""
    spec = _peft(cfg)
    if spec.method == "none":
        return []
    plain = _meta_model(cfg, PeftSpec())  # problems are found on the model before wrapping
    geo = _geometry(cfg, train_rows)
    uf = cfg.unfreeze
    thaw = total = None
    # Without the row count the timeline is exact in epochs only for whole-epoch thaw intervals.
    if geo or (uf.every_steps is None and float(uf.every_epochs).is_integer()):
        lmap = build_layer_map(plain)
        spe = geo.steps_per_epoch if geo else 1
        thaw, total = _schedule(cfg, lmap, plain, spe)[lmap.embeddings_depth], spe * cfg.train.epochs
    return peft_problems(plain, spec, cfg.data.max_length, thaw, total)


def check_model(cfg: Config, train_rows: Optional[int] = None) -> None:
    """Raise ConfigError with every `model_problems` line (before Ray starts)."""
    problems = model_problems(cfg, train_rows)
    if problems:
        raise ConfigError(problems, "config")


def _trained_in_run(cfg: Config, lmap, model, geo) -> tuple[dict, list[bool]]:
    spe = geo.steps_per_epoch if geo else 1  # without prepared data, one "step" per epoch
    schedule = _schedule(cfg, lmap, model, spe)
    return schedule, [schedule[d] is not None and schedule[d] < spe * cfg.train.epochs for d in range(lmap.num_depths)]


def _int8_params(model) -> int:
    # LLM.int8 replaces the frozen Linear weights of the base model (not the head) by int8.
    from torch import nn

    lmap = build_layer_map(model)
    return sum(m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and not m.weight.requires_grad and lmap.kind.get(n + ".weight") != "head"
               and n + ".weight" in lmap.kind)


def _method_rows(cfg: Config, geo, gpus: int) -> list[dict]:
    """Trainable parameters and model-state memory (configured ZeRO stage) of every PEFT regime."""
    t, ds = cfg.train, cfg.deepspeed
    rows = []
    for method in METHODS:
        spec = _peft(cfg, method)
        if method not in ("none", cfg.peft.method) and peft_problems(_meta_model(cfg, PeftSpec()), spec):
            continue  # e.g. prefix tuning on DeBERTa
        model = _meta_model(cfg, spec)
        lmap = build_layer_map(model)
        _, trained = _trained_in_run(cfg, lmap, model, geo)
        counts = lmap.trainable_counts(model)
        total = sum(lmap.param_counts(model).values())
        trainable = sum(c for d, c in counts.items() if trained[d])
        row = {"method": method, "trainable_params": trainable, "total_params": total,
               "configured": method == cfg.peft.method}
        for key, eight in (("model_states_adamw", False), ("model_states_adamw8bit", True)):
            row[key] = estimate_memory(total, trainable, t.precision, gpus, ds.zero_stage,
                                       ds.offload_optimizer and ds.zero_stage >= 1,
                                       ds.offload_params and ds.zero_stage == 3, eight_bit=eight)["total"]
        rows.append(row)
    return rows


def make_plan(cfg: Config, num_gpus: Optional[int] = None) -> dict:
    """Everything `plan` prints, as a JSON-able dict. Raises ConfigError on `model_problems`."""
    t, op, sc = cfg.train, cfg.optim, cfg.scaling
    rows = _train_rows(cfg)
    check_model(cfg, rows)
    model = _meta_model(cfg, _peft(cfg))
    lmap = build_layer_map(model)
    counts, trainable_counts = lmap.param_counts(model), lmap.trainable_counts(model)
    geo = _geometry(cfg, rows)
    steps_per_epoch, global_batch = (geo.steps_per_epoch, geo.global_batch) if geo else (None, None)
    spe = steps_per_epoch or 1
    schedule, trained = _trained_in_run(cfg, lmap, model, geo)
    peaks = peak_lrs(lmap, op.lr, op.layer_decay, op.head_lr_mult, op.layer_lrs)
    groups = []
    for depth in range(lmap.num_depths):
        thaw = schedule[depth]
        groups.append({
            "name": lmap.depth_label(depth), "depth": depth, "params": counts.get(depth, 0),
            "trainable_params": trainable_counts.get(depth, 0), "peak_lr": peaks[depth],
            "trainable_from_step": thaw if steps_per_epoch else None,
            "trainable_from_epoch": None if thaw is None else round(thaw / spe + 1, 2),
            "trained_in_run": trained[depth] and trainable_counts.get(depth, 0) > 0,
        })
    total = sum(counts.values())
    trainable = sum(g["trainable_params"] for g in groups if g["trained_in_run"])
    gpus = num_gpus or sc.num_workers
    stage = effective_zero_stage(cfg.deepspeed.zero_stage, sc.num_workers, cfg.deepspeed.offload_optimizer,
                                 cfg.deepspeed.offload_params)
    ds = build_ds_config(stage, t.precision, t.batch_size, t.grad_accum, sc.num_workers,
                         t.max_grad_norm, cfg.deepspeed.offload_optimizer, cfg.deepspeed.offload_params,
                         on_gpu=sc.use_gpu, overrides=cfg.deepspeed.overrides)
    int8 = _int8_params(model) if cfg.model.load_in_8bit else 0
    memory = estimate_all_stages(total, trainable, t.precision, gpus, cfg.deepspeed.offload_optimizer,
                                 cfg.deepspeed.offload_params, eight_bit=op.eight_bit, int8_params=int8)
    return {"model": cfg.model.name_or_path, "family": lmap.family, "num_layers": lmap.num_layers,
            "peft_method": cfg.peft.method, "eight_bit": op.eight_bit,
            "total_params": total, "trainable_params": trainable, "train_rows": rows,
            "steps_per_epoch": steps_per_epoch, "global_batch": global_batch or t.batch_size * t.grad_accum * sc.num_workers,
            "total_steps": steps_per_epoch * t.epochs if steps_per_epoch else None,
            "groups": groups, "deepspeed": ds, "memory_gpus": gpus, "memory": memory,
            "methods": _method_rows(cfg, geo, gpus), "zero_stage": cfg.deepspeed.zero_stage}


def _gib(n: float) -> str:
    return f"{n / 1024**3:.2f}"


def format_plan(p: dict) -> str:
    regime = "" if p["peft_method"] == "none" else f", peft {p['peft_method']}"
    regime += ", 8-bit AdamW" if p["eight_bit"] else ""
    lines = [f"model {p['model']} ({p['family']}, {p['num_layers']} layers{regime}): {p['total_params']:,} parameters, "
             f"{p['trainable_params']:,} trained in this run ({100 * p['trainable_params'] / p['total_params']:.2f}%)"]
    if p["steps_per_epoch"]:
        lines.append(f"{p['train_rows']} train rows, global batch {p['global_batch']} -> {p['steps_per_epoch']} "
                     f"optimizer steps/epoch, {p['total_steps']} in all")
    else:
        lines.append("(no prepared data yet: run `domainft prepare` for step numbers; timeline in epochs)")
    lines += ["", "group         depth      params   trainable    peak_lr  trainable from"]
    for g in p["groups"]:
        if g["trainable_params"] == 0:
            when = "never (nothing trainable at this depth)"
        elif g["trainable_from_epoch"] is None:
            when = "never (frozen)"
        elif not g["trained_in_run"]:
            when = f"epoch {g['trainable_from_epoch']:g}: after the last epoch, so frozen in this run"
        elif g["trainable_from_step"] is not None:
            when = f"step {g['trainable_from_step']} (epoch {g['trainable_from_epoch']:g})"
        else:
            when = f"epoch {g['trainable_from_epoch']:g}"
        lines.append(f"{g['name']:<12} {g['depth']:>6} {g['params']:>11,} {g['trainable_params']:>11,} "
                     f"{g['peak_lr']:>10.2e}  {when}")
    lines += ["", f"memory per GPU for model states, {p['memory_gpus']} GPU(s), GiB (activations not included):",
              "stage   weights  gradients  optimizer    total"]
    for m in p["memory"]:
        mark = "  <- configured" if m["zero_stage"] == p["zero_stage"] else ""
        lines.append(f"ZeRO-{m['zero_stage']} {_gib(m['weights']):>8} {_gib(m['gradients']):>10} "
                     f"{_gib(m['optimizer_states']):>10} {_gib(m['total']):>8}{mark}")
    lines += ["", f"regimes at ZeRO-{p['zero_stage']}, model states per GPU, MiB (trainable = trained in this run):",
              "method            trainable      %    AdamW  AdamW8bit"]
    for m in p["methods"]:
        mark = "  <- configured" if m["configured"] else ""
        lines.append(f"{m['method']:<15} {m['trainable_params']:>11,} {100 * m['trainable_params'] / m['total_params']:>6.2f} "
                     f"{m['model_states_adamw'] / 1024**2:>8.1f} {m['model_states_adamw8bit'] / 1024**2:>10.1f}{mark}")
    lines += ["", "DeepSpeed config:", json.dumps(p["deepspeed"], indent=2)]
    return "\n".join(lines)
