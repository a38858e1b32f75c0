"""`domainft plan`: the RunSpec as a person reads it, with a per-GPU memory estimate for ZeRO 0-3 (model
states, ZeRO 3's gathered module and one micro batch's activations) and, side by side, the trainable
parameters and memory of each PEFT regime and of full fine-tuning, LoRA and QLoRA. No Ray, no weights: every
figure comes from config.json through a model built on the meta device (core/memory.py, core/activations.py
hold the arithmetic and its sources)."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any, Optional

from domainft.config import Config
from domainft.core import build_layer_map, estimate_all_stages, estimate_memory
from domainft.core.activations import (BYTES_PER_VALUE, activation_memory, head_activation_bytes, layer_shapes,
                                       moe_routing)
from domainft.core.layers import LayerMap
from domainft.core.peft import METHODS, PeftSpec, peft_problems, peft_spec
from domainft.core.unfreeze import within_run
from domainft.data.layout import PreparedLayout
from domainft.planning.build import NOMINAL_STEPS_PER_EPOCH, build_spec, meta_model, run_peft_spec, scheduled_thaws
from domainft.runspec import RunSpec

# How the frozen base weights are kept: in the training precision, or quantized by bitsandbytes.
QUANTIZED = ("int8", "nf4")


def _report(cfg: Config) -> tuple[Optional[dict], bool]:
    """The prepared data's report when it is that of this config (else None), and whether stale data is there:
    its row counts belong to another corpus or other settings (`prepare` would redo it)."""
    from domainft.data.freshness import fresh_report, prepare_fingerprint

    layout = PreparedLayout(cfg.output_dir)
    report = fresh_report(layout, prepare_fingerprint(cfg))
    return report, report is None and os.path.isfile(layout.report)


class _Models:
    """The meta models of the regimes `plan` compares, each built once (a 16B model takes seconds)."""

    def __init__(self, cfg: Config, labels: list[str]):
        self.cfg, self.labels, self._built = cfg, labels, {}

    def get(self, regime: PeftSpec) -> Any:
        regime = PeftSpec() if regime.method == "none" else regime  # the plain model, whatever the other keys
        if regime not in self._built:
            self._built[regime] = meta_model(self.cfg, self.labels, regime)
        return self._built[regime]


def _hf(model: Any) -> Any:
    """The Hugging Face model (inside a PEFT wrapper)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _quantized_params(model: Any) -> int:
    """The weights bitsandbytes quantizes under model.load_in_8bit / load_in_4bit: the frozen Linear weights of
    the base model. Not the head (core/model.py skips it), nor biases, norms, embeddings or 3-D expert tensors."""
    from torch import nn

    lmap = build_layer_map(model)
    return sum(m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and not m.weight.requires_grad and lmap.kind.get(n + ".weight") != "head"
               and n + ".weight" in lmap.kind)


def _largest_module(model: Any) -> tuple[int, int]:
    """(parameters, trainable ones) of the module with the most parameters of its own: what ZeRO 3 gathers whole
    while it computes (DeepSpeed's `model_to_params` takes the same `largest_layer_params`)."""
    best = (0, 0)
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        n = sum(p.numel() for p in own)
        if n > best[0]:
            best = (n, sum(p.numel() for p in own if p.requires_grad))
    return best


def _activated_params(model: Any, lmap: LayerMap, total: int) -> Optional[int]:
    """Parameters one token's forward pass computes with, for a mixture-of-experts model (None for a dense one):
    all of them but the routed experts it is not sent to ((E - k) / E of them) and the input embedding (a lookup).
    DeepSeek's convention: it gives 20.9B for DeepSeek-V2's published 21B, 36.6B for V3's 37B."""
    routing = moe_routing(_hf(model).config.to_dict())
    if routing is None:
        return None
    experts, top_k = routing
    by_kind = {"experts": 0, "embedding": 0}
    for name, param in model.named_parameters():
        kind = lmap.kind.get(name)
        if kind in by_kind:
            by_kind[kind] += param.numel()
    return total - round(by_kind["experts"] * (experts - top_k) / experts) - by_kind["embedding"]


