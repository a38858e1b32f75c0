"""The set-up step of a worker: everything it builds before its first epoch, and the per-step hook.

`build_run` turns the validated config into a `WorkerRun`: model, layer map, thaw schedule,
parameter groups with their LR lambdas, the gradient stop and the DeepSpeed engine, this worker's
dataset shards and the trainer state a checkpoint carries.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import ray.train
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from domainft.config import Config
from domainft.core import (GradientStop, build_layer_map, build_model, build_param_groups, freeze_never_trained,
                           group_lr_lambdas, lowest_trainable_depth, resolve_warmup_steps, thaw_schedule)
from domainft.core.batching import pad_batch
from domainft.core.geometry import Geometry, geometry
from domainft.core.losses import balanced_class_weights, weighted_cross_entropy
from domainft.core.schedules import batch_lr_scale
from domainft.distributed.progress import Reporter
from domainft.engine.ds_config import build_ds_config

CKPT_TAG = "ds"
STATE_FILE = "domainft_state.json"


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

    def to_dict(self) -> dict:
        return asdict(self)

    def trained_params(self) -> list[str]:
        return [n for g in self.groups for n in g["param_names"]]


class Progress:
    """Throughput for the epoch record, and rank 0's training bar (the loss is fetched from the device
    only every `every` steps: a host sync)."""

    def __init__(self, every: int, geo: Geometry, reporter: Reporter, rank: int):
        self.every, self.geo, self.reporter, self.rank = every, geo, reporter, rank
        self.t0, self.start_step, self.warm_time, self.warm_step = time.time(), 0, None, None
        self.bar_open = False

    def start_epoch(self, step: int) -> None:
        self.t0, self.start_step = time.time(), step
        self.warm_time, self.warm_step = None, None
        if self.rank == 0 and not self.bar_open:
            self.reporter.bar("train", self.geo.total_steps, "steps", initial=step)
            self.bar_open = True

    def mark(self, step: int, loss: torch.Tensor) -> None:
        # Steady-state throughput starts after a few steps (allocator warm-up, first collectives).
        if self.warm_time is None and step - self.start_step >= min(3, max(1, self.geo.steps_per_epoch // 4)):
            self.warm_time, self.warm_step = time.time(), step
        if self.rank != 0:
            return
        postfix = None
        if step % self.every == 0 or step == self.geo.total_steps:
            postfix = f"loss {loss.item():.4f}, {self.samples_per_s(step):.1f} samples/s"  # host sync
        self.reporter.advance("train", 1, postfix)
        if step == self.geo.total_steps:
            self.reporter.close("train")

    def samples_per_s(self, step: int) -> float:
        if self.warm_time is None or step == self.warm_step:
            return (step - self.start_step) * self.geo.global_batch / max(time.time() - self.t0, 1e-9)
        return (step - self.warm_step) * self.geo.global_batch / max(time.time() - self.warm_time, 1e-9)


@dataclass
class WorkerRun:
    cfg: Config
    label_names: list[str]
    eval_rows: int
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
    reporter: Reporter
    failpoint: Optional[str] = None
    loss_fn: Optional[Callable] = None
    forward_kwargs: Optional[dict] = None

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

        for depth in apply_thaws(self.engine, self.stop, self.schedule, self.groups, step):
            event = {"step": step, "depth": depth, "name": self.layer_map.depth_label(depth)}
            self.state.unfreeze_events.append(event)
            self.say(f"[unfreeze] step {step}: {event['name']} (depth {depth}) is now trainable")
        self.progress.mark(step, loss)
        trace_every = max(1, self.geo.total_steps // 500)  # a fine LR trace for the plot, at most ~500 points
        if self.rank == 0 and (step % trace_every == 0 or step % self.cfg.train.log_every_steps == 0):
            self.state.lr_trace.append({"step": step + 1, "lrs": self.group_lrs()})  # the LR the next update uses

    def say(self, line: str) -> None:
        """A line on the driver's console (rank 0 only: every rank would say the same)."""
        if self.rank == 0:
            self.reporter.line(line)


