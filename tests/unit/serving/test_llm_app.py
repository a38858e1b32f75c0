"""The OpenAI-compatible app (serving/llm/app.py) over a real tiny chat LM with two LoRA adapters, called by the
official `openai` client through httpx2's ASGI transport: no Ray, no socket."""
from __future__ import annotations

import asyncio
import json
import time

import httpx2
import openai
import pytest

from domainft.core.generation import generate_ids
from domainft.serving.llm.app import build_llm_app
from domainft.serving.llm.model import ChatModel
from domainft.serving.llm.state import LLMHolder
from serving_cases import bad_llm_requests

MAX_TOKENS, CONTEXT, MAX_BODY = 32, 64, 4096
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, who are you?"}]


def wait(holder, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while holder.state == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert holder.ready, holder.detail


@pytest.fixture(scope="module")
def lm(tiny_chat_lm):
    return ChatModel(str(tiny_chat_lm["base"]), {"legal": str(tiny_chat_lm["legal"]), "med": str(tiny_chat_lm["med"])},
                     name="tiny", max_model_len=CONTEXT, threads=1)


@pytest.fixture(scope="module")
def app(lm):
    holder = LLMHolder(lambda: lm).start()
    wait(holder)
    return build_llm_app(holder, max_tokens=MAX_TOKENS, max_body_bytes=MAX_BODY)


def call(app, fn):
    """Run `fn(openai.AsyncOpenAI, httpx2.AsyncClient)` against the app."""
    async def go():
        # raise_app_exceptions off: as under uvicorn, a 500 is answered (Starlette re-raises it for the server log)
        transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as http:
            client = openai.AsyncOpenAI(base_url="http://test/v1", api_key="unused", http_client=http, max_retries=0)
            return await fn(client, http)
    return asyncio.run(go())


def offline(lm, model_id, messages, n):
    """The answer `domainft generate` computes: the same rendering, HF generate, greedy (the adapter merged in a
    model of its own)."""
    from peft import AutoPeftModelForCausalLM

    adapter = lm.adapter_of(model_id)
    model = lm.model.get_base_model() if adapter is None else AutoPeftModelForCausalLM.from_pretrained(
        lm.adapter_dirs[adapter]).eval()
    if adapter is None:
        with lm.model.disable_adapter():
            (new,) = generate_ids(model, [lm.chat_prompt(messages)], lm.settings.pad_id, lm.settings.eos_ids, n)
    else:
        (new,) = generate_ids(model, [lm.chat_prompt(messages)], lm.settings.pad_id, lm.settings.eos_ids, n)
    return lm.tokenizer.decode(new, skip_special_tokens=True), len(new)


def test_models_lists_the_base_and_each_adapter(app):
    async def fn(client, http):
        return await client.models.list(), await client.models.retrieve("legal")
    listed, legal = call(app, fn)
    assert [m.id for m in listed.data] == ["tiny", "legal", "med"]
    assert legal.parent == "tiny" and legal.max_model_len == CONTEXT and legal.object == "model"


@pytest.mark.parametrize("model_id", ["tiny", "legal", "med"])
def test_chat_answers_equal_offline_generation_with_usage(app, lm, model_id):
    async def fn(client, http):
        return await client.chat.completions.create(model=model_id, messages=HELLO, max_tokens=9, temperature=0)
    r = call(app, fn)
    text, n = offline(lm, model_id, HELLO, 9)
    assert r.choices[0].message.content == text and r.choices[0].message.role == "assistant"
    assert r.model == model_id and r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.usage.completion_tokens == n and r.usage.prompt_tokens == len(lm.chat_prompt(HELLO))
    assert r.usage.total_tokens == r.usage.prompt_tokens + n
    assert r.choices[0].finish_reason == ("length" if n == 9 else "stop")


def test_streaming_sends_the_same_answer_in_pieces_then_usage_and_done(app):
    async def fn(client, http):
        whole = await client.chat.completions.create(model="legal", messages=HELLO, max_tokens=12, temperature=0)
        chunks = [c async for c in await client.chat.completions.create(
            model="legal", messages=HELLO, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True})]
        raw = await http.post("/v1/chat/completions", json={"model": "med", "messages": HELLO, "max_tokens": 3,
                                                             "stream": True})
        return whole, chunks, raw
    whole, chunks, raw = call(app, fn)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant" and len([p for p in pieces if p]) > 1
    assert "".join(pieces) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [e for e in raw.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["object"] == "chat.completion.chunk" for e in events[:-1])


