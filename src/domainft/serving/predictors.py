"""Predictors: texts -> class probabilities, for the torch (`best/` folder) and ONNX Runtime (`domainft export`
folder) backends. No Ray, no HTTP.

A predictor is loaded once per replica; `predict_proba` takes any number of texts, tokenises them with the
model's own fast tokenizer truncated to its max length (the encoder `prepare` uses), sorts them by length so a
forward pass pads little, and returns probabilities in input order.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np

from domainft.errors import UserError

BACKENDS = ("torch", "onnx")
VARIANTS = ("fp32", "int8")


class Predictor(Protocol):
    """What the API needs from a model."""

    name: str               # the folder, for GET /v1/models
    labels: list[str]       # class names, index = probability column
    backend: str            # torch | onnx
    variant: str            # fp32 | int8
    max_length: int         # tokens per text after truncation
    weights_sha256: str     # content hash of the weight file(s)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), len(labels)], rows in input order."""


def model_name(folder: Path) -> str:
    """The last two parts of the folder (`runs/bbc_demo/best` -> `bbc_demo/best`): `best` alone says little."""
    parts = Path(folder).resolve().parts
    return "/".join(parts[-2:])


def weights_sha256(files: Sequence[Path]) -> str:
    """sha256 of one weight file; for several (sharded), the sha256 of their `name hash` lines in name order."""
    digests = []
    for f in sorted(files, key=lambda p: p.name):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digests.append((f.name, h.hexdigest()))
    if len(digests) == 1:
        return digests[0][1]
    return hashlib.sha256("".join(f"{n} {d}\n" for n, d in digests).encode()).hexdigest()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _labels(config: dict, path: Path) -> list[str]:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise UserError(f"{path}: no id2label; serving needs the class names of a fine-tuned classifier")
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except ValueError:
        raise UserError(f"{path}: id2label keys must be integer ids, got {sorted(id2label)}") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise UserError(f"{path}: id2label ids must be 0..{len(by_id) - 1}, got {sorted(by_id)}")
    return [by_id[i] for i in range(len(by_id))]


def torch_weight_files(folder: Path) -> list[Path]:
    """The safetensors weights of a HF folder (one file or an index's shards). Pickles are refused."""
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set((_read_json(index).get("weight_map") or {}).values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if not shards or missing:
            raise UserError(f"{index}: shard {missing[0] if missing else '(none listed)'} not found")
        return [folder / s for s in shards]
    if (folder / "pytorch_model.bin").exists():
        raise UserError(f"{folder / 'pytorch_model.bin'}: only pickled weights; domainft loads safetensors only "
                        f"(save the model with save_pretrained(safe_serialization=True))")
    raise UserError(f"{single}: not found")


def check_model_dir(folder, backend: str = "torch", variant: str = "fp32") -> list[str]:
    """Cheap checks of a folder before anything is started (no weights are read). Returns the labels.

    Raises:
        UserError: Not a folder the backend can serve, naming the file.
    """
    folder = Path(folder)
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {list(BACKENDS)}, got {backend!r}")
    if variant not in VARIANTS:
        raise UserError(f"--variant must be one of {list(VARIANTS)}, got {variant!r}")
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (MODEL_DIR is a `best/` folder for --backend torch, a "
                        f"`domainft export` folder for --backend onnx)")
    if backend == "torch":
        if variant != "fp32":
            raise UserError(f"--variant {variant} needs --backend onnx (a `domainft export --quantize int8` folder)")
        labels = _labels(_read_json(folder / "config.json"), folder / "config.json")
        torch_weight_files(folder)
        if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json")):
            raise UserError(f"{folder}: no tokenizer (tokenizer.json or vocab files); export the model with its tokenizer")
        return labels
    return _onnx_labels(folder, variant)


def _onnx_labels(folder: Path, variant: str) -> list[str]:
    raise UserError("--backend onnx needs `domainft export` (domainft.export), which this installation lacks; "
                    "serve the `best/` folder with --backend torch")


class TorchPredictor:
    """A fine-tuned Hugging Face sequence classifier on PyTorch (CPU or the first GPU), fp32, no autograd."""

    backend, variant = "torch", "fp32"

    def __init__(self, folder, max_length: Optional[int] = None, batch_size: int = 32, threads: Optional[int] = None,
                 trust_remote_code: bool = False):
        """Args:
            folder: A `best/` folder: config.json with id2label, model.safetensors, the tokenizer.
            max_length: Truncate texts to this many tokens (default: the model's limit).
            batch_size: Texts per forward pass.
            threads: torch intra-op threads (default: torch's, one per core).
            trust_remote_code: Allow model code shipped with the checkpoint (off by default).
        """
        import torch
        from transformers import AutoModelForSequenceClassification

        from domainft.core.model import build_tokenizer
        from domainft.data.tokenize import build_encoder, encoder_spec

        self.folder = Path(folder)
        self.labels = check_model_dir(self.folder, "torch")
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.folder, use_safetensors=True, trust_remote_code=trust_remote_code, dtype=torch.float32,
        ).eval().to(self.device)  # never unpickle a .bin
        tokenizer = build_tokenizer(str(self.folder), trust_remote_code=trust_remote_code)
        limit = _model_max_length(self.model.config, tokenizer)
        if max_length and max_length > limit:
            raise UserError(f"max_length {max_length} exceeds {self.folder}'s limit of {limit} tokens")
        self.max_length = int(max_length or limit)
        self.pad_id = int(tokenizer.pad_token_id or 0)
        self.batch_size = batch_size
        self.encode = build_encoder(encoder_spec(tokenizer, str(self.folder)), self.max_length)
        self.name = model_name(self.folder)
        self.weights_sha256 = weights_sha256(torch_weight_files(self.folder))

    def logits_from_ids(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """float32 [N, C] for token id rows: sorted by length into batches (little padding), in input order."""
        import torch

        from domainft.core.batching import pad_batch

        out = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        order = np.argsort([len(r) for r in rows], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                b = pad_batch({"input_ids": [rows[i] for i in idx], "label": np.zeros(len(idx))}, self.pad_id, 1)
                logits = self.model(input_ids=b["input_ids"].to(self.device),
                                    attention_mask=b["attention_mask"].to(self.device)).logits
                out[idx] = logits.float().cpu().numpy()  # a device sync per batch: the answer is needed now
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return softmax(self.logits_from_ids(self.encode(list(texts))))


def _model_max_length(config, tokenizer) -> int:
    """The tokenizer's limit capped at the model's position table (512 when neither says)."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions and config.model_type in ("roberta", "xlm-roberta"):
        positions -= (config.pad_token_id or 0) + 1  # positions start after the padding index
    tok = getattr(tokenizer, "model_max_length", None)
    candidates = [x for x in (tok if tok and tok < 100_000 else None, positions) if x]
    return int(min(candidates)) if candidates else 512


def load_predictor(folder, backend: str = "torch", variant: str = "fp32", max_length: Optional[int] = None,
                   batch_size: int = 32, threads: Optional[int] = None, trust_remote_code: bool = False) -> Predictor:
    """The predictor for a folder: a `best/` folder on torch, or a `domainft export` folder on ONNX Runtime.

    Raises:
        UserError: The folder does not suit the backend, naming the file.
    """
    check_model_dir(folder, backend, variant)
    if backend == "torch":
        return TorchPredictor(folder, max_length=max_length, batch_size=batch_size, threads=threads,
                              trust_remote_code=trust_remote_code)
    raise AssertionError("unreachable: check_model_dir refuses other backends")
