"""Hugging Face model and tokenizer builders for sequence classification (encoders and decoder LLMs)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from transformers import (AutoConfig, AutoModelForSequenceClassification, PretrainedConfig,
                          PreTrainedModel, PreTrainedTokenizerBase)

from domainft.core.continual import widen_head
from domainft.data.labels import model_label_names
from domainft.data.tokenize import load_tokenizer


def label_maps(label_names: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """(id2label, label2id) for label names in id order; duplicates are an error."""
    names = list(label_names)
    if not names:
        raise ValueError("label_names is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"label_names has duplicates: {names}")
    return dict(enumerate(names)), {name: i for i, name in enumerate(names)}


def build_config(name_or_path: str, label_names: Sequence[str], trust_remote_code: bool = False,
                 revision: Optional[str] = None) -> PretrainedConfig:
    """The model's config with num_labels, id2label and label2id set (downloads config.json only).

    Args:
        name_or_path: Local directory or hub name.
        label_names: Class names in id order.
        trust_remote_code: Allow model code shipped with the checkpoint.
        revision: Hub revision to pin.

    Returns:
        The config.
    """
    id2label, label2id = label_maps(label_names)
    config = AutoConfig.from_pretrained(name_or_path, num_labels=len(id2label), id2label=id2label,
                                        label2id=label2id, trust_remote_code=trust_remote_code, revision=revision)
    if getattr(config, "pad_token_id", None) is None:
        # A decoder classifier pools the last token that is not padding, so it must know the pad id: the
        # one prepare padded with (the tokenizer's, else its EOS: data.tokenize.ensure_pad_token).
        config.pad_token_id = _tokenizer_pad_id(name_or_path, trust_remote_code, revision)
        vocab = getattr(config, "vocab_size", None)
        if config.pad_token_id is not None and vocab is not None and config.pad_token_id >= vocab:
            from domainft.errors import UserError

            raise UserError(f"model.name_or_path: the pad token of {name_or_path}'s tokenizer has id "
                            f"{config.pad_token_id}, outside the model's vocabulary of {vocab} (config.json "
                            f"vocab_size): give the tokenizer a pad token the model has, e.g. its EOS token")
    return config


def _tokenizer_pad_id(name_or_path: str, trust_remote_code: bool, revision: Optional[str]) -> Optional[int]:
    from domainft.errors import UserError

    try:
        return load_tokenizer(name_or_path, revision=revision, trust_remote_code=trust_remote_code).pad_token_id
    except UserError:  # a config.json without a tokenizer (plan of configs/models/*): nothing to pool yet
        return None


def build_model(name_or_path: str, label_names: Sequence[str], trust_remote_code: bool = False,
                revision: Optional[str] = None, torch_dtype: Optional[torch.dtype] = torch.float32,
                load_in_8bit: bool = False, device: Optional[torch.device] = None,
                load_in_4bit: bool = False) -> PreTrainedModel:
    """Pretrained encoder or decoder + a new classification head.

    Args:
        name_or_path: Local directory or hub name.
        label_names: Class names in id order (become num_labels, id2label, label2id).
        trust_remote_code: Allow model code shipped with the checkpoint.
        revision: Hub revision to pin.
        torch_dtype: Load the weights in this dtype (transformers' `dtype`). fp32 by default:
            transformers 5 would otherwise load in the checkpoint's own dtype ("auto"), and a bf16
            hub checkpoint would then train in bf16 under `train.precision: fp32` (DeepSpeed makes
            the bf16 copies itself when asked). None: the checkpoint's dtype.
        load_in_8bit: The base model's Linear weights as LLM.int8 (bitsandbytes; frozen), the head
            (core.layers: depth 0) kept in `torch_dtype`.
        device: Where bitsandbytes quantizes (load_in_8bit / load_in_4bit only; default CPU).
        load_in_4bit: QLoRA's base: the base model's Linear weights as 4-bit NF4 with double quantization
            (bitsandbytes; frozen), computing in `torch_dtype`; the head kept in `torch_dtype`.

    Returns:
        An AutoModelForSequenceClassification. A checkpoint that already has a head of another
        size gets a fresh one (ignore_mismatched_sizes); a same-sized head is kept as trained.
        A classifier domainft exported (continual retraining) whose labels are the first of
        `label_names` keeps its head: widened for the new labels, the old rows as trained.

    Raises:
        ValueError: a domainft classifier whose labels are not the first of `label_names`, in order.
    """
    previous = model_label_names(name_or_path)
    names = list(label_names)
    if previous is not None and names[:len(previous)] != previous:
        raise ValueError(f"{name_or_path} is a domainft classifier with labels {previous}: continuing from it needs "
                         f"those labels first, in that order, then new ones (got {names})")
    config = build_config(name_or_path, label_names, trust_remote_code, revision)
    kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
    if load_in_8bit or load_in_4bit:
        meta = build_model_from_config(name_or_path, label_names, trust_remote_code, revision)
        kwargs.update(quantization_kwargs(meta, load_in_8bit, load_in_4bit, torch_dtype, device))
    model = AutoModelForSequenceClassification.from_pretrained(
        name_or_path, config=config, trust_remote_code=trust_remote_code, revision=revision,
        ignore_mismatched_sizes=True, use_safetensors=True, **kwargs)  # never unpickle a .bin
    if previous is not None and len(names) > len(previous):
        widen_head(model, name_or_path, len(previous))
    if load_in_4bit:
        keep_4bit_training_layout(model)
    return model


def quantization_kwargs(meta: PreTrainedModel, load_in_8bit: bool, load_in_4bit: bool,
                        torch_dtype: Optional[torch.dtype], device: Optional[torch.device]) -> dict:
    """from_pretrained's arguments for an LLM.int8 or 4-bit NF4 base (bitsandbytes), the head (core.layers:
    depth 0, read off `meta`, the same architecture on the meta device) kept in `torch_dtype`."""
    from transformers import BitsAndBytesConfig

    from domainft.core.layers import build_layer_map

    # A new head would be quantized too (and have no int8 data to run with); a pretrained LM head is the
    # output layer, which QLoRA keeps in full precision as well.
    skip = build_layer_map(meta).head_module_names()
    if "lm_head" in dict(meta.named_modules()) and "lm_head" not in skip:  # tied to the embeddings: depth L+1
        skip.append("lm_head")
    if load_in_4bit:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=torch_dtype or torch.float32, llm_int8_skip_modules=skip)
    else:
        # DeepSeek's multi-head latent attention feeds kv_b_proj a 4-D tensor, which LLM.int8's CPU kernel
        # (bitsandbytes 0.50) cannot take: that small projection stays in full precision.
        if any(n.endswith(".kv_b_proj") for n, _ in meta.named_modules()):
            skip = [*skip, "kv_b_proj"]
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return {"quantization_config": config, "device_map": {"": str(device or "cpu")}}


def keep_4bit_training_layout(model: torch.nn.Module) -> None:
    """bitsandbytes repacks a 4-bit weight in place for its CPU inference kernel on the first forward
    without gradients (eval): that needs out_features divisible by 32 and in_features by 64, and
    afterwards no gradient flows through the layer any more (seen with bitsandbytes 0.50), while
    training resumes after each eval on the same weights. Keep the one layout training uses."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def build_model_from_config(name_or_path: str, label_names: Sequence[str], trust_remote_code: bool = False,
                            revision: Optional[str] = None, meta: bool = True) -> PreTrainedModel:
    """The architecture without pretrained weights.

    Args:
        name_or_path: Local directory or hub name (only config.json is read).
        label_names: Class names in id order.
        trust_remote_code: Allow model code shipped with the checkpoint.
        revision: Hub revision to pin.
        meta: Build on the meta device (no memory, no init: for planning, counting parameters,
            building a LayerMap). False: real, randomly initialised CPU tensors (e.g. to load a
            state dict into).

    Returns:
        An AutoModelForSequenceClassification.
    """
    config = build_config(name_or_path, label_names, trust_remote_code, revision)
    if meta:
        with torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    return AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)


def build_tokenizer(name_or_path: str, trust_remote_code: bool = False,
                    revision: Optional[str] = None) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer (fast when it has one): `domainft.data.tokenize.load_tokenizer`, the
    one loader prepare, training and export share. Raises UserError when it cannot be loaded."""
    return load_tokenizer(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
