"""`build_spec`: a validated config, the prepared data's report and the world size -> RunSpec.

Pure: the model is built on the meta device from config.json (no weights), Ray is never touched. Every
problem the config has with its model and its data (an unsupported architecture, PEFT targets the model
lacks, too few rows for the batch, a layer_lrs list of the wrong length, a teacher with other labels) is
collected and raised as one ConfigError, before Ray starts.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from domainft.config import Config, ConfigError
from domainft.config.identity import identity_hash, run_identity
from domainft.core import build_layer_map, peak_lrs, resolve_warmup_steps, thaw_schedule
from domainft.core.geometry import Geometry, geometry
from domainft.core.layers import LayerMap
from domainft.core.peft import PeftSpec, apply_peft, peft_problems, peft_spec
from domainft.core.schedules import batch_lr_scale
from domainft.core.unfreeze import within_run
from domainft.engine.ds_config import build_ds_config, effective_zero_stage
from domainft.families import family_problems, position_limit
from domainft.runspec import (DataSpec, DepthSpec, LRSchedule, ModelSpec, OptimizerSpec, RaySpec, RunSpec,
                              TrainSpec)
from domainft.tasks import get_task

# A head of some size is needed to build the model before the data names its labels (plan before prepare).
PLACEHOLDER_LABELS = ["label_0", "label_1"]


def data_spec(cfg: Config, report: Optional[Mapping[str, Any]] = None) -> DataSpec:
    """The prepared splits as the run sees them; a partial or missing report (plan before prepare) gives
    what it has (labels: data.labels, else a 2-label placeholder)."""
    r = report or {}
    labels = list(r.get("label_names") or cfg.data.labels or PLACEHOLDER_LABELS)
    after = r.get("class_counts_after")
    chat = r.get("sft") or {}
    return DataSpec(label_names=labels, train_rows=r.get("train_rows"), eval_rows=r.get("eval_rows"),
                    class_counts=[int(after.get(n, 0)) for n in labels] if after else None,
                    chat_template=chat.get("chat_template"), stop_token_ids=chat.get("stop_token_ids") or [],
                    max_length=cfg.data.max_length,
                    pad_token_id=r.get("pad_token_id"), train_dir=r.get("train_dir"), eval_dir=r.get("eval_dir"),
                    fingerprint=r.get("fingerprint") or [r.get("train_dir"), r.get("train_rows")])


def meta_model(cfg: Config, label_names: list[str], peft: Optional[PeftSpec] = None):
    """The run's model on the meta device (config.json only), with `peft` applied (None: as configured)."""
    m = cfg.model
    model = get_task(cfg.task).build_model(m.name_or_path, label_names, trust_remote_code=m.trust_remote_code,
                                           revision=m.revision, meta=True)
    return apply_peft(model, peft if peft is not None else run_peft_spec(cfg))


def run_peft_spec(cfg: Config) -> PeftSpec:
    """The PEFT regime as configured, for the config's task (a causal LM's head stays frozen under PEFT)."""
    return peft_spec({**cfg.peft.model_dump(), "causal": get_task(cfg.task).causal_lm})


# Before `prepare` the steps per epoch are unknown: the timeline is laid out on this many, so that a thaw
# every 0.5 or 0.25 epochs still lands on its fraction of an epoch (1 step per epoch rounded it to epochs).
NOMINAL_STEPS_PER_EPOCH = 1000


def scheduled_thaws(cfg: Config, lmap: LayerMap, param_counts: Mapping[int, int],
                    steps_per_epoch: int) -> dict[int, Optional[int]]:
    """The unfreeze.* schedule: the optimizer step each depth becomes trainable (the run's end aside: within_run)."""
    uf = cfg.unfreeze
    return thaw_schedule(lmap.num_layers, uf.initial_layers, steps_per_epoch, every_epochs=uf.every_epochs,
                         every_steps=uf.every_steps, train_top_fraction=uf.train_top_fraction,
                         param_counts=param_counts)


def _geometry(cfg: Config, data: DataSpec, world: int, problems: list[str]) -> Optional[Geometry]:
    t = cfg.train
    if data.train_rows is None:
        return None
    try:
        return geometry(data.train_rows, world, t.batch_size, t.grad_accum, t.epochs, t.max_steps_per_epoch)
    except ValueError as e:  # too few rows for the batch: the user's data and settings
        problems.append(f"{data.train_dir or os.path.join(cfg.output_dir, 'data')}: {e}")
        return None


