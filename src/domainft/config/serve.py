"""Options of `domainft serve` and of the Serve config file's `args:` (cluster/serve.yaml): one typed model,
validated once at the edge (the CLI, or the application builder that `serve run` / `serve deploy` calls)."""
from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from domainft.config.load import ConfigError, pydantic_problems


_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_dir: str = Field(description="The model, on every node that runs a replica: a classifier's `best/` "
                                       "folder (backend torch) or `domainft export` folder (backend onnx); or a "
                                       "causal LM (a task: sft `best/`, or a base model for `adapters`).")
    backend: Optional[Literal["torch", "onnx", "transformers", "vllm"]] = Field(
        None, description="Classifiers: torch (the Hugging Face folder on PyTorch, the default) or onnx (the export "
                          "folder on ONNX Runtime). Causal LMs: transformers (PyTorch, CPU or GPU, the default) or "
                          "vllm (needs vLLM installed and a GPU).")
    variant: Literal["fp32", "int8"] = Field("fp32", description="ONNX model: model.onnx (fp32) or "
                                                                  "model.int8.onnx (int8). torch is fp32.")
    max_length: Optional[int] = Field(None, ge=2, le=1_000_000, description="Classifiers: truncate texts to this "
                                      "many tokens (default: the data.max_length the model was trained at, which "
                                      "best/ records; for an older folder, the model's limit; for onnx, the "
                                      "export's).")
    replicas: int = Field(1, ge=1, le=1024, description="Replicas of the model (each a Ray actor with its own copy).")
    replica_cpus: float = Field(1.0, ge=0, le=1024, description="CPUs Ray reserves per replica (0: none).")
    threads: Optional[int] = Field(None, ge=1, le=1024, description="Intra-op threads per replica (default: "
                                                                     "replica_cpus, at least 1).")
    max_batch_size: int = Field(32, ge=1, le=1024, description="Texts per forward pass: requests waiting in a "
                                                               "replica are batched up to this (1: no batching). "
                                                               "Causal LMs: requests in a replica's running batch.")
    batch_wait_ms: float = Field(5.0, ge=0, le=10_000, description="How long a replica waits for a batch to fill "
                                                                   "before running a partial one.")
    max_queued: int = Field(256, ge=1, le=1_000_000, description="Requests queued at each proxy beyond what the "
                                                                 "replicas hold; more get 503 with Retry-After.")
    max_ongoing: Optional[int] = Field(None, ge=1, le=100_000, description="Requests one replica holds at once "
                                                                           "(default: 2 x max_batch_size).")
    retry_after_s: int = Field(1, ge=0, le=3600, description="Retry-After (seconds) of a 503.")
    max_texts: int = Field(64, ge=1, le=100_000, description="Most texts in one request (more: 422).")
    max_body_bytes: int = Field(1 << 20, ge=64, le=1 << 30, description="Largest request body (larger: 413).")
    health_timeout_s: float = Field(10.0, gt=0, le=600, description="A health check's one-text prediction must "
                                                                    "finish within this, else the replica is "
                                                                    "replaced.")
    health_period_s: float = Field(5.0, gt=0, le=600, description="Seconds between health checks of a replica.")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint (torch). Off: "
                                                       "a security risk.")
    # causal LMs (the OpenAI-compatible API)
    adapters: dict[str, str] = Field(default_factory=dict, description="Causal LMs: LoRA adapters on the base "
                                     "model_dir, name -> adapter folder (e.g. a task: sft run's best_adapter/). "
                                     "Each is loaded once; a request's `model` picks the base or an adapter.")
    served_model_name: Optional[str] = Field(None, min_length=1, max_length=256, description="Causal LMs: the "
                                             "`model` id of model_dir (default: its last two path parts, e.g. "
                                             "med_sft/best).")
    chat_template: str = Field("auto", description="Causal LMs: the chat template of /v1/chat/completions: auto "
                                                   "(the tokenizer's own, which a task: sft best/ carries from its "
                                                   "training) or chatml, llama3, deepseek, mistral, alpaca.")
    max_tokens: int = Field(512, ge=1, le=1_000_000, description="Causal LMs: most tokens one request may generate "
                            "(more: 400), and what a request that sets no max_tokens gets (capped by the context).")
    max_model_len: Optional[int] = Field(None, ge=2, le=10_000_000, description="Causal LMs: longest prompt plus "
                                         "answer in tokens (default: the model's positions); longer: 400.")
    replica_gpus: float = Field(0.0, ge=0, le=64, description="GPUs Ray reserves per replica (vllm needs 1).")

    @model_validator(mode="after")
    def _variant_needs_onnx(self) -> "ServeConfig":
        if self.backend != "onnx" and self.variant != "fp32":
            raise ValueError("variant int8 needs backend onnx (a `domainft export --quantize int8` folder)")
        if self.backend == "vllm" and self.replica_gpus < 1:
            raise ValueError("backend vllm needs a GPU per replica: set replica_gpus to 1")
        return self

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, adapters: dict[str, str]) -> dict[str, str]:
        bad = [n for n in adapters if not _MODEL_ID.fullmatch(n)]
        if bad:
            raise ValueError(f"adapter name(s) {bad}: use letters, digits and . _ - : / (a request's `model`)")
        if any(not d for d in adapters.values()):
            raise ValueError("every adapter needs a folder (NAME=DIR)")
        return adapters

    @property
    def llm_options_set(self) -> list[str]:
        """The causal-LM options set away from their defaults (a classifier folder refuses them)."""
        keys = ("adapters", "served_model_name", "chat_template", "max_tokens", "max_model_len")
        fields = ServeConfig.model_fields
        return [k for k in keys if getattr(self, k) != fields[k].get_default(call_default_factory=True)]

    @property
    def ongoing(self) -> int:
        """Requests a replica holds: one batch running and one filling."""
        return self.max_ongoing or 2 * self.max_batch_size

    @property
    def intra_op_threads(self) -> int:
        return self.threads or max(1, int(self.replica_cpus))


def validate_serve(raw: Any, source: str = "serve options") -> ServeConfig:
    """ServeConfig from a dict (CLI flags or a Serve config file's args), every problem in one ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping of options, got {type(raw).__name__}", source)
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(pydantic_problems(e, ServeConfig), source) from None