def _adapter_widths(model: Any, lmap: LayerMap) -> dict[int, tuple[int, int, bool]]:
    """Depth -> (summed input widths of the LoRA-adapted Linears, summed ranks, whether they apply dropout): what
    peft's `lora_B(lora_A(dropout(x)))` keeps besides the base layer's activations."""
    from torch import nn

    widths: dict[int, tuple[int, int, bool]] = {}
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        depth = lmap.depth.get(name + ".base_layer.weight")
        if not isinstance(lora_a, nn.ModuleDict) or depth is None:
            continue
        for key, a in lora_a.items():
            dropout = module.lora_dropout[key]
            i, r, drops = widths.get(depth, (0, 0, False))
            widths[depth] = (i + a.in_features, r + a.out_features,
                             drops or isinstance(dropout, nn.Dropout) and dropout.p > 0)
    return widths


def _activations(cfg: Config, model: Any, lmap: LayerMap, trained: set[int], regime: PeftSpec) -> Optional[dict]:
    """One micro batch's activations per GPU (core/activations.py) for the layers the backward pass goes through:
    from the top down to the deepest depth trained in the run (all layers if the embeddings train)."""
    t, config = cfg.train, _hf(model).config
    implementation = getattr(config, "_attn_implementation", None)
    try:
        layers = layer_shapes(config.to_dict(), repeat_kv=implementation != "flash_attention_2")
    except ValueError:  # a family without a count (none today): plan shows the model states alone
        return None
    for depth, (inputs, ranks, dropout) in _adapter_widths(model, lmap).items():
        if 1 <= depth <= lmap.num_layers:
            i = lmap.num_layers - depth  # layers are bottom first; depth 1 is the top layer
            layers[i] = replace(layers[i], adapter_input_width=inputs, adapter_rank_width=ranks,
                                adapter_dropout=dropout)
    seq = cfg.data.max_length + (regime.num_virtual_tokens if regime.method == "prompt_tuning" else 0)
    kept = min(max((d for d in trained if d >= 1), default=0), lmap.num_layers)
    fused = implementation != "eager"
    frozen = regime.adapter  # LoRA, prompt and prefix tuning: the layers' own weights do not train
    head = head_activation_bytes(seq, t.batch_size, layers[-1].hidden, config.num_labels, BYTES_PER_VALUE[t.precision],
                                 logits_per_token=lmap.decoder, final_norm=lmap.decoder)
    out = activation_memory(layers, seq, t.batch_size, t.precision, kept, t.gradient_checkpointing, fused, head,
                            frozen_layers=frozen)
    return {**out, "num_layers": lmap.num_layers, "seq_len": seq, "micro_batch": t.batch_size,
            "precision": t.precision, "checkpointing": t.gradient_checkpointing, "fused_attention": fused,
            "frozen_layers": frozen}


def _trained_in_run(cfg: Config, model: Any, lmap: LayerMap, spe: int) -> tuple[dict[int, int], set[int]]:
    """(parameters per depth, the depths whose trainable parameters train within the run)."""
    counts, trainable = lmap.param_counts(model), lmap.trainable_counts(model)
    in_run = within_run(scheduled_thaws(cfg, lmap, counts, spe), spe * cfg.train.epochs)
    return counts, {d for d, n in trainable.items() if n and in_run[d] is not None}


