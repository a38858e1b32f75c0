"""Typed configuration. Every field is documented; unknown keys are errors.

Cross-field checks live in `checks.py` so that every problem is reported together.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


# task sft's record formats (data.format): domainft.data.chat reads them.
CHAT_FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ReplayConfig(Strict):
    # `from` is a Python keyword: the field is from_, read and written as `from`.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True)

    from_: Optional[str] = Field(
        None, alias="from", description="Continual retraining: a previous run's output_dir. Its prepared train split's "
                                        "original rows are mixed into the new train split (aug_op `replay`), and after "
                                        "training its eval split is scored again, so forgetting is visible.")
    fraction: float = Field(0.2, ge=0.0, le=1.0, description="Share of the previous train split's original rows replayed "
                                                             "(stratified by label, seeded by train.seed); 0: none, only "
                                                             "the forgetting metrics.")


class DataConfig(Strict):
    train: str = Field(description="Training corpus: a file, a folder, a glob, or a URI pyarrow accepts (s3://, gs://).")
    eval: Optional[str] = Field(None, description="Optional eval corpus; else `eval_fraction` of train is held out (stratified).")
    format: Literal["auto", "jsonl", "csv", "tsv", "parquet", "folders", "messages", "alpaca", "sharegpt",
                    "prompt_completion"] = Field(
        "auto", description="Input format; `auto` picks by extension, a folder of label subfolders is `folders`. "
                    "task sft: JSONL or Parquet records of chat data, `auto` detects each record's format by its keys, "
                    "or name it: `messages` (OpenAI: system / user / assistant, multi-turn), `alpaca` (instruction, "
                    "input, output, optional system), `sharegpt` (conversations with from / value) or "
                    "`prompt_completion` (prompt, completion, optional system).")
    quoting: Literal["auto", "csv", "none"] = Field(
        "auto", description="CSV/TSV quoting. `csv`: a field starting with `\"` is quoted: it may hold delimiters, newlines and "
                    "`\"\"` (a literal quote). `none`: one line per record, quotes kept literally. `auto`: `csv` for CSV files; "
                    "for a TSV file `csv` when its first 1 MiB holds a quoted field (`\"` at a line start or after a tab, inner "
                    "quotes doubled, a closing `\"` before a tab or a line end: how pandas, spreadsheets and database exports "
                    "write TSV), else `none`.")
    text_column: str = Field("text", description="Column holding the text.")
    label_column: str = Field("label", description="Column holding the label.")
    labels: Optional[list[str]] = Field(None, description="Explicit label set (order = ids). Else inferred, sorted.")
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Held-out fraction when `eval` is not given.")
    on_bad_record: Literal["error", "skip"] = Field(
        "error", description="`error`: stop at the first bad record, naming file and line. `skip`: write it to rejects.jsonl.")
    max_class_ratio: float = Field(3.0, ge=1.0, description="Largest allowed max/min class ratio in the train split.")
    balance: Literal["oversample", "undersample", "none"] = Field(
        "oversample", description="How the train split is brought under `max_class_ratio`.")
    max_length: int = Field(128, ge=8, le=131072, description="Tokenizer truncation length. task sft: the longest "
                                                               "conversation in tokens (and the packed row length).")
    chat_template: str = Field(
        "auto", description="task sft: `auto` renders conversations with the tokenizer's own chat template; or a named "
                    "template for a tokenizer without one: chatml (Qwen, SmolLM), llama3, deepseek, mistral, alpaca.")
    train_on: Literal["all_assistant", "last_turn"] = Field(
        "all_assistant", description="task sft: which assistant turns the loss covers (with their end-of-turn token); "
                                     "system and user turns never.")
    overlong: Literal["truncate_prompt", "drop"] = Field(
        "truncate_prompt", description="task sft: a conversation over max_length tokens: `truncate_prompt` cuts it from "
                    "the left (system prompt and early turns first) while the last answer fits whole, else drops it; "
                    "`drop` drops it. Answers are never cut; both are counted in the data report.")
    packing: bool = Field(
        False, description="task sft: pack several conversations into each train row of up to max_length tokens, with "
                    "position ids restarting per conversation and attention that never crosses one (eval stays "
                    "unpacked). Fewer padding tokens, the same loss.")
    nfkc: bool = Field(False, description="Apply Unicode NFKC normalisation while cleaning.")
    unescape_html: bool = Field(False, description="Unescape HTML entities (&amp; ...) while cleaning.")
    dedupe: bool = Field(True, description="Remove exact duplicate (text, label) rows, counted.")
    encoding: str = Field("utf-8", description="Text encoding of the input files.")
    label_fixes: Optional[str] = Field(
        None, description="A reviewer's label fixes, applied before dedupe and split: CSV with `row_id` (or `source` and "
                          "`line`) and `fix` (a label, or `drop`); rows with an empty fix are ignored, so the audit's "
                          "label_issues.csv with its `fix` cells filled in is a valid file.")
    replay: ReplayConfig = Field(default_factory=ReplayConfig)

    @property
    def file_format(self) -> str:
        """The file format: a chat record format is read from JSONL or Parquet files, picked by extension."""
        return "auto" if self.format in CHAT_FORMATS else self.format

    @property
    def record_format(self) -> str:
        """task sft: the chat record format (`auto`: detected per record by its keys)."""
        return self.format if self.format in CHAT_FORMATS else "auto"


class ModelConfig(Strict):
    name_or_path: str = Field(description="Local Hugging Face directory or hub name.")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint. Off: a security risk.")
    revision: Optional[str] = Field(None, description="Hub revision (commit, tag or branch) to pin.")
    load_in_8bit: bool = Field(
        False, description="Load the frozen base weights as int8 (LLM.int8, bitsandbytes) under LoRA (peft.method: lora), "
                    "at deepspeed.zero_stage 0-2. Runs on CPU too (slower than fp32 there). The export merges the "
                    "adapter into the full-precision base.")
    load_in_4bit: bool = Field(
        False, description="QLoRA: load the frozen base weights as 4-bit NF4 (bitsandbytes, double quantization) under "
                    "LoRA (peft.method: lora), at deepspeed.zero_stage 0-2; the head and norms stay in full precision. "
                    "Needs a bitsandbytes build with 4-bit kernels for the device (the config check says when it lacks "
                    "them). The export merges the adapter into the full-precision base.")


class OptimConfig(Strict):
    lr: float = Field(5e-5, gt=0.0, le=1.0, description="Base peak LR: the head gets lr*head_lr_mult, depth d>=1 (top layer = 1) lr*layer_decay**d.")
    layer_decay: float = Field(0.9, gt=0.0, le=1.0, description="LR of a group = lr * layer_decay ** depth_from_top.")
    layer_lrs: Optional[list[float]] = Field(
        None, description="Explicit peak LR per encoder depth, top first (depth 1..L, then embeddings). Overrides layer_decay.")
    head_lr_mult: Optional[float] = Field(
        None, gt=0.0, description="Multiplier on `lr` for the head (depth 0). Default 10 for classification: the new, "
                    "randomly initialised head learns far faster than the pretrained layers (benchmarks/recipe.py: eval "
                    "loss 0.28 vs 0.85 after one epoch on an imbalanced 600-row corpus); 1 for sft, whose head is the "
                    "pretrained LM head.")
    lr_scaling: Literal["none", "sqrt", "linear"] = Field(
        "none", description="Scale every peak LR with the global batch (workers x batch_size x grad_accum) relative to "
                            "`lr_reference_batch`: sqrt or linear in their ratio. Keeps a recipe tuned on one worker "
                            "right on several.")
    lr_reference_batch: int = Field(16, ge=1, description="The global batch at which `lr` is meant as given (see lr_scaling).")
    weight_decay: float = Field(0.01, ge=0.0, lt=1.0, description="AdamW weight decay; never applied to biases and norms.")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of all steps spent in linear warmup.")
    warmup_steps: Optional[int] = Field(None, ge=0, description="Warmup steps; overrides warmup_ratio (capped at the total steps).")
    schedule: Literal["linear", "cosine", "constant"] = Field("linear", description="Decay after warmup.")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Floor of the decay as a fraction of the peak.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0.0, description="AdamW epsilon.")
    eight_bit: bool = Field(
        False, description="bitsandbytes AdamW8bit: block-wise 8-bit Adam moments (about 1/4 of the optimizer state; tensors "
                    "under 4096 elements keep 32-bit moments).")


class UnfreezeConfig(Strict):
    every_epochs: float = Field(
        1.0, ge=0.0, description="Thaw one more layer every N epochs, top-down. 0 (with every_steps and train_top_fraction unset) = "
                    "everything trainable from the start. Layers due to thaw after the last step stay frozen.")
    every_steps: Optional[int] = Field(None, gt=0, description="Thaw one more layer every N optimizer steps (instead of epochs).")
    initial_layers: int = Field(2, ge=0, description="Top encoder layers trainable (with the head) at the start.")
    thaw_warmup_steps: int = Field(
        10, ge=0, description="Linear warmup of a group's LR after it thaws (its Adam moments are stale).")
    train_top_fraction: Optional[float] = Field(
        None, gt=0.0, le=1.0, description="Train only the top layers holding at least this fraction of parameters; the rest stay frozen "
                    "(no optimizer state). Excludes every_epochs/every_steps/initial_layers.")


class PeftConfig(Strict):
    method: Literal["none", "lora", "prompt_tuning", "prefix_tuning", "selective"] = Field(
        "none", description="Parameter-efficient regime: `none` (full fine-tuning), `lora`, `prompt_tuning`, `prefix_tuning` "
                    "(the `peft` library) or `selective` (only the `trainable` kinds of parameters). The classifier head "
                    "always trains.")
    r: int = Field(8, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(16.0, gt=0.0, description="LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: Optional[list[str]] = Field(
        None, description="LoRA target modules (names or dotted name endings, e.g. query, value), or [all-linear] for every "
                    "linear layer of the layers (attention and MLP; on mixture-of-experts models attention and the "
                    "routed experts); default per architecture: attention query "
                    "and value on encoders, the attention projections (q/k/v/o, DeepSeek's MLA projections) on decoders.")
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Virtual tokens of prompt / prefix tuning.")
    trainable: list[Literal["ffn", "attention", "bias", "norm", "experts", "shared_experts", "router"]] = Field(
        default_factory=lambda: ["ffn"], description="Selective: the kinds that train inside each trainable layer (`bias` = every "
                                                  "bias, BitFit; in mixture-of-experts layers `experts` are the routed "
                                                  "experts, `shared_experts` the always-on ones, `router` the gate that "
                                                  "picks experts).")
    export: Literal["auto", "merged", "adapter"] = Field(
        "auto", description="`best/` of a LoRA run: `merged` (a plain Hugging Face model; `auto` for LoRA) or `adapter` (the PEFT "
                    "directory). Prompt / prefix tuning cannot be merged (`auto` = adapter). `best_adapter/` always holds "
                    "the adapter.")


class TrainConfig(Strict):
    epochs: int = Field(3, ge=1, description="Epochs over the train split.")
    batch_size: int = Field(16, ge=1, description="Micro batch per worker.")
    eval_batch_size: Optional[int] = Field(None, ge=1, description="Eval batch per worker; default 2x batch_size.")
    grad_accum: int = Field(1, ge=1, description="Micro batches accumulated per optimizer step.")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="fp16 needs a GPU.")
    seed: int = Field(42, description="Seed for split, shuffling, initialisation.")
    max_grad_norm: float = Field(1.0, ge=0.0, description="Gradient clipping; 0 disables.")
    metric_for_best: Optional[Literal["macro_f1", "accuracy", "loss", "exact_match", "token_f1", "rouge_l"]] = Field(
        None, description="Metric that picks the best checkpoint (loss: the eval loss). Default macro_f1 for "
                          "classification, loss for sft; sft may also use the generated samples' exact_match, "
                          "token_f1 or rouge_l (eval.generate_samples > 0).")
    early_stopping_patience: Optional[int] = Field(None, ge=1, description="Stop after N epochs without improvement.")
    log_every_steps: int = Field(10, ge=1, description="Progress line and LR log interval (steps).")
    max_steps_per_epoch: Optional[int] = Field(None, ge=1, description="Cap on optimizer steps per epoch (smoke runs).")
    gradient_checkpointing: bool = Field(
        False, description="Recompute each trainable layer's activations in the backward pass instead of keeping them: "
                    "less activation memory (large decoders, long sequences) for about a third more compute. Frozen "
                    "layers keep no activations either way.")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="Training loss weights per class: `balanced` weighs class c by N / (C * n_c) over the train "
                            "split as balanced (eval loss stays unweighted).")


class DeepSpeedConfig(Strict):
    zero_stage: int = Field(
        0, ge=0, le=3, description="ZeRO stage. 0 when model+optimizer fit on one device (fastest); 2-3 to shard.")
    offload_optimizer: bool = Field(False, description="Keep optimizer state in CPU memory (ZeRO 1-3).")
    offload_params: bool = Field(False, description="Keep parameters in CPU memory (ZeRO 3 only).")
    overrides: dict = Field(default_factory=dict, description="Merged into the generated DeepSpeed config, validated.")


class ScalingConfig(Strict):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one per GPU on GPU clusters).")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: float = Field(1.0, gt=0.0, description="CPUs reserved per worker.")


class RunConfig(Strict):
    storage_path: Optional[str] = Field(None, description="Ray checkpoints: local folder or URI; default <output_dir>/ray.")
    name: Optional[str] = Field(None, description="Run name under storage_path; default: output_dir's name.")
    max_failures: int = Field(1, ge=-1, description="Worker-group restarts from the last checkpoint; -1 = unlimited.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept (the best is always among them).")


class AugmentOps(Strict):
    synonym: float = Field(0.1, ge=0.0, le=1.0, description="Fraction of eligible words replaced by a synonym.")
    swap: float = Field(0.05, ge=0.0, le=1.0, description="EDA random swap strength.")
    delete: float = Field(0.05, ge=0.0, le=1.0, description="EDA random deletion probability per word.")
    insert: float = Field(0.05, ge=0.0, le=1.0, description="EDA random insertion (of synonyms) strength.")
    backtranslate: float = Field(0.0, ge=0.0, le=1.0, description="Probability an output is a back-translation.")


class BacktranslationConfig(Strict):
    backend: Literal["apertium", "marian"] = Field("apertium", description="apertium (offline, Debian) or marian (seq2seq model).")
    pivot: str = Field("spa", description="Apertium pivot language (eng-<pivot> pair).")
    forward: Optional[str] = Field(None, description="Marian: source->pivot model path or hub name.")
    backward: Optional[str] = Field(None, description="Marian: pivot->source model path or hub name.")
    batch_size: int = Field(32, ge=1, description="Texts per translation batch.")
    num_beams: int = Field(1, ge=1, description="Marian beam size.")


class AugmentConfig(Strict):
    enabled: bool = Field(False, description="Augment the train split (never eval).")
    n_aug: int = Field(2, ge=1, le=64, description="Augmented outputs per input row.")
    language: Literal["en", "zh", "auto"] = Field("auto", description="Text language; auto = per row.")
    ops: AugmentOps = Field(default_factory=AugmentOps)
    protected_terms: Optional[str] = Field(None, description="File: one protected term or regex (re:...) per line.")
    backtranslation: BacktranslationConfig = Field(default_factory=BacktranslationConfig)
    ab: bool = Field(False, description="`train`: train with and without augmentation and compare.")
    seed: Optional[int] = Field(None, description="Augmentation seed; default train.seed.")


class DistillConfig(Strict):
    teacher: Optional[str] = Field(None, description="`domainft distill`: the fine-tuned teacher, an exported best/ (a Hugging Face classifier folder).")
    student: Optional[str] = Field(
        None, description="A student model folder or hub name sharing the teacher's tokenizer; else the student is built "
                          "from the teacher with student_layers / student_hidden_size.")
    student_layers: Optional[list[int]] = Field(
        None, description="Teacher encoder layers kept, bottom = 0 (e.g. [1, 3, 5]); they initialise the student (DistilBERT-style).")
    student_hidden_size: Optional[int] = Field(
        None, ge=16, description="A narrower student: weights are initialised from the teacher's leading dimensions.")
    temperature: float = Field(2.0, gt=0.0, description="Softmax temperature of the soft (KL) loss.")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the soft loss; 1 - alpha weighs cross-entropy on the labels.")
    hidden_loss: float = Field(0.0, ge=0.0, description="Weight of matching student hidden states to the mapped teacher layers "
                                                        "(needs the teacher's hidden size).")


class EvalConfig(Strict):
    generate_samples: int = Field(
        8, ge=0, le=1000, description="task sft: eval prompts answered greedily after every epoch, scored by exact "
                    "match, token F1 and ROUGE-L (jieba words for Chinese) against the reference answers and written "
                    "to eval_samples_epoch_N.jsonl; 0: none.")
    max_new_tokens: int = Field(64, ge=1, le=8192, description="task sft: the most tokens generated per sample answer.")


class Config(Strict):
    output_dir: str = Field(description="Where data, checkpoints, the best model and metrics go.")
    task: Literal["classification", "sft"] = Field(
        "classification", description="What the model is fine-tuned to do: `classification` (a sequence classifier: a new "
                                       "head over the pretrained model, cross-entropy, accuracy and macro-F1) or `sft` "
                                       "(supervised fine-tuning of a decoder chat LLM on conversations: loss on the "
                                       "assistant turns only, eval loss, perplexity and generated samples). Data, "
                                       "engine, checkpoints and outputs are shared by every task (domainft.tasks).")
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    unfreeze: UnfreezeConfig = Field(default_factory=UnfreezeConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    peft: PeftConfig = Field(default_factory=PeftConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