def model_problems(cfg: Config, train_rows: Optional[int] = None) -> list[str]:
    """The config against its model, from config.json: the family, data.max_length against its positions,
    then what PEFT needs of the model (target modules, virtual tokens, whether a soft prompt thaws in the run)."""
    problems = family_problems(cfg.model.name_or_path, cfg.model.revision)
    if problems:
        return problems
    problems = _position_problems(cfg)
    data = DataSpec(label_names=PLACEHOLDER_LABELS, train_rows=train_rows)
    return problems + _peft_problems(cfg, PLACEHOLDER_LABELS, _geometry(cfg, data, cfg.scaling.num_workers, []))


def _position_problems(cfg: Config) -> list[str]:
    """data.max_length against the positions the model has (a longer input would index past its table)."""
    from transformers import AutoConfig

    m = cfg.model
    limit = position_limit(AutoConfig.from_pretrained(m.name_or_path, revision=m.revision,
                                                      trust_remote_code=m.trust_remote_code))
    if limit is not None and cfg.data.max_length > limit:
        return [f"data.max_length: {cfg.data.max_length} exceeds the {limit} token positions of {m.name_or_path} "
                f"(max_position_embeddings in its config.json); use at most {limit}"]
    return []


def check_model(cfg: Config, train_rows: Optional[int] = None) -> None:
    """Raise ConfigError with every `model_problems` line (before Ray starts)."""
    problems = model_problems(cfg, train_rows)
    if problems:
        raise ConfigError(problems, "config")


def _peft_problems(cfg: Config, labels: list[str], geo: Optional[Geometry]) -> list[str]:
    spec = run_peft_spec(cfg)
    if spec.method == "none":
        return []
    plain = meta_model(cfg, labels, PeftSpec(causal=spec.causal))  # problems are found on the model before wrapping
    t, uf = cfg.train, cfg.unfreeze
    thaw = total = None
    # Without the row count the timeline is exact in epochs only for whole-epoch thaw intervals.
    if geo or (uf.every_steps is None and float(uf.every_epochs).is_integer()):
        lmap = build_layer_map(plain)
        spe = geo.steps_per_epoch if geo else 1
        thaw, total = scheduled_thaws(cfg, lmap, lmap.param_counts(plain), spe)[lmap.embeddings_depth], spe * t.epochs
    return peft_problems(plain, spec, cfg.data.max_length, thaw, total)


def build_spec(cfg: Config, report: Optional[Mapping[str, Any]] = None, world: Optional[int] = None) -> RunSpec:
    """What the run does (see runspec.RunSpec), from the config, the prepared data's report (None or partial
    before `prepare`: no step numbers then) and the number of workers (default scaling.num_workers).

    Raises:
        ConfigError: Every problem of the config with its model and data, together.
    """
    world = world or cfg.scaling.num_workers
    task, data = get_task(cfg.task), data_spec(cfg, report)
    problems = family_problems(cfg.model.name_or_path, cfg.model.revision) + task.config_problems(cfg)
    if problems:  # nothing below can be built for an architecture domainft does not know, or for another task's keys
        raise ConfigError(problems, "config")
    problems = _position_problems(cfg)
    geo = _geometry(cfg, data, world, problems)
    peft_problems = _peft_problems(cfg, data.label_names, geo)
    if peft_problems:  # the regime cannot be applied to this model: nothing below can be built either
        raise ConfigError(problems + peft_problems, "config")
    model = meta_model(cfg, data.label_names)
    lmap = build_layer_map(model)
    t, op = cfg.train, cfg.optim
    metric = t.metric_for_best or task.default_metric
    head_lr_mult = op.head_lr_mult if op.head_lr_mult is not None else task.default_head_lr_mult
    scale = batch_lr_scale(t.batch_size * t.grad_accum * world, op.lr_reference_batch, op.lr_scaling)
    depths = _depths(cfg, model, lmap, geo.steps_per_epoch if geo else NOMINAL_STEPS_PER_EPOCH, scale, head_lr_mult,
                     problems)
    labels_known = bool(report and report.get("label_names"))
    loss, loss_problems = task.loss_spec(cfg, data.label_names if labels_known else None, data.class_counts)
    if problems + loss_problems:
        raise ConfigError(problems + loss_problems, "config")
    ds = cfg.deepspeed
    stage = effective_zero_stage(ds.zero_stage, world, ds.offload_optimizer, ds.offload_params)
    identity = run_identity(cfg, data.fingerprint)
    return RunSpec(
        task=task.name, output_dir=cfg.output_dir, data=data, geometry=geo, depths=depths, loss=loss,
        model=ModelSpec(name_or_path=cfg.model.name_or_path, revision=cfg.model.revision,
                        trust_remote_code=cfg.model.trust_remote_code, load_in_8bit=cfg.model.load_in_8bit,
                        load_in_4bit=cfg.model.load_in_4bit,
                        peft=run_peft_spec(cfg), peft_export=cfg.peft.export, family=lmap.family,
                        num_layers=lmap.num_layers),
        train=TrainSpec(epochs=t.epochs, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size or 2 * t.batch_size,
                        grad_accum=t.grad_accum, precision=t.precision, seed=t.seed, max_grad_norm=t.max_grad_norm,
                        log_every_steps=t.log_every_steps, metric_for_best=metric,
                        higher_is_better=task.metric_higher_is_better(metric),
                        generate_samples=cfg.eval.generate_samples, max_new_tokens=cfg.eval.max_new_tokens,
                        gradient_checkpointing=t.gradient_checkpointing,
                        early_stopping_patience=t.early_stopping_patience),
        lr=_lr_schedule(cfg, geo),
        optimizer=OptimizerSpec(base_lr=op.lr, lr_scale=scale, lr_scaling=op.lr_scaling,
                                lr_reference_batch=op.lr_reference_batch, head_lr_mult=head_lr_mult,
                                weight_decay=op.weight_decay, betas=op.betas, eps=op.eps, eight_bit=op.eight_bit),
        zero_stage=ds.zero_stage, effective_zero_stage=stage,
        deepspeed=build_ds_config(stage, t.precision, t.batch_size, t.grad_accum, world, t.max_grad_norm,
                                  ds.offload_optimizer, ds.offload_params, on_gpu=cfg.scaling.use_gpu,
                                  overrides=ds.overrides),
        ray=_ray_spec(cfg, world, identity), identity=identity)


