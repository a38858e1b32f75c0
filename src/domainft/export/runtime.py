"""Run an exported classifier folder with ONNX Runtime: texts -> logits / probabilities / labels.

The folder is what `domainft export` writes (model.onnx, model.int8.onnx, tokenizer.json,
config.json with id2label and an `onnx_export` block). Texts are tokenized like `prepare` does
(the fast tokenizer, truncation to max_length, no token type ids: single texts), batched by length
so that a batch pads little, and fed to the graph by input name. Imports onnxruntime, numpy and
tokenizers only: this is also the predictor of the serving layer.

A classifier domainft trained records in config.json how its inputs were cut (`trained_inputs`): the
run's data.max_length and the side prepare truncated on. Serving and export default to both, so that a
long text is classified from the tokens the model saw in training (no train/serve skew).
"""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from domainft.data.labels import MODEL_MARKER
from domainft.data.tokenize import Encoder, build_encoder, load_tokenizer, pad_rows
from domainft.errors import UserError

VARIANTS = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
META_KEY = "onnx_export"  # the block `domainft export` adds to config.json

Runner = Callable[[Mapping[str, np.ndarray]], np.ndarray]  # one padded batch by input name -> logits
SIDES = ("right", "left")
logger = logging.getLogger("domainft.export")


@dataclass(frozen=True)
class TrainedInputs:
    """How a domainft classifier's training cut its texts, from config.json (None: not recorded)."""

    max_length: Optional[int] = None  # the run's data.max_length
    truncation_side: Optional[str] = None  # right | left: which end of a long text prepare dropped


def trained_inputs(config: Mapping, path: Path) -> TrainedInputs:
    """The record `domainft train` writes into a `best/` folder's config.json (and `domainft export` carries
    into its folder). A model from elsewhere, or a folder exported before the record existed, has none.

    Raises:
        UserError: The record is there but is not a length >= 2 and a side (an edited config.json).
    """
    record = config.get(MODEL_MARKER) if isinstance(config, Mapping) else None
    if not isinstance(record, Mapping):
        return TrainedInputs()
    length, side = record.get("max_length"), record.get("truncation_side")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 2):
        raise UserError(f"{path}: {MODEL_MARKER}.max_length must be a whole number of tokens >= 2, got {length!r}")
    if side is not None and side not in SIDES:
        raise UserError(f"{path}: {MODEL_MARKER}.truncation_side must be one of {list(SIDES)}, got {side!r}")
    return TrainedInputs(length, side)


@functools.lru_cache(maxsize=None)  # once per process and length: a replica logs it when it loads
def warn_longer_than_trained(max_length: int, trained: int) -> None:
    """Log that texts are cut at `max_length`, past the `trained` tokens the model was trained at."""
    logger.warning(f"max_length {max_length}: the model was trained at max_length {trained} (its data.max_length); "
                   f"texts longer than {trained} tokens are classified from tokens it never saw in training, so "
                   f"answers can differ from its eval scores (leave --max-length out to use {trained})")


def side_encoder(spec: dict, max_length: int, side: Optional[str]) -> Encoder:
    """prepare's encoder (data.tokenize.build_encoder: special tokens, truncation to max_length, no padding),
    truncating on `side` (None: as build_encoder does, right for a fast tokenizer)."""
    if side is None or (side == "right" and "tokenizer_json" in spec):
        return build_encoder(spec, max_length)  # the very encoder prepare ran
    if side not in SIDES:
        raise ValueError(f"truncation side must be one of {SIDES}, got {side!r}")
    if "tokenizer_json" in spec:
        from tokenizers import Tokenizer

        fast = Tokenizer.from_str(spec["tokenizer_json"])
        fast.enable_truncation(max_length, direction=side)
        fast.no_padding()  # a tokenizer.json may pad (MiniLM's does): batches are padded later
        encode = getattr(fast, "encode_batch_fast", fast.encode_batch)
        return lambda texts: [e.ids for e in encode(texts)]
    slow = load_tokenizer(spec["name_or_path"], spec["revision"], spec["trust_remote_code"])
    slow.truncation_side = side
    return lambda texts: slow(texts, truncation=True, max_length=max_length, padding=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]


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
        truncation_side: Which end of a longer text is dropped: right or left.
        trained: What training recorded about its inputs (TrainedInputs; empty for other models).
        variant: "fp32" or "int8".
        input_names: The graph's inputs (fed by name).
    """

    def __init__(self, folder, variant: str = "fp32", max_length: Optional[int] = None, batch_size: int = 32,
                 threads: Optional[int] = None):
        """Args:
            folder: A `domainft export` OUT_DIR.
            variant: "fp32" (model.onnx) or "int8" (model.int8.onnx).
            max_length: Truncate texts to this many tokens (default: the length the model was trained at when
                config.json records it, within the export's max length; else the export's max length). Longer
                than the training length: a warning is logged.
            batch_size: Texts per forward pass.
            threads: ONNX Runtime intra-op threads (default: one per physical core).

        Raises:
            UserError: Not an export folder, the variant was not exported, or max_length exceeds the export's.
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
        exported = int(meta["max_length"])
        self.trained = trained_inputs(config, self.folder / "config.json")
        self.max_length = int(max_length or min(self.trained.max_length or exported, exported))
        if self.max_length > exported:
            raise UserError(f"max_length {self.max_length} exceeds the exported model's {exported}")
        if max_length and self.trained.max_length and self.max_length > self.trained.max_length:
            warn_longer_than_trained(self.max_length, self.trained.max_length)
        self.truncation_side = self.trained.truncation_side or "right"  # tokenizer.json: a fast tokenizer
        self.pad_id = int(meta.get("pad_token_id") or 0)
        self.session = open_session(self.path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.run: Runner = graph_runner(self.session)  # one padded batch by input name -> logits
        self._encode = side_encoder({"tokenizer_json": tokenizer_json.read_text(encoding="utf-8")}, self.max_length,
                                    self.trained.truncation_side)

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
