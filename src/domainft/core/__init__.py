"""Plain-PyTorch core: model internals, parameter groups, LR schedules, unfreezing, metrics, export, plots.

Imports torch, transformers, numpy, safetensors and (lazily) matplotlib only; never Ray or DeepSpeed,
and components take flat arguments rather than the config object.
"""
from domainft.core.export import export_hf
from domainft.core.layers import SUPPORTED_MODEL_TYPES, LayerMap, UnsupportedArchitectureError, build_layer_map
from domainft.core.memory import estimate_all_stages, estimate_memory
from domainft.core.metrics import confusion_matrix, metrics_from_confusion
from domainft.core.model import build_model, build_model_from_config, build_tokenizer, label_maps
from domainft.core.param_groups import build_param_groups, describe_groups, peak_lrs
from domainft.core.plots import plot_group_lrs, plot_learning_curves
from domainft.core.schedules import base_multiplier, group_lr_lambdas, resolve_warmup_steps, thaw_multiplier
from domainft.core.unfreeze import (GradientStop, freeze_never_trained, lowest_trainable_depth, thaw_events,
                                    thaw_schedule)

__all__ = [
    "GradientStop", "LayerMap", "SUPPORTED_MODEL_TYPES", "UnsupportedArchitectureError",
    "base_multiplier", "build_layer_map", "build_model", "build_model_from_config", "build_param_groups",
    "build_tokenizer", "confusion_matrix", "describe_groups", "estimate_all_stages", "estimate_memory",
    "export_hf", "freeze_never_trained", "group_lr_lambdas", "label_maps", "lowest_trainable_depth",
    "metrics_from_confusion", "peak_lrs", "plot_group_lrs", "plot_learning_curves", "resolve_warmup_steps",
    "thaw_events", "thaw_multiplier", "thaw_schedule",
]