def test_text_completions_with_stop_strings_and_seeded_sampling(app, lm):
    async def fn(client, http):
        free = await client.completions.create(model="tiny", prompt="The market", max_tokens=12, temperature=0)
        text = free.choices[0].text
        stop = text[len(text) // 2:][:3]
        cut = await client.completions.create(model="tiny", prompt="The market", max_tokens=12, temperature=0,
                                              stop=[stop])
        seeded = [await client.completions.create(model="tiny", prompt="The market", max_tokens=12, temperature=1.0,
                                                  seed=s) for s in (3, 3, 4)]
        default16 = await client.completions.create(model="tiny", prompt="The market", temperature=0)
        return free, stop, cut, seeded, default16
    free, stop, cut, seeded, default16 = call(app, fn)
    assert free.object == "text_completion" and free.usage.prompt_tokens == len(lm.text_prompt("The market"))
    assert cut.choices[0].finish_reason == "stop" and stop not in cut.choices[0].text
    assert free.choices[0].text.startswith(cut.choices[0].text) and len(cut.choices[0].text) < len(free.choices[0].text)
    assert seeded[0].choices[0].text == seeded[1].choices[0].text != seeded[2].choices[0].text
    assert default16.usage.completion_tokens <= 16  # OpenAI's default max_tokens for text completions


@pytest.mark.parametrize("what,path,kwargs,status,param,words",
                         bad_llm_requests("tiny", MAX_TOKENS, CONTEXT, MAX_BODY), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_gets_an_openai_error_and_the_server_still_answers(app, what, path, kwargs, status, param, words):
    async def fn(client, http):
        return await http.post(path, **kwargs), await client.chat.completions.create(
            model="tiny", messages=HELLO, max_tokens=2, temperature=0)
    r, ok = call(app, fn)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and words in error["message"], error
    assert (error["param"] or "") == param
    assert ok.choices[0].message.content is not None


def test_the_openai_client_raises_its_own_errors(app):
    async def fn(client, http):
        out = []
        for kwargs in ({"model": "nope"}, {"n": 3}, {"max_tokens": CONTEXT - 2}):
            try:
                await client.chat.completions.create(**{"model": "tiny", "messages": HELLO, **kwargs})
            except openai.APIStatusError as e:
                out.append((type(e).__name__, e.status_code, (e.body or {}).get("code")))
        return out
    assert call(app, fn) == [("NotFoundError", 404, "model_not_found"), ("BadRequestError", 400, None),
                             ("BadRequestError", 400, None)]


def test_prompt_plus_max_tokens_over_the_context_is_refused(app, lm):
    words = next(k for k in range(1, 60) if CONTEXT - len(lm.chat_prompt([{"role": "user", "content": "word " * k}]))
                 < MAX_TOKENS)
    prompt = [{"role": "user", "content": "word " * words}]
    room = CONTEXT - len(lm.chat_prompt(prompt))
    assert 0 < room < MAX_TOKENS

    async def fn(client, http):
        return [await http.post("/v1/chat/completions", json={"messages": prompt, "max_tokens": n})
                for n in (room, room + 1)] + [await http.post("/v1/chat/completions", json={"messages": prompt})]
    fits, over, default = call(app, fn)
    assert fits.status_code == 200 and over.status_code == 400 and default.status_code == 200, over.text
    assert over.json()["error"]["code"] == "context_length_exceeded" and over.json()["error"]["param"] == "max_tokens"
    assert default.json()["usage"]["completion_tokens"] <= room  # no max_tokens: what the context leaves


def test_not_ready_until_loaded_then_ready(lm):
    import threading

    gate = threading.Event()

    def slow():
        gate.wait(30)
        return lm
    holder = LLMHolder(slow).start()
    app = build_llm_app(holder, retry_after_s=3)

    async def fn(client, http):
        return [await http.get(p) for p in ("/healthz", "/readyz", "/v1/models")] + [
            await http.post("/v1/chat/completions", json={"messages": HELLO})]
    health, ready, models, chat = call(app, fn)
    assert health.status_code == 200 and ready.status_code == 503 and ready.headers["retry-after"] == "3"
    assert models.status_code == chat.status_code == 503 and chat.json()["error"]["message"].startswith("not ready")
    gate.set()
    wait(holder)
    (ready,) = call(app, lambda client, http: asyncio.gather(http.get("/readyz")))
    assert ready.status_code == 200


def test_a_failing_model_gets_a_500_in_openai_shape_and_the_next_request_is_answered(app, lm, caplog):
    broken = {"on": True}

    async def stream(request):
        if broken["on"]:
            raise RuntimeError("the GPU fell off")
        yield  # pragma: no cover
    holder = LLMHolder(lambda: lm).start()
    wait(holder)
    failing = build_llm_app(holder, stream=lambda r: stream(r) if broken["on"] else holder.stream(r))

    async def fn(client, http):
        first = await http.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2})
        broken["on"] = False
        return first, await http.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2})
    with caplog.at_level("ERROR", logger="domainft.serving"):
        first, second = call(failing, fn)
    assert first.status_code == 500 and first.json()["error"]["type"] == "server_error"
    assert "the GPU fell off" in first.json()["error"]["message"] and "RuntimeError" in caplog.text
    assert second.status_code == 200


