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
                    "variant": "fp32", "max_length": 128, "truncation_side": "right", "trained_max_length": None,
                    "max_texts": MAX_TEXTS, "max_body_bytes": MAX_BODY,
                    "weights_sha256": hashlib.sha256((tiny_classifier_dir / "model.safetensors").read_bytes()).hexdigest()}
    assert health.json() == {"status": "alive", "detail": ""} and ready.json()["status"] == "ready"
    assert docs.status_code == 200 and {"/v1/classify", "/"} <= set(schema.json()["paths"])


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


# -- the Hugging Face text-classification dialect (POST /) ------------------------------------------------------

def _ranked(predictor, probs: np.ndarray, top_k=None) -> list[list[tuple[str, float]]]:
    """What the dialect must answer: per text, (label, probability) most probable first."""
    return [sorted(zip(predictor.labels, row.tolist()), key=lambda x: -x[1])[:top_k] for row in probs]


def test_hugging_face_dialect_ranks_the_models_probabilities(app, predictor):
    many, one, top, empty_params, softmax = run(
        app, ("POST", "/", {"json": {"inputs": TEXTS}}), ("POST", "/", {"json": {"inputs": TEXTS[0]}}),
        ("POST", "/", {"json": {"inputs": TEXTS, "parameters": {"top_k": 2}}}),
        ("POST", "/", {"json": {"inputs": TEXTS[1], "parameters": {}}}),  # what a client sends without parameters
        ("POST", "/", {"json": {"inputs": [TEXTS[1]], "parameters": {"function_to_apply": "softmax", "top_k": 9}}}))
    direct = predictor.predict_proba(TEXTS)
    for r, expected in ((many, _ranked(predictor, direct)), (one, _ranked(predictor, direct[:1])),
                        (top, _ranked(predictor, direct, 2)), (empty_params, _ranked(predictor, direct[1:2])),
                        (softmax, _ranked(predictor, direct[1:2]))):
        assert r.status_code == 200, r.text
        got = r.json()  # a list per input, even for one text: the client reads element 0
        assert [[p["label"] for p in row] for row in got] == [[k for k, _ in row] for row in expected]
        np.testing.assert_allclose([[p["score"] for p in row] for row in got], [[v for _, v in row] for row in expected],
                                   atol=1e-6)


def test_hugging_face_client_reads_the_answer(app, predictor):
    """huggingface_hub's InferenceClient, given this server as its base_url, against the ASGI app (its HTTP
    session is a Starlette test client: no socket, and no other host it could reach)."""
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import set_client_factory
    from huggingface_hub.utils._http import default_client_factory
    from starlette.testclient import TestClient

    set_client_factory(lambda: TestClient(app))
    try:
        client = InferenceClient(base_url="http://testserver")
        ranked = client.text_classification(TEXTS[3])
        two = client.text_classification(TEXTS[0], top_k=2)
        with pytest.raises(HfHubHTTPError, match="function_to_apply: 'sigmoid' is not served"):
            client.text_classification(TEXTS[0], function_to_apply="sigmoid")
    finally:
        set_client_factory(default_client_factory)
    expected = _ranked(predictor, predictor.predict_proba([TEXTS[3], TEXTS[0]]))
    assert [e.label for e in ranked] == [k for k, _ in expected[0]] and len(two) == 2
    np.testing.assert_allclose([e.score for e in ranked], [v for _, v in expected[0]], atol=1e-6)
    assert [(e.label, pytest.approx(e.score, abs=1e-6)) for e in two] == expected[1][:2]


HF_BAD = [
    ("invalid JSON", {"content": b'{"inputs": [', "headers": {"content-type": "application/json"}}, 400,
     "not valid JSON"),
    ("not JSON", {"content": b"inputs=a", "headers": {"content-type": "text/plain"}}, 415, "Content-Type"),
    ("no inputs", {"json": {"parameters": {"top_k": 1}}}, 422, "inputs: Field required"),
    ("a number for inputs", {"json": {"inputs": 3}}, 422, "inputs: must be a text or a list of texts"),
    ("a number in the list", {"json": {"inputs": ["a", 3]}}, 422, "inputs[1]"),
    ("empty list", {"json": {"inputs": []}}, 422, "at least 1"),
    ("blank text", {"json": {"inputs": "  "}}, 422, "whitespace-only text at index 0"),
    ("unknown field", {"json": {"inputs": "a", "options": {}}}, 422, "options: unknown field"),
    ("unknown parameter", {"json": {"inputs": "a", "parameters": {"truncate": 9}}}, 422,
     "parameters.truncate: unknown field"),
    ("top_k 0", {"json": {"inputs": "a", "parameters": {"top_k": 0}}}, 422, "parameters.top_k"),
    ("top_k a text", {"json": {"inputs": "a", "parameters": {"top_k": "2"}}}, 422, "parameters.top_k"),
    ("unknown function", {"json": {"inputs": "a", "parameters": {"function_to_apply": "relu"}}}, 422,
     "parameters.function_to_apply"),
    ("logits asked for", {"json": {"inputs": "a", "parameters": {"function_to_apply": "none"}}}, 422,
     "'none' is not served"),
    ("too many texts", {"json": {"inputs": ["a"] * (MAX_TEXTS + 1)}}, 422, f"limit of {MAX_TEXTS}"),
    ("body over the limit", {"json": {"inputs": "x" * MAX_BODY}}, 413, "Too Large"),
]


@pytest.mark.parametrize("what,kwargs,status,words", HF_BAD, ids=[b[0] for b in HF_BAD])
def test_hugging_face_bad_input_gets_its_4xx_with_the_detail_as_error(app, what, kwargs, status, words):
    bad, good = run(app, ("POST", "/", kwargs), ("POST", "/", {"json": {"inputs": "fine"}}))
    assert bad.status_code == status, (what, bad.text)
    assert words in bad.text, bad.text
    if status != 413:  # refused by the body limit before any route is chosen
        body = bad.json()
        assert body["error"] == body["detail"] and "\n" not in body["detail"]
    assert good.status_code == 200


def test_hugging_face_route_says_503_while_loading(predictor):
    gate = threading.Event()
    holder = ModelHolder(lambda: gate.wait(30) and predictor).start()
    (r,) = run(build_app(holder, retry_after_s=3), ("POST", "/", {"json": {"inputs": "a"}}))
    gate.set()
    assert r.status_code == 503 and r.headers["retry-after"] == "3" and "loading" in r.json()["error"]
    wait(holder)
