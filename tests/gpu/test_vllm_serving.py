"""The vllm serving backend behind the OpenAI-compatible app, on a CUDA GPU with vLLM installed: the models list,
chat answers streamed and whole alike, usage, an adapter that changes the answer.

Marked `gpu` (tests/gpu/conftest.py). In the dry run of benchmarks/gpu_suite.sh (CPU) the body checks what a
user without a GPU gets instead: `domainft serve --backend vllm` refused before anything starts, saying why.
"""
import asyncio

import pytest

from domainft.config.serve import ServeConfig
from domainft.errors import UserError
from domainft.serving.llm.model import backends_available, check_serving

HELLO = [{"role": "user", "content": "Hello, who are you?"}]


def test_vllm_backend_serves_chat_and_adapters(tmp_path, gpu_device):
    from tiny_models import save_tiny_chat_lm, save_tiny_lora_adapter

    base = save_tiny_chat_lm(tmp_path / "base", family="qwen2", style="qwen", hidden_size=64,
                             num_attention_heads=4, num_key_value_heads=2)
    adapter = save_tiny_lora_adapter(base, tmp_path / "legal", seed=1)
    cfg = ServeConfig(model_dir=str(base), backend="vllm", adapters={"legal": str(adapter)}, served_model_name="tiny",
                      replica_gpus=1)
    if gpu_device == "cpu":  # the dry run: no vLLM on this machine
        with pytest.raises(UserError, match="--backend vllm cannot run here: the vllm package is not installed"):
            check_serving(cfg)
        return
    assert backends_available()["vllm"] == "", backends_available()
    assert check_serving(cfg) == ["tiny", "legal"]

    import httpx2
    import openai

    from domainft.serving.llm.app import build_llm_app
    from domainft.serving.llm.loaders import model_loader
    from domainft.serving.llm.state import LLMHolder

    holder = LLMHolder(model_loader(cfg)).start()
    for _ in range(600):
        if holder.state != "loading":
            break
        asyncio.run(asyncio.sleep(0.5))
    assert holder.ready, holder.detail
    app = build_llm_app(holder, max_tokens=32)

    async def go():
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test") as http:
            client = openai.AsyncOpenAI(base_url="http://test/v1", api_key="unused", http_client=http, max_retries=0)
            ids = [m.id for m in (await client.models.list()).data]
            answers = {}
            for model in ("tiny", "legal"):
                whole = await client.chat.completions.create(model=model, messages=HELLO, max_tokens=16, temperature=0)
                parts = [c.choices[0].delta.content or "" async for c in await client.chat.completions.create(
                    model=model, messages=HELLO, max_tokens=16, temperature=0, stream=True) if c.choices]
                answers[model] = (whole.choices[0].message.content, "".join(parts), whole.usage.completion_tokens)
            return ids, answers
    ids, answers = asyncio.run(go())
    assert ids == ["tiny", "legal"]
    for model, (whole, streamed, tokens) in answers.items():
        assert whole == streamed and 0 < tokens <= 16, model
    assert answers["tiny"][0] != answers["legal"][0]  # the adapter is applied
