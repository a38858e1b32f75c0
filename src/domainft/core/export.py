"""Export trained fp32 weights (consolidated from a ZeRO checkpoint) over the pretrained model as a
Hugging Face directory, or, for a PEFT regime, as an adapter in PEFT's format plus the merged model."""
from __future__ import annotations

import json
import shutil
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


def truncation_side(tokenizer) -> str:
    """The side prepare's encoder (data.tokenize.build_encoder) cuts a long text on with this tokenizer: a fast
    tokenizer is rebuilt with `tokenizers` and truncated with its default direction, right, whatever the
    tokenizer's `truncation_side` says; a slow one is called with its own `truncation_side`."""
    if getattr(tokenizer, "is_fast", False):
        return "right"
    return str(getattr(tokenizer, "truncation_side", "right"))


def export_hf(trained: Mapping[str, torch.Tensor], name_or_path: str, label_names: Sequence[str],
              tokenizer_source: str, out_dir: Union[str, Path], trust_remote_code: bool = False,
              revision: Optional[str] = None, required: Optional[Iterable[str]] = None,
              max_length: Optional[int] = None) -> Path:
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
        max_length: The run's data.max_length: recorded in config.json with the side prepare truncated
            on, so that serving and `domainft export` cut texts as training did (None: not recorded).

    Returns:
        out_dir as a Path.

    Raises:
        ValueError: `trained` lacks a required parameter, names one the model does not have, or
            has a shape the model's parameter does not.
    """
    # fp32: the checkpoint's dtype ("auto") may be bf16, which would round the trained fp32 masters.
    model = build_model(name_or_path, label_names, trust_remote_code=trust_remote_code, revision=revision,
                        torch_dtype=torch.float32)
    _overlay(model, _strip_prefix(trained), required, name_or_path)
    return _save_hf(model, out_dir, label_names, tokenizer_source, trust_remote_code, revision, max_length)


def _overlay(model: torch.nn.Module, trained: Mapping[str, torch.Tensor], required: Optional[Iterable[str]],
             name_or_path: str, rename: Optional[Mapping[str, str]] = None) -> None:
    """Copy `trained` into the model's parameters (named as in `rename`, else as in `trained`)."""
    rename = rename or {}
    params = dict(model.named_parameters())
    target = {n: rename.get(n, n) for n in trained}
    missing = sorted(set(required or ()) - set(trained))
    unknown = sorted(n for n, t in target.items() if t not in params)
    shapes = sorted(n for n, t in target.items() if t in params and tuple(trained[n].shape) != tuple(params[t].shape))
    if missing or unknown or shapes:
        raise ValueError(f"trained weights do not match {name_or_path}: missing parameters {missing[:20]}, "
                         f"unknown parameters {unknown[:20]}, wrong shapes {shapes[:20]}")
    with torch.no_grad():
        for name, value in trained.items():
            params[target[name]].copy_(value)


def _save_hf(model: torch.nn.Module, out_dir: Union[str, Path], label_names: Sequence[str], tokenizer_source: str,
             trust_remote_code: bool, revision: Optional[str], max_length: Optional[int]) -> Path:
    out_dir = Path(out_dir)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # transformers 5 always writes safetensors (no pickle)
    tokenizer = build_tokenizer(tokenizer_source, trust_remote_code=trust_remote_code, revision=revision)
    tokenizer.save_pretrained(out_dir)

    # save_pretrained writes the labels from the config already; write them again explicitly so the
    # file is right even if a config class serialises them differently (e.g. drops default labels).
    id2label, label2id = label_maps(label_names)
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["id2label"] = {str(i): name for i, name in id2label.items()}
    config["label2id"] = label2id
    # Marks a domainft classifier: training that starts from this folder keeps these labels' ids. The inputs it
    # was trained on go with it: the saved tokenizer keeps the pretrained limit (512 for MiniLM), and a server
    # that truncated there would classify long texts from tokens the model never saw in training.
    config[MODEL_MARKER] = {"label_names": list(label_names)}
    if max_length is not None:
        config[MODEL_MARKER].update(max_length=int(max_length), truncation_side=truncation_side(tokenizer))
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out_dir


