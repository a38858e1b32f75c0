"""Open the model folder to export: a Hugging Face sequence classifier (`<output_dir>/best/`).

Every problem a user can fix (no folder, no config.json, a base model without a head, pickle-only or
corrupt weights) becomes one UserError naming the file, before anything is exported. Weights are
read from safetensors only; pickles are never loaded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from domainft.errors import UserError
from domainft.export.runtime import read_config_json

_INDEX = "model.safetensors.index.json"
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


@dataclass
class Classifier:
    """A loaded classifier: the eval-mode fp32 model, its tokenizer and labels in id order."""

    model: object  # transformers PreTrainedModel
    tokenizer: object  # a fast tokenizer
    labels: list[str]
    config: dict  # config.json as read
    model_dir: Path


def read_classifier_config(model_dir: Path) -> dict:
    """config.json of a sequence-classification folder, checked.

    Raises:
        UserError: The folder or config.json is missing or unreadable, or the model is not a
            sequence classifier (architectures not *ForSequenceClassification, or no id2label).
    """
    if not model_dir.exists():
        raise UserError(f"{model_dir}: no such folder (MODEL_DIR must be a Hugging Face model folder, e.g. "
                        f"<output_dir>/best)")
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: is a file; MODEL_DIR must be a Hugging Face model folder")
    path = model_dir / "config.json"
    config = read_config_json(path, "a Hugging Face model folder as MODEL_DIR (e.g. <output_dir>/best)")
    arch = config.get("architectures") or []
    if not any(isinstance(a, str) and a.endswith("ForSequenceClassification") for a in arch):
        raise UserError(f"{path}: not a sequence-classification model (architectures: {arch or 'none'}); export "
                        f"needs a fine-tuned classifier such as a `domainft train` run's best/ folder")
    if not isinstance(config.get("id2label"), dict) or not config["id2label"]:
        raise UserError(f"{path}: no id2label; export needs the class names of a fine-tuned classifier")
    return config


def labels_in_order(config: dict, path: Path) -> list[str]:
    """id2label as a list (index = id). Raises UserError for ids that are not 0..K-1."""
    try:
        by_id = {int(k): str(v) for k, v in config["id2label"].items()}
    except ValueError:
        raise UserError(f"{path}: id2label keys must be integer ids, got {sorted(config['id2label'])}") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise UserError(f"{path}: id2label ids must be 0..{len(by_id) - 1}, got {sorted(by_id)}")
    return [by_id[i] for i in range(len(by_id))]


def classifier_labels(model_dir: Path) -> list[str]:
    """The labels (index = id) of a sequence-classification folder, checked (UserError naming the file)."""
    model_dir = Path(model_dir)
    return labels_in_order(read_classifier_config(model_dir), model_dir / "config.json")


def _weight_files(model_dir: Path) -> list[Path]:
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    index = model_dir / _INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, AttributeError) as e:
            raise UserError(f"{index}: not a safetensors index ({e})") from None
        missing = [s for s in shards if not (model_dir / s).is_file()]
        if missing:
            raise UserError(f"{model_dir / missing[0]}: listed in {_INDEX} but not found")
        return [model_dir / s for s in shards]
    pickles = [p for p in _PICKLES if (model_dir / p).exists()]
    if pickles:
        raise UserError(f"{model_dir / pickles[0]}: only non-safetensors weights; domainft loads safetensors only "
                        f"(no pickles): save the model with save_pretrained(safe_serialization=True)")
    raise UserError(f"{model_dir / 'model.safetensors'}: not found")


def check_weights(model_dir: Path) -> list[Path]:
    """The safetensors files, each opened once to check its header and size (cheap: no tensor is read).

    Raises:
        UserError: No safetensors weights, only pickles, or a corrupt / truncated file.
    """
    from safetensors import safe_open

    files = _weight_files(model_dir)
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                st.keys()
        except Exception as e:  # safetensors raises its own SafetensorError (and OSError) for bad files
            raise UserError(f"{f}: not a valid safetensors file ({type(e).__name__}: {e})") from None
    return files


def load_classifier(model_dir, trust_remote_code: bool = False) -> Classifier:
    """Load a fine-tuned sequence classifier for export (eval mode, fp32, eager attention).

    Eager attention is what ONNX Runtime's transformer optimizer fuses into its Attention kernel;
    its results equal SDPA's to float rounding.

    Args:
        model_dir: A Hugging Face folder: config.json with id2label, model.safetensors, a tokenizer.
        trust_remote_code: Allow model code shipped with the checkpoint (off by default).

    Returns:
        Classifier.

    Raises:
        UserError: Anything wrong with the folder, named by file.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from domainft.core.model import build_tokenizer

    model_dir = Path(model_dir)
    config = read_classifier_config(model_dir)
    labels = labels_in_order(config, model_dir / "config.json")
    files = check_weights(model_dir)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the export prints its own summary; no per-tensor loading bar
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            model_dir, use_safetensors=True, trust_remote_code=trust_remote_code, attn_implementation="eager",
            dtype="float32", output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise UserError(f"{files[0]}: cannot load the model with {model_dir / 'config.json'}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    missing = [k for k in info.get("missing_keys", ()) if k]
    mismatched = info.get("mismatched_keys") or []
    if missing or mismatched:
        what = missing or [m[0] if isinstance(m, (tuple, list)) else m for m in mismatched]
        raise UserError(f"{files[0]}: does not hold the weights config.json describes "
                        f"({'missing' if missing else 'wrong shape'}: {', '.join(map(str, what[:5]))}"
                        f"{' ...' if len(what) > 5 else ''}); a head that is not trained cannot be exported")
    try:
        tokenizer = build_tokenizer(str(model_dir), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"{model_dir}: cannot load its tokenizer (tokenizer.json / vocab files): "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    if model.config.pad_token_id is None:  # a decoder pools its last non-pad token: the tokenizer's pad (or EOS)
        model.config.pad_token_id = tokenizer.pad_token_id
    return Classifier(model.float().eval(), tokenizer, labels, config, model_dir)
