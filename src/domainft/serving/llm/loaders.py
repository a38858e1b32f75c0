"""What a serving replica calls to build its model, by backend (picklable: it crosses the Ray boundary)."""
from __future__ import annotations

import functools
from typing import Any, Callable


def model_loader(cfg: Any) -> Callable[[], Any]:
    """A ChatModel on transformers, or a VllmModel (vLLM's engine), for a validated ServeConfig."""
    if (cfg.backend or "transformers") == "vllm":
        from domainft.serving.llm.vllm_backend import VllmModel

        return functools.partial(VllmModel, cfg.model_dir, dict(cfg.adapters), cfg.chat_template,
                                 cfg.served_model_name, cfg.max_model_len, cfg.trust_remote_code)
    from domainft.serving.llm.model import ChatModel

    return functools.partial(ChatModel, cfg.model_dir, dict(cfg.adapters), cfg.chat_template, cfg.served_model_name,
                             cfg.max_model_len, cfg.intra_op_threads, cfg.trust_remote_code)
