"""Parameter-efficient regimes: LoRA, prompt tuning and prefix tuning (the `peft` library), and
selective tuning (only some kinds of parameters train; no library).

Every regime leaves the classifier head (the layer map's depth 0: pooler, classifier) fully
trainable through its own `requires_grad`, never through PEFT's `modules_to_save` (which breaks
under ZeRO-3: transformers 25719 / 28468, DeepSpeed 7669). Adapter parameters get the depth of the
layer they adapt (core/layers.py), so parameter groups, layer-wise LR, gradual unfreezing, the
gradient stop and `plan` treat them like any other parameter.

The model is wrapped in PEFT's task-agnostic `FEATURE_EXTRACTION` model: it prepends the virtual
tokens for prompt / prefix tuning and passes `labels` through to the classification model. The
exported adapter is the same wrapper with the head in `modules_to_save`, so that the adapter file
carries the trained head and `PeftModel.from_pretrained(base, dir)` rebuilds exactly the trained
model (core/export.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from torch import nn

from domainft.core.layers import HEAD, SELECTABLE_KINDS, LayerMap, build_layer_map
from domainft.families import position_limit

METHODS = ("none", "lora", "prompt_tuning", "prefix_tuning", "selective")
ADAPTER_METHODS = ("lora", "prompt_tuning", "prefix_tuning")  # wrapped by `peft`; exported as an adapter
SELECTIVE_KINDS = (*SELECTABLE_KINDS, "bias")
ALL_LINEAR = "all-linear"  # peft.target_modules: [all-linear]: every linear layer below the head, and routed experts
_LORA_TYPES = (nn.Linear, nn.Embedding, nn.Conv1d)  # module types LoRA adapts (and transformers' Conv1D)


@dataclass(frozen=True)
class PeftSpec:
    """One regime, as flat values (config.schema.PeftConfig holds the same keys)."""

    method: str = "none"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: Optional[tuple[str, ...]] = None  # None: the family's default; (ALL_LINEAR,): every linear
    num_virtual_tokens: int = 20
    trainable: tuple[str, ...] = ("ffn",)
    # A causal LM (task sft): its head is the pretrained output layer, which does not train under PEFT (an
    # untied LM head is vocab x hidden: LoRA would train more than it saves), and the exported adapter is
    # a CAUSAL_LM one. False: a classifier, whose new head always trains.
    causal: bool = False

    @property
    def adapter(self) -> bool:
        return self.method in ADAPTER_METHODS

    @property
    def mergeable(self) -> bool:
        """Whether the trained adapter folds into the base weights (LoRA); virtual tokens do not."""
        return self.method == "lora"


def peft_spec(values: Mapping) -> PeftSpec:
    """A PeftSpec from a mapping of the config section's keys (unknown keys, e.g. `export`, ignored)."""
    keys = PeftSpec.__dataclass_fields__
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in keys}
    return PeftSpec(**kw)


def _is_lora_type(module: nn.Module) -> bool:
    return isinstance(module, _LORA_TYPES) or type(module).__name__ == "Conv1D"


