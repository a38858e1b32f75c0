"""domainft: distributed fine-tuning of pretrained transformers on domain corpora.

Layers (imports point down only): cli -> distributed (Ray) -> engine (DeepSpeed) -> core (torch,
transformers) -> data (pure batch functions) -> config (pydantic).
"""
__version__ = "0.1.0"
