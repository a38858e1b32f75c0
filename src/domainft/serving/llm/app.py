"""The OpenAI-compatible API over a causal LM (FastAPI; no Ray): POST /v1/chat/completions, POST /v1/completions,
GET /v1/models (and /v1/models/{id}), /healthz, /readyz, OpenAPI at /docs.

The app gets an LLMHolder (readiness, the ChatModel, and the scheduler that decodes every request of the process
in one continuous batch: `holder.stream`, a GenRequest -> its deltas); Ray Serve runs one per replica
(distributed/serve.py). A test may pass another `stream`.
Every error has OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so OpenAI clients raise their
usual exceptions: bad JSON, unknown or unsupported fields, bad messages and prompts or answers that do not fit the
context 400; an unknown model 404 (code model_not_found); a body over the limit 413; not JSON 415; not ready 503
with Retry-After. All of it is decided before the model sees the request.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domainft.serving.app import field_path
from domainft.serving.llm.decode import GenRequest
from domainft.serving.llm.schemas import ChatCompletionRequest, CompletionRequest
from domainft.serving.llm.state import LLMHolder, Stream

MAX_BODY_BYTES = 1 << 20
logger = logging.getLogger("domainft.serving")


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error",
             415: "invalid_request_error", 503: "service_unavailable_error"}

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        return APIError(400, f"the body is not valid JSON: {(bad_json.get('ctx') or {}).get('error', '')}",
                        code="invalid_json").response()
    content_type = request.headers.get("content-type", "")
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors) and "json" not in content_type:
        return APIError(415, f"send the body as JSON with Content-Type: application/json (got "
                             f"{content_type or 'no Content-Type'})").response()
    e = errors[0]
    where = field_path(e.get("loc", ()))
    where, msg = ("" if where == "body" else where), str(e.get("msg", "invalid")).removeprefix("Value error, ")
    if e.get("type") == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {where}", param=where).response()
    if not where and ":" in msg:  # a model-level check names its field first: "n: 2 is not supported ..."
        where = msg.split(":", 1)[0]
        msg = msg.split(":", 1)[1].strip()
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return APIError(400, f"{where or 'body'}: {msg}{more}", param=where or None).response()


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (413 from the body limit, 404 / 405 routes) in OpenAI's shape."""
    return APIError(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)).response()


