"""RunSpec: everything a training run does, as typed data derived once from the config.

`domainft.planning.build_spec` makes it (pure: config.json and the prepared data's report are enough);
`plan` prints it, the driver checks it before Ray starts, and every Ray Train worker builds its run
from it and from nothing else (it crosses the Ray boundary as a plain dict and is validated again
there). Numbers that `plan` shows are therefore the numbers the workers use.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict

from domainft.core.geometry import Geometry
from domainft.core.peft import PeftSpec


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSpec(_Frozen):
    """The pretrained model and how it is wrapped."""

    name_or_path: str
    revision: Optional[str] = None
    trust_remote_code: bool = False
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    peft: PeftSpec = PeftSpec()
    peft_export: str = "auto"  # peft.export: auto | merged | adapter
    family: str  # model_type, from the layer map
    num_layers: int


class DataSpec(_Frozen):
    """The prepared splits the run reads (data_report.json); row counts are None before `prepare`."""

    label_names: list[str]
    train_rows: Optional[int] = None
    eval_rows: Optional[int] = None
    class_counts: Optional[list[int]] = None  # train rows per class, in label order, after balancing
    pad_token_id: Optional[int] = None
    # task sft: the template conversations were rendered with, the tokens that end an answer (generation stops
    # at them), the length they were cut to
    chat_template: Optional[str] = None
    stop_token_ids: list[int] = []
    max_length: Optional[int] = None
    train_dir: Optional[str] = None
    eval_dir: Optional[str] = None
    fingerprint: Any = None


class DepthSpec(_Frozen):
    """One depth of the layer map (head = 0 ... embeddings = L+1): its size, peak LR and thaw step."""

    depth: int
    name: str
    params: int
    trainable_params: int  # with requires_grad (PEFT leaves only adapters, a selection and the head)
    peak_lr: float  # after optim.lr_scaling
    scheduled_step: Optional[int]  # when the unfreeze schedule thaws it (None: never)
    thaw_step: Optional[int]  # when it thaws in this run: None also when scheduled at or after the last step

    @property
    def trained(self) -> bool:
        """In the optimizer and updated at some step of this run."""
        return self.thaw_step is not None and self.trainable_params > 0


class LRSchedule(_Frozen):
    """The global multiplier (warmup, decay) and each thawed group's own ramp: core.schedules."""

    total_steps: int
    warmup_steps: int
    schedule: str
    min_lr_ratio: float
    thaw_warmup_steps: int


class OptimizerSpec(_Frozen):
    base_lr: float
    lr_scale: float  # the batch scaling factor (optim.lr_scaling) already in every DepthSpec.peak_lr
    lr_scaling: str
    lr_reference_batch: int
    head_lr_mult: float
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    eight_bit: bool


class TrainSpec(_Frozen):
    epochs: int
    batch_size: int
    eval_batch_size: int
    grad_accum: int
    precision: str
    seed: int
    max_grad_norm: float
    log_every_steps: int
    metric_for_best: str
    higher_is_better: bool
    early_stopping_patience: Optional[int] = None
    gradient_checkpointing: bool = False
    generate_samples: int = 0  # task sft: eval prompts answered after each epoch (eval.generate_samples)
    max_new_tokens: int = 64


class RaySpec(_Frozen):
    """How the driver runs it on Ray Train: workers, resources, checkpoints, the run's name."""

    num_workers: int
    cpus_per_worker: float
    use_gpu: bool
    run_name: str
    explicit_name: bool  # run.name was set (a run of that name made by another config is an error)
    storage_path: str
    max_failures: int
    keep_checkpoints: int


class RunSpec(_Frozen):
    task: str
    output_dir: str
    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    geometry: Optional[Geometry] = None  # None before `prepare` (then the thaw steps count epochs)
    depths: list[DepthSpec]
    lr: Optional[LRSchedule] = None  # None before `prepare`
    optimizer: OptimizerSpec
    zero_stage: int  # as configured
    effective_zero_stage: int  # what runs (0 on one worker, where ZeRO has nothing to partition)
    deepspeed: dict[str, Any]
    loss: dict[str, Any]  # the task's loss, as data (domainft.tasks)
    ray: RaySpec
    identity: dict[str, Any]  # config.identity.run_identity: saved in checkpoints, compared on resume

    @property
    def thaw_schedule(self) -> dict[int, Optional[int]]:
        """Depth -> the optimizer step it becomes trainable in this run (None: never)."""
        return {d.depth: d.thaw_step for d in self.depths}

    @property
    def peak_lrs(self) -> dict[int, float]:
        return {d.depth: d.peak_lr for d in self.depths}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: what crosses the Ray boundary."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunSpec":
        return cls.model_validate(raw)