def test_a_busy_replica_passes_its_health_probe_and_a_wedged_one_fails(lm):
    """The probe decodes one token on its own; when it times out, a replica that finished a decoding step within
    the timeout is busy (a long batch ahead of the probe in the worker thread), not wedged, and stays ready."""
    import threading

    holder = LLMHolder(lambda: lm).start()
    wait(holder)
    asyncio.run(holder.probe_decoding(10.0))  # answers: ready

    def busy(seconds: float) -> None:  # steps of a long batch, finishing one after another
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.01)
            holder.last_step_at = time.monotonic()
    steps = holder._executor.submit(busy, 1.0)
    asyncio.run(holder.probe_decoding(0.2))
    assert holder.ready
    steps.result()
    gate = threading.Event()
    holder._executor.submit(gate.wait)  # a step that never ends: wedged
    try:
        with pytest.raises(RuntimeError, match="wedged: a one-token answer took longer than 0.2 s"):
            asyncio.run(holder.probe_decoding(0.2))
        assert holder.state == "unhealthy"
    finally:
        gate.set()
    asyncio.run(holder.probe_decoding(10.0))
    assert holder.ready


def test_concurrent_requests_share_the_running_batch_and_answer_as_alone(app, lm):
    asks = [(m, q, n) for m in ("tiny", "legal", "med") for q, n in (("Hello, who are you?", 5), ("a", 11))]

    async def fn(client, http):
        async def one(m, q, n):
            r = await client.chat.completions.create(model=m, messages=[{"role": "user", "content": q}],
                                                     max_tokens=n, temperature=0)
            return r.choices[0].message.content
        together = await asyncio.gather(*(one(*a) for a in asks))
        return together, [await one(*a) for a in asks]
    together, alone = call(app, fn)
    assert together == alone == [offline(lm, m, [{"role": "user", "content": q}], n)[0] for m, q, n in asks]
