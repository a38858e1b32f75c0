"""The model families domainft can train, and the check of a model against them from its config.json alone.

Pure data and a JSON read: no torch, no transformers, so `domainft validate` answers in a blink and an
unsupported architecture (a vision model, a decoder family not listed here) is a user error listing the
supported families before Ray starts or a weight is read. `core/layers.py` reads the same table to split a
model into depths.

Two shapes of model are known: BERT-like encoders (`embeddings`, `encoder.layer`, a pooler) and decoder
LLMs (`embed_tokens`, `layers`, a final `norm`), dense or mixture-of-experts. Both are split the same way:
embeddings deepest, one depth per layer, and the head (pooler or final norm, plus the task head outside
the base model) at depth 0.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class FamilySpec:
    """Where one family keeps its blocks, relative to the base model (`model.base_model`)."""

    base_model_prefix: str
    layers: str  # the nn.ModuleList of encoder layers, bottom (index 0) first
    embeddings: str = "embeddings"  # the input embeddings module, relative to the base model
    embedding_extras: tuple[str, ...] = ()  # modules outside `embeddings` that belong to the embeddings depth
    embedding_outputs: tuple[str, ...] = ()  # of those, the ones whose output feeds the bottom layer
    bottom_layer_extras: tuple[str, ...] = ()  # modules outside the layer list applied right after layer 0
    base_head_modules: tuple[str, ...] = ()  # modules inside the base model that are head (depth 0)
    layer_input_kwargs: tuple[str, ...] = ()  # keyword inputs of every encoder layer made from embedding-depth params
    # (regex on the name inside an encoder layer, kind), first match wins; norms are also found by name
    layer_kinds: tuple[tuple[str, str], ...] = ()
    lora_targets: tuple[str, ...] = ()  # LoRA's default target modules: attention query and value
    prefix_tuning: bool = True  # the attention takes past key values (PEFT prefix tuning works)
    prompt_tuning: bool = True  # virtual tokens prepended to the input embeddings keep the pooled token right
    decoder: bool = False  # a causal LM backbone: last-token pooling, needs a pad token


# BERT's layer: attention.self.{query,key,value}, attention.output.{dense,LayerNorm}, intermediate.dense,
# output.{dense,LayerNorm} (RoBERTa, XLM-R, ELECTRA and DeBERTa-v2 keep the same layout).
_BERT_KINDS = ((r"attention\.output\.LayerNorm\.", "norm"), (r"attention\.", "attention"),
               (r"intermediate\.", "ffn"), (r"output\.LayerNorm\.", "norm"), (r"output\.", "ffn"))
_BERT_LIKE = dict(layers="encoder.layer", base_head_modules=("pooler",), layer_kinds=_BERT_KINDS,
                  lora_targets=("query", "value"))

FAMILIES: dict[str, FamilySpec] = {
    "bert": FamilySpec(base_model_prefix="bert", **_BERT_LIKE),
    "roberta": FamilySpec(base_model_prefix="roberta", **_BERT_LIKE),
    "xlm-roberta": FamilySpec(base_model_prefix="roberta", **_BERT_LIKE),
    # ELECTRA projects small embeddings up to the hidden size in a module next to `embeddings`;
    # it only ever sees embedding outputs, so it is part of the embeddings depth.
    "electra": FamilySpec(base_model_prefix="electra", layers="encoder.layer",
                          embedding_extras=("embeddings_project",), embedding_outputs=("embeddings_project",),
                          layer_kinds=_BERT_KINDS, lora_targets=("query", "value")),
    # DistilBERT's attention ignores past key values: PEFT prefix tuning would train nothing.
    "distilbert": FamilySpec(base_model_prefix="distilbert", layers="transformer.layer",
                             layer_kinds=((r"attention\.", "attention"), (r"(sa|output)_layer_norm\.", "norm"),
                                          (r"ffn\.", "ffn")),
                             lora_targets=("q_lin", "v_lin"), prefix_tuning=False),
    # DeBERTa-v2/v3: the relative-position embeddings (and the encoder-level LayerNorm, which only
    # normalises them) are shared by every layer, so they belong to no single layer; like the
    # absolute position embeddings of BERT they are input representation, so they sit at the
    # embeddings depth: lowest LR under LLRD and thawed last. Because every layer reads them, the
    # gradient stop must also cut the `rel_embeddings` keyword input of each layer.
    # The optional `conv` (deberta-v2-xlarge) mixes layer 0's output with the embeddings right after
    # layer 0, so it is part of the bottom layer's block. Its disentangled attention cannot take
    # past key values of another length than the input (PEFT prefix tuning fails).
    "deberta-v2": FamilySpec(base_model_prefix="deberta", layers="encoder.layer",
                             embedding_extras=("encoder.rel_embeddings", "encoder.LayerNorm"),
                             bottom_layer_extras=("encoder.conv",),
                             layer_input_kwargs=("rel_embeddings",), layer_kinds=_BERT_KINDS,
                             lora_targets=("query_proj", "value_proj"), prefix_tuning=False),
}

# A decoder layer: self_attn.* (q/k/v/o projections; DeepSeek's multi-head latent attention adds q_a_proj,
# q_b_proj, kv_a_proj_with_mqa and kv_b_proj; Phi-3 fuses qkv_proj), mlp.* (a dense gated MLP, or a
# mixture-of-experts block), and RMSNorms (input_layernorm, post_attention_layernorm, q_norm, kv_a_layernorm,
# ...: found by name before these rules). In a mixture-of-experts block the routed experts (transformers 5
# keeps them as 3-D parameters `mlp.experts.gate_up_proj` / `down_proj`), the always-on shared experts
# and the router (`mlp.gate`, Qwen2-MoE's `shared_expert_gate`) are kinds of their own, so `peft.method:
# selective` can train, say, attention and router but not the experts. They all keep their layer's depth.
_DECODER_KINDS = ((r"self_attn\.", "attention"), (r"mlp\.experts\.", "experts"),
                  (r"mlp\.shared_experts?\.", "shared_experts"), (r"mlp\.(gate|shared_expert_gate)\.", "router"),
                  (r"mlp\.", "ffn"))
# LoRA's default targets on decoders: the attention projections the model has (q/k/v/o; MLA's low-rank
# pairs; Phi-3's fused qkv). Names absent from a given model are dropped (DeepSeek-V2-Lite has q_proj,
# V3 q_a_proj and q_b_proj).
_DECODER_LORA = ("q_proj", "k_proj", "v_proj", "o_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj",
                 "qkv_proj")
# Decoders: prefix tuning would need the model's cache classes, and prompt tuning would put the
# classifier's pooled (last) token among right-padded positions: LoRA and selective tuning only.
_DECODER = dict(base_model_prefix="model", layers="layers", embeddings="embed_tokens", base_head_modules=("norm",),
                layer_kinds=_DECODER_KINDS, lora_targets=_DECODER_LORA, prefix_tuning=False, prompt_tuning=False,
                decoder=True)
DECODER_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "deepseek_v2",
                       "deepseek_v3", "gemma", "gemma2", "gemma3_text", "phi3")
FAMILIES.update({model_type: FamilySpec(**_DECODER) for model_type in DECODER_MODEL_TYPES})

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(FAMILIES)


def read_model_config(name_or_path: str, revision: Optional[str] = None) -> dict:
    """A model's config.json as a dict: from a local folder, else from the hub (huggingface_hub, which
    honours HF_HUB_OFFLINE and its cache). Raises OSError or ValueError when it cannot be read."""
    local = os.path.expanduser(name_or_path)
    if os.path.isdir(local):
        path = os.path.join(local, "config.json")
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(name_or_path, "config.json", revision=revision)
        except Exception as e:  # offline, unknown repo, no network: every hub failure reads the same to a user
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise OSError(f"cannot fetch config.json from the hub ({type(e).__name__}: {first}); {hub_hint()}") \
                from None
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a JSON object")
    return config


def hub_hint() -> str:
    """What to do about a hub name that could not be fetched."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE=1 is set: give a local model folder, or set HF_HUB_OFFLINE=0 to download"
    return "check the name on huggingface.co, or give a local model folder (a path starting with /, ./ or ~)"


