"""The vllm backend (`domainft serve --backend vllm`): vLLM's async engine behind the same API, on a GPU.

vLLM batches continuously on its own (paged attention), so each request streams straight from the engine
instead of through the replica's scheduler (serving/llm/state.py). Prompts are rendered and tokenized here, as
for the transformers backend (ServedLM), and handed to vLLM as token ids; adapters are vLLM LoRA requests.
Needs the vllm package where the app is built (`check_serving`) and a CUDA GPU in each replica (checked when
it loads). Nothing in the test suite requires it: tests/gpu/test_vllm_serving.py runs on a GPU machine.
"""
from __future__ import annotations

import json
import os
import uuid
from typing import AsyncIterator, Mapping, Optional

from domainft.errors import UserError
from domainft.serving.llm.decode import Delta, GenRequest
from domainft.serving.llm.model import ServedLM


class VllmModel(ServedLM):
    streams_itself = True

    def __init__(self, model_dir: str, adapters: Optional[Mapping[str, str]] = None, chat_template: str = "auto",
                 name: Optional[str] = None, max_model_len: Optional[int] = None, trust_remote_code: bool = False):
        import torch
        from vllm import AsyncEngineArgs, AsyncLLMEngine
        from vllm.lora.request import LoRARequest

        if not torch.cuda.is_available():
            raise UserError("backend vllm needs a CUDA GPU in each replica (replica_gpus: 1 on a GPU node); this "
                            "replica has none")
        super().__init__(model_dir, adapters, chat_template, name, max_model_len)
        ranks = [_lora_rank(folder) for folder in self.adapter_dirs.values()]
        args = AsyncEngineArgs(model=model_dir, tokenizer=model_dir, max_model_len=self.context,
                               trust_remote_code=trust_remote_code, enable_lora=bool(ranks),
                               **({"max_loras": len(ranks), "max_lora_rank": max(ranks)} if ranks else {}))
        self.engine = AsyncLLMEngine.from_engine_args(args)
        self.lora = {n: LoRARequest(n, k + 1, folder) for k, (n, folder) in enumerate(self.adapter_dirs.items())}

    async def stream(self, request: GenRequest) -> AsyncIterator[Delta]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p,
                                seed=request.seed, stop=list(request.stop) or None,
                                stop_token_ids=list(self.settings.eos_ids), skip_special_tokens=True)
        sent = 0
        async for out in self.engine.generate({"prompt_token_ids": list(request.prompt_ids)}, params,
                                              request_id=uuid.uuid4().hex,
                                              lora_request=self.lora.get(request.adapter or "")):
            o = out.outputs[0]
            text, sent = o.text[sent:], len(o.text)  # vLLM gives the text so far
            yield Delta(text, len(o.token_ids), (o.finish_reason or "stop") if out.finished else None)


def _lora_rank(folder: str) -> int:
    with open(os.path.join(folder, "adapter_config.json"), encoding="utf-8") as f:
        return int(json.load(f).get("r") or 8)
