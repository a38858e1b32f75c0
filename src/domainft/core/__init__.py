"""Plain-PyTorch core: model internals, parameter groups, LR schedules, unfreezing, metrics, export, plots.

Imports torch, transformers, numpy, safetensors and (lazily) matplotlib only; never Ray or DeepSpeed,
and components take flat arguments rather than the config object.

The names below load their module on first use (PEP 562): a process that only needs a light submodule
(a Ray Data task of `prepare` importing the run spec's geometry) does not pay for transformers' model
code, seconds of CPU in every new worker process.
"""
import importlib

_HOMES = {
    "export": ("export_hf",),
    "layers": ("SUPPORTED_MODEL_TYPES", "LayerMap", "UnsupportedArchitectureError", "build_layer_map"),
    "memory": ("estimate_all_stages", "estimate_memory"),
    "metrics": ("confusion_matrix", "metrics_from_confusion"),
    "model": ("build_model", "build_model_from_config", "build_tokenizer", "label_maps"),
    "param_groups": ("build_param_groups", "describe_groups", "peak_lrs"),
    "plots": ("plot_group_lrs", "plot_learning_curves"),
    "schedules": ("base_multiplier", "group_lr_lambdas", "resolve_warmup_steps", "thaw_multiplier"),
    "unfreeze": ("GradientStop", "freeze_never_trained", "lowest_trainable_depth", "thaw_events", "thaw_schedule"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
