"""Ray Train mechanics of one run: the TorchTrainer a RunSpec describes, its fit, and what it left behind.

`domainft train`, A/B arms, distillation, Tune trials and audit folds all run through `fit`; what they do
with the result (best/, metrics.json, a trial's report) is their driver's (domainft.commands).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, TrainingFailedError
from ray.train.torch import TorchTrainer

from domainft import console
from domainft.config import ConfigError
from domainft.distributed.checkpoints import CKPT_TAG, TrainerState, check_resumable
from domainft.distributed.ingest import ExactEvalDataConfig, split_datasets
from domainft.distributed.progress import LiveProgress
from domainft.distributed.worker import train_fn_per_worker
from domainft.errors import UserError
from domainft.runspec import RunSpec


@dataclass
class TrainResult:
    """What a finished run left: its last state (history, LR trace, groups), the best checkpoint and its metrics."""

    state: TrainerState
    best_checkpoint: Any  # ray.train.Checkpoint
    best_metrics: dict

    def best_weights(self) -> dict:
        """The trained fp32 weights of the best checkpoint (every rank's shard consolidated, on this CPU)."""
        from domainft.engine.consolidate import trained_fp32_state_dict

        with self.best_checkpoint.as_directory() as d:
            return trained_fp32_state_dict(d, CKPT_TAG, [g["param_names"] for g in self.state.groups])


# Fault injection, for the restart tests only: "checkpoint:RANK:EPOCH" makes that rank kill itself between
# writing its checkpoint shard and reporting it (distributed/worker.py). Tests set it on this module
# (monkeypatch); the product never does, and reads it from nowhere else (no environment variable).
FAILPOINT: Optional[str] = None


def build_trainer(spec: RunSpec, callbacks: Optional[list] = None, progress_hub: Optional[Any] = None) -> TorchTrainer:
    """The TorchTrainer of a run (its name, storage and resources are the spec's: spec.ray).
    `progress_hub`: a distributed.progress.ProgressHub for the workers' lines and bars."""
    if spec.geometry is None or spec.data.pad_token_id is None or not spec.data.eval_dir:
        raise ValueError("a RunSpec without prepared data (geometry, pad_token_id, eval_dir) cannot train (a bug)")
    r, t = spec.ray, spec.train
    resources = {"CPU": r.cpus_per_worker} | ({"GPU": 1} if r.use_gpu else {})
    check_resumable(r.storage_path, r.run_name, spec.identity, explicit=r.explicit_name)
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"spec": spec.to_dict(), "progress": progress_hub, "failpoint": FAILPOINT},
        scaling_config=ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=r.run_name, storage_path=r.storage_path,
            failure_config=FailureConfig(max_failures=r.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=r.keep_checkpoints,
                                               checkpoint_score_attribute=t.metric_for_best,
                                               checkpoint_score_order="max" if t.higher_is_better else "min"),
            callbacks=callbacks,
            # Ray Train's per-report INFO lines would drown our progress lines; warnings still show.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
        datasets=split_datasets(spec),
        dataset_config=ExactEvalDataConfig(),
    )


def fit(spec: RunSpec, callbacks: Optional[list] = None, live: bool = True) -> TrainResult:
    """Run (or resume) the run to its end. `live`: the workers' lines and bars on this console, and Ray
    Train's own chatter in the log file (a driver); a Tune trial's actor has no console (live=False).

    Raises:
        UserError: A user error raised in a worker (bad data, a config problem), with its own message;
            anything else (a bug) is raised as Ray raised it, with its traceback.
    """
    if live:
        with LiveProgress() as progress:
            trainer = build_trainer(spec, callbacks, progress.hub)
            with console.to_log():  # Ray Train's own start-up and shutdown chatter
                result = _fit(trainer)
    else:
        result = _fit(build_trainer(spec, callbacks))
    if result.error is not None:
        raise user_error_of(result.error) or result.error
    if not result.best_checkpoints:
        raise UserError("training reported no checkpoint")
    metric = spec.train.metric_for_best
    pick = max if spec.train.higher_is_better else min
    best_checkpoint, best_metrics = pick(result.best_checkpoints, key=lambda cm: cm[1][metric])
    with result.checkpoint.as_directory() as d:
        state = TrainerState.read(d)
    return TrainResult(state, best_checkpoint, best_metrics)


def _fit(trainer: TorchTrainer):
    try:
        return trainer.fit()
    except TrainingFailedError as e:
        raise user_error_of(e) or e


def user_error_of(error: BaseException) -> Optional[UserError]:
    """The user error (bad config, bad data) behind a Ray Train failure, as a UserError with its own
    message; None for anything else, which is a bug and keeps its traceback."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [error]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        if isinstance(e, (UserError, ConfigError)):
            return UserError(str(e).strip().splitlines()[0] if isinstance(e, UserError) else str(e))
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
        todo += list((getattr(e, "worker_failures", None) or {}).values())
        todo += [getattr(e, "controller_failure", None)]
    return None
