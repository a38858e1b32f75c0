"""Dynamic int8 quantisation of an optimised encoder graph (onnxruntime.quantization.quantize_dynamic).

Weights are int8, activations are quantised per batch at run time (uint8): no calibration data.
The defaults are what kept the answers on a fine-tuned MiniLM (200 held-out BBC texts; the table is
in the README, `benchmarks/inference.py --study` reproduces it):
- per-channel weight scales (one per output column, not one per matrix): max |logit diff| 1.13 -> 0.39;
- the embedding tables stay fp32 (`Gather` / `EmbedLayerNormalization` are not quantised): with them
  in int8 agreement fell 1.000 -> 0.995 and the logit error rose to 0.69; a lookup is no matmul, so
  int8 embeddings only make the file smaller, not faster.
Keeping the fused attention or the top layer in fp32 bought nothing measurable and cost 2x latency;
`reduce_range` (7-bit weights) is for CPUs without VNNI, where u8s8 products can saturate.
The classification head and pooler are `Gemm` nodes, which dynamic int8 leaves in fp32.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The matmul-like ops worth int8: encoder projections and the fused attention's QKV projection.
MATMUL_OPS = ("MatMul", "Attention")


@dataclass(frozen=True)
class Int8Settings:
    """How to quantise.

    Attributes:
        per_channel: One weight scale per output channel (else one per tensor).
        reduce_range: 7-bit weights: avoids u8s8 saturation on CPUs without VNNI, costs precision.
        op_types: Operator types to quantise.
        exclude_attention: Keep the fused Attention nodes (QKV projection + softmax) in fp32.
        exclude_last_layers: Keep the MatMuls of the top N encoder layers in fp32.
    """

    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] = MATMUL_OPS
    exclude_attention: bool = False
    exclude_last_layers: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _layer_of(node_name: str):
    # TorchScript export names nodes after module paths: "/bert/encoder/layer.3/attention/..."
    for part in node_name.split("/"):
        if part.startswith("layer.") and part[6:].isdigit():
            return int(part[6:])
    return None


def nodes_to_keep_fp32(model_path, settings: Int8Settings) -> list[str]:
    """Names of the nodes of the types to quantise that the settings keep in fp32."""
    import onnx

    nodes = [n for n in onnx.load(str(model_path), load_external_data=False).graph.node if n.op_type in settings.op_types]
    keep = []
    layers = [x for x in (_layer_of(n.name) for n in nodes) if x is not None]
    top = max(layers) if layers else -1
    for n in nodes:
        layer = _layer_of(n.name)
        if settings.exclude_attention and n.op_type == "Attention":
            keep.append(n.name)
        elif settings.exclude_last_layers and layer is not None and layer > top - settings.exclude_last_layers:
            keep.append(n.name)
    return keep


def quantize_int8(src, dst, settings: Int8Settings = Int8Settings()) -> dict:
    """Write the dynamic-int8 graph of `src` to `dst`.

    Args:
        src: The optimised fp32 .onnx file.
        dst: Where to write the int8 graph.
        settings: Int8Settings.

    Returns:
        {"settings": ..., "kept_fp32": node names excluded, "quantized_ops": {op type: count}}.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = nodes_to_keep_fp32(src, settings)
    # quantize_dynamic warns (root logger) that the model was not pre-processed: the optimiser already
    # ran shape inference and the fusions, which is what pre-processing would do.
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(
            Path(src), Path(dst), op_types_to_quantize=list(settings.op_types),
            per_channel=settings.per_channel, reduce_range=settings.reduce_range,
            weight_type=QuantType.QInt8, nodes_to_exclude=keep,
            # ONNX shape inference does not know the fused contrib ops (Attention, SkipLayerNorm...):
            # their outputs are fp32 tensors, which is what DefaultTensorType says.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT,
                           **settings.extra})
    finally:
        root.setLevel(level)
    counts: dict[str, int] = {}
    for n in onnx.load(str(dst), load_external_data=False).graph.node:
        if n.op_type in ("MatMulInteger", "QAttention", "DynamicQuantizeMatMul", "QEmbedLayerNormalization",
                         "DynamicQuantizeLinear"):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return {"settings": settings.to_dict(), "kept_fp32": keep, "quantized_ops": counts}
