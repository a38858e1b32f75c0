"""Sequence classification: a new head over a pretrained encoder, cross-entropy (class-weighted or
distilled from a teacher), accuracy and macro-F1 from a confusion matrix summed across ranks.

Every piece is a plain function of domainft.core / data / export / serving; this module only says
which ones make up the task.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from domainft.config import Config
from domainft.data.tokenize import tokenize_table
from domainft.summary import ADVICE, EPOCH_HEADER, best_lines, epoch_row

if TYPE_CHECKING:  # torch is imported where it runs: `validate` reads a task's config rules without it
    import torch

    from domainft.runspec import RunSpec

# The columns of a prepared example; the others of the split (text, provenance) are for audits and people.
EXAMPLE_COLUMNS = ("input_ids", "label")


class ClassificationEval:
    """A rank's eval sums: the confusion matrix [true, pred] and (loss x rows, rows)."""

    def __init__(self, num_classes: int, device: torch.device):
        import torch

        self.num_classes = num_classes
        self.cm = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)
        self.stats = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, rows

    def update(self, output: Any, batch: Mapping[str, torch.Tensor]) -> int:
        import torch

        k = self.num_classes
        preds, labels = output.logits.argmax(-1), batch["labels"]
        self.cm += torch.bincount(labels * k + preds, minlength=k * k).view(k, k)
        self.stats[0] += output.loss.double() * labels.numel()  # the model's mean loss, back to a sum
        self.stats[1] += labels.numel()
        return labels.numel()

    def sums(self) -> list[torch.Tensor]:
        return [self.cm, self.stats]

    def result(self) -> tuple[torch.Tensor, float, int]:
        """(confusion matrix on CPU, mean loss, rows): one host sync."""
        rows = int(self.stats[1].item())
        return self.cm.cpu(), float(self.stats[0].item() / max(rows, 1)), rows


