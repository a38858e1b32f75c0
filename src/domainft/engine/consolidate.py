"""Turn a DeepSpeed checkpoint (every rank's shard, merged by Ray) into one full fp32 state dict."""
from __future__ import annotations

import os

import torch


def full_state_dict(checkpoint_dir: str, tag: str) -> dict[str, torch.Tensor]:
    """Consolidate ZeRO 1-3 shards (fp32 master weights) or read the stage-0 module weights.

    These files were written by our own workers (trusted); user-supplied model weights are only ever
    read from safetensors.
    """
    tag_dir = os.path.join(checkpoint_dir, tag)
    if not os.path.isdir(tag_dir):
        raise FileNotFoundError(f"no DeepSpeed checkpoint tag {tag!r} in {checkpoint_dir}")
    if any(f.endswith("optim_states.pt") and "zero_pp_rank" in f for f in os.listdir(tag_dir)):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        sd = get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=tag)
    else:  # ZeRO stage 0: rank 0's model states hold the whole module
        states = torch.load(os.path.join(tag_dir, "mp_rank_00_model_states.pt"), map_location="cpu",
                            weights_only=False)
        sd = states["module"]
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
