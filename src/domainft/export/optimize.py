"""ONNX Runtime's transformer graph fusions (onnxruntime.transformers.optimizer) for an exported encoder.

Every encoder family the layer map knows (`domainft.core.layers`) is optimised with ONNX Runtime's
"bert" optimizer, which also matches RoBERTa, XLM-R, ELECTRA and DistilBERT graphs; DeBERTa-v2's
disentangled attention has no fused kernel, so it gets the LayerNorm / Gelu fusions only. Other
model types are left to ONNX Runtime's own load-time graph optimisations, with a note saying so.
The caller checks the optimised graph's parity and keeps the plain one if it fails.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Optional

from domainft.core.layers import SUPPORTED_MODEL_TYPES

# model_type -> onnxruntime.transformers optimizer type
OPTIMIZER_TYPES = {t: "bert" for t in SUPPORTED_MODEL_TYPES}


def fusion_options():
    """Fusions for CPU inference. The attention mask stays a 2-D mask: the default for "bert"
    (MaskIndexEnd) turns it into one end index per row, which is only right for right-padded rows."""
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions

    options = FusionOptions("bert")
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    return options


def optimize_onnx(src, dst, model_type: str, num_heads: int = 0, hidden_size: int = 0) -> dict:
    """Write the fused graph of `src` to `dst` (or a copy of `src` when there is nothing to fuse).

    Args:
        src: The exported .onnx file.
        dst: Where to write the optimised graph.
        model_type: config.json's model_type (selects the optimizer; unknown types are copied).
        num_heads: Attention heads (0: let the optimizer detect them from the graph).
        hidden_size: Hidden size (0: detect).

    Returns:
        {"optimizer": "bert" | None, "fusions": {op: count} of the fused ops present,
         "note": a sentence when fusion was partial or skipped, else None}.
    """
    src, dst = Path(src), Path(dst)
    kind: Optional[str] = OPTIMIZER_TYPES.get(model_type)
    if kind is None:
        shutil.copyfile(src, dst)
        return {"optimizer": None, "fusions": {},
                "note": f"no transformer fusions for model_type {model_type!r} (onnxruntime.transformers supports "
                        f"{', '.join(sorted(OPTIMIZER_TYPES))} here); ONNX Runtime's load-time graph "
                        f"optimisations still apply"}
    from onnxruntime.transformers.optimizer import optimize_model

    # The optimizer logs every fusion pass at INFO/WARNING; the counts go into the report instead.
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    model = optimize_model(str(src), model_type=kind, num_heads=num_heads, hidden_size=hidden_size,
                           optimization_options=fusion_options(), use_gpu=False)
    fusions = {op: n for op, n in model.get_fused_operator_statistics().items() if n}
    model.save_model_to_file(str(dst))
    note = None
    if not fusions.get("Attention") and not fusions.get("MultiHeadAttention"):
        note = (f"attention of model_type {model_type!r} was not fused (no fused kernel matches it); "
                f"LayerNorm / Gelu fusions only" if fusions else f"no fusion matched model_type {model_type!r}")
    return {"optimizer": kind, "fusions": fusions, "note": note}
