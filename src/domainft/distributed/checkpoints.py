"""A run's checkpoints: what each one holds besides DeepSpeed's shards (the trainer state), and which runs
may continue from which.

Every epoch every rank saves its DeepSpeed shard under tag `ds` and rank 0 adds `domainft_state.json`;
Ray merges them into one checkpoint folder `epoch_NNN` of the run. A run is named from its identity
(config keys that change its trajectory, and the prepared data's fingerprint), so an identical
resubmission resumes, a changed config starts afresh, and an explicit `run.name` whose checkpoints were
made by another config is refused, naming each key that differs.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

from domainft.config.identity import identity_differences
from domainft.core.selection import BestSoFar
from domainft.errors import UserError

CKPT_TAG = "ds"
STATE_FILE = "domainft_state.json"


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

    @classmethod
    def read(cls, checkpoint_dir: str) -> "TrainerState":
        with open(os.path.join(checkpoint_dir, STATE_FILE), encoding="utf-8") as f:
            return cls(**json.load(f))

    def write(self, checkpoint_dir: str) -> None:
        with open(os.path.join(checkpoint_dir, STATE_FILE), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)

    @property
    def best(self) -> BestSoFar:
        return BestSoFar(self.best_metric, self.best_epoch, self.epochs_without_improvement, self.stopped_early)

    @best.setter
    def best(self, b: BestSoFar) -> None:
        self.best_metric, self.best_epoch = b.value, b.epoch
        self.epochs_without_improvement, self.stopped_early = b.stale_epochs, b.stopped_early

    def trained_params(self) -> list[str]:
        return [n for g in self.groups for n in g["param_names"]]


def _saved_identities(run_dir: str) -> list[tuple[int, dict]]:
    """(epoch, identity) of each checkpoint Ray kept for a run, latest last."""
    out = []
    for path in glob.glob(os.path.join(glob.escape(run_dir), "epoch_*", STATE_FILE)):
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError):
            continue
        out.append((int(state.get("epoch", 0)), state.get("identity") or {}))
    return sorted(out, key=lambda e: e[0])


def check_resumable(storage: str, name: str, identity: dict, explicit: bool) -> None:
    """Before fit(): a run directory whose checkpoints were made by another config is an error (with an
    explicit name) naming each key that differs; with the default name, a sibling run that differs
    (e.g. only in train.epochs) is announced, since this run starts afresh beside it."""
    if "://" in storage:
        return  # remote storage: the worker compares the identity when it restores
    saved = _saved_identities(os.path.join(storage, name))
    if saved and saved[-1][1]:
        differ = identity_differences(saved[-1][1], identity)
        if differ:
            raise UserError(f"run.name {name!r}: its checkpoints in {os.path.join(storage, name)} were made with "
                            f"another config ({'; '.join(differ)}). The run cannot continue with these settings: "
                            f"use another run.name, or remove that folder to start afresh")
        return
    if explicit:
        return
    prefix = name.rsplit("-", 1)[0] + "-"
    for other in sorted(glob.glob(os.path.join(glob.escape(storage), glob.escape(prefix) + "*"))):
        sib = _saved_identities(other)
        if other.endswith(name) or not sib or not sib[-1][1]:
            continue
        differ = identity_differences(sib[-1][1], identity)
        if len(differ) <= 3:
            print(f"[train] starting afresh as run {name}: {other} holds a run of this output_dir with other "
                  f"settings ({'; '.join(differ)}); it is not continued, since these settings change the "
                  f"run's trajectory (e.g. train.epochs changes the LR and unfreezing schedules)", flush=True)
            return