def _method_rows(cfg: Config, spec: RunSpec, gpus: int, models: _Models) -> list[dict]:
    """Trainable parameters and model-state memory (configured ZeRO stage) of every PEFT regime."""
    t, ds = cfg.train, cfg.deepspeed
    spe = spec.geometry.steps_per_epoch if spec.geometry else NOMINAL_STEPS_PER_EPOCH
    rows, plain, values = [], models.get(PeftSpec()), _peft_values(cfg)
    for method in METHODS:
        regime = peft_spec({**values, "method": method})
        if method not in ("none", cfg.peft.method) and peft_problems(plain, regime):
            continue  # e.g. prefix tuning on DeBERTa
        model = models.get(regime)
        lmap = build_layer_map(model)
        counts, trained = _trained_in_run(cfg, model, lmap, spe)
        trainable = sum(lmap.trainable_counts(model)[d] for d in trained)
        total = sum(counts.values())
        row = {"method": method, "trainable_params": trainable, "total_params": total,
               "configured": method == cfg.peft.method}
        for key, eight in (("model_states_adamw", False), ("model_states_adamw8bit", True)):
            row[key] = estimate_memory(total, trainable, t.precision, gpus, ds.zero_stage,
                                       ds.offload_optimizer and ds.zero_stage >= 1,
                                       ds.offload_params and ds.zero_stage == 3, eight_bit=eight)["total"]
        rows.append(row)
    return rows


def _peft_values(cfg: Config) -> dict:
    """The configured PEFT keys as the run reads them (a causal LM's head stays frozen: build.run_peft_spec)."""
    return {**cfg.peft.model_dump(), "causal": run_peft_spec(cfg).causal}


def _regimes(cfg: Config) -> list[tuple[str, PeftSpec, str, bool]]:
    """(name, PEFT regime, how the frozen base Linear weights are kept, configured) of full fine-tuning, LoRA
    (the configured rank and targets, else r=8 on the family's default targets) and QLoRA, and of the configured
    regime when it is none of the three (prompt or prefix tuning, selective, LoRA on an int8 base)."""
    p, m, precision = cfg.peft, cfg.model, cfg.train.precision
    values = _peft_values(cfg)
    lora = peft_spec({**values, "method": "lora", **({} if p.method == "lora" else {"r": 8, "target_modules": None})})
    base = "nf4" if m.load_in_4bit else "int8" if m.load_in_8bit else precision
    configured = "full" if p.method == "none" else "qlora" if base == "nf4" else "lora" if base == precision \
        and p.method == "lora" else None
    rows = [("full", PeftSpec(), precision, configured == "full"), ("lora", lora, precision, configured == "lora"),
            ("qlora", lora, "nf4", configured == "qlora")]
    if configured is None:
        name = "lora-int8" if base == "int8" else p.method
        rows.insert(0, (name, peft_spec(values), base, True))
    return rows


def _regime_row(cfg: Config, spec: RunSpec, gpus: int, models: _Models, name: str, regime: PeftSpec, base: str,
                configured: bool) -> dict:
    """Parameters, trainable ones in the run, activations and per-GPU memory at ZeRO 0-3 of one regime."""
    t, ds = cfg.train, cfg.deepspeed
    spe = spec.geometry.steps_per_epoch if spec.geometry else NOMINAL_STEPS_PER_EPOCH
    model = models.get(regime)
    lmap = build_layer_map(model)
    counts, trained = _trained_in_run(cfg, model, lmap, spe)
    total = sum(counts.values())
    trainable = sum(lmap.trainable_counts(model)[d] for d in trained)
    quantized = _quantized_params(model) if base in QUANTIZED else 0
    gathered, gathered_trainable = _largest_module(model)
    activations = _activations(cfg, model, lmap, trained, regime)
    stages = estimate_all_stages(total, trainable, t.precision, gpus, ds.offload_optimizer, ds.offload_params,
                                 eight_bit=spec.optimizer.eight_bit,
                                 int8_params=quantized if base == "int8" else 0,
                                 int4_params=quantized if base == "nf4" else 0, gathered_params=gathered,
                                 gathered_trainable=gathered_trainable,
                                 activation_bytes=activations["total"] if activations else 0)
    for row in stages:  # bitsandbytes' weights are not partitioned by ZeRO 3 (config/checks.py refuses it)
        row["supported"] = not (base in QUANTIZED and row["zero_stage"] == 3)
    return {"regime": name, "peft_method": regime.method, "r": regime.r if regime.method == "lora" else None,
            "base_weights": base, "configured": configured, "total_params": total,
            "activated_params": _activated_params(model, lmap, total), "trainable_params": trainable,
            "quantized_params": quantized, "largest_module_params": gathered, "activations": activations,
            "stages": stages}


