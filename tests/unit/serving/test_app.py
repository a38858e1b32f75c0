"""The FastAPI app over a real tiny torch classifier, called through httpx2's ASGI transport: no Ray, no socket."""
from __future__ import annotations

import asyncio
import functools
import threading

import httpx2
import numpy as np
import pytest

from domainft.serving.app import build_app
from domainft.serving.predictors import TorchPredictor, load_predictor
from domainft.serving.state import ModelHolder
from serving_cases import bad_requests

MAX_TEXTS, MAX_BODY = 4, 4096


def run(app, *requests):
    """Send (method, path, kwargs) requests in order; return the responses."""
    async def go():
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test") as c:
            return [await c.request(m, path, **kw) for m, path, kw in requests]
    return asyncio.run(go())


def wait(holder: ModelHolder, timeout_s: float = 60.0) -> None:
    deadline = threading.Event()
    for _ in range(int(timeout_s / 0.05)):
        if holder.state != "loading":
            break
        deadline.wait(0.05)
    assert holder.ready, holder.detail


@pytest.fixture(scope="module")
def predictor(tiny_classifier_dir) -> TorchPredictor:
    return load_predictor(tiny_classifier_dir, "torch", threads=1)


@pytest.fixture(scope="module")
def app(predictor):
    holder = ModelHolder(lambda: predictor).start()
    wait(holder)
    return build_app(holder, max_texts=MAX_TEXTS, max_body_bytes=MAX_BODY)


TEXTS = ["Shares rose after the results.", "The striker scored twice.", "a", "New chips " * 40]


def test_predictions_match_the_model_in_input_order(app, predictor):
    (r,) = run(app, ("POST", "/v1/classify", {"json": {"texts": TEXTS}}))
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    direct = predictor.predict_proba(TEXTS)
    assert [p["label"] for p in preds] == [predictor.labels[i] for i in direct.argmax(-1)]
    for p, row in zip(preds, direct):
        assert list(p["scores"]) == predictor.labels
        np.testing.assert_allclose([p["scores"][k] for k in predictor.labels], row, atol=1e-6)
        assert p["score"] == max(p["scores"].values())
        assert sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_models_health_ready_and_docs(app, predictor, tiny_classifier_dir):
    models, health, ready, docs, schema = run(app, ("GET", "/v1/models", {}), ("GET", "/healthz", {}),
                                              ("GET", "/readyz", {}), ("GET", "/docs", {}), ("GET", "/openapi.json", {}))
    import hashlib

    info = models.json()
    assert info == {"name": "tiny_classifier0/best", "labels": ["business", "sport", "tech"], "backend": "torch",
                    "variant": "fp32", "max_length": 128, "max_texts": MAX_TEXTS, "max_body_bytes": MAX_BODY,
                    "weights_sha256": hashlib.sha256((tiny_classifier_dir / "model.safetensors").read_bytes()).hexdigest()}
    assert health.json() == {"status": "alive", "detail": ""} and ready.json()["status"] == "ready"
    assert docs.status_code == 200 and "/v1/classify" in schema.json()["paths"]


BAD = bad_requests(MAX_TEXTS, MAX_BODY)


@pytest.mark.parametrize("what,kwargs,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_its_4xx_and_the_server_still_answers(app, what, kwargs, status, words):
    bad, good = run(app, ("POST", "/v1/classify", kwargs), ("POST", "/v1/classify", {"json": {"texts": ["fine"]}}))
    assert bad.status_code == status, (what, bad.text)
    assert words in bad.text, bad.text
    assert good.status_code == 200


def test_body_over_the_limit_is_refused_from_its_content_length_before_it_is_read(app):
    received = []

    async def go():
        async def receive():  # the body never comes: only its announced length
            received.append(1)
            return {"type": "http.request", "body": b"", "more_body": True}
        sent = []

        async def send(message):
            sent.append(message)
        scope = {"type": "http", "method": "POST", "path": "/v1/classify", "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(MAX_BODY + 1).encode())],
            "query_string": b"", "http_version": "1.1", "scheme": "http", "server": ("test", 80),
            "client": ("test", 1), "root_path": "", "asgi": {"version": "3.0"}}
        await app(scope, receive, send)
        return sent
    sent = asyncio.run(go())
    assert sent[0]["status"] == 413 and received == []


def test_body_over_the_limit_streamed_without_content_length(app):
    async def chunks():
        for _ in range(MAX_BODY // 512 + 2):
            yield b" " * 512
    (r,) = run(app, ("POST", "/v1/classify", {"content": chunks(), "headers": {"content-type": "application/json"}}))
    assert r.status_code == 413


def test_not_ready_until_the_model_has_loaded_and_answered(predictor):
    gate = threading.Event()

    def slow_load():
        gate.wait(30)
        return predictor

    holder = ModelHolder(slow_load).start()
    app = build_app(holder, retry_after_s=2)
    health, ready, classify, models = run(app, ("GET", "/healthz", {}), ("GET", "/readyz", {}),
                                          ("POST", "/v1/classify", {"json": {"texts": ["a"]}}),
                                          ("GET", "/v1/models", {}))
    assert health.status_code == 200
    assert ready.status_code == 503 and ready.json()["status"] == "loading" and ready.headers["retry-after"] == "2"
    assert classify.status_code == 503 and classify.headers["retry-after"] == "2" and "loading" in classify.text
    assert models.status_code == 503
    gate.set()
    wait(holder)
    ready, classify = run(app, ("GET", "/readyz", {}), ("POST", "/v1/classify", {"json": {"texts": ["a"]}}))
    assert ready.status_code == 200 and classify.status_code == 200


def test_a_model_that_fails_to_load_is_reported(tmp_path):
    holder = ModelHolder(functools.partial(load_predictor, tmp_path)).start()
    for _ in range(200):
        if holder.state != "loading":
            break
        threading.Event().wait(0.05)
    (ready,) = run(build_app(holder), ("GET", "/readyz", {}))
    assert ready.status_code == 503 and ready.json()["status"] == "failed"
    assert "config.json: not found" in ready.json()["detail"]
    with pytest.raises(RuntimeError, match="config.json"):
        asyncio.run(holder.probe(holder.predict, 1.0))


def test_probe_catches_a_wedged_prediction_path(predictor):
    holder = ModelHolder(lambda: predictor).start()
    wait(holder)
    release = threading.Event()

    async def wedged(texts):  # the prediction path hangs (a stuck batch loop, a deadlocked kernel)
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
        return await holder.predict(texts)

    async def probe_then_release():
        try:
            await holder.probe(wedged, 0.2)
        finally:
            release.set()

    with pytest.raises(RuntimeError, match="wedged: a one-text prediction took longer than 0.2 s"):
        asyncio.run(probe_then_release())
    (ready,) = run(build_app(holder), ("GET", "/readyz", {}))
    assert ready.status_code == 503 and ready.json()["status"] == "unhealthy"
    asyncio.run(holder.probe(holder.predict, 10.0))  # it answers again: ready again
    assert holder.ready
