"""The one module that knows model internals: parameter name -> depth from the top.

Depth 0 is the head (classifier, pooler, pre_classifier; a decoder's final norm, `score` or `lm_head`:
everything outside the base model's embeddings and layers), depth 1 the top layer, ..., depth L the
bottom layer, depth L+1 the embeddings. Layer-wise LR, unfreezing, `plan` and the plots all read this
map; nothing else in the package looks at parameter names. The families it knows, and where each
keeps its blocks, are in domainft/families.py (no torch: `validate` checks a model from config.json).

The map also gives every parameter a *kind* (attention, ffn, norm, embedding, head; in a mixture-of-experts
layer experts, shared_experts and router), which selective tuning (core/peft.py) selects by, and it
understands PEFT wrappers: an adapter parameter (LoRA's `query.lora_A.default.weight`, the wrapped `query.base_layer.weight`) gets the depth and
kind of the module it adapts, and virtual-token parameters (prompt / prefix tuning's
`prompt_encoder.*`) sit at the embeddings depth, where the soft prompt enters the model (a prefix
feeds every layer, so like DeBERTa's shared relative embeddings it belongs to no single layer).

Tied embeddings: a decoder whose LM head is its input embedding matrix (`tie_word_embeddings`, e.g.
SmolLM2, Qwen2.5-0.5B) has one tensor, which PyTorch names once, as the embedding. It has one depth, the
embeddings', so one LR (the lowest under layer-wise decay) and it thaws last: the output projection is
pretrained knowledge of the vocabulary, not a new head. `LayerMap.tied` lists the other names it has.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from domainft.families import FAMILIES, SUPPORTED_MODEL_TYPES, FamilySpec


class UnsupportedArchitectureError(ValueError):
    """The model is not one of the families this module knows how to split into depths."""


__all__ = ["SUPPORTED_MODEL_TYPES", "LayerMap", "UnsupportedArchitectureError", "build_layer_map"]

# Kinds of parameters. Selective tuning picks among SELECTABLE_KINDS (plus "bias": every bias, BitFit).
SELECTABLE_KINDS = ("attention", "ffn", "norm", "experts", "shared_experts", "router")
HEAD, EMBEDDING, PROMPT, OTHER = "head", "embedding", "prompt", "other"


@dataclass(frozen=True)
class LayerMap:
    """Depth of every parameter of one model, and the modules that bound each depth.

    Attributes:
        family: The model_type the map was built for ("bert", "deberta-v2", ...).
        num_layers: L, the number of encoder layers.
        depth: Every named parameter (as `model.named_parameters()` names it) -> depth in 0..L+1.
        block_module_names: Depth 1..L+1 -> the module of that block (encoder layer or embeddings),
            for hooks.
        boundary_module_names: Depth 1..L+1 -> every module whose output carries that depth's
            parameters up the stack: the block itself, plus e.g. ELECTRA's `embeddings_project`
            (embeddings depth) or DeBERTa's `encoder.conv` (bottom layer). Detaching all of them
            cuts the depth out of the backward pass.
        layer_input_kwargs: Keyword inputs that every encoder layer receives and that are computed
            from parameters at the given depth (DeBERTa: {"rel_embeddings": L+1}).
        kind: Every named parameter -> "head", "embedding", "attention", "ffn", "norm", "prompt"
            (virtual tokens) or "other" (e.g. DeBERTa's conv).
        model_path: Where the Hugging Face model sits in a PEFT wrapper ("base_model.model"), "" if
            the map was built for the model itself.
        lora_targets: The family's default LoRA target modules (attention query and value).
        prefix_tuning: Whether PEFT prefix tuning works for this family.
        prompt_tuning: Whether PEFT prompt tuning works for this family.
        decoder: A causal LM backbone (pools its last real token; needs a pad token).
        tied: Other names of a parameter that is shared (`lm_head.weight` -> `model.embed_tokens.weight`):
            `depth` holds the parameter under its one name only.
    """

    family: str
    num_layers: int
    depth: dict[str, int]
    block_module_names: dict[int, str]
    boundary_module_names: dict[int, tuple[str, ...]] = field(default_factory=dict)
    layer_input_kwargs: dict[str, int] = field(default_factory=dict)
    kind: dict[str, str] = field(default_factory=dict)
    model_path: str = ""
    lora_targets: tuple[str, ...] = ()
    prefix_tuning: bool = True
    prompt_tuning: bool = True
    decoder: bool = False
    tied: dict[str, str] = field(default_factory=dict)

    @property
    def num_depths(self) -> int:
        """L + 2: head, L layers, embeddings."""
        return self.num_layers + 2

    @property
    def embeddings_depth(self) -> int:
        return self.num_layers + 1

    def _check_depth(self, depth: int) -> None:
        if not 0 <= depth < self.num_depths:
            raise ValueError(f"depth {depth} out of range 0..{self.num_depths - 1} for a {self.num_layers}-layer model")

    def params_at(self, depth: int) -> list[str]:
        """Names of the parameters at `depth`, in model order."""
        self._check_depth(depth)
        return [name for name, d in self.depth.items() if d == depth]

    def param_counts(self, model: nn.Module) -> dict[int, int]:
        """Number of parameter elements at each depth 0..L+1 (works on meta-device models too)."""
        counts = {d: 0 for d in range(self.num_depths)}
        for name, param in model.named_parameters():
            if name not in self.depth:
                raise ValueError(f"parameter {name!r} is not in this layer map: was the map built for another model?")
            counts[self.depth[name]] += param.numel()
        return counts

    def depth_label(self, depth: int) -> str:
        """"head", "embeddings", or "layer_<i>" with i the encoder's own 0-based index (bottom = 0).

        The index is the one in the parameter names (`encoder.layer.5.` is "layer_5"), so with L = 6
        depth 1 (the top layer) is "layer_5" and depth 6 is "layer_0".
        """
        self._check_depth(depth)
        if depth == 0:
            return "head"
        if depth == self.embeddings_depth:
            return "embeddings"
        return f"layer_{self.num_layers - depth}"

    def head_module_names(self) -> list[str]:
        """The modules holding the head's parameters (e.g. `bert.pooler.dense`, `classifier`), in model order."""
        out: list[str] = []
        for name in self.params_at(0):
            module = name.rsplit(".", 1)[0]
            if module not in out:
                out.append(module)
        return out

    def trainable_counts(self, model: nn.Module) -> dict[int, int]:
        """Like `param_counts`, counting only parameters with requires_grad (adapters, a selection)."""
        counts = {d: 0 for d in range(self.num_depths)}
        for name, param in model.named_parameters():
            if param.requires_grad:
                counts[self.depth[name]] += param.numel()
        return counts


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _module_name(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise UnsupportedArchitectureError("the base model is not a submodule of the model")


def _get(module: nn.Module, dotted: str) -> Optional[nn.Module]:
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if not isinstance(module, nn.Module):
            return None
    return module


def _detect(model: nn.Module) -> tuple[str, FamilySpec]:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    if model_type not in FAMILIES:
        raise UnsupportedArchitectureError(
            f"unsupported model_type {model_type!r} ({type(model).__name__}); supported: {supported}")
    spec = FAMILIES[model_type]
    prefix = getattr(model, "base_model_prefix", None)
    if prefix != spec.base_model_prefix:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} but base_model_prefix {prefix!r} (expected {spec.base_model_prefix!r}) "
            f"in {type(model).__name__}; supported: {supported}")
    base = model.base_model
    if not isinstance(_get(base, spec.embeddings), nn.Module) or not isinstance(_get(base, spec.layers), nn.ModuleList):
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} ({model_type!r}) lacks the expected `{spec.embeddings}` and `{spec.layers}` "
            f"modules; supported: {supported}")
    return model_type, spec


