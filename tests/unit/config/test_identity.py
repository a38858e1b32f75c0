"""A run's identity: what resumes, what starts afresh, and the message when an explicit name does not match."""
import json


from domainft.config import apply_overrides, validate_dict
from domainft.config.identity import identity_differences, identity_hash, run_identity


def _cfg(corpus_and_model, *overrides):
    corpus, model = corpus_and_model
    raw = {"output_dir": "/tmp/x", "data": {"train": str(corpus)}, "model": {"name_or_path": str(model)}}
    return validate_dict(apply_overrides(raw, overrides))


def test_cosmetic_keys_do_not_change_the_identity(corpus_and_model):
    base = run_identity(_cfg(corpus_and_model), "fp")
    for override in ("train.log_every_steps=3", "run.max_failures=5", "run.keep_checkpoints=4", "output_dir=/tmp/y",
                     "train.eval_batch_size=7", "scaling.cpus_per_worker=0.5", "train.early_stopping_patience=2"):
        assert run_identity(_cfg(corpus_and_model, override), "fp") == base, override


def test_trajectory_keys_and_data_change_it(corpus_and_model):
    base = run_identity(_cfg(corpus_and_model), "fp")
    for override in ("optim.lr=1e-4", "train.epochs=5", "deepspeed.zero_stage=2", "scaling.num_workers=3",
                     "unfreeze.initial_layers=1", "model.revision=abc", "train.seed=1"):
        other = run_identity(_cfg(corpus_and_model, override), "fp")
        assert other != base and identity_hash(other) != identity_hash(base), override
    assert run_identity(_cfg(corpus_and_model), "other data") != base


def test_differences_name_each_key_with_both_values(corpus_and_model):
    old = run_identity(_cfg(corpus_and_model, "train.epochs=3"), "fp")
    new = run_identity(_cfg(corpus_and_model, "train.epochs=5", "optim.lr=1e-4"), "fp2")
    lines = identity_differences(old, new)
    assert "train.epochs: 3 in the checkpoint, 5 now" in lines
    assert "optim.lr: 5e-05 in the checkpoint, 0.0001 now" in lines
    assert "data.prepared_fingerprint: the prepared data changed" in lines
    assert len(lines) == 3
    assert json.loads(json.dumps(old)) == old  # stored in every checkpoint as JSON


def test_a_key_added_later_at_the_value_older_runs_had_keeps_their_identity(corpus_and_model):
    """`task` came after runs existed: at `classification` (what they trained) it is not in the identity, so
    a run started before it resumes under the same name; another task would be another run."""
    identity = run_identity(_cfg(corpus_and_model), "fp")
    assert "task" not in identity and "train.epochs" in identity
