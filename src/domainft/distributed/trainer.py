"""Driver side of `domainft train`: prepare if stale, build the TorchTrainer, fit, then export the best
checkpoint as a Hugging Face directory with metrics.json and plots."""
from __future__ import annotations

import glob
import json
import os
import time
from typing import Any, Optional

import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train import LoggingConfig
from ray.train import TrainingFailedError
from ray.train.torch import TorchTrainer

from domainft import console
from domainft.config import Config, ConfigError, to_dict
from domainft.config.identity import identity_differences, identity_hash, run_identity
from domainft.core.geometry import geometry
from domainft.distributed.cluster import init_ray
from domainft.distributed.progress import LiveProgress
from domainft.distributed.recipe import CKPT_TAG, STATE_FILE
from domainft.distributed.worker import train_fn_per_worker
from domainft.errors import UserError
from domainft.summary import ADVICE, format_summary

def _loop_config(cfg: Config, report: dict, pad_token_id: int, identity: dict, hub: Optional[Any]) -> dict[str, Any]:
    return {"config": to_dict(cfg), "identity": identity, "progress": hub,
            "failpoint": os.environ.get("DOMAINFT_FAILPOINT"),  # fault injection for the restart tests only
            "data": {"label_names": report["label_names"], "train_rows": report["train_rows"],
                     "eval_rows": report["eval_rows"], "pad_token_id": pad_token_id,
                     "class_counts": class_counts(report)}}


def class_counts(report: dict) -> list[int]:
    """Train rows per class, in label order, as the model trains on them (after balancing)."""
    after = report.get("class_counts_after") or {}
    return [int(after.get(n, 0)) for n in report["label_names"]]


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


def _datasets(report: dict, cfg: Config) -> dict:
    cols = ["input_ids", "label"]
    # Per-operator bars from inside the workers would interleave with the training progress lines.
    ray.data.DataContext.get_current().enable_progress_bars = False
    train = ray.data.read_parquet(report["train_dir"]).select_columns(cols)
    evals = ray.data.read_parquet(report["eval_dir"]).select_columns(cols)
    # Ray Data read tasks need a CPU the training workers don't hold, or they wait forever (a silent
    # hang). When the workers leave under one CPU free, read everything into the object store first.
    free = ray.cluster_resources().get("CPU", 0) - cfg.scaling.num_workers * cfg.scaling.cpus_per_worker
    if free < 1:
        print(f"[train] {free:.1f} CPU left for Ray Data beside the workers: materializing the splits first")
        train, evals = train.materialize(), evals.materialize()
    return {"train": train, "eval": evals}


def run_name(cfg: Config, identity: dict) -> str:
    """`run.name`, else `<output_dir name>-<hash of the run identity>`: Ray Train resumes a run of the
    same name from its latest checkpoint, so an identical resubmission resumes and a changed config
    or dataset starts afresh."""
    return cfg.run.name or f"{os.path.basename(cfg.output_dir.rstrip('/')) or 'run'}-{identity_hash(identity)}"


def storage_of(cfg: Config) -> str:
    return cfg.run.storage_path or os.path.join(cfg.output_dir, "ray")


def build_trainer(cfg: Config, report: dict, pad_token_id: int, callbacks: Optional[list] = None,
                  name: Optional[str] = None, storage_path: Optional[str] = None,
                  progress_hub: Optional[Any] = None) -> TorchTrainer:
    """The TorchTrainer for one run; `domainft train` and every Tune trial build it the same way.
    `progress_hub`: a distributed.progress.ProgressHub for the workers' lines and bars."""
    from domainft.planning import check_model

    sc, rc = cfg.scaling, cfg.run
    geometry(report["train_rows"], sc.num_workers, cfg.train.batch_size, cfg.train.grad_accum, cfg.train.epochs)
    check_model(cfg, report["train_rows"])  # PEFT targets, virtual tokens...: before any worker starts
    identity = run_identity(cfg, report.get("fingerprint") or [report.get("train_dir"), report.get("train_rows")])
    metric = cfg.train.metric_for_best
    resources = {"CPU": sc.cpus_per_worker} | ({"GPU": 1} if sc.use_gpu else {})
    storage = storage_path or storage_of(cfg)
    check_resumable(storage, name or run_name(cfg, identity), identity, explicit=bool(name or rc.name))
    name = name or run_name(cfg, identity)
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config=_loop_config(cfg, report, pad_token_id, identity, progress_hub),
        scaling_config=ScalingConfig(num_workers=sc.num_workers, use_gpu=sc.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name, storage_path=storage,
            failure_config=FailureConfig(max_failures=rc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=rc.keep_checkpoints, checkpoint_score_attribute=metric,
                                               checkpoint_score_order="min" if metric == "loss" else "max"),
            callbacks=callbacks,
            # Ray Train's per-report INFO lines would drown our progress lines; warnings still show.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
        datasets=_datasets(report, cfg),
        dataset_config=ExactEvalDataConfig(),
    )


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


def run_train(cfg: Config) -> dict:
    """Prepare (if stale), train, export. Returns the summary written to metrics.json."""
    from domainft.distributed.datasets import ensure_prepared

    init_ray()
    return train_prepared(cfg, ensure_prepared(cfg))


