"""The API's request and response bodies (pydantic): what /docs shows and what every request is checked against."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator


class ClassifyRequest(BaseModel):
    """POST /v1/classify. Unknown fields are errors, texts must be strings (no coercion)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["Shares rose 5% on Monday."]}]})

    texts: list[StrictStr] = Field(min_length=1, description="Texts to classify (at least one; at most the server's "
                                                            "limit, see GET /v1/models). Each is truncated to the "
                                                            "model's max_length tokens.")

    @field_validator("texts")
    @classmethod
    def _no_blank(cls, texts: list[str]) -> list[str]:
        blank = [i for i, t in enumerate(texts) if not t.strip()]
        if blank:
            raise ValueError(f"empty or whitespace-only text at index {', '.join(map(str, blank[:10]))}"
                             f"{' ...' if len(blank) > 10 else ''}")
        return texts


class Prediction(BaseModel):
    label: str = Field(description="The most likely label.")
    score: float = Field(description="Its probability.")
    scores: dict[str, float] = Field(description="Probability of every label (they sum to 1).")


class ClassifyResponse(BaseModel):
    predictions: list[Prediction] = Field(description="One per text, in input order.")


class ModelInfo(BaseModel):
    name: str = Field(description="The model folder (its last two path parts, e.g. bbc_demo/best).")
    labels: list[str] = Field(description="Class names in id order.")
    backend: str = Field(description="torch or onnx.")
    variant: str = Field(description="fp32, or int8 for a quantised ONNX model.")
    max_length: int = Field(description="Tokens per text after truncation (special tokens included).")
    weights_sha256: str = Field(description="sha256 of the weight file(s) served (several files: of their hashes).")
    max_texts: int = Field(description="Most texts in one request.")
    max_body_bytes: int = Field(description="Largest request body accepted.")


class Status(BaseModel):
    status: str = Field(description="alive, ready, loading, or failed.")
    detail: str = Field("", description="Why not ready, when it is not.")


class ErrorBody(BaseModel):
    detail: str = Field(description="What was wrong, naming the field.")