def make_plan(cfg: Config, num_gpus: Optional[int] = None) -> dict:
    """Everything `plan` prints, as a JSON-able dict (with the RunSpec under "spec").

    "memory" holds the configured regime's per-GPU bytes at ZeRO 0-3 (model states, ZeRO 3's gathered module,
    activations), "activations" how they were counted, "regimes" the same for full fine-tuning, LoRA and QLoRA,
    "methods" the model states of every PEFT method at the configured stage.

    Raises:
        ConfigError: The config's problems with its model and data (see build_spec).
    """
    ds = cfg.deepspeed
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
    models = _Models(cfg, spec.data.label_names)
    regimes = [_regime_row(cfg, spec, gpus, models, *r) for r in _regimes(cfg)]
    configured = next(r for r in regimes if r["configured"])
    plain = next(r for r in regimes if r["regime"] == "full")  # the model's own parameters, no adapters
    t = cfg.train
    return {"model": spec.model.name_or_path, "family": spec.model.family, "num_layers": spec.model.num_layers,
            "peft_method": spec.model.peft.method, "eight_bit": spec.optimizer.eight_bit,
            "total_params": total, "trainable_params": trainable, "model_params": plain["total_params"],
            "activated_params": plain["activated_params"],
            "train_rows": spec.data.train_rows, "stale_data": stale, "sft": (report or {}).get("sft"),
            "steps_per_epoch": geo.steps_per_epoch if geo else None,
            "global_batch": geo.global_batch if geo else t.batch_size * t.grad_accum * spec.ray.num_workers,
            "total_steps": geo.total_steps if geo else None,
            "groups": groups, "deepspeed": spec.deepspeed, "memory_gpus": gpus, "memory": configured["stages"],
            "activations": configured["activations"], "regimes": regimes,
            "methods": _method_rows(cfg, spec, gpus, models), "zero_stage": ds.zero_stage, "spec": spec.to_dict()}


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


