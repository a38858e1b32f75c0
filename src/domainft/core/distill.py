"""Knowledge distillation in plain PyTorch: the loss, and a student built from the teacher.

Loss (Hinton et al. 2015): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels),
plus an optional hidden-state term: MSE between each student layer's output and the teacher layer
it was initialised from (TinyBERT / DistilBERT's cosine-style intermediate matching).

A student is the teacher's architecture with fewer layers (the kept layers copied, DistilBERT's
init) and/or a narrower hidden size (every weight initialised from the teacher's leading
dimensions: a pruning-style init that keeps the embeddings' first coordinates and each kept
head whole). Nothing here knows about Ray or DeepSpeed.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from domainft.core.layers import build_layer_map

# Config attributes that carry the width of a BERT-like encoder, by family (DistilBERT names them differently).
_WIDTH = {"distilbert": ("dim", "hidden_dim", "n_heads", "n_layers")}
_DEFAULT_WIDTH = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels), batch mean.

    The T^2 keeps the soft term's gradient scale independent of T (Hinton et al.).
    """
    s, t = student_logits.float(), teacher_logits.float()
    soft = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                    reduction="batchmean") * temperature**2
    hard = F.cross_entropy(s, labels)
    return alpha * soft + (1.0 - alpha) * hard


def hidden_matching_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                         layer_map: Sequence[int], attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each student layer output against its teacher layer, over real tokens.

    Args:
        student_hidden, teacher_hidden: `output_hidden_states` (embeddings first, then each layer).
        layer_map: For student layer i (bottom = 0), the teacher layer it matches.
        attention_mask: [B, T]; padding positions do not count.
    """
    mask = attention_mask.unsqueeze(-1).float()
    total = torch.zeros((), device=attention_mask.device)
    for i, j in enumerate(layer_map):
        diff = (student_hidden[i + 1].float() - teacher_hidden[j + 1].float()) ** 2 * mask
        total = total + diff.sum() / (mask.sum() * diff.shape[-1]).clamp(min=1)
    return total / max(len(layer_map), 1)


def distill_loss_fn(teacher: nn.Module, temperature: float, alpha: float, hidden_weight: float = 0.0,
                    layer_map: Optional[Sequence[int]] = None) -> Callable[[Any, Mapping[str, torch.Tensor]], torch.Tensor]:
    """A `loss_fn(output, batch)` for core.loop.train_epoch. The teacher runs once per micro batch,
    without autograd, in its own dtype (bf16 on a GPU)."""
    if hidden_weight > 0 and layer_map is None:
        raise ValueError("hidden-state matching needs the student-to-teacher layer map")

    def loss_fn(output, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        output_hidden_states=hidden_weight > 0)
        loss = distillation_loss(output.logits, t.logits, batch["labels"], temperature, alpha)
        if hidden_weight > 0:
            loss = loss + hidden_weight * hidden_matching_loss(output.hidden_states, t.hidden_states, layer_map,
                                                               batch["attention_mask"])
        return loss

    return loss_fn


def width_keys(model_type: str) -> tuple[str, str, str, str]:
    """(hidden, intermediate, heads, layers) config attribute names of a family."""
    return _WIDTH.get(model_type, _DEFAULT_WIDTH)


def student_config(teacher_config, layers: Optional[Sequence[int]] = None, hidden_size: Optional[int] = None):
    """The student's config: the teacher's, with len(layers) layers and/or `hidden_size` (heads of the
    teacher's head size; intermediate size scaled in proportion).

    Raises:
        ValueError: A layer index out of range, repeated or unordered; a hidden size not narrower
            than the teacher's or not a multiple of its head size.
    """
    h_key, i_key, n_key, l_key = width_keys(teacher_config.model_type)
    cfg = copy.deepcopy(teacher_config)
    n_layers = getattr(teacher_config, l_key)
    if layers is not None:
        if not layers or sorted(set(layers)) != list(layers) or layers[0] < 0 or layers[-1] >= n_layers:
            raise ValueError(f"student_layers {list(layers)}: need increasing, distinct teacher layers in 0..{n_layers - 1}")
        setattr(cfg, l_key, len(layers))
    if hidden_size is not None:
        hidden, heads = getattr(teacher_config, h_key), getattr(teacher_config, n_key)
        head = hidden // heads
        if hidden_size >= hidden or hidden_size % head:
            raise ValueError(f"student_hidden_size {hidden_size}: must be below the teacher's {hidden} and a multiple "
                             f"of its head size {head}")
        setattr(cfg, h_key, hidden_size)
        setattr(cfg, n_key, hidden_size // head)
        setattr(cfg, i_key, getattr(teacher_config, i_key) * hidden_size // hidden)
        if hasattr(cfg, "embedding_size") and getattr(cfg, "embedding_size", None) == hidden:  # ELECTRA
            cfg.embedding_size = hidden_size
    return cfg


def _slice_into(target: torch.Tensor, source: torch.Tensor) -> None:
    """Copy the leading block of `source` that fits `target` (the whole tensor when shapes match)."""
    index = tuple(slice(0, min(t, s)) for t, s in zip(target.shape, source.shape))
    with torch.no_grad():
        target.zero_()
        target[index].copy_(source[index])


def init_student_from_teacher(student: nn.Module, teacher: nn.Module, layers: Optional[Sequence[int]] = None) -> int:
    """Initialise `student` (built from `student_config`) from `teacher`'s weights.

    Student layer i takes teacher layer layers[i] (all layers in order when None); embeddings and the
    head map by name; narrower tensors take the teacher's leading dimensions.

    Returns:
        The number of student parameters initialised from the teacher (all of them, unless the
        architectures do not match by name, which is an error).

    Raises:
        ValueError: A student parameter has no teacher counterpart.
    """
    s_map, t_map = build_layer_map(student), build_layer_map(teacher)
    keep = list(layers) if layers is not None else list(range(t_map.num_layers))
    t_params = dict(teacher.named_parameters())
    s_layer_prefix = {s_map.block_module_names[s_map.num_layers - i] + ".": i for i in range(s_map.num_layers)}
    done, missing = 0, []
    for name, param in student.named_parameters():
        source_name = name
        for prefix, i in s_layer_prefix.items():
            if name.startswith(prefix):
                source_name = t_map.block_module_names[t_map.num_layers - keep[i]] + "." + name[len(prefix):]
                break
        source = t_params.get(source_name)
        if source is None or source.ndim != param.ndim:
            missing.append(name)
            continue
        _slice_into(param.data, source.data)
        done += 1
    if missing:
        raise ValueError(f"student parameters without a teacher counterpart: {missing[:10]}")
    return done


def layer_pairs(student_layers: int, teacher_config) -> list[int]:
    """For a student of `student_layers` layers not built by layer selection: student layer i matches
    teacher layer round((i + 1) * L_t / L_s) - 1 (evenly spread, top matched to top)."""
    n = getattr(teacher_config, width_keys(teacher_config.model_type)[3])
    return [round((i + 1) * n / student_layers) - 1 for i in range(student_layers)]
