"""`domainft serve` of a causal LM on the session's Ray: a real Ray Serve proxy on loopback, the official `openai`
client (and httpx2 for what clients do not send).

One deployment for the module (Serve start-up is slow here): a tiny Qwen2 chat LM with two LoRA adapters, one
replica that batches up to 8 requests. Small limits, so that overload is easy to reach: the replica holds 4
requests and the proxy queues 2 more.
"""
from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import openai
import pytest

from serving_cases import bad_llm_requests

MAX_TOKENS, CONTEXT, MAX_BODY = 32, 96, 8192
MODELS = ["tiny", "legal", "med"]
QUESTIONS = ["Hello, who are you?", "What does clause 4 say about liability?", "a", "Summarise: shares rose 5%."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(ray_cluster, tiny_chat_lm):
    from ray import serve

    from domainft.config.serve import ServeConfig
    from domainft.distributed.serve import start_application, wait_ready

    cfg = ServeConfig(model_dir=str(tiny_chat_lm["base"]), served_model_name="tiny",
                      adapters={"legal": str(tiny_chat_lm["legal"]), "med": str(tiny_chat_lm["med"])},
                      max_tokens=MAX_TOKENS, max_model_len=CONTEXT, max_body_bytes=MAX_BODY, replica_cpus=0.5,
                      threads=1, max_batch_size=8, batch_wait_ms=20, max_ongoing=4, max_queued=2, retry_after_s=2,
                      health_period_s=2, health_timeout_s=30)
    address = start_application(cfg, "127.0.0.1", free_port())
    wait_ready(address, timeout_s=180)
    yield address
    serve.shutdown()


@pytest.fixture(scope="module")
def client(url):
    """As clients are: a 503 is retried after its Retry-After (the router sheds load on a stale view of the
    replica's queue, so a burst can see one even below the limits)."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=8, timeout=120)


@pytest.fixture(scope="module")
def offline(tiny_chat_lm):
    """Greedy answers computed in this process as `domainft generate` does (the same rendering, HF generate)."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    from domainft.core.generation import generate_ids
    from domainft.serving.llm.model import ChatModel

    lm = ChatModel(str(tiny_chat_lm["base"]), threads=1)
    models = {"tiny": AutoModelForCausalLM.from_pretrained(tiny_chat_lm["base"]).eval(),
              **{a: AutoPeftModelForCausalLM.from_pretrained(tiny_chat_lm[a]).eval() for a in ("legal", "med")}}

    def answer(model_id: str, question: str, n: int) -> str:
        prompt = lm.chat_prompt([{"role": "user", "content": question}])
        (new,) = generate_ids(models[model_id], [prompt], lm.settings.pad_id, lm.settings.eos_ids, n)
        return lm.tokenizer.decode(new, skip_special_tokens=True)
    return answer


def chat(client, model_id, question, n=10, **kwargs):
    r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": question}],
                                       max_tokens=n, temperature=0, **kwargs)
    return r.choices[0].message.content


def test_models_are_the_base_and_its_adapters(client):
    assert [m.id for m in client.models.list().data] == MODELS


def test_concurrent_requests_to_several_adapters_equal_offline_generation(client, offline):
    asks = [(m, q) for m in MODELS for q in QUESTIONS]
    with ThreadPoolExecutor(4) as pool:  # the replica holds 4: batches mix adapters and prompt lengths
        together = list(pool.map(lambda a: chat(client, *a), asks))
    alone = [chat(client, *a) for a in asks]
    assert together == alone == [offline(m, q, 10) for m, q in asks]
    assert len({answer for answer in together}) > len(QUESTIONS)  # the adapters answer differently


def test_streaming_gives_the_same_answer_with_usage(client):
    whole = client.chat.completions.create(model="legal", messages=[{"role": "user", "content": QUESTIONS[0]}],
                                           max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model="legal", messages=[{"role": "user", "content": QUESTIONS[0]}],
                                                 max_tokens=12, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    text = client.completions.create(model="med", prompt="The court held", max_tokens=6, temperature=0)
    streamed = client.completions.create(model="med", prompt="The court held", max_tokens=6, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == text.choices[0].text


@pytest.mark.parametrize("what,path,kwargs,status,param,words", bad_llm_requests("tiny", MAX_TOKENS, CONTEXT, MAX_BODY),
                         ids=[b[0] for b in bad_llm_requests("tiny", MAX_TOKENS, CONTEXT, MAX_BODY)])
def test_bad_input_gets_an_openai_error_and_the_server_still_answers(url, client, what, path, kwargs, status, param,
                                                                     words):
    with httpx2.Client(base_url=url, timeout=60) as c:
        r = c.post(path, **kwargs)
    assert r.status_code == status, (what, r.text)
    assert words in r.json()["error"]["message"] and (r.json()["error"]["param"] or "") == param
    assert chat(client, "tiny", "still there?", n=2) is not None


def test_overload_gets_503_with_retry_after_and_the_server_recovers(url, client):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": MAX_TOKENS, "temperature": 0}

    def post(_):
        with httpx2.Client(base_url=url, timeout=120) as c:
            return c.post("/v1/chat/completions", json=body)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(16)))
    codes = [r.status_code for r in answers]
    assert 200 in codes and 503 in codes, codes  # 4 held, 2 queued: the rest are shed, not queued
    assert {r.headers.get("retry-after") for r in answers if r.status_code == 503} == {"2"}
    assert set(codes) <= {200, 503}
    time.sleep(1)
    assert chat(client, "tiny", "still there?", n=2) is not None

