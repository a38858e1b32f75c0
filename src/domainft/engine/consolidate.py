"""Turn a DeepSpeed checkpoint (every rank's shard, merged by Ray) into the fp32 weights the run trained.

Only trained parameters come out: DeepSpeed keeps parameters frozen for the whole run in one stage
and not another (ZeRO 1 drops them; ZeRO 2/3 keep them, in bf16 under bf16), so the exporter takes
those from the pretrained model instead (core/export.py), where they are exact by definition.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch


def trained_fp32_state_dict(checkpoint_dir: str, tag: str,
                            group_names: Sequence[Sequence[str]]) -> dict[str, torch.Tensor]:
    """fp32 master weights of the parameters the optimizer held: `group_names` lists them per
    optimizer group, in the order the groups were built (`build_param_groups`' "param_names").

    - ZeRO 1-3: DeepSpeed's own consolidation of every rank's partitions (zero_to_fp32).
    - ZeRO 0, bf16: the fp32 masters in the optimizer state, not the bf16 module copies.
    - ZeRO 0, fp32: the module weights (the optimizer updates them directly).

    These files were written by our own workers (trusted); user-supplied model weights are only ever
    read from safetensors.

    Raises:
        FileNotFoundError: No checkpoint `tag` in `checkpoint_dir`.
        ValueError: The checkpoint lacks a trained parameter (a bug, never a user error).
    """
    names = [n for group in group_names for n in group]
    tag_dir = os.path.join(checkpoint_dir, tag)
    if not os.path.isdir(tag_dir):
        raise FileNotFoundError(f"no DeepSpeed checkpoint tag {tag!r} in {checkpoint_dir}")
    if any(f.endswith("optim_states.pt") and "zero_pp_rank" in f for f in os.listdir(tag_dir)):
        from domainft.engine.build import ensure_accelerator_env

        ensure_accelerator_env()
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        sd = get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=tag, exclude_frozen_parameters=True)
    else:
        states = torch.load(os.path.join(tag_dir, "mp_rank_00_model_states.pt"), map_location="cpu",
                            weights_only=False)
        sd = dict(states["module"])
        optim = states.get("optimizer") or {}
        if "fp32_groups" in optim:  # bf16 at ZeRO 0: per-group lists of fp32 masters, in group order
            masters = optim["fp32_groups"]
            if [len(m) for m in masters] != [len(g) for g in group_names]:
                raise ValueError(f"checkpoint {tag_dir}: its optimizer groups do not match the run's groups")
            for group, values in zip(group_names, masters):
                sd.update(zip(group, values))
    lost = [n for n in names if n not in sd]
    if lost:
        raise ValueError(f"checkpoint {tag_dir} lacks trained parameters {lost[:20]}")
    return {n: sd[n].float() for n in names}