def build_layer_map(model: nn.Module) -> LayerMap:
    """Map every parameter of a Hugging Face encoder model to its depth from the top.

    Args:
        model: A transformers model of a supported family, with or without a task head
            (e.g. from AutoModelForSequenceClassification or AutoModel), or a PEFT wrapper of one
            (core.peft.apply_peft); may live on the meta device.

    Returns:
        The LayerMap. Depth 0 = head, 1 = top encoder layer, ..., L = bottom layer, L+1 = embeddings.

    Raises:
        UnsupportedArchitectureError: The model_type or module structure is not a supported family.
        ValueError: A parameter inside the base model belongs to no known block (never defaulted,
            because a silently misplaced parameter would get the wrong LR and thaw step).
    """
    wrapper, model_path = _peft_wrapper(model)
    if wrapper is not None:
        return _wrapped_map(build_layer_map(wrapper.get_base_model()), wrapper, model_path)
    family, spec = _detect(model)
    base = model.base_model
    base_name = "" if base is model else _module_name(model, base)
    layers: nn.ModuleList = _get(base, spec.layers)  # type: ignore[assignment]
    num_layers = len(layers)
    emb_depth = num_layers + 1

    layers_prefix = _join(base_name, spec.layers) + "."
    # Prefixes of the non-layer blocks inside the base model; none is a prefix of another.
    prefix_depth: list[tuple[str, int]] = [(_join(base_name, spec.embeddings) + ".", emb_depth)]
    prefix_depth += [(_join(base_name, m) + ".", emb_depth) for m in spec.embedding_extras]
    prefix_depth += [(_join(base_name, m) + ".", num_layers) for m in spec.bottom_layer_extras]
    prefix_depth += [(_join(base_name, m) + ".", 0) for m in spec.base_head_modules]
    base_prefix = base_name + "." if base_name else ""

    depth: dict[str, int] = {}
    unmatched: list[str] = []
    for name, _ in model.named_parameters():
        if base_prefix and not name.startswith(base_prefix):
            depth[name] = 0  # outside the base model: the task head (classifier, pre_classifier, pooler)
        elif name.startswith(layers_prefix):
            index = int(name[len(layers_prefix):].split(".", 1)[0])
            depth[name] = num_layers - index
        else:
            match = next((d for p, d in prefix_depth if name.startswith(p)), None)
            if match is None:
                unmatched.append(name)
            else:
                depth[name] = match
    if unmatched:
        raise ValueError(f"{family}: parameters that belong to no known block (head, layer, embeddings): "
                         f"{unmatched}. Extend core/layers.py for this model variant.")

    blocks = {num_layers - i: _join(base_name, spec.layers, str(i)) for i in range(num_layers)}
    blocks[emb_depth] = _join(base_name, spec.embeddings)
    boundaries: dict[int, tuple[str, ...]] = {d: (name,) for d, name in blocks.items()}
    for extras, d in ((spec.embedding_outputs, emb_depth), (spec.bottom_layer_extras, num_layers)):
        present = tuple(_join(base_name, m) for m in extras if _get(base, m) is not None)
        boundaries[d] = boundaries[d] + present
    kwargs = {k: emb_depth for k in spec.layer_input_kwargs}
    kinds = {name: _kind(name, d, layers_prefix, spec, num_layers) for name, d in depth.items()}
    module_leaves = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    return LayerMap(family=family, num_layers=num_layers, depth=depth, block_module_names=blocks,
                    boundary_module_names=boundaries, layer_input_kwargs=kwargs, kind=kinds,
                    lora_targets=tuple(t for t in spec.lora_targets if t in module_leaves),
                    prefix_tuning=spec.prefix_tuning, prompt_tuning=spec.prompt_tuning, decoder=spec.decoder,
                    tied=_tied_names(model))