def _under(name: str, modules: Sequence[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def lora_targets(model: nn.Module, layer_map: LayerMap, spec: PeftSpec) -> dict[str, list[str]]:
    """Each target module name (PEFT's rule: a module matches when its name equals the target or
    ends with "." + target) -> the modules of the base model it selects (the head is never a target).
    ALL_LINEAR selects every linear module (bitsandbytes' int8 / 4-bit Linear included)."""
    targets = spec.target_modules or layer_map.lora_targets
    # A tied LM head (`lm_head`, its weight the embeddings') is the output layer, never a target either.
    head = layer_map.head_module_names() + sorted({n.rsplit(".", 1)[0] for n in layer_map.tied})
    modules = [(n, m) for n, m in model.named_modules() if n and not _under(n, head)]
    if tuple(targets) == (ALL_LINEAR,):
        return {ALL_LINEAR: [n for n, m in modules if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"]}
    return {t: [n for n, _ in modules if n == t or n.endswith("." + t)] for t in targets}


def expert_parameters(layer_map: LayerMap) -> list[str]:
    """The routed experts' parameters inside a layer (`mlp.experts.gate_up_proj`, ...): transformers 5 keeps
    them as 3-D tensors, not Linear modules, so LoRA reaches them through peft's `target_parameters`."""
    prefix = layer_map.block_module_names[1] + "."  # the top layer: every MoE layer has the same inner names
    return sorted({n[len(prefix):] for n, kind in layer_map.kind.items() if kind == "experts" and n.startswith(prefix)})


def peft_problems(model: nn.Module, spec: PeftSpec, max_length: Optional[int] = None,
                  prompt_thaw_step: Optional[int] = None, total_steps: Optional[int] = None) -> list[str]:
    """What `model` cannot do with `spec`, one line per problem starting with the config key.

    Works on a meta-device model (`build_model_from_config`), so `validate` and `plan` find these
    before Ray starts.

    Args:
        model: The classification model (not wrapped).
        spec: The regime.
        max_length: data.max_length (virtual tokens take positions too).
        prompt_thaw_step, total_steps: When the embeddings depth (where virtual tokens sit) thaws and
            how many steps the run has; a soft prompt that never thaws trains nothing.
    """
    if spec.method == "none":
        return []
    lmap = build_layer_map(model)
    p: list[str] = []
    if spec.method == "lora" and spec.target_modules and ALL_LINEAR in spec.target_modules \
            and len(spec.target_modules) > 1:
        p.append(f"peft.target_modules: {ALL_LINEAR} selects every linear layer by itself; give it alone "
                 f"([{ALL_LINEAR}]) or name modules")
    elif spec.method == "lora" and spec.target_modules == (ALL_LINEAR,) and expert_parameters(lmap) and spec.dropout:
        p.append(f"peft.dropout: {ALL_LINEAR} on this {lmap.family} model adapts its routed experts, whose LoRA "
                 f"(peft's target_parameters) takes no dropout; set peft.dropout: 0")
    elif spec.method == "lora":
        modules = dict(model.named_modules())
        head = lmap.head_module_names()
        usable = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items()
                         if n and _is_lora_type(m) and not _under(n, head)})
        for target, matched in lora_targets(model, lmap, spec).items():
            if not matched:
                p.append(f"peft.target_modules: {target!r} is not a module of this {lmap.family} model; "
                         f"its modules LoRA can adapt are {usable}")
            elif not any(_is_lora_type(modules[n]) for n in matched):
                kinds = sorted({type(modules[n]).__name__ for n in matched})
                p.append(f"peft.target_modules: {target!r} names {kinds} modules, which LoRA cannot adapt; "
                         f"its modules LoRA can adapt are {usable}")
    if spec.method == "prefix_tuning" and not lmap.prefix_tuning:
        why = ("domainft does not build the cache of past keys and values a decoder's prefix needs" if lmap.decoder
               else "their attention takes no past keys and values of another length")
        p.append(f"peft.method: prefix_tuning does not work with {lmap.family} models ({why}); use "
                 f"{'lora' if lmap.decoder else 'prompt_tuning or lora'}")
    if spec.method == "prompt_tuning" and not lmap.prompt_tuning:
        p.append(f"peft.method: prompt_tuning does not work with {lmap.family} models (a decoder classifier pools "
                 f"its last real token, which virtual tokens in front of padded inputs would hide); use lora or "
                 f"selective")
    if spec.method in ("prompt_tuning", "prefix_tuning"):
        limit = position_limit(model.config)
        if max_length is not None and limit is not None and max_length + spec.num_virtual_tokens > limit:
            p.append(f"peft.num_virtual_tokens: data.max_length {max_length} + {spec.num_virtual_tokens} virtual "
                     f"tokens exceed the {limit} positions of this model; lower one of them")
        if total_steps is not None and (prompt_thaw_step is None or prompt_thaw_step >= total_steps):
            p.append(f"peft.method: the virtual tokens of {spec.method} sit at the embeddings depth, which the "
                     f"unfreeze.* schedule never thaws in this run, so they would not train; set "
                     f"unfreeze.every_epochs: 0 (or thaw it sooner)")
    return p


def _peft_config(model: nn.Module, lmap: LayerMap, spec: PeftSpec, task_type: str,
                 modules_to_save: Optional[list[str]] = None):
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig

    c = model.config
    head = lmap.head_module_names()
    if spec.method == "lora":
        targets = list(spec.target_modules or lmap.lora_targets)
        every = targets == [ALL_LINEAR]
        if every:
            # The linear modules by name, not peft's own "all-linear" (which on MoE models picks the router).
            # On mixture-of-experts model types peft 0.21 maps MLP projection names (gate_proj, up_proj,
            # down_proj) to the routed experts' fused parameters (its transformers v4 -> v5 conversion), so
            # there all-linear adapts attention and routed experts, not the shared experts or dense layers.
            targets = sorted({n.rsplit(".", 1)[-1] for n in lora_targets(model, lmap, spec)[ALL_LINEAR]})
        return LoraConfig(task_type=task_type, r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                          target_modules=targets, exclude_modules=head,
                          target_parameters=(expert_parameters(lmap) or None) if every else None,
                          modules_to_save=modules_to_save)
    heads = getattr(c, "num_attention_heads", None) or getattr(c, "n_heads")
    common = dict(task_type=task_type, num_virtual_tokens=spec.num_virtual_tokens, num_layers=lmap.num_layers,
                  num_attention_heads=heads, num_transformer_submodules=1, modules_to_save=modules_to_save)
    if spec.method == "prompt_tuning":
        # The prompt is concatenated with the word embeddings (ELECTRA's are narrower than its hidden size).
        return PromptTuningConfig(token_dim=model.get_input_embeddings().weight.shape[1], **common)
    return PrefixTuningConfig(token_dim=getattr(c, "hidden_size", None) or getattr(c, "dim"), **common)


def apply_peft(model: nn.Module, spec: PeftSpec, modules_to_save: bool = False) -> nn.Module:
    """Set `model` up for the regime in `spec`.

    Args:
        model: A classification model of a supported family (real or meta device).
        spec: The regime. "none" returns the model unchanged.
        modules_to_save: Build the adapter for export (the head in PEFT's `modules_to_save`, so that
            the saved adapter carries it) rather than for training.

    Returns:
        The model to train: PEFT-wrapped (lora, prompt_tuning, prefix_tuning) with only the adapter
        and the head trainable, or the same model (selective) with only the selected kinds and the
        head trainable.

    Raises:
        ValueError: Unknown method or selective kind (config validation prevents both).
    """
    if spec.method == "none":
        return model
    if spec.method not in METHODS:
        raise ValueError(f"unknown PEFT method {spec.method!r}; one of {METHODS}")
    lmap = build_layer_map(model)
    if spec.method == "selective":
        unknown = sorted(set(spec.trainable) - set(SELECTIVE_KINDS))
        if unknown or not spec.trainable:
            raise ValueError(f"selective tuning trains kinds of {SELECTIVE_KINDS}, got {list(spec.trainable)}")
        for name, param in model.named_parameters():
            kind = lmap.kind[name]
            param.requires_grad_((kind == HEAD and not spec.causal) or kind in spec.trainable
                                 or ("bias" in spec.trainable and name.endswith(".bias")))
        return model
    from peft import get_peft_model

    # Training: FEATURE_EXTRACTION, not SEQ_CLS: the latter always puts the classifier in
    # `modules_to_save` (a copy of the head that ZeRO-3 mishandles), and its prefix-tuning forward
    # rejects transformers 5 models, whose forward takes past key values through **kwargs.
    # Export of LoRA: SEQ_CLS, so that the saved adapter names its task and peft's
    # AutoPeftModelForSequenceClassification loads it (the head is in `modules_to_save` either way).
    # A causal LM: CAUSAL_LM both ways (its forward takes the model's own labels and num_items_in_batch).
    task_type = "SEQ_CLS" if modules_to_save and spec.method == "lora" else "FEATURE_EXTRACTION"
    if spec.causal:
        task_type = "CAUSAL_LM"
    saved = lmap.head_module_names() if modules_to_save and not spec.causal else None
    wrapped = get_peft_model(model, _peft_config(model, lmap, spec, task_type, saved))
    if not modules_to_save and not spec.causal:
        wrapped_map = build_layer_map(wrapped)
        for name, param in wrapped.named_parameters():
            if wrapped_map.kind[name] == HEAD:
                param.requires_grad_(True)
    return wrapped
