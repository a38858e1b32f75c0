"""Sweep files for `domainft tune`: a typed model, checks against the base train config, and the
arithmetic of how many trials fit on a cluster. Pure: imports pydantic and PyYAML, never Ray.

A sweep names a base train config, a search space over dotted config keys and how to search it:

    base: ../configs/bbc_demo.yaml        # relative to this file
    output_dir: runs/tune/bbc             # relative to the working directory, like a train config's
    num_samples: 12
    metric: macro_f1
    mode: max
    searcher: {type: optuna, seed: 0}
    scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
    fixed: {train: {epochs: 3}}           # merged into the base before anything else
    space:
      optim.lr: {loguniform: [2.0e-5, 2.0e-4]}
      unfreeze.every_epochs: {choice: [0, 1, 2]}

Every problem is reported together (ConfigError), each with its dotted key, before Ray starts.
"""
from __future__ import annotations

import difflib
import math
import os
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from domainft.config.derive import derive
from domainft.config.load import ConfigError, apply_overrides, deep_merge, pydantic_problems, read_yaml, validate_dict
from domainft.config.schema import Config

DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "qloguniform", "randint", "choice", "grid")
# Of the metrics every trial reports once per epoch (distributed/worker.py); `loss` is the eval loss.
LOWER_IS_BETTER = ("eval_loss", "loss", "train_loss", "perplexity")

# Keys a trial may not vary, and why. Data is prepared once per sweep (in the driver) and handed to
# every trial; per-trial resources would break the concurrency arithmetic; paths are set per trial.
NOT_SEARCHABLE = {
    "data": "changes the prepared splits, which are prepared once per sweep: run one sweep per value "
            "(set it in `fixed` or the base config)",
    "augment": "changes the prepared (augmented) train split, which is prepared once per sweep: run one "
               "sweep per value (set it in `fixed` or the base config)",
    "model": "changes the tokenizer and the prepared token ids, which are prepared once per sweep: run one "
             "sweep per model (set it in `fixed` or the base config)",
    "train.seed": "also seeds the train/eval split, which is prepared once per sweep: set it in `fixed`",
    "scaling": "sets each trial's resources, which must be the same for every trial (max_concurrent_trials "
               "is derived from them): set it in `fixed`",
    "run": "run paths and names are set per trial by the sweep",
    "output_dir": "every trial writes to <output_dir>/trials/<trial_id>",
}
NOT_FIXABLE = {"run.storage_path": "trials keep their Ray Train runs under <sweep output_dir>/trials/<trial_id>/ray",
               "run.name": "each trial's Ray Train run is named from its trial id"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Dim(_Strict):
    """One searched key: exactly one distribution, e.g. {loguniform: [1e-5, 1e-4]} or {choice: [0, 1, 2]}."""

    uniform: Optional[tuple[float, float]] = Field(None, description="[low, high]: uniform float.")
    loguniform: Optional[tuple[float, float]] = Field(None, description="[low, high], low > 0: log-uniform float.")
    quniform: Optional[tuple[float, float, float]] = Field(
        None, description="[low, high, q]: uniform, rounded to a multiple of q.")
    qloguniform: Optional[tuple[float, float, float]] = Field(
        None, description="[low, high, q], low > 0: log-uniform, rounded to a multiple of q.")
    randint: Optional[tuple[int, int]] = Field(
        None, description="[low, high): integer, high excluded (as in Ray Tune).")
    choice: Optional[list[Any]] = Field(None, description="Values picked at random (a categorical for Optuna).")
    grid: Optional[list[Any]] = Field(None, description="Every value is run (x num_samples); random/grid searchers.")

    @model_validator(mode="after")
    def _one_distribution(self) -> "Dim":
        set_ = [n for n in DISTRIBUTIONS if getattr(self, n) is not None]
        if len(set_) != 1:
            raise ValueError(f"give exactly one of {', '.join(DISTRIBUTIONS)} (got {set_ or 'none'})")
        kind, args = set_[0], getattr(self, set_[0])
        if kind in ("choice", "grid"):
            if not args:
                raise ValueError(f"{kind}: needs at least one value")
            return self
        low, high = args[0], args[1]
        if not low < high:
            raise ValueError(f"{kind}: low must be < high (got {list(args)})")
        if kind in ("loguniform", "qloguniform") and low <= 0:
            raise ValueError(f"{kind}: low must be > 0 (got {low})")
        if kind in ("quniform", "qloguniform") and args[2] <= 0:
            raise ValueError(f"{kind}: q must be > 0 (got {args[2]})")
        return self

    @property
    def kind(self) -> str:
        return next(n for n in DISTRIBUTIONS if getattr(self, n) is not None)

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)

    @property
    def log_scale(self) -> bool:
        return self.kind in ("loguniform", "qloguniform")

    def representative_values(self) -> list[Any]:
        """Values that bound what the distribution can produce: both ends of a range, every listed value."""
        a = self.args
        if self.kind in ("choice", "grid"):
            return list(a)
        if self.kind == "randint":
            return [a[0], a[1] - 1]
        if self.kind in ("quniform", "qloguniform"):
            # Ray Tune rounds the sample to the nearest multiple of q.
            return [round(a[0] / a[2]) * a[2], round(a[1] / a[2]) * a[2]]
        return [a[0], a[1]]


