"""The prepared splits into a Ray Train run: how each is sharded over the workers, and how a worker's
batches are padded (the task's collate)."""
from __future__ import annotations

from typing import Callable

import ray
import ray.data
from ray.data.collate_fn import NumpyBatchCollateFn
from ray.train import DataConfig

from domainft.runspec import RunSpec
from domainft.tasks import get_task


class TaskCollate(NumpyBatchCollateFn):
    """The task's collate (dynamic padding) as the collate class Ray Data asks for."""

    def __init__(self, collate: Callable, pad_id: int = 0):
        self.collate, self.pad_id = collate, pad_id

    def __call__(self, batch):
        return self.collate(batch, self.pad_id)


class ExactEvalDataConfig(DataConfig):
    """Both splits are sharded, but differently (a documented extension point of Ray Train).

    - train: `streaming_split(equal=True)`: every rank gets the same number of rows, hence the same
      number of optimizer steps (unequal counts hang the gradient all-reduce).
    - eval: `streaming_split(equal=False)`: every row goes to exactly one rank and none is dropped.
      Giving every rank the whole, unsplit dataset and taking every world-th batch would assume
      that ranks see the same batch order, which Ray Data does not promise for several blocks.
    """

    def __init__(self):
        super().__init__(datasets_to_split=["train", "eval"])

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        output = [{} for _ in range(world_size)]
        for name, ds in datasets.items():
            ds = ds.copy(ds)
            ds.context.execution_options = _ingest_options()
            for rank, shard in enumerate(ds.streaming_split(world_size, equal=name != "eval",
                                                            locality_hints=worker_node_ids)):
                output[rank][name] = shard
        return output


def _ingest_options():
    # DataConfig.default_ingest_options() without its deprecated exclude_resources (a warning per run).
    current = ray.data.DataContext.get_current().execution_options
    return ray.data.ExecutionOptions(resource_limits=current.resource_limits, preserve_order=current.preserve_order,
                                     verbose_progress=current.verbose_progress)


def split_datasets(spec: RunSpec) -> dict:
    """The run's train and eval splits as Ray Datasets of the task's example columns."""
    cols = list(get_task(spec.task).example_columns)
    # Per-operator bars from inside the workers would interleave with the training progress lines.
    ray.data.DataContext.get_current().enable_progress_bars = False
    train = ray.data.read_parquet(spec.data.train_dir).select_columns(cols)
    evals = ray.data.read_parquet(spec.data.eval_dir).select_columns(cols)
    # Ray Data read tasks need a CPU the training workers don't hold, or they wait forever (a silent
    # hang). When the workers leave under one CPU free, read everything into the object store first.
    free = ray.cluster_resources().get("CPU", 0) - spec.ray.num_workers * spec.ray.cpus_per_worker
    if free < 1:
        print(f"[train] {free:.1f} CPU left for Ray Data beside the workers: materializing the splits first")
        train, evals = train.materialize(), evals.materialize()
    return {"train": train, "eval": evals}
