"""The LLM server's continuous batch (serving/llm/decode.py) on a real tiny causal LM and LoRA adapters: no Ray."""
from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from domainft.core.generation import generate_ids
from domainft.serving.llm.decode import BatchDecoder, GenRequest, TextStream, decode_all
from domainft.serving.llm.model import ChatModel

PROMPTS = ["Hello there, how are you?", "a", "The quick brown fox jumps over the lazy dog and then"]


@pytest.fixture(scope="module")
def lm(tiny_chat_lm):
    return ChatModel(str(tiny_chat_lm["base"]), {"legal": str(tiny_chat_lm["legal"]), "med": str(tiny_chat_lm["med"])},
                     threads=1)


@pytest.fixture(scope="module")
def plain(tiny_chat_lm):
    """The base model and tokenizer loaded directly with transformers (no adapters)."""
    return AutoModelForCausalLM.from_pretrained(tiny_chat_lm["base"]).eval(), AutoTokenizer.from_pretrained(
        tiny_chat_lm["base"])


def ids(lm, text):
    return tuple(lm.chat_prompt([{"role": "user", "content": text}]))


def offline(model, prompts, eos, pad, n):
    """What `domainft generate` computes: HF generate, greedy, one prompt at a time."""
    return generate_ids(model, [list(p) for p in prompts], pad, eos, n, batch_size=1)


def run(decoder, ids):
    """Step `decoder` until done. Returns the text and last Delta of every request by id, and the batch size
    before each step."""
    texts, last, sizes = {i: "" for i in ids}, {}, []
    while not decoder.done:
        sizes.append(decoder.size)
        for rid, d in decoder.step().items():
            texts[rid] += d.text
            last[rid] = d
    return texts, last, sizes


def test_greedy_batch_equals_offline_generate_and_rows_leave_as_they_finish(lm, plain):
    model, tok = plain
    prompts = [ids(lm, p) for p in PROMPTS]
    limits = [3, 11, 7]  # rows finish at different steps and leave the batch
    decoder = lm.decoder()
    rids = decoder.add([GenRequest(p, n) for p, n in zip(prompts, limits)])
    texts, last, sizes = run(decoder, rids)
    assert sizes == [3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1]
    assert [last[i].tokens for i in rids] == limits and {last[i].finish_reason for i in rids} == {"length"}
    for p, n, i in zip(prompts, limits, rids):
        (want,) = offline(model, [p], lm.settings.eos_ids, lm.settings.pad_id, n)
        assert texts[i] == tok.decode(want, skip_special_tokens=True)


def test_requests_join_a_running_batch_and_answer_as_if_alone(lm, plain):
    """Continuous batching: requests added while others decode are prefilled at the next step, their cache joins
    the batch's (left-padded to the longer), and every answer equals offline generation of that prompt alone;
    cancelled requests leave."""
    model, tok = plain
    long_prompt = ids(lm, PROMPTS[2] + " " + PROMPTS[0])
    decoder = lm.decoder()
    (first,) = decoder.add([GenRequest(ids(lm, PROMPTS[1]), 12)])
    joins = {3: [("long", GenRequest(long_prompt, 6)), ("short", GenRequest(ids(lm, PROMPTS[0]), 9))],
             6: [("late", GenRequest(ids(lm, "late"), 4)), ("gone", GenRequest(ids(lm, "x"), 20))]}
    texts, last, sizes = {}, {}, []
    keys, step = {first: "first"}, 0
    while not decoder.done or step <= 6:
        for key, request in joins.get(step, []):
            (rid,) = decoder.add([request])
            keys[rid] = key
        if step == 8:
            decoder.cancel(next(r for r, k in keys.items() if k == "gone"))
        sizes.append(decoder.size)
        for rid, d in decoder.step().items():
            texts[keys[rid]] = texts.get(keys[rid], "") + d.text
            last[keys[rid]] = d
        step += 1
    assert sizes[3] == 3 and max(sizes) == 5 and "gone" not in {k for k, d in last.items() if d.finish_reason}
    assert decoder.cache is None  # everyone left: no cache kept
    for key, prompt, n in (("first", ids(lm, PROMPTS[1]), 12), ("long", long_prompt, 6),
                           ("short", ids(lm, PROMPTS[0]), 9), ("late", ids(lm, "late"), 4)):
        (want,) = offline(model, [prompt], lm.settings.eos_ids, lm.settings.pad_id, n)
        assert texts[key] == tok.decode(want, skip_special_tokens=True), key
        assert last[key].tokens == len(want)


def test_an_end_of_turn_token_stops_a_row_and_is_not_part_of_the_answer(lm, plain):
    model, tok = plain
    p = ids(lm, PROMPTS[0])
    (free,) = offline(model, [p], [], lm.settings.pad_id, 6)
    stop_at = free[3]  # the 4th token the model would write: made a stop token
    k = free.index(stop_at)
    decoder = BatchDecoder(model, tok, [stop_at], lm.settings.pad_id)
    (rid,) = decoder.add([GenRequest(p, 6)])
    texts, last, _ = run(decoder, [rid])
    text, last = texts[rid], last[rid]
    assert (last.finish_reason, last.tokens) == ("stop", k) and text == tok.decode(free[:k], skip_special_tokens=True)


