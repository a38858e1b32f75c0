"""ONNX Runtime export: torch.onnx export, transformer fusions, dynamic int8, parity checks, a runner.

source       open and check a fine-tuned HF classifier folder (safetensors only)
onnx_export  torch.onnx export with named inputs and dynamic batch / sequence axes
optimize     onnxruntime.transformers fusions (Attention, EmbedLayerNorm, SkipLayerNorm, Gelu)
quantize     dynamic int8 (per-channel, embeddings kept fp32)
parity       fp32 logit parity at several shapes; int8 agreement and accuracy
checkdata    labelled check texts: a corpus (prepare's readers) or a prepared split
runtime      OnnxClassifier: folder + variant -> logits / predict_proba / predict (the serving predictor)
machine      CPU flags (VNNI, AMX) and a latency timer
pipeline     `domainft export`: all of the above, export_report.json

Imports onnx / onnxruntime, torch and transformers; never Ray or DeepSpeed. Names are loaded on first
use, so `from domainft.export import OnnxClassifier` does not import torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "OnnxClassifier": "runtime", "VARIANTS": "runtime", "run_export": "pipeline", "format_summary": "pipeline",
    "Int8Settings": "quantize", "load_classifier": "source", "load_check_data": "checkdata",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'domainft.export' has no attribute {name!r}")
    return getattr(importlib.import_module(f"domainft.export.{_EXPORTS[name]}"), name)
