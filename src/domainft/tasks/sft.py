"""Generative supervised fine-tuning (SFT) of a decoder chat LLM: conversations rendered with the chat
template, the loss on the assistant turns only (summed per token over the whole optimizer step), eval loss
and perplexity over every eval row, greedy answers to a sample of eval prompts scored against the
references, and a causal-LM folder (tokenizer, template, generation_config.json) as `best/`.

Every piece is a plain function of domainft.core / data; this module only says which ones make up the task.
"""
from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from domainft.config import Config
from domainft.data.chat import sft_table

if TYPE_CHECKING:  # torch is imported where it runs: `validate` reads a task's config rules without it
    import torch

    from domainft.core.sft_batching import TokenLossEval
    from domainft.runspec import RunSpec

EXAMPLE_COLUMNS = ("input_ids", "labels", "position_ids")
EPOCH_HEADER = "epoch  train_loss  eval_loss  perplexity  exact_match  token_f1  rouge_l  samples/s  trainable_down_to"


class SFT:
    name = "sft"
    architecture_suffix = "ForCausalLM"
    example_columns = EXAMPLE_COLUMNS
    epoch_header = EPOCH_HEADER
    default_metric = "loss"
    default_head_lr_mult = 1.0  # the head is the pretrained LM head, not a new one
    causal_lm = True
    labelled = False
    serve_api = "openai"
    min_labels = 0

    @staticmethod
    def token_count(batch: Mapping[str, Any]) -> Any:
        from domainft.core.sft_batching import count_label_tokens

        return count_label_tokens(batch)

    # -- config ----------------------------------------------------------------------------------------
    def config_problems(self, cfg: Config) -> list[str]:
        from domainft.tasks.keys import CLASSIFICATION_METRICS, SAMPLE_METRICS

        p: list[str] = []
        d, t = cfg.data, cfg.train
        named = {d.file_format} | {os.path.splitext(f)[1].lstrip(".").lower() for f in (d.train, d.eval) if f}
        if bad := sorted(named & {"csv", "tsv", "folders"}):
            p.append(f"data.format: task sft reads chat records from JSONL or Parquet files, not {', '.join(bad)}")
        if cfg.augment.enabled:
            p.append("augment.enabled: augmentation rewrites classification texts; task sft has none")
        if t.metric_for_best in CLASSIFICATION_METRICS:
            p.append(f"train.metric_for_best: {t.metric_for_best} is a classification metric; task sft picks the best "
                     f"epoch by loss (the default) or {', '.join(SAMPLE_METRICS)}")
        if t.metric_for_best in SAMPLE_METRICS and cfg.eval.generate_samples == 0:
            p.append(f"train.metric_for_best: {t.metric_for_best} scores generated samples; set "
                     f"eval.generate_samples > 0")
        if t.class_weights != "none":
            p.append("train.class_weights: task sft has no classes")
        if d.replay.from_ or d.label_fixes:
            p.append(f"data.{'replay.from' if d.replay.from_ else 'label_fixes'}: classification only so far")
        if cfg.distill.teacher:
            p.append("distill.teacher: distillation trains classifiers; task sft has no teacher")
        p += _decoder_problems(cfg)
        if cfg.peft.method in ("prompt_tuning", "prefix_tuning"):
            p.append(f"peft.method: {cfg.peft.method} cannot be merged into the model; task sft uses lora or "
                     f"selective")
        return p

    # -- data ------------------------------------------------------------------------------------------
    def parse_options(self, cfg: Config, labels: Optional[tuple[str, ...]], tokenizer: Any = None) -> Any:
        """Conversations; with the tokenizer (prepare), each is also rendered with the template while it is
        read, so that one the template cannot mask is rejected with its file and line."""
        from domainft.data.readers import ParseOptions

        check = json.dumps(self.encoder_spec(cfg, tokenizer, "eval")["chat"]) if tokenizer is not None else None
        return ParseOptions(encoding=cfg.data.encoding, chat_format=cfg.data.record_format, chat_check=check)

    def encoder_spec(self, cfg: Config, tokenizer: Any, split: str) -> dict:
        """The chat template resolved on the driver (a missing one fails before Ray), the rest as configured;
        only the train split is packed (eval rows stay whole: generation needs their prompts)."""
        from domainft.data.chat import resolve_template

        d, m = cfg.data, cfg.model
        template = resolve_template(tokenizer, d.chat_template)
        return {"chat": {"name_or_path": m.name_or_path, "revision": m.revision,
                         "trust_remote_code": m.trust_remote_code, "template": template,
                         "train_on": d.train_on, "overlong": d.overlong, "packing": d.packing and split == "train"}}

    # A plain function: prepare's tokenizer actors get it pickled by reference (domainft.data.chat only).
    examples = staticmethod(sft_table)

    def collate(self, batch: Mapping[str, Any], pad_id: int) -> dict:
        from domainft.core.sft_batching import pad_sft_batch

        return pad_sft_batch(batch, pad_id)

    def report_extras(self, cfg: Config, report: Mapping, planned: Mapping[str, int]) -> dict:
        from domainft.data.sft_report import sft_report

        return sft_report(cfg, report, planned)

    # -- the model -------------------------------------------------------------------------------------
    def build_model(self, name_or_path: str, label_names: Sequence[str], *, trust_remote_code: bool = False,
                    revision: Optional[str] = None, load_in_8bit: bool = False, device: Any = None,
                    meta: bool = False, load_in_4bit: bool = False) -> Any:
        from domainft.core.causal_lm import build_causal_lm

        return build_causal_lm(name_or_path, trust_remote_code, revision, load_in_8bit=load_in_8bit,
                               load_in_4bit=load_in_4bit, device=device, meta=meta)

    # -- the loss --------------------------------------------------------------------------------------
    def loss_spec(self, cfg: Config, label_names: Optional[Sequence[str]], class_counts: Optional[Sequence[int]]
                  ) -> tuple[dict, list[str]]:
        return {"kind": "causal_lm_tokens", "note": "loss on assistant tokens, per token over each optimizer step"}, []

    def build_loss(self, spec: RunSpec, device: torch.device) -> tuple[Optional[Callable], Optional[dict]]:
        # The model's own loss (it shifts the labels; num_items_in_batch comes from the loop: core.loop). No
        # KV cache in training: it is never read, and with it transformers would not see packed rows.
        return None, {"use_cache": False}

    # -- eval ------------------------------------------------------------------------------------------
    def metric_higher_is_better(self, metric: str) -> bool:
        return metric != "loss"

    def evaluator(self, spec: RunSpec, device: torch.device) -> TokenLossEval:
        from domainft.core.sft_batching import TokenLossEval

        return TokenLossEval(device)

    def eval_metrics(self, evaluator: TokenLossEval, spec: RunSpec) -> dict:
        return evaluator.result()

    def sample_eval(self, model: Any, spec: RunSpec, device: Any, epoch: int, rank: int) -> dict:
        """Greedy answers to the first eval.generate_samples eval prompts, scored against their references and
        written to <output_dir>/eval_samples_epoch_N.jsonl. Under ZeRO-3 every rank generates (each forward
        gathers the parameters collectively); otherwise rank 0 alone."""
        n, zero3 = spec.train.generate_samples, spec.effective_zero_stage == 3
        if n == 0 or not spec.data.eval_dir or (rank != 0 and not zero3):
            return {}
        from domainft.core.generation import generate_ids
        from domainft.core.textmetrics import score_samples
        from domainft.data.sft_report import eval_samples

        samples = eval_samples(spec.data.eval_dir, n)
        tokenizer = _tokenizer(spec.model.name_or_path, spec.model.revision, spec.model.trust_remote_code)
        new = generate_ids(model, [s["prompt_ids"] for s in samples], spec.data.pad_token_id or 0,
                           spec.data.stop_token_ids, spec.train.max_new_tokens, batch_size=spec.train.eval_batch_size,
                           synced_gpus=zero3)
        answers = [tokenizer.decode(ids, skip_special_tokens=True) for ids in new]
        refs = [s["reference"] for s in samples]
        metrics = score_samples(answers, refs)
        metrics["samples_stopped"] = sum(len(ids) < spec.train.max_new_tokens for ids in new) / max(len(new), 1)
        if rank == 0:
            path = Path(spec.output_dir) / f"eval_samples_epoch_{epoch}.jsonl"
            with open(path, "w", encoding="utf-8") as f:
                for s, answer in zip(samples, answers):
                    f.write(json.dumps({"source_id": s["source_id"], "messages": s["messages"], "answer": answer,
                                        "reference": s["reference"]}, ensure_ascii=False) + "\n")
        return metrics

    def epoch_row(self, record: Mapping) -> str:
        def num(key: str, width: int, digits: int = 4) -> str:
            v = record.get(key)
            return f"{v:>{width}.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else f"{'-':>{width}}"

        return (f"{record['epoch']:>5}  {num('train_loss', 10)}  {num('eval_loss', 9)}  {num('perplexity', 10, 2)}  "
                f"{num('exact_match', 11)}  {num('token_f1', 8)}  {num('rouge_l', 7)}  "
                f"{record.get('train_samples_per_s', 0.0):>9.1f}  depth {record['lowest_trainable']}")

    def warnings(self, best: Mapping, history: Sequence[Mapping], spec: RunSpec) -> list[str]:
        out = []
        stopped = best.get("samples_stopped")
        if stopped is not None and stopped < 0.5:
            out.append(f"only {stopped:.0%} of the sample answers of epoch {best['epoch']} ended with the end-of-turn "
                       f"token within eval.max_new_tokens ({spec.train.max_new_tokens}): the model may not have "
                       f"learnt to stop yet (more epochs or a higher LR), or the answers are longer than that")
        return out

    def summary_lines(self, summary: Mapping) -> list[str]:
        b = summary["best"]
        line = f"best epoch {b['epoch']} by {summary['metric_for_best']}: eval loss {b['eval_loss']:.4f} " \
               f"(perplexity {b['perplexity']:.2f}) over {b['eval_tokens']:,} answer tokens of {b['eval_rows']} rows"
        lines = ["", line]
        if b.get("exact_match") is not None:
            lines.append(f"generated samples: exact match {b['exact_match']:.4f}, token F1 {b['token_f1']:.4f}, "
                         f"ROUGE-L {b['rouge_l']:.4f} (eval_samples_epoch_{b['epoch']}.jsonl)")
        return lines

    # -- outputs ---------------------------------------------------------------------------------------
    def export(self, spec: RunSpec, weights: Mapping, trained: Sequence[str]) -> dict:
        """best/ a plain causal-LM folder (LoRA merged) with the tokenizer, the run's chat template and a
        generation_config.json that stops at the end of a turn; best_adapter/ the LoRA adapter."""
        from domainft.core.causal_lm import export_causal_lm

        m, d = spec.model, spec.data
        if m.peft.adapter and not m.peft.mergeable:  # prompt / prefix tuning: refused for decoders by the checks
            raise ValueError(f"task sft exports merged models; {m.peft.method} cannot be merged (a bug to get here)")
        best = str(Path(spec.output_dir) / "best")
        adapter = str(Path(spec.output_dir) / "best_adapter") if m.peft.adapter else None
        out = export_causal_lm(weights, m.name_or_path, best, chat_template=d.chat_template,
                               stop_ids=d.stop_token_ids, peft_spec=m.peft, adapter_dir=adapter,
                               trust_remote_code=m.trust_remote_code, revision=m.revision, required=trained,
                               inference={"task": "sft", "max_length": d.max_length})
        return {"best_model_dir": out["best"], "adapter_dir": out["adapter"], "merged": True}

    def check_model_dir(self, serve_cfg: Any) -> list[str]:
        from domainft.serving.llm.model import check_serving

        return check_serving(serve_cfg)

    def predictor_loader(self, serve_cfg: Any) -> Callable[[], Any]:
        from domainft.serving.llm.loaders import model_loader

        return model_loader(serve_cfg)

    def serve_examples(self, url: str, served: Sequence[str]) -> list[str]:
        from domainft.serving.llm.model import backend_list

        body = json.dumps({"model": served[0], "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64})
        return [f"  chat:      curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' -d '{body}'",
                f"  openai:    OpenAI(base_url=\"{url}/v1\", api_key=\"unused\").chat.completions.create("
                f"model=\"{served[0]}\", messages=[...])",
                f"  backends on this machine: {backend_list()}"]


def _decoder_problems(cfg: Config) -> list[str]:
    """task sft needs a causal LM: an encoder (BERT family) has no next-token head to fine-tune."""
    from domainft.families import DECODER_MODEL_TYPES, FAMILIES, read_model_config

    try:
        model_type = read_model_config(cfg.model.name_or_path, cfg.model.revision).get("model_type")
    except (OSError, ValueError):
        return []  # the family check says why it cannot be read
    if model_type in FAMILIES and model_type not in DECODER_MODEL_TYPES:
        return [f"task: sft fine-tunes a decoder LLM ({', '.join(DECODER_MODEL_TYPES)}); {cfg.model.name_or_path} "
                f"is a {model_type!r} encoder (task: classification trains those)"]
    return []


@functools.lru_cache(maxsize=2)
def _tokenizer(name_or_path: str, revision: Optional[str], trust_remote_code: bool):
    from domainft.data.tokenize import load_tokenizer

    return load_tokenizer(name_or_path, revision=revision, trust_remote_code=trust_remote_code)


def samples_path(output_dir: str, epoch: int) -> str:
    return os.path.join(output_dir, f"eval_samples_epoch_{epoch}.jsonl")
