"""The set-up step of a worker: everything it builds before its first epoch, and the per-step hook.

`build_run` turns the validated config into a `WorkerRun`: model, layer map, thaw schedule,
parameter groups with their LR lambdas, the gradient stop and the DeepSpeed engine, this worker's
dataset shards and the trainer state a checkpoint carries.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import ray.train
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from domainft.config import Config
from domainft.core import (GradientStop, build_layer_map, build_model, build_param_groups, freeze_never_trained,
                           group_lr_lambdas, lowest_trainable_depth, resolve_warmup_steps, thaw_schedule)
from domainft.core.batching import pad_batch
from domainft.core.geometry import Geometry, geometry
from domainft.core.peft import apply_peft, peft_spec
from domainft.engine.ds_config import build_ds_config

CKPT_TAG = "ds"
STATE_FILE = "domainft_state.json"


def say(message: str) -> None:
    """One line on the driver's console. Ray Train patches `print` in workers to also log it, which
    shows every line twice; writing to the stream directly shows it once."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


class PadCollate(NumpyBatchCollateFn):
    """Dynamic padding (core.batching.pad_batch) as the collate class Ray Data asks for."""

    def __init__(self, pad_id: int = 0):
        self.pad_id = pad_id

    def __call__(self, batch):
        return pad_batch(batch, self.pad_id)


@dataclass
class TrainerState:
    """Everything besides the DeepSpeed engine that a restart needs; saved by rank 0 in each checkpoint."""

    epoch: int = 0
    global_step: int = 0
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None
    epochs_without_improvement: int = 0
    stopped_early: Optional[int] = None  # the epoch after which early stopping ended the run
    history: list[dict] = field(default_factory=list)
    lr_trace: list[dict] = field(default_factory=list)
    unfreeze_events: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    identity: dict = field(default_factory=dict)  # config.identity.run_identity of the run
    resumed_from: list[dict] = field(default_factory=list)  # {"epoch", "step"} of every restore
    trainable_params: int = 0  # in the optimizer (trained at some point of the run)
    total_params: int = 0  # of the model as trained (adapters included)

    def to_dict(self) -> dict:
        return asdict(self)

    def trained_params(self) -> list[str]:
        return [n for g in self.groups for n in g["param_names"]]


