"""Run an exported classifier folder with ONNX Runtime: texts -> logits / probabilities / labels.

The folder is what `domainft export` writes (model.onnx, model.int8.onnx, tokenizer.json,
config.json with id2label and an `onnx_export` block). Texts are tokenized like `prepare` does
(the fast tokenizer, truncation to max_length, no token type ids: single texts), batched by length
so that a batch pads little, and fed to the graph by input name. Imports onnxruntime, numpy and
tokenizers only: this is also the predictor of the serving layer.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from domainft.data.tokenize import build_encoder, pad_rows
from domainft.errors import UserError

VARIANTS = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
META_KEY = "onnx_export"  # the block `domainft export` adds to config.json

Runner = Callable[[Mapping[str, np.ndarray]], np.ndarray]  # one padded batch by input name -> logits


def session_options(threads: Optional[int] = None):
    """ONNX Runtime session options: all graph optimisations, `threads` intra-op threads (None: the
    runtime's default, one per physical core), one inter-op thread (a single encoder has no parallel
    branches worth scheduling)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only: ORT warns about initializers it folds, not useful here
    return opts


def open_session(path, threads: Optional[int] = None):
    """A CPU InferenceSession for one .onnx file."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def graph_runner(session) -> Runner:
    """feed by input name -> logits. Inputs are bound by name, never by position; a graph input the
    feed lacks that is token_type_ids gets zeros (single texts have one segment)."""
    names = [i.name for i in session.get_inputs()]

    def run(feed: Mapping[str, np.ndarray]) -> np.ndarray:
        inputs = {}
        for name in names:
            value = feed.get(name)
            if value is None and name == "token_type_ids":
                value = np.zeros_like(feed["input_ids"])
            if value is None:
                raise ValueError(f"the graph needs input {name!r}")
            inputs[name] = np.ascontiguousarray(value, dtype=np.int64)
        return session.run(["logits"], inputs)[0]

    return run


def read_config_json(path: Path, expected: str) -> dict:
    """A config.json as a dict. Raises UserError (naming the file) when it is missing, not JSON or
    not an object; `expected` says what folder should have held it."""
    if not path.is_file():
        raise UserError(f"{path}: not found; expected {expected}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a JSON object")
    return config


def read_export_config(folder: Path) -> dict:
    path = folder / "config.json"
    config = read_config_json(path, "a folder written by `domainft export`")
    if META_KEY not in config or "id2label" not in config:
        raise UserError(f"{path}: no {META_KEY!r} block or id2label; expected a folder written by `domainft export`")
    return config


def batched_logits(run: Runner, rows: Sequence[Sequence[int]], pad_id: int, num_labels: int,
                   batch_size: int = 32) -> np.ndarray:
    """float32 [N, num_labels] for token id rows: batched by length (little padding), in input order."""
    out = np.zeros((len(rows), num_labels), dtype=np.float32)
    order = np.argsort([len(r) for r in rows], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = pad_rows([rows[i] for i in idx], pad_id)
        out[idx] = run({"input_ids": ids, "attention_mask": mask})
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class OnnxClassifier:
    """A text classifier on ONNX Runtime (CPU), built from an export folder.

    Attributes:
        labels: Class names, index = logit column.
        max_length: Tokens per text after truncation (special tokens included).
        variant: "fp32" or "int8".
        input_names: The graph's inputs (fed by name).
    """

    def __init__(self, folder, variant: str = "fp32", max_length: Optional[int] = None, batch_size: int = 32,
                 threads: Optional[int] = None):
        """Args:
            folder: A `domainft export` OUT_DIR.
            variant: "fp32" (model.onnx) or "int8" (model.int8.onnx).
            max_length: Truncate texts to this many tokens (default: the export's max length).
            batch_size: Texts per forward pass.
            threads: ONNX Runtime intra-op threads (default: one per physical core).

        Raises:
            UserError: Not an export folder, or the variant was not exported.
        """
        if variant not in VARIANTS:
            raise UserError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        self.folder = Path(folder)
        config = read_export_config(self.folder)
        meta = config[META_KEY]
        self.path = self.folder / VARIANTS[variant]
        if not self.path.is_file():
            hint = " (export with --quantize int8)" if variant == "int8" else ""
            raise UserError(f"{self.path}: not found{hint}")
        tokenizer_json = self.folder / "tokenizer.json"
        if not tokenizer_json.is_file():
            raise UserError(f"{tokenizer_json}: not found; the export folder needs its fast tokenizer")
        self.variant, self.batch_size = variant, batch_size
        self.labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        self.max_length = int(max_length or meta["max_length"])
        if self.max_length > int(meta["max_length"]):
            raise UserError(f"max_length {self.max_length} exceeds the exported model's {meta['max_length']}")
        self.pad_id = int(meta.get("pad_token_id") or 0)
        self.session = open_session(self.path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.run: Runner = graph_runner(self.session)  # one padded batch by input name -> logits
        self._encode = build_encoder({"tokenizer_json": tokenizer_json.read_text(encoding="utf-8")}, self.max_length)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (special tokens added, truncated to max_length, not padded)."""
        return self._encode(list(texts))

    def logits_from_ids(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """float32 [N, num_labels] for token id rows, batched by length, in input order."""
        return batched_logits(self.run, rows, self.pad_id, len(self.labels), self.batch_size)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [N, num_labels]."""
        return self.logits_from_ids(self.encode(texts)) if len(texts) else np.zeros((0, len(self.labels)), np.float32)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, float32 [N, num_labels] (softmax of the logits)."""
        return softmax(self.logits(texts))

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most likely label of each text."""
        return [self.labels[i] for i in self.logits(texts).argmax(axis=-1)]
