"""Batch geometry: the one place that turns rows, workers and batch settings into optimizer steps.

`plan`, the driver and every worker use it, so that what `plan` prints is what the run does (and
every rank computes the same step counts: unequal counts hang the collectives).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Geometry:
    rows_per_worker: int
    global_batch: int  # samples per optimizer step, all workers together
    micro_batches_per_epoch: int  # per worker
    steps_per_epoch: int
    total_steps: int

    def describe(self, world: int, micro_batch: int, grad_accum: int) -> str:
        return (f"global batch {self.global_batch} = {world} worker(s) x batch {micro_batch} x grad_accum "
                f"{grad_accum}; {self.steps_per_epoch} optimizer steps/epoch, {self.total_steps} in all")


def geometry(train_rows: int, world: int, micro_batch: int, grad_accum: int, epochs: int,
             max_steps_per_epoch: Optional[int] = None) -> Geometry:
    """Steps per epoch when the train split is cut into `world` equal shards (Ray Data's
    `streaming_split(equal=True)` gives each worker train_rows // world rows) and partial
    optimizer steps at the end of a shard are dropped.

    Raises:
        ValueError: Not even one optimizer step per epoch.
    """
    rows_per_worker = train_rows // world
    steps = rows_per_worker // (micro_batch * grad_accum)
    if max_steps_per_epoch:
        steps = min(steps, max_steps_per_epoch)
    if steps < 1:
        raise ValueError(f"{train_rows} train rows are too few for {world} workers x batch {micro_batch} x "
                         f"grad_accum {grad_accum}: lower train.batch_size or scaling.num_workers")
    return Geometry(rows_per_worker, micro_batch * grad_accum * world, steps * grad_accum, steps, steps * epochs)