_ADAPTER_README = """# {method} adapter trained by domainft

Base model: `{base}`; classes (in id order): {labels}.
The classifier head is stored with the adapter (PEFT `modules_to_save`).

```python
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

labels = {labels}
tokenizer = AutoTokenizer.from_pretrained("<this folder>")  # with the pad token the run padded with
base = AutoModelForSequenceClassification.from_pretrained(
    "{base}", num_labels=len(labels), id2label=dict(enumerate(labels)),
    label2id={{name: i for i, name in enumerate(labels)}}, pad_token_id=tokenizer.pad_token_id)
model = PeftModel.from_pretrained(base, "<this folder>").eval()
```
{extra}"""
# The pad id matters to decoder classifiers, which pool the last token that is not padding: their base
# model's config.json often has none (the run pads with the EOS token, data/tokenize.ensure_pad_token).
_AUTO_PEFT = """
Or in one call (LoRA): `AutoPeftModelForSequenceClassification.from_pretrained("<this folder>",
num_labels={num_labels}, pad_token_id=tokenizer.pad_token_id)`.
"""
_NOT_MERGED = """
{method} adds virtual tokens in front of every input rather than changing weights, so it cannot be
merged into a plain Hugging Face model: this folder (the adapter) is the trained model.
"""


def export_peft(trained: Mapping[str, torch.Tensor], name_or_path: str, label_names: Sequence[str], spec,
                tokenizer_source: str, out_dir: Union[str, Path], adapter_dir: Union[str, Path],
                trust_remote_code: bool = False, revision: Optional[str] = None,
                required: Optional[Iterable[str]] = None, merge: Optional[bool] = None,
                max_length: Optional[int] = None) -> dict:
    """Write a PEFT run's result from its trained fp32 weights, on CPU (no ZeRO gather at all).

    The pretrained model is wrapped with the same adapter (core.peft.apply_peft, built for export:
    the head in `modules_to_save`), the trained adapter and head weights are copied in,
    and then:
    - `adapter_dir`: the adapter in PEFT's format (`PeftModel.from_pretrained(base, adapter_dir)`
      loads it), the tokenizer and a README.md that shows how;
    - `out_dir`: merged (LoRA): `merge_and_unload()`, a plain Hugging Face directory that loads
      without peft. Not merged (always for prompt / prefix tuning): a copy of the adapter directory.

    Args:
        trained: Trained parameters by their names in the training model (core.peft.apply_peft).
        spec: The core.peft.PeftSpec the run trained with.
        merge: Whether out_dir is the merged model; default: when the regime can be merged.
        max_length: The run's data.max_length, recorded in the merged model's config.json (`export_hf`).
        Others: as in `export_hf`.

    Returns:
        {"best": out_dir, "adapter": adapter_dir, "merged": whether out_dir is a merged plain model}.

    Raises:
        ValueError: merge=True for a regime that cannot be merged (config validation prevents it).
    """
    merge = spec.mergeable if merge is None else merge
    if merge and not spec.mergeable:
        raise ValueError(f"{spec.method} adds virtual tokens, which cannot be merged into the weights")
    from domainft.core.peft import apply_peft

    model = apply_peft(build_model(name_or_path, label_names, trust_remote_code=trust_remote_code, revision=revision,
                                   torch_dtype=torch.float32), spec, modules_to_save=True)
    # The head trained as itself; in the exported adapter it is PEFT's trainable copy of itself.
    saved = ".modules_to_save.default."
    rename = {n.replace(saved, "."): n for n, _ in model.named_parameters() if saved in n}
    _overlay(model, _strip_prefix(trained), required, name_or_path, rename)
    model.eval()
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    model.save_pretrained(adapter_dir)  # safetensors
    build_tokenizer(tokenizer_source, trust_remote_code=trust_remote_code, revision=revision).save_pretrained(adapter_dir)
    method = spec.method.replace("_", " ")
    extra = (_AUTO_PEFT.format(num_labels=len(label_names)) if spec.mergeable
             else _NOT_MERGED.format(method=method.capitalize()))
    (adapter_dir / "README.md").write_text(_ADAPTER_README.format(
        method=method.capitalize(), base=name_or_path, labels=list(label_names), extra=extra), encoding="utf-8")
    if merge:
        _save_hf(model.merge_and_unload(), out_dir, label_names, tokenizer_source, trust_remote_code, revision,
                 max_length)
    else:
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(adapter_dir, out_dir)
    return {"best": str(out_dir), "adapter": str(adapter_dir), "merged": merge}