class Classification:
    name = "classification"
    architecture_suffix = "ForSequenceClassification"
    example_columns = EXAMPLE_COLUMNS
    epoch_header = EPOCH_HEADER
    default_metric = "macro_f1"
    default_head_lr_mult = 10.0  # the new head learns far faster than the pretrained layers (optim.head_lr_mult)
    causal_lm = False
    labelled = True
    serve_api = "classify"
    min_labels = 2
    token_count = None  # the model's mean loss over equal micro batches (drop_last) is the step's mean

    # -- config ----------------------------------------------------------------------------------------
    def config_problems(self, cfg: Config) -> list[str]:
        from domainft.tasks.keys import SAMPLE_METRICS, SFT_ONLY_DATA

        p, d = [], cfg.data
        if d.format != d.file_format:
            p.append(f"data.format: {d.format} is a chat record format (task: sft); a classifier reads text and "
                     f"label columns")
        # Set to other than the default: a config written out in full (tune, k8s) names every key.
        defaults = type(d).model_fields
        p += [f"data.{key}: task sft only (this config's task is {cfg.task})"
              for key in SFT_ONLY_DATA if getattr(d, key) != defaults[key].default]
        if cfg.train.metric_for_best in SAMPLE_METRICS:
            p.append(f"train.metric_for_best: {cfg.train.metric_for_best} scores generated answers (task sft); a "
                     f"classifier uses macro_f1, accuracy or loss")
        return p

    # -- data ------------------------------------------------------------------------------------------
    def parse_options(self, cfg: Config, labels: Optional[tuple[str, ...]], tokenizer: Any = None) -> Any:
        from domainft.data.readers import ParseOptions

        d = cfg.data
        return ParseOptions(d.text_column, d.label_column, d.encoding, labels, d.nfkc, d.unescape_html)

    def encoder_spec(self, cfg: Config, tokenizer: Any, split: str) -> dict:
        from domainft.data.tokenize import encoder_spec

        m = cfg.model
        return encoder_spec(tokenizer, m.name_or_path, m.revision, m.trust_remote_code)

    def report_extras(self, cfg: Config, report: Mapping, planned: Mapping[str, int]) -> dict:
        return {}

    # A plain function, not a method: prepare's tokenizer actors get it pickled by reference and import
    # domainft.data.tokenize only, not this module's torch and model code.
    examples = staticmethod(tokenize_table)

    def collate(self, batch: Mapping[str, Any], pad_id: int) -> dict:
        from domainft.core.batching import pad_batch

        return pad_batch(batch, pad_id)

    # -- the model -------------------------------------------------------------------------------------
    def build_model(self, name_or_path: str, label_names: Sequence[str], *, trust_remote_code: bool = False,
                    revision: Optional[str] = None, load_in_8bit: bool = False, device: Any = None,
                    meta: bool = False, load_in_4bit: bool = False) -> Any:
        from domainft.core.model import build_model, build_model_from_config

        if meta:
            return build_model_from_config(name_or_path, label_names, trust_remote_code, revision)
        return build_model(name_or_path, label_names, trust_remote_code=trust_remote_code, revision=revision,
                           load_in_8bit=load_in_8bit, load_in_4bit=load_in_4bit, device=device)

    # -- the loss --------------------------------------------------------------------------------------
    def loss_spec(self, cfg: Config, label_names: Optional[Sequence[str]], class_counts: Optional[Sequence[int]]
                  ) -> tuple[dict, list[str]]:
        """Distillation (distill.teacher), class-weighted CE (train.class_weights: balanced) or the model's CE."""
        d = cfg.distill
        if d.teacher:
            from domainft.export.source import classifier_labels

            labels = classifier_labels(Path(d.teacher))
            problems = []
            if label_names is not None and list(label_names) != labels:
                problems.append(f"distill.teacher: {d.teacher}'s labels {labels} differ from the data's "
                                f"{list(label_names)} (same names, same order needed)")
            return {"kind": "distillation", "teacher": d.teacher, "temperature": d.temperature, "alpha": d.alpha,
                    "hidden_loss": d.hidden_loss, "student_layers": d.student_layers}, problems
        if cfg.train.class_weights == "balanced":
            from domainft.core.losses import balanced_class_weights

            weights = balanced_class_weights(class_counts) if class_counts else None
            return {"kind": "weighted_cross_entropy", "class_weights": weights, "note": "class-weighted loss"}, []
        return {"kind": "cross_entropy"}, []

    def build_loss(self, spec: RunSpec, device: torch.device) -> tuple[Optional[Callable], Optional[dict]]:
        loss = spec.loss
        if loss["kind"] == "weighted_cross_entropy":
            from domainft.core.losses import weighted_cross_entropy

            return weighted_cross_entropy(loss["class_weights"]), None
        if loss["kind"] == "distillation":
            return _distillation(loss, spec.data.label_names, spec.model.num_layers, device)
        return None, None

    # -- eval ------------------------------------------------------------------------------------------
    def metric_higher_is_better(self, metric: str) -> bool:
        return metric != "loss"

    def evaluator(self, spec: RunSpec, device: torch.device) -> ClassificationEval:
        return ClassificationEval(len(spec.data.label_names), device)

    def eval_metrics(self, evaluator: ClassificationEval, spec: RunSpec) -> dict:
        from domainft.core.metrics import metrics_from_confusion

        cm, loss, rows = evaluator.result()
        m = metrics_from_confusion(cm.numpy(), spec.data.label_names)
        return {"eval_loss": loss, "eval_rows": rows, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                "per_class": m["per_class"], "confusion": cm.tolist()}

    def sample_eval(self, model: Any, spec: RunSpec, device: Any, epoch: int, rank: int) -> dict:
        return {}

    def epoch_row(self, record: Mapping) -> str:
        return epoch_row(record)

    def warnings(self, best: Mapping, history: Sequence[Mapping], spec: RunSpec) -> list[str]:
        from domainft.core.metrics import prediction_warnings

        out = prediction_warnings(best["confusion"], spec.data.label_names)
        if out:
            out.append(ADVICE.format(steps=history[-1]["global_step"], batch=spec.geometry.global_batch,
                                     head=spec.optimizer.head_lr_mult))
        return out

    def summary_lines(self, summary: Mapping) -> list[str]:
        return best_lines(summary)

    # -- outputs ---------------------------------------------------------------------------------------
    def export(self, spec: RunSpec, weights: Mapping, trained: Sequence[str]) -> dict:
        """best/ is a plain Hugging Face classifier (full fine-tuning, selective, merged LoRA) or the PEFT
        adapter (prompt / prefix tuning, peft.export: adapter); best_adapter/ holds any adapter. Written
        on the driver's CPU from the consolidated fp32 weights: no ZeRO gather, whatever the stage. A plain
        classifier's config.json records data.max_length and the truncation side, which `domainft serve`
        and `domainft export` then default to."""
        from domainft.core.export import export_hf, export_peft

        m, labels, length = spec.model, spec.data.label_names, spec.data.max_length
        best_dir = str(Path(spec.output_dir) / "best")
        if not m.peft.adapter:
            export_hf(weights, m.name_or_path, labels, m.name_or_path, best_dir, trust_remote_code=m.trust_remote_code,
                      revision=m.revision, required=trained, max_length=length)
            return {"best_model_dir": best_dir, "adapter_dir": None, "merged": True}
        adapter_dir = str(Path(spec.output_dir) / "best_adapter")
        out = export_peft(weights, m.name_or_path, labels, m.peft, m.name_or_path, best_dir, adapter_dir,
                          trust_remote_code=m.trust_remote_code, revision=m.revision, required=trained,
                          merge=m.peft.mergeable and m.peft_export != "adapter", max_length=length)
        return {"best_model_dir": best_dir, "adapter_dir": adapter_dir, "merged": out["merged"]}

    def check_model_dir(self, serve_cfg: Any) -> list[str]:
        from domainft.errors import UserError
        from domainft.serving.predictors import check_model_dir

        c = serve_cfg
        if c.backend in ("transformers", "vllm"):
            raise UserError(f"--backend {c.backend} serves causal LMs; {c.model_dir} is a classifier (backend torch "
                            f"or onnx)")
        if c.llm_options_set:
            raise UserError(f"{c.model_dir} is a classifier; {', '.join(c.llm_options_set)} apply to causal LMs "
                            f"(the OpenAI-compatible API)")
        return check_model_dir(c.model_dir, c.backend or "torch", c.variant)

    def serve_examples(self, url: str, served: Sequence[str]) -> list[str]:
        return [f"  classify:  curl -s -X POST {url}/v1/classify -H 'Content-Type: application/json' "
                f"-d '{{\"texts\": [\"Shares rose after the results.\"]}}'"]

    def predictor_loader(self, serve_cfg: Any) -> Callable[[], Any]:
        import functools

        from domainft.serving.predictors import load_predictor

        c = serve_cfg
        return functools.partial(load_predictor, c.model_dir, c.backend or "torch", c.variant, max_length=c.max_length,
                                 batch_size=c.max_batch_size, threads=c.intra_op_threads,
                                 trust_remote_code=c.trust_remote_code)


def _distillation(loss: Mapping, label_names: Sequence[str], student_layers: int, device: torch.device):
    """(loss_fn, forward kwargs) of a distillation run: the teacher lives in every worker, outside
    DeepSpeed, without gradients (bf16 on a GPU)."""
    import torch

    from domainft.core.distill import distill_loss_fn, layer_pairs
    from domainft.core.model import build_model

    teacher = build_model(loss["teacher"], label_names,
                          torch_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    teacher.requires_grad_(False)
    teacher.eval().to(device)
    layers = loss["student_layers"] or layer_pairs(student_layers, teacher.config)
    return (distill_loss_fn(teacher, loss["temperature"], loss["alpha"], loss["hidden_loss"], layers),
            {"output_hidden_states": True} if loss["hidden_loss"] > 0 else None)
