"""Export a full fp32 state dict (e.g. consolidated from a ZeRO checkpoint) as a Hugging Face directory."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence, Union

import torch

from domainft.core.model import build_model_from_config, build_tokenizer, label_maps

_PREFIX = "module."


def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DDP/DeepSpeed wrappers name parameters "module.<name>"; the bare model does not.
    if state_dict and all(k.startswith(_PREFIX) for k in state_dict):
        return {k[len(_PREFIX):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def export_hf(state_dict: Mapping[str, torch.Tensor], name_or_path: str, label_names: Sequence[str],
              tokenizer_source: str, out_dir: Union[str, Path], trust_remote_code: bool = False) -> Path:
    """Write a loadable Hugging Face model directory: config.json, model.safetensors, tokenizer.

    Args:
        state_dict: Full (unsharded) state dict of the trained model, keys optionally "module."-prefixed.
        name_or_path: The model the run started from (its config gives the architecture; no
            weights are downloaded).
        label_names: Class names in id order (written as id2label/label2id).
        tokenizer_source: Where to load the tokenizer to copy from (usually name_or_path).
        out_dir: Target directory (created).
        trust_remote_code: Allow model code shipped with the checkpoint.

    Returns:
        out_dir as a Path.

    Raises:
        ValueError: The state dict misses parameters or has unexpected keys.
    """
    out_dir = Path(out_dir)
    model = build_model_from_config(name_or_path, label_names, trust_remote_code=trust_remote_code, meta=False)
    # from_config builds in the config's dtype (bf16 for many hub checkpoints); loading the fp32
    # training result into that would silently round it, so the export stays fp32.
    model.float()
    state_dict = _strip_prefix(state_dict)
    expected = set(model.state_dict())
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    # Every parameter must come from the checkpoint; only buffers may be absent (ZeRO's consolidated
    # state dict holds parameters; buffers such as position ids are rebuilt identically by the config).
    missing_params = [k for k in missing if k in params]
    if missing_params or unexpected:
        raise ValueError(f"state dict does not match {name_or_path}: missing parameters {missing_params[:20]}"
                         f"{' ...' if len(missing_params) > 20 else ''}, unexpected keys {unexpected[:20]}"
                         f"{' ...' if len(unexpected) > 20 else ''}")
    model.load_state_dict(state_dict, strict=False)
    model.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # transformers 5 always writes safetensors (no pickle)
    build_tokenizer(tokenizer_source, trust_remote_code=trust_remote_code).save_pretrained(out_dir)

    # save_pretrained writes the labels from the config already; write them again explicitly so the
    # file is right even if a config class serialises them differently (e.g. drops default labels).
    id2label, label2id = label_maps(label_names)
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["id2label"] = {str(i): name for i, name in id2label.items()}
    config["label2id"] = label2id
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out_dir