def _tied_names(model: nn.Module) -> dict[str, str]:
    """Every other name of a shared parameter -> the one name `named_parameters()` gives it."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            tied[name] = first[id(param)]
        else:
            first[id(param)] = name
    return tied


def _is_norm(name: str) -> bool:
    module = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
    return "norm" in module.lower()


def _kind(name: str, depth: int, layers_prefix: str, spec: FamilySpec, num_layers: int) -> str:
    if depth == 0:
        return HEAD
    if _is_norm(name):
        return "norm"
    if name.startswith(layers_prefix):
        inner = name[len(layers_prefix):].split(".", 1)[1]
        return next((kind for pattern, kind in spec.layer_kinds if re.match(pattern, inner)), OTHER)
    return EMBEDDING if depth == num_layers + 1 else OTHER


def _peft_wrapper(model: nn.Module) -> tuple[Optional[nn.Module], str]:
    """(the PEFT wrapper, the path of the Hugging Face model inside it), or (None, "") for a plain model."""
    if not (hasattr(model, "peft_config") and hasattr(model, "get_base_model")):
        return None, ""
    return model, _module_name(model, model.get_base_model())


def _wrapped_map(inner: LayerMap, wrapper: nn.Module, model_path: str) -> LayerMap:
    """The map of a PEFT-wrapped model from the map of the model it wraps.

    A parameter the wrapper added or moved (LoRA's `<module>.lora_A.default.weight`, the original
    weight as `<module>.base_layer.weight`) takes the depth and kind of the innermost module it
    lives under that held parameters before wrapping; virtual tokens outside the model sit at the
    embeddings depth.
    """
    prefix = model_path + "."
    by_module: dict[str, str] = {}  # module path (inside the model) -> one of its original parameters
    for name in inner.depth:
        parts = name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            by_module.setdefault(".".join(parts[:i]), name)
    depth: dict[str, int] = {}
    kind: dict[str, str] = {}
    unmatched = []
    for name, _ in wrapper.named_parameters():
        if not name.startswith(prefix):
            depth[name], kind[name] = inner.embeddings_depth, PROMPT
            continue
        rel = name[len(prefix):]
        parts = rel.split(".")
        source = rel if rel in inner.depth else next(
            (by_module[".".join(parts[:i])] for i in range(len(parts) - 1, 0, -1) if ".".join(parts[:i]) in by_module),
            None)
        if source is None:
            unmatched.append(name)
            continue
        depth[name] = inner.depth[source]
        kind[name] = inner.kind[source]
    if unmatched:
        raise ValueError(f"{inner.family}: PEFT parameters under no module of the model: {unmatched[:10]}")

    def moved(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_join(model_path, n) for n in names)

    return LayerMap(family=inner.family, num_layers=inner.num_layers, depth=depth,
                    block_module_names={d: _join(model_path, n) for d, n in inner.block_module_names.items()},
                    boundary_module_names={d: moved(ns) for d, ns in inner.boundary_module_names.items()},
                    layer_input_kwargs=dict(inner.layer_input_kwargs), kind=kind, model_path=model_path,
                    lora_targets=inner.lora_targets, prefix_tuning=inner.prefix_tuning,
                    prompt_tuning=inner.prompt_tuning, decoder=inner.decoder,
                    tied={_join(model_path, a): _join(model_path, b) for a, b in inner.tied.items()})