class _BodyLimit:
    """413 in OpenAI's shape for a body over the limit: from its Content-Length before it is read, or counted
    while it streams in (the error reaches the app's handler from the route's read of the body)."""

    def __init__(self, app: Any, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    def _error(self, size: str) -> APIError:
        return APIError(413, f"the body is {size} bytes, more than this server's limit of {self.max_body_bytes}")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await self._error(str(int(length))).response()(scope, receive, send)
            return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:
                raise StarletteHTTPException(413, str(self._error(f"over {self.max_body_bytes}")))
            return message

        await self.app(scope, counted, send)


def _server_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug or a failure of the model (not the request's fault): 500 in OpenAI's shape, the traceback logged."""
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": {"message": f"the server failed: {type(exc).__name__}: {exc}",
                                   "type": "server_error", "param": None, "code": None}}, status_code=500)


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def build_llm_app(holder: LLMHolder, stream: Optional[Stream] = None, max_tokens: int = 512,
                  max_body_bytes: int = MAX_BODY_BYTES, retry_after_s: int = 1) -> FastAPI:
    """The API over one ChatModel (the holder's predictor) and its adapters.

    Args:
        holder: the model (started by the caller); the API answers 503 until it is ready.
        stream: a request -> its deltas (default: `holder.stream`, the continuous batch).
        max_tokens: most tokens one request may generate, and the default of one that sets none.
        max_body_bytes: largest request body (larger: 413, not read).
        retry_after_s: the Retry-After of a 503.
    """
    stream = stream or holder.stream
    retry = {"Retry-After": str(retry_after_s)}
    app = FastAPI(title="domainft LLM", version="1",
                  description="OpenAI-compatible chat and text completions from a model fine-tuned by domainft.")
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(APIError, lambda request, exc: exc.response())
    app.add_exception_handler(Exception, _server_error)
    app.add_middleware(_BodyLimit, max_body_bytes=max_body_bytes)

    def model() -> Any:
        if not holder.ready:
            raise APIError(503, f"not ready: {holder.detail}", headers=retry)
        return holder.predictor

    def adapter(lm: Any, model_id: Optional[str]) -> Optional[str]:
        if model_id is None:
            return None
        try:
            return lm.adapter_of(model_id)
        except KeyError:
            raise APIError(404, f"The model `{model_id}` does not exist on this server (served: "
                                f"{', '.join(lm.model_ids)})", param="model", code="model_not_found") from None

    def gen_request(lm: Any, body: Any, prompt_ids: list[int], prompt_param: str, default_max: int) -> GenRequest:
        if not prompt_ids:
            raise APIError(400, f"the {prompt_param} has no tokens", param=prompt_param)
        room = lm.context - len(prompt_ids)
        asked = body.limit
        if asked is not None and asked > max_tokens:
            raise APIError(400, f"max_tokens {asked} is more than this server's limit of {max_tokens}",
                           param="max_tokens")
        if room < 1 or (asked is not None and asked > room):
            raise APIError(400, f"This model's maximum context length is {lm.context} tokens. However, you "
                                f"requested {len(prompt_ids) + (asked or 1)} tokens ({len(prompt_ids)} in the "
                                f"{prompt_param}, {asked or 1} for the completion). Please reduce the length of the "
                                f"{prompt_param} or the completion.",
                           param=prompt_param if room < 1 else "max_tokens", code="context_length_exceeded")
        temperature = lm.default_temperature if body.temperature is None else body.temperature
        top_p = lm.default_top_p if body.top_p is None else body.top_p
        return GenRequest(tuple(prompt_ids), asked or min(default_max, room), temperature, top_p, body.seed,
                          body.stops, adapter(lm, body.model))

    def chat_ids(lm: Any, messages: list) -> list[int]:
        from jinja2 import TemplateError

        try:
            return lm.chat_prompt(messages)
        except TemplateError as e:  # e.g. "roles must alternate user/assistant": the template's own rule
            raise APIError(400, f"the model's chat template refused these messages: {e}", param="messages") from None

    async def collect(request: GenRequest) -> tuple[str, int, str]:
        pieces, tokens, reason = [], 0, "stop"
        async for d in stream(request):
            pieces.append(d.text)
            tokens, reason = d.tokens, d.finish_reason or reason
        return "".join(pieces), tokens, reason

    async def events(request: GenRequest, chunk, usage_too: bool) -> AsyncIterator[str]:
        """Server-sent events: `chunk(text, finish_reason)` per delta, the usage if asked, then [DONE]."""
        yield _sse(chunk(None, None))  # the role (chat) before any text, as OpenAI sends it
        tokens = 0
        try:
            async for d in stream(request):
                tokens = d.tokens
                if d.text:
                    yield _sse(chunk(d.text, None))
                if d.finish_reason:
                    yield _sse(chunk("", d.finish_reason))
        except Exception as e:  # the status line is sent: say it in the stream, as OpenAI does
            yield _sse({"error": {"message": f"generation failed: {type(e).__name__}: {e}", "type": "server_error",
                                  "param": None, "code": None}})
            raise
        if usage_too:
            yield _sse({**chunk("", None), "choices": [], "usage": _usage(len(request.prompt_ids), tokens)})
        yield "data: [DONE]\n\n"

    @app.get("/healthz", summary="Alive (the process answers)")
    async def healthz() -> dict:
        return {"status": "alive"}

    @app.get("/readyz", summary="Ready (the model is loaded and answering)")
    async def readyz():
        if holder.ready:
            return {"status": "ready"}
        return JSONResponse({"status": holder.state, "detail": holder.detail}, 503, headers=retry)

    def model_card(lm: Any, model_id: str) -> dict:
        base = model_id == lm.name
        return {"id": model_id, "object": "model", "created": lm.created, "owned_by": "domainft",
                "root": lm.name if base else model_id, "parent": None if base else lm.name,
                "max_model_len": lm.context, "training": lm.training or None}

    @app.get("/v1/models", summary="The models served: the base and each adapter")
    async def models() -> dict:
        lm = model()
        return {"object": "list", "data": [model_card(lm, m) for m in lm.model_ids]}

    @app.get("/v1/models/{model_id:path}", summary="One served model")
    async def one_model(model_id: str) -> dict:
        lm = model()
        adapter(lm, model_id)
        return model_card(lm, model_id)

    @app.post("/v1/chat/completions", summary="Chat completion (OpenAI's API)")
    async def chat(body: ChatCompletionRequest):
        from domainft.data.chat import RecordError, prompt_messages

        lm = model()
        adapter(lm, body.model)
        try:
            messages = prompt_messages(body.messages)
        except RecordError as e:
            raise APIError(400, e.detail, param="messages") from None
        request = gen_request(lm, body, chat_ids(lm, messages), "messages", max_tokens)
        rid, created, name = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body.model or lm.name
        if body.stream:
            def chunk(text: Optional[str], finish: Optional[str]) -> dict:
                delta = {"role": "assistant", "content": ""} if text is None else ({"content": text} if text else {})
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return StreamingResponse(events(request, chunk, _include_usage(body)), media_type="text/event-stream")
        text, tokens, reason = await collect(request)
        return {"id": rid, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                             "finish_reason": reason}],
                "usage": _usage(len(request.prompt_ids), tokens)}

    @app.post("/v1/completions", summary="Text completion (OpenAI's legacy API)")
    async def completions(body: CompletionRequest):
        lm = model()
        adapter(lm, body.model)
        request = gen_request(lm, body, lm.text_prompt(body.prompt), "prompt", 16)  # OpenAI's default: 16
        rid, created, name = f"cmpl-{uuid.uuid4().hex}", int(time.time()), body.model or lm.name
        if body.stream:
            def chunk(text: Optional[str], finish: Optional[str]) -> dict:
                return {"id": rid, "object": "text_completion", "created": created, "model": name,
                        "choices": [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]}
            return StreamingResponse(_skip_first(events(request, chunk, _include_usage(body))),
                                     media_type="text/event-stream")
        text, tokens, reason = await collect(request)
        return {"id": rid, "object": "text_completion", "created": created, "model": name,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
                "usage": _usage(len(request.prompt_ids), tokens)}

    return app


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _include_usage(body: Any) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


async def _skip_first(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Text completions have no role chunk."""
    first = True
    async for e in events:
        if not first:
            yield e
        first = False
