"""Predictors: texts -> class probabilities, for the torch (`best/` folder) and ONNX Runtime (`domainft export`
folder) backends. No Ray, no HTTP.

A predictor is loaded once per replica; `predict_proba` takes any number of texts, tokenises them with the
model's own fast tokenizer truncated to its max length (the encoder `prepare` uses), sorts them by length so a
forward pass pads little, and returns probabilities in input order. The max length and the side a long text is
cut on default to what training recorded in the folder's config.json (its data.max_length), so that served
answers are the model's answers at its training length. Opening and checking the folders, the
batching by length and the ONNX runner are domainft.export's (source, runtime); the torch backend runs the
same batches through PyTorch on the CPU.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np

from domainft.errors import UserError

BACKENDS = ("torch", "onnx")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json")


class Predictor(Protocol):
    """What the API needs from a model."""

    name: str               # the folder, for GET /v1/models
    labels: list[str]       # class names, index = probability column
    backend: str            # torch | onnx
    variant: str            # fp32 | int8
    max_length: int         # tokens per text after truncation
    truncation_side: str    # right | left: which end of a longer text is dropped
    trained_max_length: Optional[int]  # the data.max_length the model was trained at (None: not recorded)
    weights_sha256: str     # content hash of the weight file(s)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), len(labels)], rows in input order."""


def model_name(folder: Path) -> str:
    """The last two parts of the folder (`runs/bbc_demo/best` -> `bbc_demo/best`): `best` alone says little."""
    return "/".join(Path(folder).resolve().parts[-2:])


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


def _onnx_files(folder: Path, variant: str) -> list[Path]:
    """The graph of `variant` and its external-data file, if it has one."""
    from domainft.export.runtime import VARIANTS

    graph = folder / VARIANTS[variant]
    data = graph.with_name(graph.name + ".data")
    return [graph] + ([data] if data.is_file() else [])


def check_model_dir(folder, backend: str = "torch", variant: str = "fp32") -> list[str]:
    """Cheap checks of a folder before anything is started (headers only, no weights read). Returns the labels.

    Raises:
        UserError: Not a folder the backend can serve, naming the file.
    """
    folder = Path(folder)
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {list(BACKENDS)}, got {backend!r}")
    from domainft.export.runtime import trained_inputs

    if backend == "torch":
        from domainft.export.source import check_weights, labels_in_order, read_classifier_config

        if variant != "fp32":
            raise UserError(f"--variant {variant} needs --backend onnx (a `domainft export --quantize int8` folder)")
        config = read_classifier_config(folder)
        labels = labels_in_order(config, folder / "config.json")
        trained_inputs(config, folder / "config.json")  # an edited training record: refused before anything starts
        check_weights(folder)
        if not any((folder / f).is_file() for f in TOKENIZER_FILES):
            raise UserError(f"{folder}: no tokenizer (tokenizer.json or vocab files); save the model with its "
                            f"tokenizer")
        return labels
    from domainft.export.runtime import VARIANTS, read_export_config
    from domainft.export.source import labels_in_order

    if variant not in VARIANTS:
        raise UserError(f"--variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (--backend onnx serves a `domainft export` OUT_DIR)")
    config = read_export_config(folder)
    labels = labels_in_order(config, folder / "config.json")
    trained_inputs(config, folder / "config.json")
    graph = _onnx_files(folder, variant)[0]
    if not graph.is_file():
        raise UserError(f"{graph}: not found" + (" (export with --quantize int8)" if variant == "int8" else ""))
    if not (folder / "tokenizer.json").is_file():
        raise UserError(f"{folder / 'tokenizer.json'}: not found; the export folder needs its fast tokenizer")
    return labels


class TorchPredictor:
    """A fine-tuned Hugging Face sequence classifier on PyTorch (CPU), fp32, no autograd."""

    backend, variant = "torch", "fp32"

    def __init__(self, folder, max_length: Optional[int] = None, batch_size: int = 32, threads: Optional[int] = None,
                 trust_remote_code: bool = False):
        """Args:
            folder: A `best/` folder: config.json with id2label, model.safetensors, the tokenizer.
            max_length: Truncate texts to this many tokens (default: the data.max_length the model was trained
                at, recorded in config.json by `domainft train`; else the model's limit). Longer than the
                training length: a warning is logged.
            batch_size: Texts per forward pass.
            threads: torch intra-op threads (default: torch's, one per core).
            trust_remote_code: Allow model code shipped with the checkpoint (off by default).

        Raises:
            UserError: The folder cannot be served (named by file), or max_length exceeds the model's.
        """
        import torch

        from domainft.core.export import truncation_side
        from domainft.data.tokenize import encoder_spec
        from domainft.export.parity import torch_runner
        from domainft.export.pipeline import resolve_max_length
        from domainft.export.runtime import side_encoder, trained_inputs
        from domainft.export.source import check_weights, load_classifier

        if threads:
            torch.set_num_threads(threads)
        self.folder = Path(folder)
        clf = load_classifier(self.folder, trust_remote_code=trust_remote_code)  # safetensors only, checked
        self.labels, self.batch_size = clf.labels, batch_size
        trained = trained_inputs(clf.config, self.folder / "config.json")
        self.max_length = resolve_max_length(clf, max_length)  # warns past the training length
        self.trained_max_length = trained.max_length
        # Not recorded (a folder from before the record, or from elsewhere): the side prepare's encoder takes.
        self.truncation_side = trained.truncation_side or truncation_side(clf.tokenizer)
        self.pad_id = int(clf.tokenizer.pad_token_id or 0)
        self.run = torch_runner(clf.model)  # one padded batch by input name -> logits
        self.encode = side_encoder(encoder_spec(clf.tokenizer, str(self.folder)), self.max_length,
                                   trained.truncation_side)
        self.name = model_name(self.folder)
        self.weights_sha256 = weights_sha256(check_weights(self.folder))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        from domainft.export.runtime import batched_logits, softmax

        if not len(texts):
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        rows = self.encode(list(texts))
        return softmax(batched_logits(self.run, rows, self.pad_id, len(self.labels), self.batch_size))


class OnnxPredictor:
    """A `domainft export` folder on ONNX Runtime (domainft.export's OnnxClassifier), fp32 or int8."""

    backend = "onnx"

    def __init__(self, folder, variant: str = "fp32", max_length: Optional[int] = None, batch_size: int = 32,
                 threads: Optional[int] = None):
        from domainft.export.runtime import OnnxClassifier

        self.folder = Path(folder)
        self.classifier = OnnxClassifier(self.folder, variant, max_length=max_length, batch_size=batch_size,
                                         threads=threads)
        self.variant, self.labels, self.max_length = variant, self.classifier.labels, self.classifier.max_length
        self.truncation_side = self.classifier.truncation_side
        self.trained_max_length = self.classifier.trained.max_length
        self.name = model_name(self.folder)
        self.weights_sha256 = weights_sha256(_onnx_files(self.folder, variant))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.classifier.predict_proba(texts).astype(np.float32)


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
    return OnnxPredictor(folder, variant, max_length=max_length, batch_size=batch_size, threads=threads)
