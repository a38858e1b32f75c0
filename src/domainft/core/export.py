"""Export trained fp32 weights (consolidated from a ZeRO checkpoint) over the pretrained model as a Hugging Face directory."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch

from domainft.core.model import build_model, build_tokenizer, label_maps
from domainft.data.labels import MODEL_MARKER

_PREFIX = "module."


def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DDP/DeepSpeed wrappers name parameters "module.<name>"; the bare model does not.
    if state_dict and all(k.startswith(_PREFIX) for k in state_dict):
        return {k[len(_PREFIX):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def export_hf(trained: Mapping[str, torch.Tensor], name_or_path: str, label_names: Sequence[str],
              tokenizer_source: str, out_dir: Union[str, Path], trust_remote_code: bool = False,
              revision: Optional[str] = None, required: Optional[Iterable[str]] = None) -> Path:
    """Write a loadable Hugging Face model directory: config.json, model.safetensors, tokenizer.

    The model is the pretrained one the run started from, with the trained parameters replaced by
    `trained` (fp32 master weights consolidated from the checkpoint). Parameters the run never
    trained (frozen for the whole run) are therefore exactly the pretrained weights, whatever
    precision or ZeRO stage the run used.

    Args:
        trained: Trained parameters by name (keys optionally "module."-prefixed).
        name_or_path: The model the run started from (weights and architecture).
        label_names: Class names in id order (written as id2label/label2id).
        tokenizer_source: Where to load the tokenizer to copy from (usually name_or_path).
        out_dir: Target directory (created).
        trust_remote_code: Allow model code shipped with the checkpoint.
        revision: Hub revision the run used.
        required: Names that must be in `trained` (the parameters the run trained): a missing one
            is an error rather than a silently pretrained value.

    Returns:
        out_dir as a Path.

    Raises:
        ValueError: `trained` lacks a required parameter, names one the model does not have, or
            has a shape the model's parameter does not.
    """
    out_dir = Path(out_dir)
    # fp32: the checkpoint's dtype ("auto") may be bf16, which would round the trained fp32 masters.
    model = build_model(name_or_path, label_names, trust_remote_code=trust_remote_code, revision=revision,
                        torch_dtype=torch.float32)
    trained = _strip_prefix(trained)
    params = dict(model.named_parameters())
    missing = sorted(set(required or ()) - set(trained))
    unknown = sorted(set(trained) - set(params))
    shapes = sorted(n for n in set(trained) & set(params) if tuple(trained[n].shape) != tuple(params[n].shape))
    if missing or unknown or shapes:
        raise ValueError(f"trained weights do not match {name_or_path}: missing parameters {missing[:20]}, "
                         f"unknown parameters {unknown[:20]}, wrong shapes {shapes[:20]}")
    with torch.no_grad():
        for name, value in trained.items():
            params[name].copy_(value)
    model.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # transformers 5 always writes safetensors (no pickle)
    build_tokenizer(tokenizer_source, trust_remote_code=trust_remote_code, revision=revision).save_pretrained(out_dir)

    # save_pretrained writes the labels from the config already; write them again explicitly so the
    # file is right even if a config class serialises them differently (e.g. drops default labels).
    id2label, label2id = label_maps(label_names)
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["id2label"] = {str(i): name for i, name in id2label.items()}
    config["label2id"] = label2id
    # Marks a domainft classifier: training that starts from this folder keeps these labels' ids.
    config[MODEL_MARKER] = {"label_names": list(label_names)}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out_dir
