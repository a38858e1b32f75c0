"""`domainft plan`: the RunSpec as a person reads it, with a per-GPU memory estimate for ZeRO 0-3 and,
side by side, the trainable parameters and memory of each PEFT regime. No Ray, no weights."""
from __future__ import annotations

import json
import os
from typing import Optional

from domainft.config import Config
from domainft.core import build_layer_map, estimate_all_stages, estimate_memory
from domainft.core.peft import METHODS, PeftSpec, peft_problems, peft_spec
from domainft.core.unfreeze import within_run
from domainft.data.layout import PreparedLayout
from domainft.planning.build import NOMINAL_STEPS_PER_EPOCH, build_spec, meta_model, scheduled_thaws
from domainft.runspec import RunSpec


def _report(cfg: Config) -> tuple[Optional[dict], bool]:
    """The prepared data's report when it is that of this config (else None), and whether stale data is there:
    its row counts belong to another corpus or other settings (`prepare` would redo it)."""
    from domainft.data.freshness import fresh_report, prepare_fingerprint

    layout = PreparedLayout(cfg.output_dir)
    report = fresh_report(layout, prepare_fingerprint(cfg))
    return report, report is None and os.path.isfile(layout.report)


def _int8_params(model) -> int:
    # LLM.int8 replaces the frozen Linear weights of the base model (not the head) by int8.
    from torch import nn

    lmap = build_layer_map(model)
    return sum(m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and not m.weight.requires_grad and lmap.kind.get(n + ".weight") != "head"
               and n + ".weight" in lmap.kind)


def _method_rows(cfg: Config, spec: RunSpec, gpus: int) -> list[dict]:
    """Trainable parameters and model-state memory (configured ZeRO stage) of every PEFT regime."""
    t, ds = cfg.train, cfg.deepspeed
    labels, spe = spec.data.label_names, spec.geometry.steps_per_epoch if spec.geometry else NOMINAL_STEPS_PER_EPOCH
    rows, plain, values = [], meta_model(cfg, labels, PeftSpec()), cfg.peft.model_dump()
    for method in METHODS:
        regime = peft_spec({**values, "method": method})
        if method not in ("none", cfg.peft.method) and peft_problems(plain, regime):
            continue  # e.g. prefix tuning on DeBERTa
        model = meta_model(cfg, labels, regime)
        lmap = build_layer_map(model)
        counts = lmap.param_counts(model)
        in_run = within_run(scheduled_thaws(cfg, lmap, counts, spe), spe * t.epochs)
        trainable = sum(c for d, c in lmap.trainable_counts(model).items() if in_run[d] is not None)
        total = sum(counts.values())
        row = {"method": method, "trainable_params": trainable, "total_params": total,
               "configured": method == cfg.peft.method}
        for key, eight in (("model_states_adamw", False), ("model_states_adamw8bit", True)):
            row[key] = estimate_memory(total, trainable, t.precision, gpus, ds.zero_stage,
                                       ds.offload_optimizer and ds.zero_stage >= 1,
                                       ds.offload_params and ds.zero_stage == 3, eight_bit=eight)["total"]
        rows.append(row)
    return rows


def make_plan(cfg: Config, num_gpus: Optional[int] = None) -> dict:
    """Everything `plan` prints, as a JSON-able dict (with the RunSpec under "spec").

    Raises:
        ConfigError: The config's problems with its model and data (see build_spec).
    """
    t, ds = cfg.train, cfg.deepspeed
    report, stale = _report(cfg)
    spec = build_spec(cfg, report)
    geo = spec.geometry
    spe = geo.steps_per_epoch if geo else NOMINAL_STEPS_PER_EPOCH
    groups = [{"name": d.name, "depth": d.depth, "params": d.params, "trainable_params": d.trainable_params,
               "peak_lr": d.peak_lr, "trainable_from_step": d.scheduled_step if geo else None,
               "trainable_from_epoch": None if d.scheduled_step is None else round(d.scheduled_step / spe + 1, 2),
               "trained_in_run": d.trained} for d in spec.depths]
    total = sum(d.params for d in spec.depths)
    trainable = sum(d.trainable_params for d in spec.depths if d.trained)
    gpus = num_gpus or cfg.scaling.num_workers
    int8 = _int8_params(meta_model(cfg, spec.data.label_names)) if cfg.model.load_in_8bit else 0
    memory = estimate_all_stages(total, trainable, t.precision, gpus, ds.offload_optimizer, ds.offload_params,
                                 eight_bit=spec.optimizer.eight_bit, int8_params=int8)
    return {"model": spec.model.name_or_path, "family": spec.model.family, "num_layers": spec.model.num_layers,
            "peft_method": spec.model.peft.method, "eight_bit": spec.optimizer.eight_bit,
            "total_params": total, "trainable_params": trainable, "train_rows": spec.data.train_rows,
            "stale_data": stale,
            "steps_per_epoch": geo.steps_per_epoch if geo else None,
            "global_batch": geo.global_batch if geo else t.batch_size * t.grad_accum * spec.ray.num_workers,
            "total_steps": geo.total_steps if geo else None,
            "groups": groups, "deepspeed": spec.deepspeed, "memory_gpus": gpus, "memory": memory,
            "methods": _method_rows(cfg, spec, gpus), "zero_stage": ds.zero_stage, "spec": spec.to_dict()}


def _gib(n: float) -> str:
    return f"{n / 1024**3:.2f}"


def _schedule_line(p: dict) -> str:
    s = p["spec"]
    o, lr = s["optimizer"], s["lr"]
    scaled = (f" (optim.lr {o['base_lr']:.2e} x {o['lr_scale']:.3g}: {o['lr_scaling']} scaling from batch "
              f"{o['lr_reference_batch']} to {p['global_batch']})" if o["lr_scale"] != 1.0 else "")
    if lr is None:
        return f"peak LRs below include the batch scaling{scaled}" if scaled else ""
    return (f"LR: {lr['warmup_steps']} warmup steps, then {lr['schedule']} to {lr['min_lr_ratio']:g} x peak; a group "
            f"that thaws later ramps up over {lr['thaw_warmup_steps']} steps{scaled}")


def format_plan(p: dict) -> str:
    regime = "" if p["peft_method"] == "none" else f", peft {p['peft_method']}"
    regime += ", 8-bit AdamW" if p["eight_bit"] else ""
    lines = [f"model {p['model']} ({p['family']}, {p['num_layers']} layers{regime}): {p['total_params']:,} parameters, "
             f"{p['trainable_params']:,} trained in this run ({100 * p['trainable_params'] / p['total_params']:.2f}%)"]
    if p["steps_per_epoch"]:
        lines.append(f"{p['train_rows']} train rows, global batch {p['global_batch']} -> {p['steps_per_epoch']} "
                     f"optimizer steps/epoch, {p['total_steps']} in all")
    elif p["stale_data"]:
        lines.append("(the prepared data is not this config's: the data, augment or model settings or the input "
                     "files changed; run `domainft prepare` for step numbers; timeline in epochs)")
    else:
        lines.append("(no prepared data yet: run `domainft prepare` for step numbers; timeline in epochs)")
    if _schedule_line(p):
        lines.append(_schedule_line(p))
    lines.append(f"loss: {json.dumps(p['spec']['loss'])}")
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
