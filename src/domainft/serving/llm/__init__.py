"""Serving causal LMs: OpenAI's chat and text completions API. No Ray here.

schemas       the request bodies (pydantic): what /docs shows, what is refused
model         the model folder checked and loaded: tokenizer, chat template, stop ids, context, LoRA adapters
              (ServedLM, ChatModel for transformers); check_serving for `domainft serve`'s setup
loaders       model_loader: what a replica calls to build the model of its backend
decode        the continuous batch: requests join and leave between decoding steps; incremental text, stops
state         LLMHolder: background load, readiness, the scheduler loop, the health probe
app           build_llm_app: the routes, OpenAI-shaped errors, streaming, the body limit
vllm_backend  the same API on vLLM's engine (GPU; optional)

The Ray Serve deployment that runs one LLMHolder per replica is distributed/serve.py (ChatLM).
"""
