"""The API's request and response bodies (pydantic): what /docs shows and what every request is checked against."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, WithJsonSchema, field_validator


class ClassifyRequest(BaseModel):
    """POST /v1/classify. Unknown fields are errors, texts must be strings (no coercion)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["Shares rose 5% on Monday."]}]})

    texts: list[StrictStr] = Field(min_length=1, description="Texts to classify (at least one; at most the server's "
                                                            "limit, see GET /v1/models). Each is truncated to the "
                                                            "model's max_length tokens.")

    @field_validator("texts")
    @classmethod
    def _no_blank(cls, texts: list[str]) -> list[str]:
        return _no_blank(texts)


def _no_blank(texts: list[str]) -> list[str]:
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
    truncation_side: str = Field(description="Which end of a longer text is dropped: right or left.")
    trained_max_length: Optional[int] = Field(description="The data.max_length the model was trained at (its "
                                                          "config.json's record; null when it has none).")
    weights_sha256: str = Field(description="sha256 of the weight file(s) served (several files: of their hashes).")
    max_texts: int = Field(description="Most texts in one request.")
    max_body_bytes: int = Field(description="Largest request body accepted.")


class Status(BaseModel):
    status: str = Field(description="alive, ready, loading, or failed.")
    detail: str = Field("", description="Why not ready, when it is not.")


class ErrorBody(BaseModel):
    detail: str = Field(description="What was wrong, naming the field.")
    error: Optional[str] = Field(None, description="POST / only: the same, under the key Hugging Face clients read.")


# -- the Hugging Face text-classification dialect (POST /) ------------------------------------------------------

class HFParameters(BaseModel):
    """`parameters` of a Hugging Face text-classification request."""

    model_config = ConfigDict(extra="forbid")

    top_k: Optional[StrictInt] = Field(None, ge=1, description="Only the k most probable labels (default: all).")
    function_to_apply: Optional[Literal["softmax", "sigmoid", "none"]] = Field(
        None, description="softmax (the default, and the only one served: the API computes probabilities).")


class HFClassifyRequest(BaseModel):
    """POST / as Hugging Face's text-classification clients send it (`InferenceClient(base_url=URL)
    .text_classification(text)`): one text or a list of texts, optional parameters."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"inputs": "Shares rose 5% on Monday."}, {"inputs": ["Shares rose.", "The striker scored."],
                                                  "parameters": {"top_k": 2}}]})

    # a single text is taken as a list of one (below); the schema shows both forms
    inputs: Annotated[list[StrictStr], WithJsonSchema({"anyOf": [
        {"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]})] = Field(
        min_length=1, description="A text, or a list of texts (at least one; at most the server's limit). Each is "
                                  "truncated to the model's max_length tokens.")
    parameters: Optional[HFParameters] = None

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_or_many(cls, inputs):
        if isinstance(inputs, str):
            return [inputs]
        if not isinstance(inputs, list):
            raise ValueError("must be a text or a list of texts")
        return inputs

    @field_validator("inputs")
    @classmethod
    def _no_blank(cls, inputs: list[str]) -> list[str]:
        return _no_blank(inputs)


class LabelScore(BaseModel):
    label: str = Field(description="A label.")
    score: float = Field(description="Its probability.")
