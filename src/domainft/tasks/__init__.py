"""The task seam: what differs between kinds of fine-tuning, and nothing else.

Data, the engine, unfreezing, checkpoints, resume, Tune and the CLI are shared; a `Task` holds only
what a kind of fine-tuning changes:

- config: the keys that belong to a task (`config_problems`);
- data: how input records are read (`parse_options`), how a prepared record becomes a training example
  (`encoder_spec`, `examples`), how examples are padded into a batch (`collate`), what the data report adds
  (`report_extras`);
- the model: which class is built over the pretrained weights (`build_model`);
- the loss: as data derived from the config (`loss_spec`) and as a function in the workers (`build_loss`;
  `token_count`: what a loss sum is divided by, counted over the whole optimizer step);
- eval: what is accumulated over the eval split and summed across ranks (`evaluator`), the metrics
  made of it, samples generated after it (`sample_eval`), which metric is better higher, and how an
  epoch reads on the console;
- outputs: what `best/` holds (`export`), which API and predictor serve it (`serve_api`, `check_model_dir`,
  `predictor_loader`, `serve_examples`).

`config.task` names the task (`classification` by default); `get_task` is the only place that picks one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol, Sequence

from domainft.config import Config

if TYPE_CHECKING:  # light at import: `validate` asks a task for its config rules without torch
    from domainft.runspec import RunSpec


class Task(Protocol):
    name: str
    architecture_suffix: str  # what its models' config.json `architectures` end with (...ForSequenceClassification)
    example_columns: tuple[str, ...]  # the prepared Parquet columns a training example is read from
    epoch_header: str  # the console's per-epoch table header (epoch_row fills it)
    default_metric: str  # train.metric_for_best when unset
    default_head_lr_mult: float  # optim.head_lr_mult when unset
    min_labels: int  # distinct labels the prepared train split must have (0: the task has none)
    causal_lm: bool  # its model is a causal LM, whose pretrained head stays frozen under PEFT (core.peft.PeftSpec)
    labelled: bool  # its records carry class labels: `audit`, `terms`, `augment` and `distill` work on them
    # batch -> the number of loss terms in it (tokens), or None: the loss is the model's mean per micro batch
    token_count: Optional[Callable[[Mapping[str, Any]], Any]]

    def config_problems(self, cfg: Config) -> list[str]:
        """The config's keys that belong to another task, or that this one cannot honour (no model needed)."""

    def parse_options(self, cfg: Config, labels: Optional[tuple[str, ...]], tokenizer: Any = None) -> Any:
        """The data.readers.ParseOptions input records are read with (`labels`: data.labels, explicit;
        `tokenizer`: the run's, loaded by prepare, for checks that need it; None in `validate`)."""

    def encoder_spec(self, cfg: Config, tokenizer: Any, split: str) -> dict:
        """What prepare's tokenizer actors rebuild their encoder from for a split (data.tokenize.build_encoder)."""

    def examples(self, encode: Callable, records: Any) -> Any:
        """A prepared record batch (pyarrow Table: text, label, provenance) -> training examples.
        A plain function of a light module (`examples = staticmethod(fn)`): prepare's tokenizer actors get
        it pickled by reference and must not import the task's torch and model code."""

    def collate(self, batch: Mapping[str, Any], pad_id: int) -> dict:
        """Examples from the prepared Parquet (numpy, ragged) -> padded model inputs (torch)."""

    def build_model(self, name_or_path: str, label_names: Sequence[str], *, trust_remote_code: bool = False,
                    revision: Optional[str] = None, load_in_8bit: bool = False, device: Any = None,
                    meta: bool = False, load_in_4bit: bool = False) -> Any:
        """The model a run trains, over the pretrained weights; meta: the architecture on the meta device,
        from config.json alone (planning)."""

    def loss_spec(self, cfg: Config, label_names: Optional[Sequence[str]], class_counts: Optional[Sequence[int]]
                  ) -> tuple[dict, list[str]]:
        """(the run's loss as JSON-able data, the config's problems with it)."""

    def build_loss(self, spec: RunSpec, device: Any) -> tuple[Optional[Callable], Optional[dict]]:
        """(loss_fn(output, batch) or None for the model's own loss, extra forward kwargs or None)."""

    def metric_higher_is_better(self, metric: str) -> bool: ...

    def evaluator(self, spec: RunSpec, device: Any) -> Any:
        """A core.loop.Evaluator: accumulates a rank's eval batches; `evaluate` sums it across ranks."""

    def eval_metrics(self, evaluator: Any, spec: RunSpec) -> dict:
        """The epoch's eval record from the summed evaluator: eval_loss, eval_rows and the task's own."""

    def sample_eval(self, model: Any, spec: RunSpec, device: Any, epoch: int, rank: int) -> dict:
        """After the eval pass, on every rank: metrics of samples the model generates (written for people to
        read), or {}."""

    def report_extras(self, cfg: Config, report: Mapping, planned: Mapping[str, int]) -> dict:
        """What the task adds to data_report.json once the splits are written (`planned`: rows per split)."""

    def epoch_row(self, record: Mapping) -> str: ...

    def warnings(self, best: Mapping, history: Sequence[Mapping], spec: RunSpec) -> list[str]:
        """Plain-language warnings about the best epoch, for the console and metrics.json."""

    def summary_lines(self, summary: Mapping) -> list[str]:
        """The best epoch, as the console's final table shows it."""

    def export(self, spec: RunSpec, weights: Mapping, trained: Sequence[str]) -> dict:
        """Write <output_dir>/best/ (and best_adapter/ for an adapter) from the trained fp32 weights.
        Returns {"best_model_dir", "adapter_dir" (or None), "merged"}."""

    serve_api: str  # which API serves its models: "classify" (/v1/classify) or "openai" (chat completions)

    def check_model_dir(self, serve_cfg: Any) -> list[str]:
        """Cheap checks of `domainft serve`'s folder and options before Ray starts (UserError naming the file
        or option); returns what it serves: the labels (classifier) or the model ids (base and adapters)."""

    def predictor_loader(self, serve_cfg: Any) -> Callable[[], Any]:
        """What a serving replica calls to build its predictor (picklable)."""

    def serve_examples(self, url: str, served: Sequence[str]) -> list[str]:
        """Console lines showing how to call the running server."""


def _tasks() -> dict[str, Task]:
    from domainft.tasks.classification import Classification
    from domainft.tasks.sft import SFT

    return {t.name: t for t in (Classification(), SFT())}


def require_labelled(cfg: Config, command: str) -> None:
    """A command that works on class labels refuses a config whose task has none (a UserError, before Ray)."""
    from domainft.errors import UserError

    if not get_task(cfg.task).labelled:
        raise UserError(f"`domainft {command}` works on labelled classification data; this config's task is "
                        f"{cfg.task}")


def task_names() -> tuple[str, ...]:
    return tuple(_tasks())


def get_task(name: str) -> Task:
    """The task of `config.task` (validated by the config schema, so an unknown name is a bug)."""
    tasks = _tasks()
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; domainft has {sorted(tasks)}")
    return tasks[name]


def task_of_model_dir(folder: Any) -> Task:
    """The task whose models a folder holds, by its config.json `architectures` (a `best/` or an export
    folder); a folder that names none falls to the first task, whose checks then say what is wrong."""
    tasks = list(_tasks().values())
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        architectures = [str(a) for a in config.get("architectures") or []]
    except (OSError, ValueError, AttributeError):
        architectures = []
    for task in tasks:
        if any(a.endswith(task.architecture_suffix) for a in architectures):
            return task
    return tasks[0]
