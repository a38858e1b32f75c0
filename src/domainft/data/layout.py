"""Where prepared data lives: the one description of `<output_dir>/data/` that prepare writes and
train, plan, augment, audit and continual training read."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class PreparedLayout:
    """`<output_dir>/data/`: train/ and eval/ Parquet splits (input_ids, label, text, source_id,
    aug_op, is_augmented), data_report.json (written last: its presence means the rest is complete),
    label_map.json, rejects.jsonl (data.on_bad_record: skip), augmented/ and augment_report.json
    (`domainft augment`)."""

    output_dir: str

    @property
    def root(self) -> str:
        return os.path.join(self.output_dir, "data")

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    @property
    def train(self) -> str:
        return self.path("train")

    @property
    def eval(self) -> str:
        return self.path("eval")

    @property
    def report(self) -> str:
        return self.path("data_report.json")

    @property
    def label_map(self) -> str:
        return self.path("label_map.json")

    @property
    def rejects(self) -> str:
        return self.path("rejects.jsonl")

    def parquet_files(self, split: str) -> list[str]:
        """The Parquet files of a split folder (train, eval, augmented), sorted."""
        return sorted(glob.glob(os.path.join(glob.escape(self.path(split)), "*.parquet")))