def test_each_adapter_answers_as_that_adapter_alone_in_one_mixed_batch(lm, tiny_chat_lm):
    from peft import AutoPeftModelForCausalLM

    p = ids(lm, PROMPTS[2])
    mixed = decode_all(lm.model, lm.tokenizer, [GenRequest(p, 8, adapter=a) for a in (None, "legal", "med", "legal")],
                       lm.settings.eos_ids, lm.settings.pad_id, with_adapters=True)
    answers = [text for text, _, _ in mixed]
    assert answers[1] == answers[3] and len(set(answers[:3])) == 3  # the adapters change the answer
    for name, text in (("legal", answers[1]), ("med", answers[2])):
        alone = AutoPeftModelForCausalLM.from_pretrained(tiny_chat_lm[name]).eval()
        (want,) = offline(alone, [p], lm.settings.eos_ids, lm.settings.pad_id, 8)
        assert text == lm.tokenizer.decode(want, skip_special_tokens=True), name


def test_a_seed_gives_the_same_sample_whatever_else_is_in_the_batch(lm):
    p, q = ids(lm, PROMPTS[0]), ids(lm, PROMPTS[1])
    sampled = GenRequest(p, 12, temperature=1.0, top_p=0.9, seed=7)
    alone = decode_all(lm.model, lm.tokenizer, [sampled], lm.settings.eos_ids, lm.settings.pad_id, True)[0]
    with_others = decode_all(lm.model, lm.tokenizer, [GenRequest(q, 5), sampled, GenRequest(q, 12, temperature=1.0)],
                             lm.settings.eos_ids, lm.settings.pad_id, True)[1]
    other_seed = decode_all(lm.model, lm.tokenizer, [GenRequest(p, 12, temperature=1.0, top_p=0.9, seed=8)],
                            lm.settings.eos_ids, lm.settings.pad_id, True)[0]
    greedy = decode_all(lm.model, lm.tokenizer, [GenRequest(p, 12)], lm.settings.eos_ids, lm.settings.pad_id, True)[0]
    assert alone == with_others and alone != other_seed and alone != greedy


def test_stop_strings_cut_the_answer_and_streamed_pieces_add_up(lm):
    tok = lm.tokenizer
    text = "The answer is 42. Done here, then more text."
    token_ids = tok(text, add_special_tokens=False)["input_ids"]
    stream, pieces = TextStream(tok, ["Done", "zzz"]), []
    for t in token_ids:
        pieces.append(stream.push(t))
        assert not any("Don" in piece for piece in pieces)  # a possible start of a stop string is held back
        if stream.stopped:
            break
    assert stream.stopped and "".join(pieces) == "The answer is 42. "
    stream, pieces = TextStream(tok, ["zzz"]), []
    pieces = [stream.push(t) for t in token_ids] + [stream.flush()]
    assert "".join(pieces) == tok.decode(token_ids)


def test_multibyte_characters_are_never_released_half_decoded(lm):
    tok = lm.tokenizer
    text = "市场上涨了百分之五，投资者很高兴。"
    token_ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(token_ids) > len(text)  # byte-level pieces: characters span several tokens
    stream = TextStream(tok)
    pieces = [stream.push(t) for t in token_ids] + [stream.flush()]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_a_request_needs_a_prompt(lm):
    with pytest.raises(ValueError, match="a prompt has no tokens"):
        lm.decoder().add([GenRequest((), 3)])
    assert lm.decoder().step() == {} and lm.decoder().done


def test_a_request_cancelled_before_it_joins_never_runs(lm):
    decoder = lm.decoder()
    kept, dropped = decoder.add([GenRequest(ids(lm, "a"), 2), GenRequest(ids(lm, "b"), 2)])
    decoder.cancel(dropped)
    seen = set()
    while not decoder.done:
        seen |= set(decoder.step())
    assert seen == {kept} and decoder.rows == {}


def test_each_token_decodes_a_short_window_not_the_whole_answer(lm):
    tok = lm.tokenizer
    text = "The court held that the clause applied. " * 20 + "市场上涨了百分之五。"
    token_ids = tok(text, add_special_tokens=False)["input_ids"]
    widths = []

    class Counting:  # the tokenizer, recording how many ids each decode call gets
        def decode(self, ids, **kwargs):
            widths.append(len(ids))
            return tok.decode(ids, **kwargs)
    stream = TextStream(Counting(), ["zzz"])
    pieces = [stream.push(t) for t in token_ids] + [stream.flush()]
    assert "".join(pieces) == tok.decode(token_ids) and len(token_ids) > 150
    assert max(widths) <= 8  # the whole answer would be len(token_ids)
