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
