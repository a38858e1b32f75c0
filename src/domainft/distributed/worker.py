"""What each Ray Train worker runs: build model, groups, schedules and the DeepSpeed engine; train,
evaluate, checkpoint (every rank) and report, once per epoch.

Reads only its argument (a plain dict), re-validated here: this also catches bad Tune samples.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Optional

import ray.train
import torch

from domainft.config import Config, validate_dict
from domainft.core import (GradientStop, build_layer_map, build_model, build_param_groups, freeze_never_trained,
                           group_lr_lambdas, lowest_trainable_depth, metrics_from_confusion, resolve_warmup_steps,
                           thaw_events, thaw_schedule)
from domainft.core.batching import pad_batch
from domainft.core.loop import evaluate, train_epoch
from domainft.engine.ds_config import build_ds_config

CKPT_TAG = "ds"
STATE_FILE = "domainft_state.json"


@dataclass
class Geometry:
    """Batch arithmetic shared by every rank (equal step counts, or collectives hang)."""

    micro_batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int


def geometry(train_rows: int, world: int, micro_batch: int, grad_accum: int, epochs: int,
             max_steps_per_epoch: Optional[int] = None) -> Geometry:
    rows_per_worker = train_rows // world  # streaming_split(equal=True) gives each worker this many rows
    steps = rows_per_worker // (micro_batch * grad_accum)
    if max_steps_per_epoch:
        steps = min(steps, max_steps_per_epoch)
    if steps < 1:
        raise ValueError(f"{train_rows} train rows are too few for {world} workers x batch {micro_batch} x "
                         f"grad_accum {grad_accum}: lower train.batch_size or scaling.num_workers")
    return Geometry(steps * grad_accum, steps, steps * epochs)


@dataclass
class TrainerState:
    """Everything besides the DeepSpeed engine that a restart needs; saved by rank 0 in each checkpoint."""

    epoch: int = 0
    global_step: int = 0
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None
    epochs_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)
    lr_trace: list[dict] = field(default_factory=list)
    unfreeze_events: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)


def _better(metric: str, value: float, best: Optional[float]) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def say(message: str) -> None:
    """One line on the driver's console. Ray Train patches `print` in workers to also log it, which
    shows every line twice; writing to the stream directly shows it once."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


