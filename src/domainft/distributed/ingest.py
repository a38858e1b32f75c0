"""The prepared splits into a Ray Train run: how each is sharded over the workers, and how a worker's
batches are padded (the task's collate)."""
from __future__ import annotations

from typing import Callable

import pyarrow as pa
import pyarrow.dataset as pads
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


# Splits up to this size in memory (both together) are read once by the driver into the object store (Ray
# serializes each block's slice only); larger ones stream from their files. A streamed split is read again
# every epoch: a few seconds of Ray Data tasks per epoch, more than a small fine-tuning set's training.
IN_MEMORY_SPLIT_BYTES = 256 * 1024**2


def split_datasets(spec: RunSpec) -> dict:
    """The run's train and eval splits as Ray Datasets of the task's example columns."""
    cols = list(get_task(spec.task).example_columns)
    # Per-operator bars from inside the workers would interleave with the training progress lines.
    ray.data.DataContext.get_current().enable_progress_bars = False
    paths = {"train": spec.data.train_dir, "eval": spec.data.eval_dir}
    files = {name: pads.dataset(path, format="parquet") for name, path in paths.items()}
    size = sum(_in_memory_bytes(ds, cols) for ds in files.values())
    if size <= min(IN_MEMORY_SPLIT_BYTES, ray.cluster_resources().get("object_store_memory", 0) / 4):
        blocks = 4 * spec.ray.num_workers  # the eval split is shared out by blocks: a few per worker
        return {name: ray.data.from_arrow(_cut(ds.to_table(columns=cols), blocks)) for name, ds in files.items()}
    print(f"[train] the splits ({size / 1024**2:.0f} MiB in memory) stream from their files every epoch")
    datasets = {name: ray.data.read_parquet(path).select_columns(cols) for name, path in paths.items()}
    # Ray Data read tasks need a CPU the training workers don't hold, or they wait forever (a silent
    # hang). When the workers leave under one CPU free, read everything into the object store first.
    free = ray.cluster_resources().get("CPU", 0) - spec.ray.num_workers * spec.ray.cpus_per_worker
    if free < 1:
        print(f"[train] {free:.1f} CPU left for Ray Data beside the workers: materializing the splits first")
        datasets = {name: ds.materialize() for name, ds in datasets.items()}
    return datasets


# Bytes per value in memory of Parquet's fixed-width physical types.
_WIDTH = {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4, "INT64": 8, "DOUBLE": 8, "INT96": 12}


def _in_memory_bytes(ds: pads.Dataset, cols: list[str]) -> int:
    """About what the columns take in memory, from the Parquet footers (no data read): values x width for
    fixed-width types (token ids; the encoded page size would undercount dictionary-encoded ids many
    times), the uncompressed page size for the rest."""
    total = 0
    for fragment in ds.get_fragments():
        meta = fragment.metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for i in range(group.num_columns):
                chunk = group.column(i)
                if chunk.path_in_schema.split(".")[0] in cols:
                    total += max(chunk.num_values * _WIDTH.get(chunk.physical_type, 0), chunk.total_uncompressed_size)
    return total


def _cut(table: pa.Table, blocks: int) -> list[pa.Table]:
    step = max(1, -(-table.num_rows // blocks))
    return [table.slice(i, step) for i in range(0, table.num_rows, step)] or [table]