def build_run(cfg: Config, data: dict, identity: dict, hub: Optional[Any] = None,
              failpoint: Optional[str] = None) -> WorkerRun:
    """Build everything for this worker (see the module docstring). `data` is the prepared splits'
    summary from the driver: label_names, train_rows, pad_token_id, class_counts; `hub` the driver's
    ProgressHub (None: lines go to this process's stdout)."""
    from domainft.engine.build import build_engine
    from domainft.engine.zero import fresh_start

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    reporter = Reporter(hub)
    quiet_transformers()
    device = ray.train.torch.get_device()
    t, op, uf = cfg.train, cfg.optim, cfg.unfreeze
    torch.manual_seed(t.seed)
    _write_pid(cfg.output_dir, rank)

    geo = geometry(data["train_rows"], world, t.batch_size, t.grad_accum, t.epochs, t.max_steps_per_epoch)
    model = build_model(cfg.model.name_or_path, data["label_names"], trust_remote_code=cfg.model.trust_remote_code,
                        revision=cfg.model.revision)
    lmap = build_layer_map(model)
    schedule = thaw_schedule(lmap.num_layers, uf.initial_layers, geo.steps_per_epoch,
                             every_epochs=uf.every_epochs, every_steps=uf.every_steps,
                             train_top_fraction=uf.train_top_fraction, param_counts=lmap.param_counts(model))
    # Layers that would thaw only after the last step are frozen for the whole run: they get no
    # optimizer state at all (memory) and no backward.
    schedule = {d: (s if s is not None and s < geo.total_steps else None) for d, s in schedule.items()}
    freeze_never_trained(model, lmap, schedule)
    scale = batch_lr_scale(geo.global_batch, op.lr_reference_batch, op.lr_scaling)
    groups = build_param_groups(model, lmap, op.lr * scale, op.layer_decay, op.head_lr_mult, op.weight_decay,
                                [lr * scale for lr in op.layer_lrs] if op.layer_lrs else None)
    lambdas = group_lr_lambdas([schedule[g["depth"]] for g in groups], geo.total_steps,
                               resolve_warmup_steps(geo.total_steps, op.warmup_ratio, op.warmup_steps),
                               op.schedule, op.min_lr_ratio, uf.thaw_warmup_steps)
    stop = GradientStop(model, lmap)
    stop.set_lowest_trainable(lowest_trainable_depth(schedule, 0))
    ds_config = build_ds_config(cfg.deepspeed.zero_stage, t.precision, t.batch_size, t.grad_accum, world,
                                t.max_grad_norm, cfg.deepspeed.offload_optimizer, cfg.deepspeed.offload_params,
                                on_gpu=device.type == "cuda", overrides=cfg.deepspeed.overrides)
    model.to(device)  # before the optimizer exists, so a fused CUDA AdamW can be chosen
    engine = build_engine(model, groups, lambdas, ds_config, op.betas, op.eps)
    fresh_start(engine)
    state = TrainerState(identity=identity, groups=[
        {"name": g["name"], "depth": g["depth"], "decay": g["decay"], "params": sum(p.numel() for p in g["params"]),
         "peak_lr": g["initial_lr"], "thaw_step": schedule[g["depth"]], "param_names": g["param_names"]}
        for g in groups])
    run = WorkerRun(cfg=cfg, label_names=data["label_names"], eval_rows=int(data.get("eval_rows") or 0), rank=rank, world=world, device=device, geo=geo,
                    schedule=schedule, groups=groups, layer_map=lmap, stop=stop, engine=engine, state=state,
                    identity=identity, train_shard=ray.train.get_dataset_shard("train"),
                    eval_shard=ray.train.get_dataset_shard("eval"), pad_id=int(data.get("pad_token_id") or 0),
                    progress=Progress(t.log_every_steps, geo, reporter, rank), reporter=reporter, failpoint=failpoint)
    if cfg.distill.teacher:
        run.loss_fn, run.forward_kwargs = distillation(cfg, data["label_names"], lmap.num_layers, device)
    elif t.class_weights == "balanced":
        run.loss_fn = weighted_cross_entropy(balanced_class_weights(data["class_counts"]))
    if rank == 0 and not ray.train.get_checkpoint():
        state.lr_trace.append({"step": 1, "lrs": run.group_lrs()})
        run.say(f"[train] {geo.describe(world, t.batch_size, t.grad_accum)}; peak LR {op.lr * scale:.2e}"
                + (f" (optim.lr x {scale:.2f}, {op.lr_scaling} scaling from batch {op.lr_reference_batch})"
                   if scale != 1.0 else "") + f", head x{op.head_lr_mult:g}"
                + (", class-weighted loss" if t.class_weights == "balanced" else ""))
    return run


def distillation(cfg: Config, label_names: list[str], student_layers: int, device: torch.device):
    """(loss_fn, forward kwargs) of a distillation run: the teacher lives in every worker, outside
    DeepSpeed, without gradients (bf16 on a GPU)."""
    from domainft.core.distill import distill_loss_fn, layer_pairs

    d = cfg.distill
    teacher = build_model(d.teacher, label_names, torch_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    teacher.requires_grad_(False)
    teacher.eval().to(device)
    layers = d.student_layers or layer_pairs(student_layers, teacher.config)
    return (distill_loss_fn(teacher, d.temperature, d.alpha, d.hidden_loss, layers),
            {"output_hidden_states": True} if d.hidden_loss > 0 else None)


def quiet_transformers() -> None:
    # Load reports and progress bars would land in this worker's Ray log as noise.
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _write_pid(output_dir: str, rank: int) -> None:
    # Lets operators (and the failure test) find a worker process; harmless elsewhere.
    if "://" in output_dir:
        return
    d = os.path.join(output_dir, "workers")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"rank{rank}.pid"), "w") as f:
        f.write(str(os.getpid()))