class Progress:
    """Rank 0's periodic progress line; the loss is fetched from the device only every N steps."""

    def __init__(self, cfg: Config, geo: Geometry, rank: int, world: int):
        self.every, self.geo, self.rank = cfg.train.log_every_steps, geo, rank
        self.samples_per_step = cfg.train.batch_size * cfg.train.grad_accum * world
        self.t0 = time.time()
        self.start_step = 0

    def start_epoch(self, step: int) -> None:
        self.t0, self.start_step = time.time(), step
        self.warm_time, self.warm_step = None, None

    def mark(self, step: int) -> None:
        # Steady-state throughput starts after a few steps (allocator warm-up, first collectives).
        if self.warm_time is None and step - self.start_step >= min(3, max(1, self.geo.steps_per_epoch // 4)):
            self.warm_time, self.warm_step = time.time(), step

    def samples_per_s(self, step: int) -> float:
        if self.warm_time is None or step == self.warm_step:
            return (step - self.start_step) * self.samples_per_step / max(time.time() - self.t0, 1e-9)
        return (step - self.warm_step) * self.samples_per_step / max(time.time() - self.warm_time, 1e-9)

    def maybe_print(self, step: int, epoch: int, epochs: int, loss: torch.Tensor, lrs: dict[str, float]) -> None:
        if self.rank != 0 or (step % self.every and step != self.geo.total_steps):
            return
        done = step - self.start_step
        rate = done * self.samples_per_step / max(time.time() - self.t0, 1e-9)
        head_lr = lrs.get("head", next(iter(lrs.values()), 0.0))
        # .item() is a host sync: only here, every N steps.
        say(f"[train] epoch {epoch}/{epochs} step {step}/{self.geo.total_steps} loss {loss.item():.4f} "
              f"lr(head) {head_lr:.2e} {rate:.1f} samples/s")


def _group_lrs(engine, groups: list[dict]) -> dict[str, float]:
    # Two groups per depth (decay / no decay) share an LR: report one per depth name.
    out: dict[str, float] = {}
    for g, lr in zip(groups, engine.lr_scheduler.get_last_lr()):
        out.setdefault(g["name"], float(lr))
    return out


def _format_lrs(lrs: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.2e}" for k, v in lrs.items())


def train_fn_per_worker(loop_config: dict[str, Any]) -> None:
    # Ray Train logs every report at INFO in the worker; our own progress lines say more, once.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg = validate_dict(loop_config["config"], source="train_loop_config", check_paths=False)
    data = loop_config["data"]
    label_names: list[str] = data["label_names"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    t, op, uf = cfg.train, cfg.optim, cfg.unfreeze
    torch.manual_seed(t.seed)
    _write_pid(cfg.output_dir, rank)

    geo = geometry(data["train_rows"], world, t.batch_size, t.grad_accum, t.epochs, t.max_steps_per_epoch)
    model = build_model(cfg.model.name_or_path, label_names, trust_remote_code=cfg.model.trust_remote_code,
                        revision=cfg.model.revision)
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
    from domainft.engine.build import build_engine

    model.to(device)  # before the optimizer exists, so a fused CUDA AdamW can be chosen
    engine = build_engine(model, groups, lambdas, ds_config, op.betas, op.eps)
    state = TrainerState(groups=[{"name": g["name"], "depth": g["depth"], "decay": g["decay"],
                                  "params": sum(p.numel() for p in g["params"]), "peak_lr": g["initial_lr"],
                                  "thaw_step": schedule[g["depth"]]} for g in groups])

    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            engine.load_checkpoint(d, tag=CKPT_TAG)
            state = TrainerState(**json.loads(open(os.path.join(d, STATE_FILE)).read()))
        stop.set_lowest_trainable(lowest_trainable_depth(schedule, engine.global_steps))
        if rank == 0:
            left = "nothing left to train" if state.epoch >= t.epochs else f"continuing at epoch {state.epoch + 1}"
            say(f"[train] resumed from the checkpoint of epoch {state.epoch} (step {engine.global_steps}): {left}")
    elif rank == 0:
        state.lr_trace.append({"step": 1, "lrs": _group_lrs(engine, groups)})
        say("[lr] step 1: " + _format_lrs(state.lr_trace[0]["lrs"]))

    progress = Progress(cfg, geo, rank, world)
    trace_every = max(1, geo.total_steps // 500)  # a fine LR trace for the plot, at most ~500 points
    train_it, eval_it = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("eval")
    pad_id = int(data.get("pad_token_id") or 0)
    collate = partial(pad_batch, pad_id=pad_id)

    for epoch in range(state.epoch + 1, t.epochs + 1):
        def on_step(step: int, loss: torch.Tensor) -> None:
            for depth in thaw_events(schedule, step - 1, step):
                stop.set_lowest_trainable(lowest_trainable_depth(schedule, step))
                event = {"step": step, "depth": depth, "name": lmap.depth_label(depth)}
                state.unfreeze_events.append(event)
                if rank == 0:
                    say(f"[unfreeze] step {step}: {event['name']} (depth {depth}) is now trainable")
            lrs = _group_lrs(engine, groups)
            if rank == 0 and (step % trace_every == 0 or step % t.log_every_steps == 0):
                state.lr_trace.append({"step": step + 1, "lrs": lrs})  # the LR the next update uses
            if rank == 0 and step % t.log_every_steps == 0:
                say(f"[lr] step {step + 1}: " + _format_lrs(lrs))
            progress.mark(step)
            progress.maybe_print(step, epoch, t.epochs, loss, lrs)

        engine.train()
        progress.start_epoch(engine.global_steps)
        batches = train_it.iter_torch_batches(batch_size=t.batch_size, collate_fn=collate, drop_last=True,
                                              local_shuffle_buffer_size=max(256, 4 * t.batch_size),
                                              local_shuffle_seed=t.seed + epoch)
        train_stats = train_epoch(engine, batches, geo.micro_batches_per_epoch, device, on_step)
        samples_per_s = progress.samples_per_s(engine.global_steps)

        engine.eval()
        eval_batches = eval_it.iter_torch_batches(batch_size=t.eval_batch_size or 2 * t.batch_size,
                                                  collate_fn=collate)
        cm, eval_loss, rows = evaluate(engine, eval_batches, len(label_names), device, rank, world)
        m = metrics_from_confusion(cm.numpy(), label_names)
        record = {"epoch": epoch, "global_step": engine.global_steps, "train_loss": train_stats["train_loss"],
                  "train_samples_per_s": samples_per_s, "eval_loss": eval_loss, "eval_rows": rows, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                  "per_class": m["per_class"], "lowest_trainable": lowest_trainable_depth(schedule, engine.global_steps)}
        state.history.append(record)
        state.epoch, state.global_step = epoch, engine.global_steps
        value = eval_loss if t.metric_for_best == "loss" else m[t.metric_for_best]
        if _better(t.metric_for_best, value, state.best_metric):
            state.best_metric, state.best_epoch, state.epochs_without_improvement = value, epoch, 0
        else:
            state.epochs_without_improvement += 1
        stop_early = bool(t.early_stopping_patience and state.epochs_without_improvement >= t.early_stopping_patience)
        if rank == 0:
            say(f"[eval] epoch {epoch}: loss {eval_loss:.4f} accuracy {m['accuracy']:.4f} "
                  f"macro-F1 {m['macro_f1']:.4f} ({rows} rows)")

        # Every rank saves its own ZeRO shard and reports it: Ray merges them into one checkpoint.
        metrics = {k: v for k, v in record.items() if k != "per_class"}
        metrics["loss"] = eval_loss
        with tempfile.TemporaryDirectory(prefix="domainft_ckpt_") as d:
            engine.save_checkpoint(d, tag=CKPT_TAG)
            if rank == 0:
                with open(os.path.join(d, STATE_FILE), "w") as f:
                    json.dump(asdict(state), f)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                             checkpoint_dir_name=f"epoch_{epoch:03d}")
        if stop_early:
            if rank == 0:
                say(f"[train] early stop: no improvement in {state.epochs_without_improvement} epochs")
            break


def _write_pid(output_dir: str, rank: int) -> None:
    # Lets operators (and the failure test) find a worker process; harmless elsewhere.
    if "://" in output_dir:
        return
    d = os.path.join(output_dir, "workers")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"rank{rank}.pid"), "w") as f:
        f.write(str(os.getpid()))
