"""A minimal valid config dict (a one-row corpus and a model folder that pass the path checks)."""
import pytest


@pytest.fixture
def base(tmp_path, corpus_and_model):
    corpus, model = corpus_and_model
    return {"output_dir": str(tmp_path / "out"), "data": {"train": str(corpus)},
            "model": {"name_or_path": str(model)}}
