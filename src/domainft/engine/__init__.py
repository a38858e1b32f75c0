"""DeepSpeed: the config (a pure dict, importable without deepspeed) and the engine builder."""
from domainft.engine.ds_config import build_ds_config

__all__ = ["build_ds_config"]