class Progress:
    """Rank 0's periodic progress line; the loss is fetched from the device only every N steps."""

    def __init__(self, every: int, geo: Geometry):
        self.every, self.geo = every, geo
        self.t0, self.start_step, self.warm_time, self.warm_step = time.time(), 0, None, None

    def start_epoch(self, step: int) -> None:
        self.t0, self.start_step = time.time(), step
        self.warm_time, self.warm_step = None, None

    def mark(self, step: int) -> None:
        # Steady-state throughput starts after a few steps (allocator warm-up, first collectives).
        if self.warm_time is None and step - self.start_step >= min(3, max(1, self.geo.steps_per_epoch // 4)):
            self.warm_time, self.warm_step = time.time(), step

    def samples_per_s(self, step: int) -> float:
        if self.warm_time is None or step == self.warm_step:
            return (step - self.start_step) * self.geo.global_batch / max(time.time() - self.t0, 1e-9)
        return (step - self.warm_step) * self.geo.global_batch / max(time.time() - self.warm_time, 1e-9)

    def line(self, step: int, epoch: int, epochs: int, loss: torch.Tensor, head_lr: float) -> Optional[str]:
        if step % self.every and step != self.geo.total_steps:
            return None
        rate = (step - self.start_step) * self.geo.global_batch / max(time.time() - self.t0, 1e-9)
        # .item() is a host sync: only here, every N steps.
        return (f"[train] epoch {epoch}/{epochs} step {step}/{self.geo.total_steps} loss {loss.item():.4f} "
                f"lr(head) {head_lr:.2e} {rate:.1f} samples/s")


@dataclass
class WorkerRun:
    cfg: Config
    label_names: list[str]
    rank: int
    world: int
    device: torch.device
    geo: Geometry
    schedule: dict[int, Optional[int]]
    groups: list[dict]
    layer_map: Any
    stop: GradientStop
    engine: Any
    state: TrainerState
    identity: dict
    train_shard: Any
    eval_shard: Any
    pad_id: int
    progress: Progress
    failpoint: Optional[str] = None

    def lowest_trainable(self, step: int) -> int:
        return lowest_trainable_depth(self.schedule, step)

    def group_lrs(self) -> dict[str, float]:
        # Two groups per depth (decay / no decay) share an LR: report one per depth name.
        out: dict[str, float] = {}
        for g, lr in zip(self.groups, self.engine.lr_scheduler.get_last_lr()):
            out.setdefault(g["name"], float(lr))
        return out

    def on_step(self, step: int, loss: torch.Tensor, epoch: int) -> None:
        """After each optimizer step: thaw what is due (fresh optimizer state), trace LRs, progress."""
        from domainft.engine.zero import apply_thaws

        t = self.cfg.train
        for depth in apply_thaws(self.engine, self.stop, self.schedule, self.groups, step):
            event = {"step": step, "depth": depth, "name": self.layer_map.depth_label(depth)}
            self.state.unfreeze_events.append(event)
            if self.rank == 0:
                say(f"[unfreeze] step {step}: {event['name']} (depth {depth}) is now trainable")
        trace_every = max(1, self.geo.total_steps // 500)  # a fine LR trace for the plot, at most ~500 points
        self.progress.mark(step)
        if self.rank != 0 or (step % trace_every and step % t.log_every_steps):
            return
        lrs = self.group_lrs()
        self.state.lr_trace.append({"step": step + 1, "lrs": lrs})  # the LR the next update uses
        line = self.progress.line(step, epoch, t.epochs, loss, lrs.get("head", next(iter(lrs.values()), 0.0)))
        if line:
            say(line)


def build_run(cfg: Config, data: dict, identity: dict, failpoint: Optional[str] = None) -> WorkerRun:
    """Build everything for this worker (see the module docstring). `data` is the prepared splits'
    summary from the driver: label_names, train_rows, pad_token_id."""
    from domainft.engine.build import build_engine
    from domainft.engine.zero import fresh_start

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    t, op, uf = cfg.train, cfg.optim, cfg.unfreeze
    torch.manual_seed(t.seed)
    _write_pid(cfg.output_dir, rank)

    geo = geometry(data["train_rows"], world, t.batch_size, t.grad_accum, t.epochs, t.max_steps_per_epoch)
    model = build_model(cfg.model.name_or_path, data["label_names"], trust_remote_code=cfg.model.trust_remote_code,
                        revision=cfg.model.revision, load_in_8bit=cfg.model.load_in_8bit, device=device)
    model = apply_peft(model, peft_spec(cfg.peft.model_dump()))  # adapters get their layer's depth
    lmap = build_layer_map(model)
    schedule = thaw_schedule(lmap.num_layers, uf.initial_layers, geo.steps_per_epoch,
                             every_epochs=uf.every_epochs, every_steps=uf.every_steps,
                             train_top_fraction=uf.train_top_fraction, param_counts=lmap.param_counts(model))
    # Layers that would thaw only after the last step are frozen for the whole run: they get no
    # optimizer state at all (memory) and no backward.
    schedule = {d: (s if s is not None and s < geo.total_steps else None) for d, s in schedule.items()}
    freeze_never_trained(model, lmap, schedule)
    groups = build_param_groups(model, lmap, op.lr, op.layer_decay, op.head_lr_mult, op.weight_decay, op.layer_lrs)
    lambdas = group_lr_lambdas([schedule[g["depth"]] for g in groups], geo.total_steps,
                               resolve_warmup_steps(geo.total_steps, op.warmup_ratio, op.warmup_steps),
                               op.schedule, op.min_lr_ratio, uf.thaw_warmup_steps)
    stop = GradientStop(model, lmap)
    stop.set_lowest_trainable(lowest_trainable_depth(schedule, 0))
    ds_config = build_ds_config(cfg.deepspeed.zero_stage, t.precision, t.batch_size, t.grad_accum, world,
                                t.max_grad_norm, cfg.deepspeed.offload_optimizer, cfg.deepspeed.offload_params,
                                on_gpu=device.type == "cuda", overrides=cfg.deepspeed.overrides)
    model.to(device)  # before the optimizer exists, so a fused CUDA AdamW can be chosen
    # Counted before DeepSpeed partitions the parameters (ZeRO-3 leaves each rank a shard).
    counts = {"trainable_params": sum(p.numel() for g in groups for p in g["params"]),
              "total_params": sum(p.numel() for p in model.parameters())}
    engine = build_engine(model, groups, lambdas, ds_config, op.betas, op.eps, eight_bit=op.eight_bit)
    fresh_start(engine)
    state = TrainerState(identity=identity, **counts, groups=[
        {"name": g["name"], "depth": g["depth"], "decay": g["decay"], "params": sum(p.numel() for p in g["params"]),
         "peak_lr": g["initial_lr"], "thaw_step": schedule[g["depth"]], "param_names": g["param_names"]}
        for g in groups])
    run = WorkerRun(cfg=cfg, label_names=data["label_names"], rank=rank, world=world, device=device, geo=geo,
                    schedule=schedule, groups=groups, layer_map=lmap, stop=stop, engine=engine, state=state,
                    identity=identity, train_shard=ray.train.get_dataset_shard("train"),
                    eval_shard=ray.train.get_dataset_shard("eval"), pad_id=int(data.get("pad_token_id") or 0),
                    progress=Progress(t.log_every_steps, geo), failpoint=failpoint)
    if rank == 0 and not ray.train.get_checkpoint():
        state.lr_trace.append({"step": 1, "lrs": run.group_lrs()})
        say(f"[train] {geo.describe(world, t.batch_size, t.grad_accum)}")
        say("[lr] step 1: " + " ".join(f"{k} {v:.2e}" for k, v in state.lr_trace[0]["lrs"].items()))
    return run


def _write_pid(output_dir: str, rank: int) -> None:
    # Lets operators (and the failure test) find a worker process; harmless elsewhere.
    if "://" in output_dir:
        return
    d = os.path.join(output_dir, "workers")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"rank{rank}.pid"), "w") as f:
        f.write(str(os.getpid()))
