"""What each Ray Train worker runs, as named steps: set up, restore, then per epoch fit, evaluate,
save and report.

Reads only its argument: the RunSpec as a plain dict (validated again here), the driver's progress hub
and, in the restart tests, a fault-injection point.
"""
from __future__ import annotations

import functools
import logging
import os
import signal
import tempfile
from typing import Any

import ray.train
import torch

from domainft.config.identity import identity_differences
from domainft.core.loop import evaluate, train_epoch
from domainft.core.selection import track_best
from domainft.distributed.checkpoints import CKPT_TAG, TrainerState
from domainft.distributed.worker_setup import WorkerRun, setup_worker
from domainft.engine.zero import apply_thaws
from domainft.errors import UserError
from domainft.runspec import RunSpec


def train_fn_per_worker(loop_config: dict[str, Any]) -> None:
    # Ray Train logs every report at INFO in the worker; our own progress lines say more, once.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    run = setup_worker(RunSpec.from_dict(loop_config["spec"]), loop_config.get("progress"),
                       loop_config.get("failpoint"))
    restore(run)
    for epoch in range(run.state.epoch + 1, run.spec.train.epochs + 1):
        if run.state.stopped_early:
            break
        train_stats = fit_epoch(run, epoch)
        record = evaluate_epoch(run, epoch, train_stats)
        save_and_report(run, record)


def restore(run: WorkerRun) -> None:
    """Load the latest checkpoint Ray hands this worker group, if any (a restart or a resubmission)."""
    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return
    with checkpoint.as_directory() as d:
        state = TrainerState.read(d)
        differ = identity_differences(state.identity, run.spec.identity) if state.identity else []
        if differ:  # the driver checks this before fit(); here in case a checkpoint came another way
            raise UserError("the checkpoint to resume was made with another config: " + "; ".join(differ))
        run.engine.load_checkpoint(d, tag=CKPT_TAG)
    run.state = state
    run.state.resumed_from.append({"epoch": state.epoch, "step": run.engine.global_steps})
    run.stop.set_lowest_trainable(run.lowest_trainable(run.engine.global_steps))
    left = ("nothing left to train" if state.epoch >= run.spec.train.epochs or state.stopped_early
            else f"continuing at epoch {state.epoch + 1}")
    run.say(f"[train] resumed from the checkpoint of epoch {state.epoch} (step {run.engine.global_steps}): {left}")


def fit_epoch(run: WorkerRun, epoch: int) -> dict[str, float]:
    """One pass over this worker's train shard: exactly the geometry's micro batches on every rank."""
    t = run.spec.train
    run.engine.train()
    run.progress.start_epoch(run.engine.global_steps)
    cuda = run.device.type == "cuda"
    # On a GPU, Ray Data's thread pins each batch and copies it to the device ahead of the step, two
    # batches in flight; on CPU one (a second would only compete for the same cores).
    batches = run.train_shard.iter_torch_batches(
        batch_size=t.batch_size, collate_fn=run.collate, drop_last=True,
        local_shuffle_buffer_size=max(256, 4 * t.batch_size), local_shuffle_seed=t.seed + epoch,
        prefetch_batches=2 if cuda else 1, pin_memory=cuda)
    stats = train_epoch(run.engine, batches, run.spec.geometry.micro_batches_per_epoch, run.device,
                        functools.partial(after_step, run), loss_fn=run.loss_fn, forward_kwargs=run.forward_kwargs,
                        count_fn=run.task.token_count, grad_accum=t.grad_accum, world=run.world)
    stats["train_samples_per_s"] = run.progress.samples_per_s(run.engine.global_steps)
    return stats


