"""The SFT loss is exact per token across gradient accumulation and ranks (issue: a mean of per-batch means
is wrong when micro batches hold different numbers of answer tokens): 2 gloo ranks x grad_accum 2 under real
DeepSpeed ZeRO-2, micro batches with unequal answer-token counts, one optimizer step of plain SGD (lr 1, so
the update is minus the gradient), through the workers' own loop (core.loop.train_epoch with the task's
token count) -> the same gradient as one process on all four micro batches together. The same loop without
the token count (each micro batch's mean weighted alike) is shown to miss it."""
import torch

from dist_harness import run_world
from tiny_models import save_tiny_chat_lm

WORLD, ACCUM = 2, 2


def _micro_batch(rank: int, i: int, vocab: int) -> dict:
    """Rows of 10 tokens whose answer spans differ: rank 0's first micro batch has 2 answer tokens per row,
    the others up to 8, so the per-token and per-batch means disagree."""
    g = torch.Generator().manual_seed(10 * rank + i)
    ids = torch.randint(3, vocab, (2, 10), generator=g)
    labels = torch.full_like(ids, -100)
    answer = 2 if (rank, i) == (0, 0) else 4 + 2 * i + rank
    labels[:, -answer:] = ids[:, -answer:]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _reference_grad(model_dir: str, vocab: int) -> dict:
    from domainft.core.causal_lm import build_causal_lm

    torch.manual_seed(0)
    model = build_causal_lm(model_dir)
    batches = [_micro_batch(r, i, vocab) for r in range(WORLD) for i in range(ACCUM)]
    total = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    for b in batches:  # the summed token loss of every micro batch over the step's total token count
        model(**b, num_items_in_batch=torch.tensor(float(total))).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _step_delta(model_dir: str, rank: int, vocab: int, exact: bool) -> dict:
    from domainft.core.causal_lm import build_causal_lm
    from domainft.core.loop import train_epoch
    from domainft.core.sft_batching import count_label_tokens
    from domainft.engine.build import avoid_hidden_compiles
    from domainft.engine.ds_config import build_ds_config

    avoid_hidden_compiles()  # before DeepSpeed's init: else its CPU accelerator JIT-builds an op (~60 s a process)
    import deepspeed

    torch.manual_seed(0)
    model = build_causal_lm(model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ds = build_ds_config(2, "fp32", 2, ACCUM, WORLD, 0.0)
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0), config=ds)
    batches = [_micro_batch(rank, i, vocab) for i in range(ACCUM)]
    train_epoch(engine, batches, ACCUM, torch.device("cpu"), forward_kwargs={"use_cache": False},
                count_fn=count_label_tokens if exact else None, grad_accum=ACCUM, world=WORLD)
    assert engine.global_steps == 1
    return {n: before[n] - p.detach() for n, p in engine.module.named_parameters()}  # = the gradient (SGD, lr 1)


def _ranks(rank, world, model_dir, vocab, out):
    ref = _reference_grad(model_dir, vocab)
    exact = _step_delta(model_dir, rank, vocab, exact=True)
    naive = _step_delta(model_dir, rank, vocab, exact=False)
    if rank == 0:
        def err(delta):
            return max(float((delta[n] - ref[n]).abs().max() / (ref[n].abs().max() + 1e-12)) for n in ref)
        torch.save({"exact": err(exact), "naive": err(naive)}, out)


def test_sft_loss_is_per_token_over_the_optimizer_step_across_ranks_and_accumulation(tmp_path):
    import json

    model_dir = save_tiny_chat_lm(tmp_path / "lm", "llama", "qwen", num_layers=2)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    out = tmp_path / "errors.pt"
    run_world(_ranks, WORLD, str(model_dir), vocab, str(out))
    errors = torch.load(out)
    assert errors["exact"] < 1e-3, errors  # the same gradient as one process on all the tokens
    assert errors["naive"] > 0.05, errors  # a mean of per-batch means is another gradient: the test can fail
