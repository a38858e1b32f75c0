"""torch.onnx export of a sequence classifier: logits from named inputs, dynamic batch and sequence axes.

Two traps this module exists for:
- Inputs must be bound by name. The tokenizer's key order (input_ids, token_type_ids,
  attention_mask) is not the forward signature's order (input_ids, attention_mask, token_type_ids):
  passing tensors by position silently feeds the mask as segment ids. The wrapper takes the
  tensors in `input_names` order and hands them to the model as keywords; the graph inputs carry
  the same names, and the runner feeds a dict by name.
- Dynamic shapes must be checked, not trusted: the dynamo exporter has fixed batch or sequence
  dims to the example's (pytorch 150842, 152018). parity.py runs every export at several shapes.

The TorchScript exporter (`dynamo=False`) is the default: at the versions pinned here both exporters
keep the dynamic axes (checked at several shapes), but only the TorchScript graph matches ONNX
Runtime's Attention and EmbedLayerNormalization fusion patterns (the dynamo graph gets none: no
fused attention). `exporter="dynamo"` is there for architectures the TorchScript tracer cannot
handle.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Sequence

import torch

OPSET = 17  # LayerNormalization is a native op from 17; ONNX Runtime 1.31 runs 17-23
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EXPORTERS = ("torchscript", "dynamo")


class _Logits(torch.nn.Module):
    """forward(*tensors in input_names order) -> logits, each tensor passed to the model by name."""

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str]):
        super().__init__()
        self.model, self.input_names = model, tuple(input_names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, tensors))).logits


def input_names_for(model: torch.nn.Module, tokenizer) -> list[str]:
    """The graph inputs: what the tokenizer produces that the model's forward accepts.

    input_ids and attention_mask always (padding needs the mask); token_type_ids only when the
    tokenizer makes them (BERT: yes; RoBERTa, DistilBERT, DeBERTa-v3: no) and the model takes them.
    """
    params = inspect.signature(model.forward).parameters
    produced = set(getattr(tokenizer, "model_input_names", ())) | {"input_ids", "attention_mask"}
    return [n for n in MODEL_INPUTS if n in params and n in produced]


def example_inputs(input_names: Sequence[str], batch: int = 2, seq: int = 16, vocab_size: int = 100) -> dict:
    """Example tensors for tracing: a padded row and a second segment, so that neither the mask nor the
    segment ids is constant in the trace (a model may skip an all-ones mask)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, vocab_size - 1), vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq // 2:] = 0
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[:, seq // 3:] = 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {n: feeds[n] for n in input_names}


def export_onnx(model: torch.nn.Module, input_names: Sequence[str], path, vocab_size: int,
                exporter: str = "torchscript", opset: int = OPSET) -> Path:
    """Write `path` (one .onnx file): inputs `input_names` (int64 [batch, sequence]), output `logits`
    (float32 [batch, num_labels]).

    Args:
        model: An eval-mode sequence classifier (fp32).
        input_names: Graph inputs, from `input_names_for`.
        path: The .onnx file to write.
        vocab_size: For the example token ids.
        exporter: "torchscript" (torch.onnx.export(dynamo=False)) or "dynamo".
        opset: ONNX opset.

    Returns:
        path as a Path.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The legacy exporter restores the wrapper's training flag on every submodule after tracing:
    # a wrapper left in train mode would switch the model's dropout on for everything after export.
    wrapper = _Logits(model, input_names).eval()
    example = example_inputs(input_names, vocab_size=vocab_size)
    args = tuple(example[n] for n in input_names)
    with torch.no_grad(), warnings.catch_warnings():
        # Expected, and covered by the parity checks at several shapes: the legacy exporter's
        # deprecation notice; transformers' mask code compares the mask length with the sequence
        # length (equal for every input here, so the traced constant holds); and aten::index on
        # position ranges, which are never negative.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based ONNX")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        warnings.filterwarnings("ignore", message="# The axis name")  # dynamo: batch dims shared by all inputs
        if exporter == "torchscript":
            axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
            torch.onnx.export(wrapper, args, str(path), input_names=list(input_names), output_names=["logits"],
                              dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=opset, dynamo=False,
                              do_constant_folding=True)
        else:
            batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1)
            program = torch.onnx.export(wrapper, args, input_names=list(input_names), output_names=["logits"],
                                        dynamic_shapes=(tuple({0: batch, 1: seq} for _ in input_names),),
                                        opset_version=max(opset, 18), dynamo=True, external_data=False)
            program.save(str(path), external_data=False)
    return path
