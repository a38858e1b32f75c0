"""The HTTP API as a FastAPI app: POST /v1/classify, GET /v1/models, /healthz, /readyz (OpenAPI at /docs), and
POST / in Hugging Face's text-classification dialect.

No Ray: the app gets a `ModelHolder` (readiness, model info) and a `classify` coroutine (texts ->
probabilities). Ray Serve passes one that batches across requests (distributed/serve.py); without it the
holder predicts each request on its own. Every bad request gets a 4xx with a one-line `detail` naming the
field, before the model sees it: invalid JSON 400, not JSON 415, wrong types / empty list / blank text /
unknown field / too many texts 422, body over the limit 413 (from the Content-Length header, or counted while
the body streams in, before it is parsed).

POST / is what `huggingface_hub.InferenceClient(base_url=URL).text_classification(text)` sends (a URL as the
model: the client posts `{"inputs": text, "parameters": {...}}` to the URL itself and reads the first element
of a list of lists): `{"inputs": "text" | ["t1", ...], "parameters": {"top_k": k}}` -> one list of
`{"label", "score"}` per input, most probable first. Its errors also carry the detail as `error`, the key
Hugging Face clients print.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domainft.serving.schemas import (ClassifyRequest, ClassifyResponse, ErrorBody, HFClassifyRequest, LabelScore,
                                      ModelInfo, Status)
from domainft.serving.state import Classify, ModelHolder

MAX_TEXTS = 64
MAX_BODY_BYTES = 1 << 20
HF_PATH = "/"  # where a Hugging Face client posts when given the server's URL as its model / base_url
_ERRORS = {code: {"model": ErrorBody} for code in (400, 413, 415, 422, 503)}


def field_path(loc) -> str:
    """('body', 'texts', 2) -> 'texts[2]'."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _hf_route(request: Request) -> bool:
    """The request was routed to the Hugging Face route (by the route matched: a route prefix may come first)."""
    return getattr(request.scope.get("route"), "path", None) == HF_PATH


def _error(request: Request, detail: str, status_code: int, headers: Optional[dict] = None) -> JSONResponse:
    """{"detail": ...}; on the Hugging Face route also as "error", which its clients put in their exception."""
    body = {"detail": detail, **({"error": detail} if _hf_route(request) else {})}
    return JSONResponse(body, status_code=status_code, headers=headers)


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        e = next(e for e in errors if e.get("type") == "json_invalid")
        at = e["loc"][-1] if isinstance(e["loc"][-1], int) else "?"
        return _error(request, f"the body is not valid JSON: {(e.get('ctx') or {}).get('error', '')} "
                               f"(character {at})", 400)
    content_type = request.headers.get("content-type", "")
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors) and "json" not in content_type:
        return _error(request, f"send the body as JSON with Content-Type: application/json "
                               f"(got {content_type or 'no Content-Type'})", 415)
    parts = []
    for e in errors[:10]:
        msg = "unknown field" if e.get("type") == "extra_forbidden" else e.get("msg", "invalid")
        parts.append(f"{field_path(e.get('loc', ()))}: {msg.removeprefix('Value error, ')}")
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return _error(request, "; ".join(parts) + more, 422)


async def _http_error(request: Request, exc: StarletteHTTPException):
    if not _hf_route(request) or not isinstance(exc.detail, str):
        return await http_exception_handler(request, exc)
    return _error(request, exc.detail, exc.status_code, exc.headers)


def build_app(holder: ModelHolder, classify: Optional[Classify] = None, max_texts: int = MAX_TEXTS,
              max_body_bytes: int = MAX_BODY_BYTES, retry_after_s: int = 1) -> FastAPI:
    """The API over one model.

    Args:
        holder: The model (started by the caller); the API answers 503 until it is ready.
        classify: texts -> probabilities [N, C] in input order (default: `holder.predict`).
        max_texts: Most texts in one request (more: 422).
        max_body_bytes: Largest request body (larger: 413, not read).
        retry_after_s: The Retry-After of a 503 while the model is not ready.

    Returns:
        A FastAPI app.
    """
    classify = classify or holder.predict
    retry = {"Retry-After": str(retry_after_s)}
    app = FastAPI(title="domainft classifier", version="1", max_body_size=max_body_bytes,
                  description="Text classification with a model fine-tuned by domainft.")
    app.add_exception_handler(RequestValidationError, _validation_response)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    def require_ready() -> None:
        if not holder.ready:
            raise HTTPException(503, f"not ready: {holder.detail}", headers=retry)

    @app.get("/healthz", response_model=Status, summary="Alive (the process answers)")
    async def healthz() -> Status:
        return Status(status="alive")

    @app.get("/readyz", response_model=Status, responses={503: {"model": Status}},
             summary="Ready (the model is loaded and answering)")
    async def readyz():
        if holder.ready:
            return Status(status="ready")
        return JSONResponse(Status(status=holder.state, detail=holder.detail).model_dump(), 503, headers=retry)

    @app.get("/v1/models", response_model=ModelInfo, responses=_ERRORS, summary="The model served")
    async def models() -> ModelInfo:
        require_ready()
        p = holder.predictor
        return ModelInfo(name=p.name, labels=list(p.labels), backend=p.backend, variant=p.variant,
                         max_length=p.max_length, truncation_side=p.truncation_side,
                         trained_max_length=p.trained_max_length, weights_sha256=p.weights_sha256,
                         max_texts=max_texts, max_body_bytes=max_body_bytes)

    async def probabilities(texts: list[str], field: str) -> np.ndarray:
        """The batching `classify` on texts already checked by their schema: [N, C] float64, input order."""
        if len(texts) > max_texts:
            raise HTTPException(422, f"{field}: {len(texts)} texts, more than this server's limit of "
                                     f"{max_texts} per request")
        require_ready()
        return np.asarray(await classify(texts), dtype=np.float64)

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=_ERRORS,
              summary="Classify texts (predictions in input order)")
    async def classify_texts(body: ClassifyRequest) -> ClassifyResponse:
        probs = await probabilities(body.texts, "texts")
        labels = holder.predictor.labels
        best = probs.argmax(axis=-1)
        return ClassifyResponse.model_validate({"predictions": [
            {"label": labels[k], "score": float(row[k]), "scores": dict(zip(labels, row.tolist()))}
            for row, k in zip(probs, best)]})

    @app.post(HF_PATH, response_model=list[list[LabelScore]], responses=_ERRORS,
              summary="Hugging Face text classification: InferenceClient(base_url=this server).text_classification")
    async def hf_text_classification(body: HFClassifyRequest) -> list[list[LabelScore]]:
        """One list per input, in input order, of `{"label", "score"}` most probable first (all labels, or
        `parameters.top_k`). A single text also gets a list of one list: what Hugging Face's clients read."""
        params = body.parameters
        if params is not None and params.function_to_apply not in (None, "softmax"):
            raise HTTPException(422, f"parameters.function_to_apply: {params.function_to_apply!r} is not served: "
                                     f"this API returns softmax probabilities (leave it out, or send 'softmax')")
        probs = await probabilities(body.inputs, "inputs")
        labels = holder.predictor.labels
        top_k = params.top_k if params is not None and params.top_k is not None else len(labels)
        order = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]  # ties keep label order
        return [[LabelScore(label=labels[k], score=float(row[k])) for k in ks] for row, ks in zip(probs, order)]

    return app