def after_step(run: WorkerRun, step: int, loss: torch.Tensor) -> None:
    """What follows each optimizer step, in order."""
    # 1. A thaw is due: those depths train from the next update. The gradient stop moves below them and
    #    their groups' optimizer state is reset (stale moments); their LR ramp is in the LR lambdas.
    for depth in apply_thaws(run.engine, run.stop, run.schedule, run.groups, step):
        event = {"step": step, "depth": depth, "name": run.layer_map.depth_label(depth)}
        run.state.unfreeze_events.append(event)
        run.say(f"[unfreeze] step {step}: {event['name']} (depth {depth}) is now trainable")
    # 2. Progress: the bar and throughput (the loss leaves the device only every log_every_steps).
    run.progress.mark(step, loss)
    # 3. The LR of every group, for the plot: a fine trace of at most ~500 points.
    trace_every = max(1, run.spec.geometry.total_steps // 500)
    if run.rank == 0 and (step % trace_every == 0 or step % run.spec.train.log_every_steps == 0):
        run.state.lr_trace.append({"step": step + 1, "lrs": run.group_lrs()})  # the LR the next update uses


def evaluate_epoch(run: WorkerRun, epoch: int, train_stats: dict[str, float]) -> dict:
    """Score the eval split (each rank its own shard), track the best epoch and early stopping, return the
    epoch's record."""
    t, state = run.spec.train, run.state
    run.engine.eval()
    batches = run.eval_shard.iter_torch_batches(batch_size=t.eval_batch_size, collate_fn=run.collate)
    name = f"eval {epoch}"
    if run.rank == 0:
        run.reporter.bar(name, run.spec.data.eval_rows, "rows")
    evaluator = evaluate(run.engine, batches, run.task.evaluator(run.spec, run.device), run.device, run.world,
                         on_batch=lambda n: run.reporter.advance(name, n))
    if run.rank == 0:
        run.reporter.close(name)
    samples = _from_rank0(run, run.task.sample_eval(run.engine.module, run.spec, run.device, epoch, run.rank))
    step = run.engine.global_steps
    record = {"epoch": epoch, "global_step": step, "train_loss": train_stats["train_loss"],
              "train_samples_per_s": train_stats["train_samples_per_s"], **run.task.eval_metrics(evaluator, run.spec),
              **samples, "lowest_trainable": run.lowest_trainable(step)}
    state.history.append(record)
    state.epoch, state.global_step = epoch, step
    value = record["eval_loss"] if t.metric_for_best == "loss" else record[t.metric_for_best]
    state.best = track_best(state.best, epoch, value, t.higher_is_better, t.early_stopping_patience)
    if len(state.history) == 1:
        run.say(run.task.epoch_header)
    run.say(run.task.epoch_row(record))
    if state.stopped_early == epoch:  # saved with this epoch's checkpoint: a resubmission trains no further
        run.say(f"[train] early stop: no improvement in {state.epochs_without_improvement} epochs")
    return record


def _from_rank0(run: WorkerRun, value: dict) -> dict:
    """Rank 0's value on every rank: the best epoch and early stopping must be decided alike everywhere."""
    if run.world == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def save_and_report(run: WorkerRun, record: dict) -> None:
    """Every rank saves its own ZeRO shard and reports it: Ray merges them into one checkpoint."""
    metrics = {k: v for k, v in record.items() if v is None or isinstance(v, (int, float))}  # Ray's metrics: scalars
    metrics["loss"] = record["eval_loss"]
    with tempfile.TemporaryDirectory(prefix="domainft_ckpt_") as d:
        run.engine.save_checkpoint(d, tag=CKPT_TAG)
        if run.rank == 0:
            run.state.write(d)
        _failpoint(run, "checkpoint", record["epoch"])
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=f"epoch_{record['epoch']:03d}")


def _failpoint(run: WorkerRun, where: str, epoch: int) -> None:
    """Fault injection for the restart tests (distributed.trainer.FAILPOINT, set by a test on the driver):
    that rank kills itself mid-checkpoint, once (a marker file in output_dir/workers/ says it fired)."""
    if not run.failpoint or run.failpoint != f"{where}:{run.rank}:{epoch}":
        return
    marker = os.path.join(run.spec.output_dir, "workers", f"failpoint-{where}-{run.rank}-{epoch}")
    if os.path.exists(marker):
        return
    open(marker, "w").close()
    os.kill(os.getpid(), signal.SIGKILL)
