"""Activation memory of one training micro batch, from a model's config.json: plain arithmetic, no torch.

Source: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"
(arXiv 2205.05198), section 4.1. Without tensor or sequence parallelism a transformer layer keeps, in 16-bit
precision, s*b*h*(34 + 5*a*s/h) bytes for its backward pass (s sequence length, b micro batch, h hidden
size, a attention heads):

- attention, 11sbh + 5as^2b: the QKV input 2sbh, Q and K 4sbh, V 2sbh, the output projection's input
  2sbh and its dropout mask sbh; the softmax output 2as^2b, its dropout mask as^2b and the dropout output
  2as^2b;
- MLP (width 4h), 19sbh: its input 2sbh, the GeLU input 8sbh and output 8sbh, the dropout mask sbh;
- the two LayerNorms' inputs, 4sbh.

With full activation recomputation (gradient checkpointing) only each layer's input, 2sbh, is kept, and one
layer's activations while it is recomputed in the backward pass.

`layer_activation_bytes` counts the same tensors from the widths a config gives, so the count is
Korthikanti's exactly for a GPT/BERT layer, and follows the architecture elsewhere. Each rule below was
checked against what PyTorch saves for backward (a saved-tensors hook on tiny models of every kind of layer,
tests/unit/planning/test_activations.py: within 3% per layer, fp32 and bf16, full fine-tuning and LoRA):

- 16-bit values take 2 bytes, fp32 ones 4 (`train.precision: fp32`); dropout masks 1 byte (CUDA's fused
  dropout keeps a bool mask; the CPU kernel keeps it in the value dtype), and only where the config's dropout
  probability is above 0 (decoder LLMs have none);
- transformers' RMSNorm (the decoders') keeps its input upcast to fp32 and the normalised value in the
  compute dtype: 6 bytes per value under bf16, where Korthikanti's LayerNorm keeps 2;
- grouped-query attention: transformers repeats K and V to every query head before attention (eager
  attention, and SDPA whenever a padding mask is given: every padded classification batch), and the copies
  are what attention keeps, so K and V count at the query width unless `repeat_kv=False` (FlashAttention-2,
  SDPA without a mask); Qwen3 / Gemma-3 also keep their per-head Q and K norms' inputs;
- DeepSeek's multi-head latent attention keeps the query and the per-head keys (heads x (nope + rope)),
  the values (heads x v_head_dim) and the compressed latents (kv_a's output, its normalised latent, kv_b's
  input; the same for the query latent where q_lora_rank is set); DeBERTa's disentangled attention keeps its
  c2p and p2c scores against the 2 x span relative positions;
- a gated MLP (SwiGLU, `down(act(gate(x)) * up(x))`) keeps 4 tensors of its width (gate and up outputs, the
  activation, the product) where GeLU's keeps 2;
- a mixture-of-experts layer keeps, per token and chosen expert (only the top-k run on a token), the copy
  of its input sent there, that expert's MLP tensors and its output kept for the routing weight; the shared
  experts' MLP tensors; the router's fp32 probabilities and top-k index bookkeeping (and DeepSeek's
  router its input, upcast to fp32);
- fused attention (SDPA / FlashAttention, transformers' default where the model supports it) keeps no a*s^2
  score matrices, only the fp32 log-sum-exp per query and head (Dao et al. 2022); eager attention (DeBERTa,
  or a model loaded with attn_implementation="eager") keeps them as above; the decoders' eager attention
  takes the softmax in fp32 and keeps it besides its 16-bit copy;
- a layer whose own weights are frozen (LoRA, QLoRA, prompt tuning) only passes the gradient on: the inputs
  its Linears and norm weights would need for their weight gradients are not kept (PyTorch saves a tensor
  only for a gradient that is needed), so it keeps Q, K, V, the scores, the norms' inputs and the MLP
  activation's inputs; LoRA then adds, per adapted Linear, the dropped-out copy of its input and the mask
  (without dropout: the input itself), and the r-wide output of lora_A (what peft's
  `lora_B(lora_A(dropout(x)))` saves; adapters in the training dtype, as DeepSpeed casts the whole model).

Not counted: the embeddings' own activations (the bottom layer's input is counted there), the norms' fp32
statistics per token, the backward pass's transient gradient buffers, allocator fragmentation and the CUDA
context. Frozen layers below the lowest layer that trains keep nothing (no gradient flows there); every layer
above it does, trainable or not, because the gradient passes through it. The sequence length is the
configured maximum (`data.max_length`): batches padded to a shorter longest row keep less.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence

BYTES_PER_VALUE = {"fp32": 4, "bf16": 2, "fp16": 2}
ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "electra", "deberta-v2")


@dataclass(frozen=True)
class LayerShape:
    """The widths of one transformer layer that set what it keeps for the backward pass.

    Attributes:
        hidden: h, the residual stream's width.
        heads: a, the query heads.
        q_width, k_width, v_width: the widths of Q, K and V as attention uses them.
        o_width: the output projection's input width (heads x value head size).
        latent_width: MLA's compressed query and key/value latents.
        frozen_latent_width: of those, what a layer with frozen weights keeps (the latent norms' inputs).
        qk_norm_width: Qwen3 / Gemma-3 normalise Q and K per head (an RMSNorm over q_width + the unrepeated
            key width).
        mlp_width: the intermediate width of a dense MLP (0: none, a mixture-of-experts layer).
        gated: SwiGLU-style MLPs (gate and up projections), else one activation (GeLU).
        num_experts, experts_per_token, expert_width: a mixture-of-experts layer's routed experts (E, top-k,
            each expert's intermediate width); 0 in a dense layer.
        shared_width: the always-on shared experts' total intermediate width.
        shared_gate: Qwen2-MoE's sigmoid gate on the shared experts keeps their output.
        router_fp32_input: DeepSeek's router upcasts its input to fp32 (a copy it keeps under bf16/fp16).
        relative_maps, relative_span: DeBERTa's disentangled attention: its c2p / p2c maps (0-2) and the span
            of relative positions on each side (position_buckets, else max_relative_positions).
        norms: normalisation layers (2; Gemma-2/3 have 4).
        rms_norm: transformers' RMSNorm (decoders), which keeps its input in fp32; else LayerNorm.
        fp32_norm_output: Gemma's RMSNorm also keeps the normalised value in fp32.
        softmax_fp32: the decoders' eager attention takes the softmax in fp32 and keeps it and its 16-bit copy.
        attention_dropout, hidden_dropout: whether dropout masks are kept (probability above 0).
        adapter_input_width: LoRA: the summed input widths of the adapted Linears. With dropout each keeps its
            dropped-out input and the mask; without, lora_A keeps the input itself, counted once per adapter (an
            upper bound where adapters share an input, as q_proj and v_proj do).
        adapter_dropout: LoRA's dropout probability is above 0.
        adapter_rank_width: LoRA: the summed ranks of the adapted Linears (lora_A's outputs).
    """

    hidden: int
    heads: int
    q_width: int
    k_width: int
    v_width: int
    o_width: int
    latent_width: int = 0
    frozen_latent_width: int = 0
    qk_norm_width: int = 0
    mlp_width: int = 0
    gated: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    expert_width: int = 0
    shared_width: int = 0
    shared_gate: bool = False
    router_fp32_input: bool = False
    relative_maps: int = 0
    relative_span: int = 0
    norms: int = 2
    rms_norm: bool = False
    fp32_norm_output: bool = False
    softmax_fp32: bool = False
    attention_dropout: bool = False
    hidden_dropout: bool = False
    adapter_input_width: int = 0
    adapter_dropout: bool = True
    adapter_rank_width: int = 0


def _mlp_intermediate(width: int, gated: bool, bytes_per_value: int, tokens: int, frozen: bool = False) -> int:
    """An MLP's intermediate tensors: GeLU's input and output (2), or SwiGLU's gate, act(gate), up, product (4);
    with frozen weights the last one, the down projection's input, is not kept."""
    return ((4 if gated else 2) - (1 if frozen else 0)) * bytes_per_value * tokens * width


def _norm_bytes(layer: LayerShape, bytes_per_value: int, tokens: int, frozen: bool) -> int:
    """One norm: LayerNorm keeps its input; transformers' RMSNorm its input upcast to fp32 and, for its weight's
    gradient, the normalised value in the compute dtype. The fp32 statistics per token (4-8 bytes) are left out,
    as in the paper."""
    if not layer.rms_norm:
        return bytes_per_value * tokens * layer.hidden
    normalised = 0 if frozen else 4 if layer.fp32_norm_output else bytes_per_value
    return (4 + normalised) * tokens * layer.hidden


def _relative_bytes(layer: LayerShape, seq_len: int, micro_batch: int, bytes_per_value: int) -> int:
    """DeBERTa's c2p / p2c: per map the scores against 2 x span relative positions (kept for the gather into the
    s x s map), the gather's int64 index (s x s, shared by the batch and heads) and the position projections;
    the p2c key copy; the bool attention mask of masked_fill."""
    if not layer.relative_maps:
        return 0
    e, s, b, maps, width = bytes_per_value, seq_len, micro_batch, layer.relative_maps, 2 * layer.relative_span
    per_map = e * s * b * layer.heads * width + 8 * s * s + e * b * width * layer.hidden
    return maps * per_map + (e * s * b * layer.hidden if maps > 1 else 0) + b * s * s


def layer_activation_bytes(layer: LayerShape, seq_len: int, micro_batch: int, bytes_per_value: int,
                           fused_attention: bool = True, frozen: bool = False) -> int:
    """Bytes one layer keeps for the backward pass (no recomputation), Korthikanti et al.'s count per tensor.

    Args:
        layer: Its widths.
        seq_len: s, tokens per sequence.
        micro_batch: b, sequences per micro batch on one GPU.
        bytes_per_value: 2 (bf16/fp16) or 4 (fp32).
        fused_attention: SDPA/FlashAttention: no a*s^2 score maps kept, only the fp32 log-sum-exp.
        frozen: The layer's own weights are frozen (LoRA, QLoRA, prompt tuning): the gradient only passes
            through it, so the inputs of its Linears (and of the norms' weights) are not kept, only what the
            backward through the activations needs (Q, K, V, scores, the MLP activation's inputs); the
            adapters' own tensors (`adapter_*`) come on top.
    """
    e, t, h = bytes_per_value, seq_len * micro_batch, layer.hidden
    norms = layer.norms * _norm_bytes(layer, e, t, frozen)
    linear_inputs = 0 if frozen else h + layer.o_width  # what the QKV and output projections read
    latent = layer.frozen_latent_width if frozen else layer.latent_width
    attention = e * t * (linear_inputs + layer.q_width + layer.k_width + layer.v_width + latent)
    attention += (4 + e) * t * layer.qk_norm_width
    attention += t * h if layer.hidden_dropout else 0  # the output projection's dropout mask
    if fused_attention:
        attention += 4 * t * layer.heads  # FlashAttention keeps the fp32 log-sum-exp per query and head
    else:
        maps = layer.heads * seq_len * t  # a * s^2 * b
        attention += (4 + e if layer.softmax_fp32 and e < 4 else e) * maps  # the softmax output
        attention += maps * (1 + e) if layer.attention_dropout else 0  # its dropout mask and output
    attention += _relative_bytes(layer, seq_len, micro_batch, e)
    mlp = (0 if frozen else e * t * h) + (t * h if layer.hidden_dropout else 0)  # the MLP's input, dropout mask
    if layer.mlp_width:
        mlp += _mlp_intermediate(layer.mlp_width, layer.gated, e, t, frozen)
    if layer.experts_per_token:
        k = layer.experts_per_token
        # the router: its probabilities, the top-k index bookkeeping, DeepSeek's fp32 copy of its input
        mlp += 4 * t * layer.num_experts + 3 * 8 * t * k
        mlp += 4 * t * h if layer.router_fp32_input and e < 4 and not frozen else 0
        # per token and chosen expert: the input sent to it (for the expert's weight gradient), its MLP, and its
        # output, kept for the gradient of the routing weight (which reaches the layer's input through the router)
        mlp += k * ((1 if frozen else 2) * e * t * h + _mlp_intermediate(layer.expert_width, layer.gated, e, t, frozen))
    if layer.shared_width:
        mlp += _mlp_intermediate(layer.shared_width, layer.gated, e, t, frozen)
        mlp += e * t * h if layer.shared_gate else 0
    mask = 1 if layer.adapter_dropout else 0
    adapters = (mask + e) * t * layer.adapter_input_width + e * t * layer.adapter_rank_width
    return norms + attention + mlp + adapters


def korthikanti_layer_bytes(seq_len: int, micro_batch: int, hidden: int, heads: int) -> int:
    """The paper's closed form for a GPT layer in 16-bit, s*b*h*(34 + 5*a*s/h), for comparison."""
    s, b, h, a = seq_len, micro_batch, hidden, heads
    return s * b * h * 34 + 5 * a * s * s * b


def head_activation_bytes(seq_len: int, micro_batch: int, hidden: int, num_outputs: int, bytes_per_value: int,
                          logits_per_token: bool, final_norm: bool) -> int:
    """What the head keeps: the final RMSNorm's fp32 input and normalised value and the score layer's input
    (decoders), the logits and their fp32 copy for the loss.

    A decoder classifier (transformers' *ForSequenceClassification) scores every token and then picks the
    last real one (`logits_per_token`); an encoder scores its pooled first token. A language-model head would
    be the per-token case with num_outputs = the vocabulary, where this term dominates.
    """
    e, t = bytes_per_value, seq_len * micro_batch
    rows = t if logits_per_token else micro_batch
    return ((4 + 2 * e) * t * hidden if final_norm else 0) + e * rows * num_outputs + 4 * micro_batch * num_outputs


def activation_memory(layers: Sequence[LayerShape], seq_len: int, micro_batch: int, precision: str,
                      kept_layers: int, checkpointing: bool = False, fused_attention: bool = True,
                      head_bytes: int = 0, frozen_layers: bool = False) -> dict:
    """Bytes of activations one GPU keeps for a micro batch's backward pass.

    Args:
        layers: The model's layers, bottom first (`layer_shapes`).
        seq_len, micro_batch: s and b (`data.max_length`, `train.batch_size`).
        precision: "fp32", "bf16" or "fp16".
        kept_layers: How many layers, from the top, the backward pass goes through: down to the lowest one
            that trains (all of them when the embeddings train); the frozen ones below keep nothing.
        checkpointing: Gradient checkpointing (full recomputation): each kept layer keeps its input only,
            plus one layer's activations while it is recomputed.
        fused_attention: See `layer_activation_bytes`.
        head_bytes: `head_activation_bytes` (the head always trains here).
        frozen_layers: The layers' own weights are frozen (see `layer_activation_bytes`).

    Returns:
        {"kept_layers", "layer_max" (the largest kept layer's bytes), "layers" (bytes of all kept layers),
         "head", "total"}.
    """
    if precision not in BYTES_PER_VALUE:
        raise ValueError(f"precision must be one of {tuple(BYTES_PER_VALUE)}, got {precision!r}")
    if not 0 <= kept_layers <= len(layers):
        raise ValueError(f"kept_layers must be 0..{len(layers)}, got {kept_layers}")
    e = BYTES_PER_VALUE[precision]
    kept = list(layers[len(layers) - kept_layers:])
    full = [layer_activation_bytes(layer, seq_len, micro_batch, e, fused_attention, frozen_layers) for layer in kept]
    layer_max = max(full, default=0)
    if checkpointing:
        kept_bytes = sum(e * seq_len * micro_batch * layer.hidden for layer in kept) + layer_max
    else:
        kept_bytes = sum(full)
    return {"kept_layers": kept_layers, "layer_max": layer_max, "layers": kept_bytes, "head": head_bytes,
            "total": kept_bytes + head_bytes}


def _get(config: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    """The first of `keys` that the config sets (not None): families spell the same width differently."""
    return next((config[k] for k in keys if config.get(k) is not None), default)


def moe_routing(config: Mapping[str, Any]) -> Optional[tuple[int, int]]:
    """(routed experts, experts per token) of a mixture-of-experts config, None for a dense one."""
    experts = _get(config, "n_routed_experts", "num_local_experts", "num_experts")
    top_k = config.get("num_experts_per_tok")
    return (int(experts), int(top_k)) if experts and top_k else None


def layer_shapes(config: Mapping[str, Any], repeat_kv: bool = True) -> list[LayerShape]:
    """Every layer's widths, bottom first, from a config.json (or `PretrainedConfig.to_dict()`).

    Knows the families of domainft.families: the BERT-like encoders, DistilBERT, DeBERTa-v2, and the decoder
    LLMs (Llama, Mistral, Qwen2/3, Gemma, Phi-3; Mixtral, Qwen2/3-MoE, DeepSeek-V2/V3).

    Args:
        config: The model's config.
        repeat_kv: Grouped-query attention's keys and values are repeated to every query head before attention,
            and those copies are what attention keeps: transformers does so in eager attention and in SDPA
            whenever there is a padding mask (every padded classification batch). False: kept at their own
            width (FlashAttention-2, SDPA without a mask).

    Raises:
        ValueError: Another model_type.
    """
    model_type = config.get("model_type")
    if model_type in ENCODER_TYPES:
        return _encoder_layers(config, model_type)
    if model_type == "distilbert":
        dim, heads = config["dim"], config["n_heads"]
        layer = LayerShape(hidden=dim, heads=heads, q_width=dim, k_width=dim, v_width=dim, o_width=dim,
                           mlp_width=config["hidden_dim"], attention_dropout=config.get("attention_dropout", 0) > 0,
                           hidden_dropout=config.get("dropout", 0) > 0)
        return [layer] * config["n_layers"]
    if model_type in ("deepseek_v2", "deepseek_v3"):
        return _deepseek_layers(config)
    if model_type in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "gemma", "gemma2",
                      "gemma3_text", "phi3"):
        return _decoder_layers(config, model_type, repeat_kv)
    raise ValueError(f"no activation count for model_type {model_type!r}")


def _encoder_layers(config: Mapping[str, Any], model_type: str) -> list[LayerShape]:
    h, heads = config["hidden_size"], config["num_attention_heads"]
    maps = span = 0
    if model_type == "deberta-v2" and config.get("relative_attention"):
        maps = len(config.get("pos_att_type") or [])
        span = config.get("position_buckets") or 0
        span = span if span > 0 else config.get("max_relative_positions") or 0
        span = span if span > 0 else config.get("max_position_embeddings", 512)
    layer = LayerShape(hidden=h, heads=heads, q_width=h, k_width=h, v_width=h, o_width=h, relative_maps=maps,
                       relative_span=span, mlp_width=config["intermediate_size"],
                       attention_dropout=config.get("attention_probs_dropout_prob", 0) > 0,
                       hidden_dropout=config.get("hidden_dropout_prob", 0) > 0)
    return [layer] * config["num_hidden_layers"]


def _decoder_layers(config: Mapping[str, Any], model_type: str, repeat_kv: bool) -> list[LayerShape]:
    h, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    own_kv = (config.get("num_key_value_heads") or heads) * head_dim
    kv = heads * head_dim if repeat_kv else own_kv
    qk_norm = heads * head_dim + own_kv if model_type in ("qwen3", "qwen3_moe", "gemma3_text") else 0
    base = LayerShape(hidden=h, heads=heads, q_width=heads * head_dim, k_width=kv, v_width=kv,
                      o_width=heads * head_dim, qk_norm_width=qk_norm, mlp_width=config["intermediate_size"],
                      gated=True, rms_norm=True, softmax_fp32=True, fp32_norm_output=model_type.startswith("gemma"),
                      norms=4 if model_type in ("gemma2", "gemma3_text") else 2,
                      attention_dropout=(config.get("attention_dropout") or 0) > 0)
    routing = moe_routing(config)
    if routing is None:
        return [base] * config["num_hidden_layers"]
    experts, top_k = routing
    if model_type == "mixtral":
        moe = replace(base, mlp_width=0, num_experts=experts, experts_per_token=top_k,
                      expert_width=config["intermediate_size"])
        return [moe] * config["num_hidden_layers"]
    # Qwen2-MoE / Qwen3-MoE: a layer is sparse unless listed in mlp_only_layers, every decoder_sparse_step-th
    moe = replace(base, mlp_width=0, num_experts=experts, experts_per_token=top_k,
                  expert_width=config["moe_intermediate_size"],
                  shared_width=config.get("shared_expert_intermediate_size") or 0,
                  shared_gate=bool(config.get("shared_expert_intermediate_size")))
    dense_only, step = set(config.get("mlp_only_layers") or []), config.get("decoder_sparse_step") or 1
    return [moe if i not in dense_only and (i + 1) % step == 0 else base for i in range(config["num_hidden_layers"])]


def _deepseek_layers(config: Mapping[str, Any]) -> list[LayerShape]:
    """Multi-head latent attention (DeepSeek-V2 paper, arXiv 2405.04434, section 2.1) and DeepSeekMoE: the
    first `first_k_dense_replace` layers dense, the others routed plus shared experts (transformers 5). MLA has
    as many key and value heads as query heads, so nothing is repeated."""
    h, heads = config["hidden_size"], config["num_attention_heads"]
    qk = config["qk_nope_head_dim"] + config["qk_rope_head_dim"]
    v = config["v_head_dim"]
    rank, q_rank = config["kv_lora_rank"], config.get("q_lora_rank") or 0
    # kv_a's output (latent + rope key; its norm's input), the normalised latent, kv_b's input; the same three
    # of the query latent when there is one
    latent = rank + config["qk_rope_head_dim"] + 2 * rank + 3 * q_rank
    dense = LayerShape(hidden=h, heads=heads, q_width=heads * qk, k_width=heads * qk, v_width=heads * v,
                       o_width=heads * v, latent_width=latent,
                       frozen_latent_width=rank + config["qk_rope_head_dim"] + q_rank,
                       mlp_width=config["intermediate_size"], gated=True,
                       rms_norm=True, softmax_fp32=True, attention_dropout=(config.get("attention_dropout") or 0) > 0)
    routing = moe_routing(config)
    if routing is None:
        return [dense] * config["num_hidden_layers"]
    experts, top_k = routing
    moe = replace(dense, mlp_width=0, num_experts=experts, experts_per_token=top_k, router_fp32_input=True,
                  expert_width=config["moe_intermediate_size"],
                  shared_width=(config.get("n_shared_experts") or 0) * config["moe_intermediate_size"])
    first_dense = config.get("first_k_dense_replace") or 0
    return [dense if i < first_dense else moe for i in range(config["num_hidden_layers"])]
