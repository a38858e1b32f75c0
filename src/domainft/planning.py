"""`domainft plan`: what a run will do, without Ray and without loading weights.

Parameter groups (params, peak LR, when trainable), the unfreezing timeline, the DeepSpeed config
and a per-GPU memory estimate for ZeRO stages 0-3.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from domainft.config import Config
from domainft.core import build_layer_map, build_model_from_config, estimate_all_stages, peak_lrs, thaw_schedule
from domainft.core.geometry import geometry
from domainft.data.layout import PreparedLayout
from domainft.engine.ds_config import build_ds_config
from domainft.errors import UserError


def _train_rows(cfg: Config) -> Optional[int]:
    path = PreparedLayout(cfg.output_dir).report
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f).get("train_rows")
    return None


def make_plan(cfg: Config, num_gpus: Optional[int] = None) -> dict:
    """Everything `plan` prints, as a JSON-able dict."""
    t, op, uf, sc = cfg.train, cfg.optim, cfg.unfreeze, cfg.scaling
    model = build_model_from_config(cfg.model.name_or_path, ["a", "b"], trust_remote_code=cfg.model.trust_remote_code,
                                    revision=cfg.model.revision)
    lmap = build_layer_map(model)
    counts = lmap.param_counts(model)
    rows = _train_rows(cfg)
    steps_per_epoch = global_batch = None
    if rows:
        try:
            geo = geometry(rows, sc.num_workers, t.batch_size, t.grad_accum, t.epochs, t.max_steps_per_epoch)
        except ValueError as e:
            raise UserError(f"{cfg.output_dir}/data: {e}") from None
        steps_per_epoch, global_batch = geo.steps_per_epoch, geo.global_batch
    # Without prepared data, express the timeline with one "step" per epoch.
    spe = steps_per_epoch or 1
    schedule = thaw_schedule(lmap.num_layers, uf.initial_layers, spe, every_epochs=uf.every_epochs,
                             every_steps=uf.every_steps, train_top_fraction=uf.train_top_fraction, param_counts=counts)
    peaks = peak_lrs(lmap, op.lr, op.layer_decay, op.head_lr_mult, op.layer_lrs)
    run_steps = spe * t.epochs
    groups = []
    for depth in range(lmap.num_depths):
        thaw = schedule[depth]
        groups.append({
            "name": lmap.depth_label(depth), "depth": depth, "params": counts.get(depth, 0), "peak_lr": peaks[depth],
            "trainable_from_step": thaw if steps_per_epoch else None,
            "trainable_from_epoch": None if thaw is None else round(thaw / spe + 1, 2),
            "trained_in_run": thaw is not None and thaw < run_steps,
        })
    total = sum(counts.values())
    trainable = sum(g["params"] for g in groups if g["trained_in_run"])
    gpus = num_gpus or sc.num_workers
    ds = build_ds_config(cfg.deepspeed.zero_stage, t.precision, t.batch_size, t.grad_accum, sc.num_workers,
                         t.max_grad_norm, cfg.deepspeed.offload_optimizer, cfg.deepspeed.offload_params,
                         on_gpu=sc.use_gpu, overrides=cfg.deepspeed.overrides)
    memory = estimate_all_stages(total, trainable, t.precision, gpus, cfg.deepspeed.offload_optimizer,
                                 cfg.deepspeed.offload_params)
    return {"model": cfg.model.name_or_path, "family": lmap.family, "num_layers": lmap.num_layers,
            "total_params": total, "trainable_params": trainable, "train_rows": rows,
            "steps_per_epoch": steps_per_epoch, "global_batch": global_batch or t.batch_size * t.grad_accum * sc.num_workers,
            "total_steps": steps_per_epoch * t.epochs if steps_per_epoch else None,
            "groups": groups, "deepspeed": ds, "memory_gpus": gpus, "memory": memory,
            "zero_stage": cfg.deepspeed.zero_stage}


def _gib(n: float) -> str:
    return f"{n / 1024**3:.2f}"


def format_plan(p: dict) -> str:
    lines = [f"model {p['model']} ({p['family']}, {p['num_layers']} layers): {p['total_params']:,} parameters, "
             f"{p['trainable_params']:,} trained in this run"]
    if p["steps_per_epoch"]:
        lines.append(f"{p['train_rows']} train rows, global batch {p['global_batch']} -> {p['steps_per_epoch']} "
                     f"optimizer steps/epoch, {p['total_steps']} in all")
    else:
        lines.append("(no prepared data yet: run `domainft prepare` for step numbers; timeline in epochs)")
    lines += ["", "group         depth      params    peak_lr  trainable from"]
    for g in p["groups"]:
        if g["trainable_from_epoch"] is None:
            when = "never (frozen)"
        elif not g["trained_in_run"]:
            when = f"epoch {g['trainable_from_epoch']:g}: after the last epoch, so frozen in this run"
        elif g["trainable_from_step"] is not None:
            when = f"step {g['trainable_from_step']} (epoch {g['trainable_from_epoch']:g})"
        else:
            when = f"epoch {g['trainable_from_epoch']:g}"
        lines.append(f"{g['name']:<12} {g['depth']:>6} {g['params']:>11,} {g['peak_lr']:>10.2e}  {when}")
    lines += ["", f"memory per GPU for model states, {p['memory_gpus']} GPU(s), GiB (activations not included):",
              "stage   weights  gradients  optimizer    total"]
    for m in p["memory"]:
        mark = "  <- configured" if m["zero_stage"] == p["zero_stage"] else ""
        lines.append(f"ZeRO-{m['zero_stage']} {_gib(m['weights']):>8} {_gib(m['gradients']):>10} "
                     f"{_gib(m['optimizer_states']):>10} {_gib(m['total']):>8}{mark}")
    lines += ["", "DeepSpeed config:", json.dumps(p["deepspeed"], indent=2)]
    return "\n".join(lines)