def _billions(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def _parameter_lines(p: dict) -> list[str]:
    line = f"parameters of the model: {p['model_params']:,} ({_billions(p['model_params'])})"
    if p["activated_params"] is not None:
        line += (f", {p['activated_params']:,} ({_billions(p['activated_params'])}) activated per token (mixture of "
                 f"experts: the routed experts a token is not sent to and the input embedding not counted)")
    return [line]


def _activation_lines(a: Optional[dict]) -> list[str]:
    if a is None:
        return ["activations: no count for this model family (the totals below leave them out)"]
    how = ", gradient checkpointing" if a["checkpointing"] else ""
    attention = "fused attention (no s^2 scores kept)" if a["fused_attention"] else "eager attention (s^2 scores kept)"
    return [f"activations per GPU (Korthikanti et al. 2022): {a['micro_batch']} sequence(s) x {a['seq_len']} tokens, "
            f"{a['precision']}{how}, {attention}; the top {a['kept_layers']} of {a['num_layers']} layers keep them "
            f"(down to the deepest that trains): {_gib(a['total'])} GiB (the largest layer "
            f"{_gib(a['layer_max'])} GiB without checkpointing, the head {_gib(a['head'])} GiB)"]


def _regime_lines(p: dict) -> list[str]:
    header = "regime           base     total  activated       trainable       %   ZeRO-0   ZeRO-1   ZeRO-2   ZeRO-3"
    lines = [f"full fine-tuning, LoRA and QLoRA, per GPU with activations ({p['memory_gpus']} GPU(s), GiB; "
             f"trainable = trained in this run):", header]
    for r in p["regimes"]:
        name = r["regime"] + (f" r={r['r']}" if r["r"] is not None else "")
        activated = "-" if r["activated_params"] is None else _billions(r["activated_params"])
        cells = " ".join(f"{_gib(m['gpu_total']) if m['supported'] else 'n/a':>8}" for m in r["stages"])
        mark = "  <- configured" if r["configured"] else ""
        share = 100 * r["trainable_params"] / r["total_params"]
        lines.append(f"{name:<16} {r['base_weights']:<5} {_billions(r['total_params']):>8} {activated:>10} "
                     f"{r['trainable_params']:>15,} {share:>7.2f} {cells}{mark}")
    if any(r["quantized_params"] for r in p["regimes"]):
        q = next(r for r in p["regimes"] if r["quantized_params"])
        lines.append(f"(int8/nf4: the {q['quantized_params']:,} frozen Linear weights of the base model, "
                     f"{100 * q['quantized_params'] / q['total_params']:.0f}% of all, are quantized; ZeRO-3 does "
                     f"not partition them)")
    return lines


def format_plan(p: dict) -> str:
    regime = "" if p["peft_method"] == "none" else f", peft {p['peft_method']}"
    regime += ", 8-bit AdamW" if p["eight_bit"] else ""
    lines = [f"model {p['model']} ({p['family']}, {p['num_layers']} layers{regime}): {p['total_params']:,} parameters, "
             f"{p['trainable_params']:,} trained in this run ({100 * p['trainable_params'] / p['total_params']:.2f}%)"]
    if p["steps_per_epoch"]:
        lines.append(f"{p['train_rows']} train rows, global batch {p['global_batch']} -> {p['steps_per_epoch']} "
                     f"optimizer steps/epoch, {p['total_steps']} in all")
        if p.get("sft"):
            tr = p["sft"]["train"]
            lines.append(f"tokens per epoch: {tr['tokens']:,} ({tr['answer_tokens']:,} in the loss, about "
                         f"{tr['answer_tokens'] // max(p['steps_per_epoch'], 1):,} per optimizer step) in "
                         f"{tr['conversations']} conversations" + (f" packed into {tr['rows']} rows of up to "
                                                                   f"{p['sft']['max_length']} tokens"
                                                                   if p["sft"]["packing"] else ""))
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
    lines += ["", *_parameter_lines(p), *_activation_lines(p["activations"])]
    lines += ["", f"memory per GPU, {p['memory_gpus']} GPU(s), GiB: model states (ZeRO paper), at ZeRO-3 the largest "
                  f"module gathered whole, activations:",
              "stage   weights  gradients  optimizer   states  gathered  activations    total"]
    for m in p["memory"]:
        mark = "  <- configured" if m["zero_stage"] == p["zero_stage"] else ""
        mark += "" if m["supported"] else "  (n/a: bitsandbytes' weights are not partitioned)"
        lines.append(f"ZeRO-{m['zero_stage']} {_gib(m['weights']):>8} {_gib(m['gradients']):>10} "
                     f"{_gib(m['optimizer_states']):>10} {_gib(m['total']):>8} {_gib(m['gathered']):>9} "
                     f"{_gib(m['activations']):>12} {_gib(m['gpu_total']):>8}{mark}")
    lines += ["", *_regime_lines(p)]
    lines += ["", f"regimes at ZeRO-{p['zero_stage']}, model states per GPU, MiB (trainable = trained in this run):",
              "method            trainable      %    AdamW  AdamW8bit"]
    for m in p["methods"]:
        mark = "  <- configured" if m["configured"] else ""
        lines.append(f"{m['method']:<15} {m['trainable_params']:>11,} {100 * m['trainable_params'] / m['total_params']:>6.2f} "
                     f"{m['model_states_adamw'] / 1024**2:>8.1f} {m['model_states_adamw8bit'] / 1024**2:>10.1f}{mark}")
    lines += ["", "DeepSpeed config:", json.dumps(p["deepspeed"], indent=2)]
    return "\n".join(lines)
