"""OpenAI-compatible request bodies (pydantic): what /docs shows and what every request is checked against.

Unknown fields are refused ("Unrecognized request argument supplied"), as OpenAI does. Fields clients commonly
send are accepted at their neutral values (n=1, penalties 0, no tools, logprobs off, response_format text) and
refused, naming the field, when a request asks for what this server does not do.
"""
from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

MAX_STOP = 4  # OpenAI's limit on stop strings


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = Field(False, description="Send a last chunk with the token usage (choices empty).")


class _Sampling(BaseModel):
    """What chat and text completions share."""

    model_config = ConfigDict(extra="forbid")

    model: Optional[StrictStr] = Field(None, description="A served model id (GET /v1/models): the base model or "
                                                         "one of its adapters. Default: the base model.")
    max_tokens: Optional[int] = Field(None, ge=1, description="Most tokens to generate (default: the server's "
                                                              "max_tokens, within the context).")
    temperature: Optional[float] = Field(None, ge=0, le=2, description="0: greedy. Default: the model's "
                                         "generation_config.json when it samples, else 1 (OpenAI's default).")
    top_p: Optional[float] = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    stop: Optional[Union[StrictStr, list[StrictStr]]] = Field(None, description="Up to 4 strings; the answer "
                                                                                "ends before the first one.")
    seed: Optional[int] = Field(None, description="Seeds this request's sampling (the same answer again).")
    n: Optional[int] = Field(None, description="Only 1 is supported.")
    stream: Optional[bool] = Field(False, description="Server-sent events, one chunk per piece of text, ending "
                                                      "with `data: [DONE]`.")
    stream_options: Optional[StreamOptions] = None
    presence_penalty: Optional[float] = Field(None, description="Only 0 is supported.")
    frequency_penalty: Optional[float] = Field(None, description="Only 0 is supported.")
    logit_bias: Optional[dict[str, float]] = Field(None, description="Not supported (empty only).")
    logprobs: Optional[Any] = Field(None, description="Not supported.")
    user: Optional[str] = Field(None, description="Accepted, not used.")

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings, got {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("a stop string is empty")
        return stops

    @model_validator(mode="after")
    def _supported(self):
        for name, ok in (("n", self.n in (None, 1)), ("presence_penalty", not self.presence_penalty),
                         ("frequency_penalty", not self.frequency_penalty), ("logit_bias", not self.logit_bias),
                         ("logprobs", not self.logprobs)):
            if not ok:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not supported by this server")
        return self

    @property
    def stops(self) -> tuple[str, ...]:
        return tuple(self.stop or ())


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "sft_demo/best", "messages": [{"role": "user", "content": "Summarise: shares rose 5%."}],
         "max_tokens": 64, "temperature": 0}]})

    messages: list[Any] = Field(description="The conversation: {role: system|developer|user|assistant, content: "
                                            "text or text parts}; rendered with the model's chat template.")
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="The same as max_tokens (newer name).")
    tools: Optional[list[Any]] = Field(None, description="Not supported (empty only).")
    tool_choice: Optional[Any] = Field(None, description="Not supported (none only).")
    parallel_tool_calls: Optional[bool] = None
    response_format: Optional[dict[str, Any]] = Field(None, description="{type: text} only.")
    top_logprobs: Optional[int] = Field(None, description="Not supported.")
    metadata: Optional[dict[str, Any]] = None
    store: Optional[bool] = None

    @model_validator(mode="after")
    def _chat_supported(self):
        if self.tools:
            raise ValueError("tools: tool calling is not supported by this server")
        if self.tool_choice not in (None, "none", "auto"):
            raise ValueError(f"tool_choice: {self.tool_choice!r} is not supported by this server")
        if self.response_format and self.response_format.get("type") != "text":
            raise ValueError(f"response_format: {self.response_format.get('type')!r} is not supported (text only)")
        if self.top_logprobs:
            raise ValueError("top_logprobs: not supported by this server")
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens differ; send one")
        return self

    @property
    def limit(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Sampling):
    """POST /v1/completions (legacy text completions)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "sft_demo/best", "prompt": "The capital of France is", "max_tokens": 16, "temperature": 0}]})

    prompt: Union[StrictStr, list[StrictStr]] = Field(description="One prompt (a string, or a list of one).")
    echo: Optional[bool] = Field(None, description="Not supported.")
    best_of: Optional[int] = Field(None, description="Only 1 is supported.")
    suffix: Optional[str] = Field(None, description="Not supported.")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt):
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError(f"one prompt per request is supported, got {len(prompt)}")
            prompt = prompt[0]
        if not prompt:
            raise ValueError("the prompt is empty")
        return prompt

    @model_validator(mode="after")
    def _completion_supported(self):
        for name, ok in (("echo", not self.echo), ("best_of", self.best_of in (None, 1)), ("suffix", not self.suffix)):
            if not ok:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not supported by this server")
        return self

    @property
    def limit(self) -> Optional[int]:
        return self.max_tokens
