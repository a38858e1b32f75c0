"""Options of `domainft serve` and of the Serve config file's `args:` (cluster/serve.yaml): one typed model,
validated once at the edge (the CLI, or the application builder that `serve run` / `serve deploy` calls)."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from domainft.config.load import ConfigError, pydantic_problems


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_dir: str = Field(description="The model: a `best/` folder (backend torch) or a `domainft export` "
                                       "folder (backend onnx), on every node that runs a replica.")
    backend: Literal["torch", "onnx"] = Field("torch", description="torch: the Hugging Face folder on PyTorch; "
                                                                    "onnx: the export folder on ONNX Runtime.")
    variant: Literal["fp32", "int8"] = Field("fp32", description="ONNX model: model.onnx (fp32) or "
                                                                  "model.int8.onnx (int8). torch is fp32.")
    max_length: Optional[int] = Field(None, ge=2, le=1_000_000, description="Truncate texts to this many tokens "
                                      "(default: the model's limit; for onnx, the export's). Use the length the "
                                      "model was trained with (data.max_length): a `best/` folder's tokenizer "
                                      "keeps the pretrained limit.")
    replicas: int = Field(1, ge=1, le=1024, description="Replicas of the model (each a Ray actor with its own copy).")
    replica_cpus: float = Field(1.0, ge=0, le=1024, description="CPUs Ray reserves per replica (0: none).")
    threads: Optional[int] = Field(None, ge=1, le=1024, description="Intra-op threads per replica (default: "
                                                                     "replica_cpus, at least 1).")
    max_batch_size: int = Field(32, ge=1, le=1024, description="Texts per forward pass: requests waiting in a "
                                                               "replica are batched up to this (1: no batching).")
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

    @model_validator(mode="after")
    def _variant_needs_onnx(self) -> "ServeConfig":
        if self.backend == "torch" and self.variant != "fp32":
            raise ValueError("variant int8 needs backend onnx (a `domainft export --quantize int8` folder)")
        return self

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