class SearcherConfig(_Strict):
    type: Literal["random", "grid", "optuna"] = Field(
        "random", description="random: sample (grid entries enumerated); grid: every `grid`/`choice` combination; "
                              "optuna: Optuna TPE through ray.tune.search.optuna.OptunaSearch.")
    seed: Optional[int] = Field(None, description="Searcher seed; default the base config's train.seed.")


class SchedulerConfig(_Strict):
    type: Literal["asha", "fifo"] = Field(
        "asha", description="asha: stop weak trials early at rungs grace_period * reduction_factor**k epochs; "
                            "fifo: run every trial to the end. (Population-based training is not offered: see "
                            "tune/README.md.)")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs every trial runs before it can be stopped.")
    reduction_factor: float = Field(2.0, gt=1.0, description="ASHA: keep the top 1/reduction_factor at each rung.")
    max_t: Optional[int] = Field(None, ge=1, description="ASHA: most epochs a trial runs; default train.epochs.")


class SweepConfig(_Strict):
    base: str = Field(description="Train config (YAML) the trials start from; relative to the sweep file's folder.")
    output_dir: str = Field(description="Where trials, results.csv, the plot and best_config.yaml go; relative to "
                                        "the working directory.")
    space: dict[str, Dim] = Field(description="Dotted train-config key -> distribution. Nested mappings "
                                              "(optim: {lr: {...}}) are flattened to dotted keys.")
    num_samples: int = Field(ge=1, description="Trials to sample; with grid entries: repeats of the grid.")
    metric: Literal["macro_f1", "accuracy", "eval_loss", "loss", "train_loss", "perplexity", "exact_match", "token_f1",
                    "rouge_l"] = Field(
        "macro_f1", description="Per-epoch eval metric that ranks trials (and drives ASHA/Optuna): macro_f1 or "
                                "accuracy (classification), eval_loss (both tasks; task sft: the loss per answer "
                                "token), perplexity, exact_match, token_f1 or rouge_l (task sft; the last three need "
                                "eval.generate_samples > 0).")
    mode: Literal["max", "min"] = Field("max", description="max for macro_f1/accuracy and the sample scores, min for "
                                                           "losses and perplexity.")
    searcher: SearcherConfig = Field(default_factory=SearcherConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    fixed: dict[str, Any] = Field(default_factory=dict, description="Nested partial train config merged into the "
                                                                      "base before the sweep (e.g. fewer epochs).")
    max_concurrent_trials: Optional[int] = Field(
        None, ge=1, description="Upper bound; the sweep runs min(this, what the cluster fits).")
    time_budget_s: Optional[float] = Field(None, gt=0, description="Stop starting/running trials after this long.")

    @field_validator("searcher", "scheduler", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v  # `scheduler: fifo`

    @field_validator("space", mode="before")
    @classmethod
    def _flatten(cls, v: Any) -> Any:
        return flatten_space(v) if isinstance(v, dict) else v


def flatten_space(raw: dict, prefix: str = "") -> dict:
    """{optim: {lr: {loguniform: [..]}}} -> {"optim.lr": {loguniform: [..]}}.

    A mapping is a distribution (a leaf) when one of its keys names a distribution or none of its
    values is a mapping; otherwise it is a section and is descended into.
    """
    out: dict = {}
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and not any(k in DISTRIBUTIONS for k in value) \
                and all(isinstance(x, dict) for x in value.values()):
            out.update(flatten_space(value, path + "."))
        else:
            out[path] = value
    return out


# ---------------------------------------------------------------------------------------------------
# Train-config keys
# ---------------------------------------------------------------------------------------------------

def _leaf_fields(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> annotation for every value of the train config (sections are descended into)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_leaf_fields(ann, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = ann
    return out


CONFIG_KEYS = _leaf_fields()
SECTIONS = {k.rsplit(".", 1)[0] for k in CONFIG_KEYS if "." in k}
DICT_KEYS = {k for k, ann in CONFIG_KEYS.items() if ann is dict}  # free-form (deepspeed.overrides)


def _is_int_field(key: str) -> bool:
    ann = CONFIG_KEYS.get(key)
    args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_origin(ann) else [ann]
    return args == [int]


def key_problem(key: str) -> Optional[str]:
    """Why `key` cannot be searched (unknown key, a section, a prepared-data key), or None."""
    for prefix, why in NOT_SEARCHABLE.items():
        if key == prefix or key.startswith(prefix + "."):
            return f"cannot be searched: {why}"
    if key in CONFIG_KEYS or any(key.startswith(d + ".") for d in DICT_KEYS):
        return None
    if key in SECTIONS:
        return "names a section, not a value: search its keys (e.g. optim.lr)"
    close = difflib.get_close_matches(key, list(CONFIG_KEYS), n=1, cutoff=0.6)
    return "not a train config key" + (f" (did you mean {close[0]!r}?)" if close else "")


def coerce(key: str, value: Any) -> Any:
    """Integral floats (quniform gives 2.0) become ints for integer keys: the YAML then reads naturally."""
    if _is_int_field(key) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def trial_changes(params: dict[str, Any], output_dir: str, run_name: Optional[str] = None,
                  storage_path: Optional[str] = None) -> dict[str, Any]:
    """What one trial changes in the base config (for `config.derive`): the sampled values (integral floats
    made ints for integer keys), its own output_dir, and its Ray Train run's name and storage (None: the
    defaults, derived from output_dir, as a config the user trains has them).
    """
    return {**{key: coerce(key, value) for key, value in params.items()}, "output_dir": output_dir,
            "run.name": run_name, "run.storage_path": storage_path}


# ---------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------

def sweep_problems(sweep: SweepConfig, check_keys: bool = True) -> list[str]:
    """Cross-field problems of the sweep file alone (no base config needed).

    check_keys: also check that each searched key can be searched (`key_problem`).
    """
    p: list[str] = []
    if not sweep.space and check_keys:
        p.append("space: empty; give at least one key, e.g. optim.lr: {loguniform: [1.0e-5, 1.0e-4]}")
    if sweep.metric in LOWER_IS_BETTER and sweep.mode == "max":
        p.append(f"mode: {sweep.metric} is better when lower; use mode: min")
    if sweep.metric not in LOWER_IS_BETTER and sweep.mode == "min":
        p.append(f"mode: {sweep.metric} is better when higher; use mode: max")
    for key, dim in sweep.space.items():
        if check_keys and (problem := key_problem(key)) is not None:
            p.append(f"space.{key}: {problem}")
        if _is_int_field(key) and dim.kind in ("uniform", "loguniform"):
            p.append(f"space.{key}: an integer key; use randint, quniform/qloguniform with an integer q, "
                     f"choice or grid")
        if sweep.searcher.type == "grid" and dim.kind not in ("grid", "choice"):
            p.append(f"space.{key}: searcher grid needs grid or choice values (got {dim.kind})")
        if sweep.searcher.type == "optuna" and dim.kind == "grid":
            p.append(f"space.{key}: Optuna does not enumerate grids; use choice (or searcher random/grid)")
        if sweep.searcher.type == "optuna" and dim.kind == "qloguniform":
            p.append(f"space.{key}: Optuna drops the quantization of qloguniform (samples would not be multiples "
                     f"of q); use loguniform, quniform or choice")
    s = sweep.scheduler
    if s.max_t is not None and s.grace_period > s.max_t:
        p.append(f"scheduler.grace_period: {s.grace_period} is more than scheduler.max_t {s.max_t}")
    for key, why in NOT_FIXABLE.items():
        node: Any = sweep.fixed
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            p.append(f"fixed.{key}: {why}")
    return p


def grid_size(sweep: SweepConfig) -> int:
    """Grid points: the product of the sizes of the grid entries (and choice, under searcher grid)."""
    kinds = ("grid", "choice") if sweep.searcher.type == "grid" else ("grid",)
    return math.prod(len(d.args) for d in sweep.space.values() if d.kind in kinds)


def total_trials(sweep: SweepConfig) -> int:
    return sweep.num_samples * grid_size(sweep)


def base_problems(sweep: SweepConfig, base: dict) -> list[str]:
    """Each searched key applied alone at each representative value, then one whole sample, must validate.

    `base` is the base config dict with `fixed` merged in, already validated. Unknown keys and keys
    that cannot be searched are reported by `sweep_problems`; they are skipped here.
    """
    p: list[str] = []
    out = base.get("output_dir", "trial")
    first: dict[str, Any] = {}
    for key, dim in sweep.space.items():
        if key_problem(key) is not None:
            continue
        values = dim.representative_values()
        first[key] = values[0]
        for value in values:
            try:
                derive(base, trial_changes({key: value}, out), "sweep")
            except ConfigError as e:
                p.extend(f"space.{key} (value {value!r}): {problem}" for problem in e.problems)
    if first and not p:
        try:
            derive(base, trial_changes(first, out), "sweep")
        except ConfigError as e:
            shown = ", ".join(f"{k}={v!r}" for k, v in first.items())
            p.extend(f"space (sample {shown}): {problem}" for problem in e.problems)
    return p


def max_epochs(sweep: SweepConfig, base_epochs: int) -> int:
    """The most epochs any trial runs: scheduler.max_t when given, else the largest train.epochs."""
    if sweep.scheduler.max_t is not None:
        return sweep.scheduler.max_t
    dim = sweep.space.get("train.epochs")
    return int(max(dim.representative_values())) if dim is not None else base_epochs


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------

def validate_sweep(raw: Any, sweep_dir: str | os.PathLike, source: str = "sweep",
                   check_paths: bool = True) -> tuple[SweepConfig, Config]:
    """Validate a sweep dict and its base config; raise ConfigError with every problem found.

    Args:
        raw: The sweep as a plain dict (YAML with overrides applied).
        sweep_dir: Folder that a relative `base` is resolved against (the sweep file's folder).
        source: Name shown in the error.
        check_paths: Check that files named by the base config exist (False in unit tests).

    Returns:
        The sweep (base and output_dir made absolute) and the base train config with `fixed` merged
        in (validated like `domainft train` validates it).
    """
    if not isinstance(raw, dict):
        raise ConfigError([f"top level must be a mapping, got {type(raw).__name__}"], source)
    # Space entries are checked one by one and bad ones set aside, so that the rest of the sweep
    # (and its base config) is still checked: one run shows every problem.
    problems: list[str] = []
    if raw.get("space") == {}:
        problems.append("space: empty; give at least one key, e.g. optim.lr: {loguniform: [1.0e-5, 1.0e-4]}")
    if isinstance(raw.get("space"), dict) and raw["space"]:
        good = {}
        for key, value in flatten_space(raw["space"]).items():
            if (problem := key_problem(key)) is not None:
                problems.append(f"space.{key}: {problem}")
            try:
                Dim.model_validate(value)
                good[key] = value
            except ValidationError as e:
                problems += pydantic_problems(e, Dim, ("space", key))
        raw = {**raw, "space": good}
    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as e:
        problems += pydantic_problems(e, SweepConfig)
        if isinstance(raw.get("base"), str) and isinstance(raw.get("fixed", {}), dict):
            problems += _base_config(raw["base"], raw.get("fixed") or {}, sweep_dir, check_paths)[1]
        raise ConfigError(problems, source) from None
    problems += sweep_problems(sweep, check_keys=False)
    sweep.base = str(_resolve_base(sweep.base, sweep_dir))
    out = Path(os.path.expanduser(sweep.output_dir))
    sweep.output_dir = str(out if out.is_absolute() else Path.cwd() / out)
    base_cfg, base_errors = _base_config(sweep.base, sweep.fixed, sweep_dir, check_paths)
    problems += base_errors
    if base_cfg is not None:
        problems.extend(base_problems(sweep, base_cfg.model_dump(mode="json")))
        if sweep.scheduler.type == "asha" and sweep.scheduler.grace_period > max_epochs(sweep, base_cfg.train.epochs):
            problems.append(f"scheduler.grace_period: {sweep.scheduler.grace_period} is more than the epochs a "
                            f"trial runs ({max_epochs(sweep, base_cfg.train.epochs)}): no trial could be stopped")
    if problems:
        raise ConfigError(problems, source)
    return sweep, base_cfg


def _resolve_base(base: str, sweep_dir: str | os.PathLike) -> Path:
    path = Path(os.path.expanduser(base))
    return (path if path.is_absolute() else Path(sweep_dir) / path).resolve()


def _base_config(base: str, fixed: dict, sweep_dir: str | os.PathLike,
                 check_paths: bool) -> tuple[Optional[Config], list[str]]:
    """The base train config with `fixed` merged in, or the problems found (prefixed with `base`)."""
    path = _resolve_base(base, sweep_dir)
    try:
        raw = read_yaml(path)
        if not isinstance(raw, dict):
            raise ConfigError([f"top level must be a mapping, got {type(raw).__name__}"], str(path))
        # deepspeed.overrides is the user's own DeepSpeed block: `fixed` replaces it whole.
        return validate_dict(deep_merge(raw, fixed, atomic=("overrides",)), source=str(path),
                             check_paths=check_paths), []
    except ConfigError as e:
        label = f"base ({path}" + (" with fixed" if fixed else "") + ")"
        return None, [f"{label}: {problem}" for problem in e.problems]


def load_sweep(path: str | os.PathLike, overrides: Iterable[str] = (),
               check_paths: bool = True) -> tuple[SweepConfig, Config]:
    """Read a sweep YAML, apply `key=value` overrides to it (e.g. num_samples=4, fixed.train.epochs=1),
    validate it and its base config. Raises ConfigError listing every problem."""
    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides)
    return validate_sweep(raw, path.resolve().parent, source=str(path), check_paths=check_paths)


def sweep_to_dict(sweep: SweepConfig) -> dict:
    return sweep.model_dump(mode="json", exclude_none=True)
