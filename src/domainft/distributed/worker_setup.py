"""A Ray Train worker's set-up: everything it builds from the RunSpec before its first epoch.

Three builders, each from the spec alone: the model (the task's class, PEFT, the layer map, depths that
never train in this run frozen), the optimization (parameter groups at the spec's peak LRs, the per-group
LR lambdas, the gradient stop, the DeepSpeed engine) and the data (this worker's shards of the splits and
the task's collate); the task's loss besides. `WorkerRun` holds what the loop (worker.py) uses.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import ray.data
import ray.train
import torch
from torch import nn

from domainft.core import (GradientStop, build_layer_map, build_param_groups, freeze_never_trained, group_lr_lambdas,
                           lowest_trainable_depth)
from domainft.core.layers import LayerMap
from domainft.core.loop import Engine
from domainft.core.peft import apply_peft
from domainft.distributed.checkpoints import TrainerState
from domainft.distributed.ingest import TaskCollate
from domainft.distributed.progress import Progress, Reporter
from domainft.runspec import RunSpec
from domainft.tasks import Task, get_task


@dataclass
class WorkerRun:
    """One worker's run: the spec it was built from and what it built."""

    spec: RunSpec
    task: Task
    rank: int
    world: int
    device: torch.device
    layer_map: LayerMap
    schedule: dict[int, Optional[int]]  # depth -> the step it thaws in this run (None: never)
    groups: list[dict]  # core.param_groups.build_param_groups, in optimizer order
    stop: GradientStop
    engine: Engine  # DeepSpeed's engine (core.loop.Engine is the part the loop uses)
    state: TrainerState
    train_shard: ray.data.DataIterator
    eval_shard: ray.data.DataIterator
    collate: TaskCollate
    loss_fn: Optional[Callable]  # None: the model's own loss
    forward_kwargs: Optional[dict]
    progress: Progress
    reporter: Reporter
    failpoint: Optional[str] = None

    def lowest_trainable(self, step: int) -> int:
        return lowest_trainable_depth(self.schedule, step)

    def group_lrs(self) -> dict[str, float]:
        # Two groups per depth (decay / no decay) share an LR: report one per depth name.
        out: dict[str, float] = {}
        for g, lr in zip(self.groups, self.engine.lr_scheduler.get_last_lr()):
            out.setdefault(g["name"], float(lr))
        return out

    def say(self, line: str) -> None:
        """A line on the driver's console (rank 0 only: every rank would say the same)."""
        if self.rank == 0:
            self.reporter.line(line)


def build_model(spec: RunSpec, task: Task, device: torch.device) -> tuple[nn.Module, LayerMap]:
    """The task's model over the pretrained weights, PEFT applied (adapters get their layer's depth), and
    every parameter at a depth that never thaws in this run frozen: no optimizer state, no backward."""
    m = spec.model
    model = task.build_model(m.name_or_path, spec.data.label_names, trust_remote_code=m.trust_remote_code,
                             revision=m.revision, load_in_8bit=m.load_in_8bit, load_in_4bit=m.load_in_4bit,
                             device=device)
    if spec.train.gradient_checkpointing:
        # Non-reentrant: it needs no input that requires grad (a frozen embedding's output does not), and the
        # gradient stop's hooks run inside the checkpointed call, so frozen layers still record nothing.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = apply_peft(model, m.peft)
    lmap = build_layer_map(model)
    if lmap.decoder:  # a decoder classifier pools the last token that is not padding: prepare's pad id
        model.config.pad_token_id = spec.data.pad_token_id
    if (lmap.family, lmap.num_depths) != (m.family, len(spec.depths)):
        raise RuntimeError(f"the worker built a {lmap.family} model with {lmap.num_depths} depths; the run spec has "
                           f"{m.family} with {len(spec.depths)} (a bug)")
    freeze_never_trained(model, lmap, spec.thaw_schedule)
    return model, lmap