def family_problems(name_or_path: str, revision: Optional[str] = None, key: str = "model.name_or_path") -> list[str]:
    """Why the model `name_or_path` cannot be trained by domainft, from its config.json alone ([] when it can).

    An architecture outside FAMILIES (a decoder LLM, a vision model) is named with its model_type and
    architectures, and the supported families are listed.
    """
    try:
        config = read_model_config(name_or_path, revision)
    except (OSError, ValueError) as e:
        return [f"{key}: cannot read the config.json of {name_or_path!r}: {e}"]
    model_type = config.get("model_type")
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    if not model_type:
        return [f"{key}: {name_or_path}/config.json has no model_type, so it is not a Hugging Face model config "
                f"(supported model types: {supported})"]
    if model_type not in FAMILIES:
        arch = ", ".join(config.get("architectures") or []) or "no architectures listed"
        return [f"{key}: {name_or_path} is a {model_type!r} model ({arch}); domainft fine-tunes the model "
                f"types {supported}"]
    return []


def position_limit(config: Any) -> Optional[int]:
    """How many token positions the model can take (None: no absolute limit, e.g. DeBERTa-v3's relative
    positions). RoBERTa-style positions start after the padding index, which costs pad_token_id + 1."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None or not getattr(config, "position_biased_input", True):
        return None
    if config.model_type in ("roberta", "xlm-roberta"):
        limit -= (config.pad_token_id or 0) + 1
    return limit
