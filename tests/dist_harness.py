"""Run a function on N real torch.distributed (gloo) processes, for DeepSpeed tests without Ray.

`run_world(fn, world, *args)` spawns `world` processes; each calls `fn(rank, world, *args)` after
joining the process group. An exception in any rank fails the call with that rank's traceback.
`build_engine_for_test` builds a real DeepSpeed engine the way a worker does (distributed/worker_setup.py's
order: model, PEFT, layer map, frozen-for-the-run parameters, groups, LR lambdas, gradient stop).
"""
import os
import socket
import traceback

import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, errors, fn, args, device):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), DS_ACCELERATOR=device,
                      OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    if device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    except BaseException:
        errors.put((rank, traceback.format_exc()))
        raise
    finally:
        dist.destroy_process_group()


def run_world(fn, world: int, *args, device: str = "cpu") -> None:
    """`device="cuda"`: rank r on GPU r, nccl and DeepSpeed's CUDA accelerator (gloo and CPU otherwise)."""
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    try:
        mp.start_processes(_entry, args=(world, _free_port(), errors, fn, args, device), nprocs=world, join=True,
                           start_method="spawn")
    except Exception as e:
        detail = []
        while not errors.empty():
            rank, tb = errors.get()
            detail.append(f"--- rank {rank} ---\n{tb}")
        raise AssertionError("\n".join(detail) or str(e)) from None


LABELS = ["a", "b", "c"]


def batch_for_test(rank: int, step: int, n: int = 4):
    import torch

    g = torch.Generator().manual_seed(1000 * rank + step)
    ids = torch.randint(1000, 1100, (n, 12), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 0] % 3}


def build_engine_for_test(model_dir, schedule, stage, precision, world, total_steps, max_grad_norm=0.0,
                          offload=(False, False), peft=None, eight_bit=False, lr=1e-3, load_in_4bit=False):
    """(engine, groups, gradient stop) for a model folder; `peft` is a core.peft.PeftSpec or None;
    `load_in_4bit`: the base as 4-bit NF4 (QLoRA, with a LoRA `peft`)."""
    import torch

    from domainft.core import (GradientStop, build_layer_map, build_model, build_param_groups, freeze_never_trained,
                               group_lr_lambdas, lowest_trainable_depth)
    from domainft.core.peft import apply_peft
    from domainft.engine.build import build_engine
    from domainft.engine.ds_config import build_ds_config
    from domainft.engine.zero import fresh_start

    torch.manual_seed(0)
    model = build_model(str(model_dir), LABELS, load_in_4bit=load_in_4bit)
    if peft is not None:
        model = apply_peft(model, peft)
    lmap = build_layer_map(model)
    freeze_never_trained(model, lmap, schedule)
    groups = build_param_groups(model, lmap, lr=lr, layer_decay=0.9, weight_decay=0.01)
    lambdas = group_lr_lambdas([schedule[g["depth"]] for g in groups], total_steps, 0, "constant", 0.0, 0)
    stop = GradientStop(model, lmap)
    stop.set_lowest_trainable(lowest_trainable_depth(schedule, 0))
    ds = build_ds_config(stage, precision, 4, 1, world, max_grad_norm, offload_optimizer=offload[0],
                         offload_params=offload[1])
    engine = build_engine(model, groups, lambdas, ds, eight_bit=eight_bit)
    fresh_start(engine)
    return engine, groups, stop


def train_and_checkpoint(engine, groups, rank, checkpoint_dir, steps=2):
    """Train `steps` steps, then save a checkpoint on every rank (collective, then a barrier).

    Returns:
        (names of the trained parameters, their full fp32 masters before the save).
    """
    import torch.distributed as dist

    from domainft.engine.zero import full_fp32_params

    for step in range(steps):
        engine.backward(engine(**batch_for_test(rank, step)).loss)
        engine.step()
    trained = [n for g in groups for n in g["param_names"]]
    ref = full_fp32_params(engine, trained)
    engine.save_checkpoint(checkpoint_dir, tag="ds")
    dist.barrier()
    return trained, ref