def build_optimization(spec: RunSpec, model: nn.Module, lmap: LayerMap,
                       device: torch.device) -> tuple[list[dict], GradientStop, Engine, dict[str, int]]:
    """(parameter groups, gradient stop, DeepSpeed engine, parameter counts) at the spec's LRs and thaw steps."""
    from domainft.engine.build import build_engine
    from domainft.engine.zero import fresh_start

    o, lr, schedule = spec.optimizer, spec.lr, spec.thaw_schedule
    groups = build_param_groups(model, lmap, weight_decay=o.weight_decay, peaks=spec.peak_lrs)
    lambdas = group_lr_lambdas([schedule[g["depth"]] for g in groups], lr.total_steps, lr.warmup_steps, lr.schedule,
                               lr.min_lr_ratio, lr.thaw_warmup_steps)
    stop = GradientStop(model, lmap)
    stop.set_lowest_trainable(lowest_trainable_depth(schedule, 0))
    model.to(device)  # before the optimizer exists, so a fused CUDA AdamW can be chosen
    # Counted before DeepSpeed partitions the parameters (ZeRO-3 leaves each rank a shard).
    counts = {"trainable_params": sum(p.numel() for g in groups for p in g["params"]),
              "total_params": sum(p.numel() for p in model.parameters())}
    engine = build_engine(model, groups, lambdas, spec.deepspeed, o.betas, o.eps, eight_bit=o.eight_bit)
    fresh_start(engine)
    return groups, stop, engine, counts


def build_data(spec: RunSpec, task: Task) -> tuple[ray.data.DataIterator, ray.data.DataIterator, TaskCollate]:
    """This worker's shards of the train and eval splits (distributed/ingest.py decides how they are cut) and
    the task's collate, which pads a batch of examples into model inputs."""
    return (ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("eval"),
            TaskCollate(task.collate, spec.data.pad_token_id))


def setup_worker(spec: RunSpec, hub: Optional[Any] = None, failpoint: Optional[str] = None) -> WorkerRun:
    """Build this worker's run from the spec; `hub` is the driver's ProgressHub (None: lines go to this
    process's stdout)."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if world != spec.ray.num_workers:
        raise RuntimeError(f"{world} workers run a spec made for {spec.ray.num_workers} (a bug)")
    task = get_task(spec.task)
    reporter = Reporter(hub)
    quiet_transformers()
    device = ray.train.torch.get_device()
    torch.manual_seed(spec.train.seed)
    _write_pid(spec.output_dir, rank)
    model, lmap = build_model(spec, task, device)
    groups, stop, engine, counts = build_optimization(spec, model, lmap, device)
    train_shard, eval_shard, collate = build_data(spec, task)
    loss_fn, forward_kwargs = task.build_loss(spec, device)
    schedule = spec.thaw_schedule
    state = TrainerState(identity=spec.identity, **counts, groups=[
        {"name": g["name"], "depth": g["depth"], "decay": g["decay"], "params": sum(p.numel() for p in g["params"]),
         "peak_lr": g["initial_lr"], "thaw_step": schedule[g["depth"]], "param_names": g["param_names"]}
        for g in groups])
    run = WorkerRun(spec=spec, task=task, rank=rank, world=world, device=device, layer_map=lmap,
                    schedule=schedule, groups=groups, stop=stop, engine=engine, state=state,
                    train_shard=train_shard, eval_shard=eval_shard, collate=collate, loss_fn=loss_fn,
                    forward_kwargs=forward_kwargs, progress=Progress(spec.train.log_every_steps, spec.geometry,
                                                                     reporter, rank),
                    reporter=reporter, failpoint=failpoint)
    if rank == 0 and not ray.train.get_checkpoint():
        state.lr_trace.append({"step": 1, "lrs": run.group_lrs()})
        run.say(_announcement(spec))
    return run


def _announcement(spec: RunSpec) -> str:
    t, o = spec.train, spec.optimizer
    line = (f"[train] {spec.geometry.describe(spec.ray.num_workers, t.batch_size, t.grad_accum)}; peak LR "
            f"{o.base_lr * o.lr_scale:.2e}")
    if o.lr_scale != 1.0:
        line += f" (optim.lr x {o.lr_scale:.2f}, {o.lr_scaling} scaling from batch {o.lr_reference_batch})"
    line += f", head x{o.head_lr_mult:g}"
    if spec.loss.get("note"):  # the task's word for a loss other than the model's own
        line += f", {spec.loss['note']}"
    if spec.effective_zero_stage != spec.zero_stage:
        line += f"; ZeRO-{spec.zero_stage} runs as stage 0 on one worker (nothing to partition)"
    return line


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