def train_prepared(cfg: Config, report: dict, callbacks: Optional[list] = None, quiet: bool = False) -> dict:
    """Train on prepared splits (`report` from prepare: train_dir, eval_dir, label_names, row counts)."""
    t0 = time.time()
    from domainft.core import build_tokenizer

    tokenizer = build_tokenizer(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code,
                                revision=cfg.model.revision)
    with LiveProgress() as live:
        trainer = build_trainer(cfg, report, pad_token_id=tokenizer.pad_token_id or 0, callbacks=callbacks,
                                progress_hub=live.hub)
        try:
            with console.to_log():  # Ray Train's own start-up and shutdown chatter
                result = trainer.fit()
        except TrainingFailedError as e:
            raise user_error_of(e) or e
    if result.error is not None:
        raise user_error_of(result.error) or result.error
    with console.to_log():  # DeepSpeed's consolidation and transformers' save reports
        summary = finalize(cfg, result, report)
        summary.update(continual_scores(cfg, report, summary["best_model_dir"]))
    summary["seconds"] = round(time.time() - t0, 1)
    write_json(os.path.join(cfg.output_dir, "metrics.json"), summary)
    if not quiet:
        print(format_summary(summary, with_history=False))
    return summary


def continual_scores(cfg: Config, report: dict, best_dir: str) -> dict:
    """{"continual": scores on the previous run's eval split and the new one, before and after} when
    this run continues one (data.replay.from, or a domainft best/ as model.name_or_path); else {}."""
    from domainft.core.scoring import forgetting_metrics
    from domainft.data.replay import previous_output_dir, previous_run

    previous = previous_output_dir(cfg.data.replay.from_, cfg.model.name_or_path, cfg.output_dir)
    if previous is None or not report.get("eval_dir"):
        return {}
    prev = previous_run(previous)
    scores = forgetting_metrics(prev.eval_dir, prev.label_names, report["eval_dir"], report["label_names"], best_dir,
                                cfg.model.name_or_path, cfg.data.max_length)
    return {"continual": {"previous_output_dir": previous, **scores}}


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


def best_checkpoint(result, metric: str):
    if not result.best_checkpoints:
        raise UserError("training reported no checkpoint")
    pick = min if metric == "loss" else max
    return pick(result.best_checkpoints, key=lambda cm: cm[1][metric])


def finalize(cfg: Config, result, report: dict) -> dict:
    """Export the best checkpoint (its trained fp32 weights over the pretrained model) and collect
    history, LR trace and plots."""
    from domainft.core import plot_group_lrs, plot_learning_curves
    from domainft.core.metrics import prediction_warnings
    from domainft.engine.consolidate import trained_fp32_state_dict

    metric = cfg.train.metric_for_best
    best_ckpt, best_metrics = best_checkpoint(result, metric)
    with result.checkpoint.as_directory() as d:
        state = json.loads(open(os.path.join(d, STATE_FILE)).read())
    group_names = [g["param_names"] for g in state["groups"]]
    trained = [n for names in group_names for n in names]
    with best_ckpt.as_directory() as d:
        weights = trained_fp32_state_dict(d, CKPT_TAG, group_names)
    exported = export_best(cfg, weights, report["label_names"], trained)
    history = state["history"]
    best = next(h for h in history if h["epoch"] == best_metrics["epoch"])
    plots = {"learning_curves": os.path.join(cfg.output_dir, "learning_curves.png"),
             "group_lrs": os.path.join(cfg.output_dir, "group_lrs.png")}
    plot_learning_curves(history, plots["learning_curves"])
    plot_group_lrs(state["lr_trace"], plots["group_lrs"], events=state["unfreeze_events"])
    groups = [{k: v for k, v in g.items() if k != "param_names"} for g in state["groups"]]
    warnings = prediction_warnings(best["confusion"], report["label_names"])
    if warnings:
        warnings.append(ADVICE.format(steps=history[-1]["global_step"], batch=cfg.train.batch_size * cfg.train.grad_accum
                                      * cfg.scaling.num_workers, head=cfg.optim.head_lr_mult))
    return {"best": best, "metric_for_best": metric, "history": history,
            "lr_trace": state["lr_trace"], "unfreeze_events": state["unfreeze_events"], "groups": groups,
            "resumed_from": state.get("resumed_from", []), "stopped_early": state.get("stopped_early"),
            "warnings": warnings,
            "plots": plots, "label_names": report["label_names"],
            "data": {k: report[k] for k in ("train_rows", "eval_rows") if k in report},
            "checkpoint": best_ckpt.path, "config": to_dict(cfg),
            "trainable_params": state.get("trainable_params"), "total_params": state.get("total_params"),
            "peft_method": cfg.peft.method, **exported}


def export_best(cfg: Config, weights: dict, label_names: list, trained: list) -> dict:
    """Write `<output_dir>/best/` (and, for a PEFT adapter, `best_adapter/`) from the best checkpoint's
    trained fp32 weights, on the driver's CPU: no ZeRO gather, whatever the stage.

    Returns:
        {"best_model_dir", "adapter_dir" (or None), "merged" (best/ is a plain model)}.
    """
    from domainft.core import export_hf
    from domainft.core.export import export_peft
    from domainft.core.peft import peft_spec

    m, best_dir = cfg.model, os.path.join(cfg.output_dir, "best")
    spec = peft_spec(cfg.peft.model_dump())
    if not spec.adapter:  # full fine-tuning, selective: a plain model
        export_hf(weights, m.name_or_path, label_names, m.name_or_path, best_dir, trust_remote_code=m.trust_remote_code,
                  revision=m.revision, required=trained)
        return {"best_model_dir": best_dir, "adapter_dir": None, "merged": True}
    adapter_dir = os.path.join(cfg.output_dir, "best_adapter")
    out = export_peft(weights, m.name_or_path, label_names, spec, m.name_or_path, best_dir, adapter_dir,
                      trust_remote_code=m.trust_remote_code, revision=m.revision, required=trained,
                      merge=spec.mergeable and cfg.peft.export != "adapter")
    return {"best_model_dir": best_dir, "adapter_dir": adapter_dir, "merged": out["merged"]}


def write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
