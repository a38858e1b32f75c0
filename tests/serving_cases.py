"""Bad requests to POST /v1/classify and what each must get, for the ASGI (unit) and loopback (integration)
tests of the serving API."""
from __future__ import annotations


def bad_requests(max_texts: int, max_body: int) -> list[tuple[str, dict, int, str]]:
    """(what, httpx request kwargs, status, words the answer must hold) for a server with these limits."""
    as_json = {"content-type": "application/json"}
    return [
        ("invalid JSON", {"content": b'{"texts": [', "headers": as_json}, 400, "not valid JSON"),
        ("not JSON", {"content": b"texts=a", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415,
         "Content-Type: application/json"),
        ("body not an object", {"json": ["a"]}, 422, "body"),
        ("texts not a list", {"json": {"texts": "a"}}, 422, "texts"),
        ("a number for a text", {"json": {"texts": ["a", 3]}}, 422, "texts[1]"),
        ("null text", {"json": {"texts": [None]}}, 422, "texts[0]"),
        ("no texts key", {"json": {}}, 422, "texts: Field required"),
        ("empty list", {"json": {"texts": []}}, 422, "at least 1"),
        ("blank text", {"json": {"texts": ["ok", "  \n\t"]}}, 422, "whitespace-only text at index 1"),
        ("empty text", {"json": {"texts": [""]}}, 422, "index 0"),
        ("unknown field", {"json": {"texts": ["a"], "top_k": 2}}, 422, "top_k: unknown field"),
        ("too many texts", {"json": {"texts": ["a"] * (max_texts + 1)}}, 422, f"limit of {max_texts}"),
        ("body over the limit", {"json": {"texts": ["x" * max_body]}}, 413, "Too Large"),
    ]


def bad_llm_requests(model: str, max_tokens: int, context: int,
                     max_body: int) -> list[tuple[str, str, dict, int, str, str]]:
    """Bad requests to the OpenAI-compatible API of a server with these limits: (what, path, httpx request kwargs,
    status, the error's param or "", words its message must hold). Every answer has OpenAI's error shape."""
    as_json = {"content-type": "application/json"}
    chat, completions = "/v1/chat/completions", "/v1/completions"

    def ask(**fields):
        return {"json": {"model": model, "messages": [{"role": "user", "content": "Hello"}], **fields}}

    return [
        ("invalid JSON", chat, {"content": b'{"messages": [', "headers": as_json}, 400, "", "not valid JSON"),
        ("not JSON", chat, {"content": b"messages=a", "headers": {"content-type": "text/plain"}}, 415, "",
         "Content-Type: application/json"),
        ("no messages", chat, {"json": {"model": model}}, 400, "messages", "Field required"),
        ("messages not a list", chat, ask(messages="Hello"), 400, "messages", "valid list"),
        ("empty messages", chat, ask(messages=[]), 400, "messages", "messages is empty"),
        ("unknown role", chat, ask(messages=[{"role": "tool", "content": "42"}]), 400, "messages",
         "messages[0].role 'tool'"),
        ("empty message", chat, ask(messages=[{"role": "user", "content": " "}]), 400, "messages",
         "messages[0].content (user) is empty"),
        ("content not text", chat, ask(messages=[{"role": "user", "content": 3}]), 400, "messages",
         "messages[0].content is a number"),
        ("image part", chat, ask(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
         400, "messages", "only text parts"),
        ("system not first", chat, ask(messages=[{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]),
         400, "messages", "only allowed first"),
        ("unknown model", chat, ask(model="no-such-model"), 404, "model", "does not exist"),
        ("unrecognized argument", chat, ask(frobnicate=1), 400, "frobnicate", "Unrecognized request argument"),
        ("n over 1", chat, ask(n=2), 400, "n", "not supported"),
        ("tools", chat, ask(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools", "not supported"),
        ("json mode", chat, ask(response_format={"type": "json_object"}), 400, "response_format", "not supported"),
        ("temperature out of range", chat, ask(temperature=3), 400, "temperature", "less than or equal to 2"),
        ("top_p zero", chat, ask(top_p=0), 400, "top_p", "greater than 0"),
        ("max_tokens zero", chat, ask(max_tokens=0), 400, "max_tokens", "greater than or equal to 1"),
        ("max_tokens over the server's limit", chat, ask(max_tokens=max_tokens + 1), 400, "max_tokens",
         f"limit of {max_tokens}"),
        ("five stop strings", chat, ask(stop=["a", "b", "c", "d", "e"]), 400, "stop", "at most 4"),
        ("prompt over the context", chat, ask(messages=[{"role": "user", "content": "word " * (2 * context)}]), 400,
         "messages", f"maximum context length is {context} tokens"),
        ("completion prompt list", completions, {"json": {"model": model, "prompt": ["a", "b"]}}, 400, "prompt",
         "one prompt per request"),
        ("completion echo", completions, {"json": {"model": model, "prompt": "a", "echo": True}}, 400, "echo",
         "not supported"),
        ("body over the limit", chat, ask(messages=[{"role": "user", "content": "x" * max_body}]), 413, "",
         f"limit of {max_body}"),
    ]
