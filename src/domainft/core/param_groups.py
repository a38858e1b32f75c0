"""Optimizer parameter groups: two per depth (with and without weight decay), each with its peak LR.

Parameter groups are the one unit for layer-wise LR and for unfreezing: a group's `depth` is what
the per-group LR lambdas (schedules.py) and the thaw schedule (unfreeze.py) key on.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from torch import nn

from domainft.core.layers import LayerMap


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # Biases, all 1-D parameters (LayerNorm gains and shifts among them) and anything in a norm
    # module are exempt from weight decay: decaying them towards 0 only hurts (BERT, AdamW papers).
    module = name.rsplit(".", 1)[0].rsplit(".", 1)[-1].lower() if "." in name else ""
    return param.ndim < 2 or name.endswith("bias") or "norm" in module


def peak_lrs(layer_map: LayerMap, lr: float, layer_decay: float, head_lr_mult: float = 1.0,
             layer_lrs: Optional[Sequence[float]] = None) -> dict[int, float]:
    """Peak LR of every depth 0..L+1.

    Args:
        layer_map: The model's LayerMap.
        lr: Base LR; the head gets lr * head_lr_mult.
        layer_decay: Depth d >= 1 gets lr * layer_decay ** d.
        head_lr_mult: Multiplier for the head (depth 0).
        layer_lrs: Explicit peak LRs for depths 1..L+1 (top layer first, embeddings last); overrides
            layer_decay.

    Returns:
        {depth: peak LR}.
    """
    expected = layer_map.num_layers + 1
    if layer_lrs is not None:
        if len(layer_lrs) != expected:
            raise ValueError(f"layer_lrs has {len(layer_lrs)} values; expected {expected} "
                             f"(one per encoder layer, top first, then the embeddings) for this "
                             f"{layer_map.num_layers}-layer model")
        if any(v < 0 for v in layer_lrs):
            raise ValueError(f"layer_lrs must be >= 0, got {list(layer_lrs)}")
    out = {0: lr * head_lr_mult}
    for d in range(1, layer_map.num_depths):
        out[d] = float(layer_lrs[d - 1]) if layer_lrs is not None else lr * layer_decay ** d
    return out


def build_param_groups(model: nn.Module, layer_map: LayerMap, lr: float = 0.0, layer_decay: float = 1.0,
                       head_lr_mult: float = 1.0, weight_decay: float = 0.0,
                       layer_lrs: Optional[Sequence[float]] = None,
                       peaks: Optional[Mapping[int, float]] = None) -> list[dict]:
    """Torch-optimizer parameter groups for layer-wise LR decay.

    Args:
        model: The model `layer_map` was built from.
        layer_map: Depth of every parameter.
        lr: Base LR (see `peak_lrs`).
        layer_decay: LR factor per depth step from the top.
        head_lr_mult: Multiplier on lr for the head.
        weight_decay: Decoupled weight decay of the decay groups (biases and norms get 0).
        layer_lrs: Explicit peak LR per depth 1..L+1, top first; overrides layer_decay.
        peaks: The peak LR of every depth 0..L+1 as already derived (a run's RunSpec, from
            `peak_lrs` and the batch scaling); when given, lr, layer_decay, head_lr_mult and
            layer_lrs are not used.

    Returns:
        Groups ordered by depth (head first), decay group before no-decay group. Each is
        {"params", "lr", "initial_lr", "weight_decay", "name", "depth", "decay", "param_names"};
        both groups of a depth share its `name` (LayerMap.depth_label). Parameters with
        requires_grad=False are left out (frozen for the whole run), and no group is ever empty:
        DeepSpeed drops empty groups, which would shift a per-group LR scheduler by one.
    """
    if peaks is None:
        peaks = peak_lrs(layer_map, lr, layer_decay, head_lr_mult, layer_lrs)
    elif sorted(peaks) != list(range(layer_map.num_depths)):
        raise ValueError(f"peaks name depths {sorted(peaks)}; this {layer_map.num_layers}-layer model has depths "
                         f"0..{layer_map.num_depths - 1}")
    buckets: dict[tuple[int, bool], list[tuple[str, nn.Parameter]]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name not in layer_map.depth:
            raise ValueError(f"parameter {name!r} is not in the layer map: was it built for another model?")
        key = (layer_map.depth[name], not _no_decay(name, param))
        buckets.setdefault(key, []).append((name, param))

    groups = []
    for depth in range(layer_map.num_depths):
        for decay in (True, False):
            members = buckets.get((depth, decay))
            if not members:
                continue
            groups.append({
                "params": [p for _, p in members],
                "lr": peaks[depth],
                "initial_lr": peaks[depth],
                "weight_decay": weight_decay if decay else 0.0,
                "name": layer_map.depth_label(depth),
                "depth": depth,
                "decay": decay,
                "param_names": [n for n, _ in members],
            })
    return groups


def describe_groups(groups: Sequence[dict]) -> list[dict]:
    """One plain, JSON-ready row per group for logs and `plan`.

    Args:
        groups: Groups from `build_param_groups` (or an optimizer's `param_groups`).

    Returns:
        [{"name", "depth", "decay", "num_tensors", "num_params", "peak_lr", "weight_decay"}, ...];
        peak_lr is `initial_lr` (the LR a scheduler multiplies), else `lr`.
    """
    return [{
        "name": g["name"],
        "depth": g["depth"],
        "decay": g["decay"],
        "num_tensors": len(g["params"]),
        "num_params": sum(p.numel() for p in g["params"]),
        "peak_lr": g.get("initial_lr", g["lr"]),
        "weight_decay": g["weight_decay"],
    } for g in groups]
