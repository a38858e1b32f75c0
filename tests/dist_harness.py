"""Run a function on N real torch.distributed (gloo) processes, for DeepSpeed tests without Ray.

`run_world(fn, world, *args)` spawns `world` processes; each calls `fn(rank, world, *args)` after
joining the process group. An exception in any rank fails the call with that rank's traceback.
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