def _depths(cfg: Config, model: Any, lmap: LayerMap, steps_per_epoch: int, scale: float, head_lr_mult: float,
            problems: list[str]) -> list[DepthSpec]:
    """Each depth's size, peak LR (batch scaling included) and thaw steps; a depth due at or after the run's
    last step never trains in it."""
    op = cfg.optim
    counts, trainable = lmap.param_counts(model), lmap.trainable_counts(model)
    scheduled = scheduled_thaws(cfg, lmap, counts, steps_per_epoch)
    in_run = within_run(scheduled, steps_per_epoch * cfg.train.epochs)
    try:
        peaks = peak_lrs(lmap, op.lr * scale, op.layer_decay, head_lr_mult,
                         [lr * scale for lr in op.layer_lrs] if op.layer_lrs else None)
    except ValueError as e:  # a layer_lrs list of another length than the model's layers
        problems.append(f"optim.layer_lrs: {e}")
        peaks = {d: 0.0 for d in range(lmap.num_depths)}
    return [DepthSpec(depth=d, name=lmap.depth_label(d), params=counts[d], trainable_params=trainable[d],
                      peak_lr=peaks[d], scheduled_step=scheduled[d], thaw_step=in_run[d])
            for d in range(lmap.num_depths)]


def _lr_schedule(cfg: Config, geo: Optional[Geometry]) -> Optional[LRSchedule]:
    if geo is None:
        return None
    op = cfg.optim
    return LRSchedule(total_steps=geo.total_steps,
                      warmup_steps=resolve_warmup_steps(geo.total_steps, op.warmup_ratio, op.warmup_steps),
                      schedule=op.schedule, min_lr_ratio=op.min_lr_ratio,
                      thaw_warmup_steps=cfg.unfreeze.thaw_warmup_steps)


def _ray_spec(cfg: Config, world: int, identity: dict) -> RaySpec:
    """Resources, checkpoints and the run's name: `run.name`, else `<output_dir name>-<hash of the identity>`
    (Ray Train resumes a run of the same name from its latest checkpoint, so an identical resubmission
    resumes and a changed config or dataset starts afresh)."""
    sc, r = cfg.scaling, cfg.run
    default_name = f"{os.path.basename(cfg.output_dir.rstrip('/')) or 'run'}-{identity_hash(identity)}"
    return RaySpec(num_workers=world, cpus_per_worker=sc.cpus_per_worker, use_gpu=sc.use_gpu,
                   run_name=r.name or default_name,
                   explicit_name=r.name is not None, storage_path=r.storage_path or os.path.join(cfg.output_dir, "ray"),
                   max_failures=r.max_failures, keep_checkpoints=r.keep_checkpoints)
