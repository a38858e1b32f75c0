"""What each Ray Train worker runs, as named steps: set up, restore, then per epoch fit, evaluate,
save and report.

Reads only its argument (a plain dict), re-validated here: this also catches bad Tune samples.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
from typing import Any

import ray.train

from domainft.config import validate_dict
from domainft.config.identity import identity_differences
from domainft.core import metrics_from_confusion
from domainft.core.loop import evaluate, train_epoch
from domainft.distributed.recipe import CKPT_TAG, STATE_FILE, PadCollate, TrainerState, WorkerRun, build_run
from domainft.summary import EPOCH_HEADER, epoch_row
from domainft.errors import UserError


def train_fn_per_worker(loop_config: dict[str, Any]) -> None:
    # Ray Train logs every report at INFO in the worker; our own progress lines say more, once.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    run = build_run(validate_dict(loop_config["config"], source="train_loop_config", check_paths=False),
                    loop_config["data"], loop_config.get("identity", {}), loop_config.get("progress"),
                    loop_config.get("failpoint"))
    restore(run)
    for epoch in range(run.state.epoch + 1, run.cfg.train.epochs + 1):
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
        state = TrainerState(**json.loads(open(os.path.join(d, STATE_FILE)).read()))
        differ = identity_differences(state.identity, run.identity) if state.identity else []
        if differ:  # the driver checks this before fit(); here in case a checkpoint came another way
            raise UserError("the checkpoint to resume was made with another config: " + "; ".join(differ))
        run.engine.load_checkpoint(d, tag=CKPT_TAG)
    run.state = state
    run.state.resumed_from.append({"epoch": state.epoch, "step": run.engine.global_steps})
    run.stop.set_lowest_trainable(run.lowest_trainable(run.engine.global_steps))
    t = run.cfg.train
    left = ("nothing left to train" if state.epoch >= t.epochs or state.stopped_early
            else f"continuing at epoch {state.epoch + 1}")
    run.say(f"[train] resumed from the checkpoint of epoch {state.epoch} (step {run.engine.global_steps}): {left}")


def fit_epoch(run: WorkerRun, epoch: int) -> dict[str, float]:
    """One pass over this worker's train shard: exactly the geometry's micro batches on every rank."""
    t = run.cfg.train
    run.engine.train()
    run.progress.start_epoch(run.engine.global_steps)
    batches = run.train_shard.iter_torch_batches(
        batch_size=t.batch_size, collate_fn=PadCollate(run.pad_id), drop_last=True,
        local_shuffle_buffer_size=max(256, 4 * t.batch_size), local_shuffle_seed=t.seed + epoch)
    stats = train_epoch(run.engine, batches, run.geo.micro_batches_per_epoch, run.device,
                        lambda step, loss: run.on_step(step, loss, epoch), loss_fn=run.loss_fn,
                        forward_kwargs=run.forward_kwargs)
    stats["train_samples_per_s"] = run.progress.samples_per_s(run.engine.global_steps)
    return stats


def evaluate_epoch(run: WorkerRun, epoch: int, train_stats: dict[str, float]) -> dict:
    """Score the eval split (each rank its own shard), update best / early stopping, return the record."""
    t, state = run.cfg.train, run.state
    run.engine.eval()
    batches = run.eval_shard.iter_torch_batches(batch_size=t.eval_batch_size or 2 * t.batch_size,
                                                collate_fn=PadCollate(run.pad_id))
    name = f"eval {epoch}"
    if run.rank == 0:
        run.reporter.bar(name, run.eval_rows, "rows")
    cm, eval_loss, rows = evaluate(run.engine, batches, len(run.label_names), run.device, run.world,
                                   on_batch=lambda n: run.reporter.advance(name, n))
    if run.rank == 0:
        run.reporter.close(name)
    m = metrics_from_confusion(cm.numpy(), run.label_names)
    record = {"epoch": epoch, "global_step": run.engine.global_steps, "train_loss": train_stats["train_loss"],
              "train_samples_per_s": train_stats["train_samples_per_s"], "eval_loss": eval_loss, "eval_rows": rows,
              "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "per_class": m["per_class"],
              "confusion": cm.tolist(), "lowest_trainable": run.lowest_trainable(run.engine.global_steps)}
    state.history.append(record)
    state.epoch, state.global_step = epoch, run.engine.global_steps
    value = eval_loss if t.metric_for_best == "loss" else m[t.metric_for_best]
    better = state.best_metric is None or (value < state.best_metric if t.metric_for_best == "loss"
                                           else value > state.best_metric)
    if better:
        state.best_metric, state.best_epoch, state.epochs_without_improvement = value, epoch, 0
    else:
        state.epochs_without_improvement += 1
    if t.early_stopping_patience and state.epochs_without_improvement >= t.early_stopping_patience:
        state.stopped_early = epoch  # saved with this epoch's checkpoint: a resubmission trains no further
    if epoch == 1 or not state.history[:-1]:
        run.say(EPOCH_HEADER)
    run.say(epoch_row(record))
    if state.stopped_early:
        run.say(f"[train] early stop: no improvement in {state.epochs_without_improvement} epochs")
    return record


def save_and_report(run: WorkerRun, record: dict) -> None:
    """Every rank saves its own ZeRO shard and reports it: Ray merges them into one checkpoint."""
    metrics = {k: v for k, v in record.items() if k not in ("per_class", "confusion")}
    metrics["loss"] = record["eval_loss"]
    with tempfile.TemporaryDirectory(prefix="domainft_ckpt_") as d:
        run.engine.save_checkpoint(d, tag=CKPT_TAG)
        if run.rank == 0:
            with open(os.path.join(d, STATE_FILE), "w") as f:
                json.dump(run.state.to_dict(), f)
        _failpoint(run, "checkpoint", record["epoch"])
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=f"epoch_{record['epoch']:03d}")


def _failpoint(run: WorkerRun, where: str, epoch: int) -> None:
    """Fault injection for the restart tests (`DOMAINFT_FAILPOINT=checkpoint:RANK:EPOCH` on the driver):
    that rank kills itself mid-checkpoint, once (a marker file in output_dir/workers/ says it fired)."""
    if not run.failpoint or run.failpoint != f"{where}:{run.rank}:{epoch}":
        return
    marker = os.path.join(run.cfg.output_dir, "workers", f"failpoint-{where}-{run.rank}-{epoch}")
    if os.path.exists(marker):
        return
    open(marker, "w").close()
    os.kill(os.getpid(), signal.SIGKILL)
