"""A base train config on disk (a data file and a model folder that pass the path checks) and a sweep
builder: sweep files are validated against real files, without Ray."""
import pytest
import yaml


@pytest.fixture
def base_file(tmp_path, corpus_and_model):
    corpus, model = corpus_and_model
    raw = {"output_dir": "runs/base", "data": {"train": str(corpus)},
           "model": {"name_or_path": str(model)}, "train": {"epochs": 3},
           "scaling": {"num_workers": 2, "cpus_per_worker": 0.5}}
    path = tmp_path / "configs" / "base.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def sweep_raw():
    """A valid sweep dict; `base` is relative to the sweep file's folder (tmp_path/tune)."""
    return {"base": "../configs/base.yaml", "output_dir": "runs/sweep", "num_samples": 4, "metric": "macro_f1",
            "mode": "max", "scheduler": {"type": "asha", "grace_period": 1},
            "space": {"optim.lr": {"loguniform": [1e-5, 1e-4]}, "unfreeze.every_epochs": {"choice": [0, 1, 2]}}}


@pytest.fixture
def write_sweep(tmp_path, base_file):
    def write(raw, name="sweep.yaml"):
        d = tmp_path / "tune"
        d.mkdir(exist_ok=True)
        path = d / name
        path.write_text(yaml.safe_dump(raw))
        return path
    return write


@pytest.fixture(autouse=True)
def no_ray_started_by_the_test():
    """Unit tests never start Ray (a Ray already running in the same pytest session is not theirs)."""
    import ray

    before = ray.is_initialized()
    yield
    assert ray.is_initialized() == before, "this unit test started Ray"
