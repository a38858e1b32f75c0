"""Typed configuration: schema, loading with overrides, validation of every problem at once.

Imports nothing else from domainft, and neither Ray nor DeepSpeed.
"""
from domainft.config.checks import gradual
from domainft.config.derive import derive
from domainft.config.load import (ConfigError, apply_overrides, dump_yaml, load_config, looks_local,
                                  to_dict, validate_dict)
from domainft.config.schema import (AugmentConfig, Config, DataConfig, DeepSpeedConfig, ModelConfig,
                                    OptimConfig, PeftConfig, RunConfig, ScalingConfig, TrainConfig, UnfreezeConfig)

__all__ = [
    "AugmentConfig", "Config", "ConfigError", "DataConfig", "DeepSpeedConfig", "ModelConfig", "OptimConfig",
    "PeftConfig", "RunConfig", "ScalingConfig", "TrainConfig", "UnfreezeConfig", "apply_overrides", "derive",
    "dump_yaml", "gradual", "load_config", "looks_local", "to_dict", "validate_dict",
]
