"""Every sweep shipped in tune/ validates, with its base config and files, without running it."""
import pytest

from domainft.config.sweep import load_sweep, total_trials


def _sweeps(root):
    return sorted((root / "tune").glob("*.yaml"))


def test_there_are_shipped_sweeps(repo_root):
    names = {p.name for p in _sweeps(repo_root)}
    assert {"smoke.yaml", "bbc_llrd_vs_unfreeze.yaml"} <= names


@pytest.mark.parametrize("name", ["smoke.yaml", "bbc_llrd_vs_unfreeze.yaml"])
def test_shipped_sweep_validates(repo_root, monkeypatch, name):
    monkeypatch.chdir(repo_root)  # the base configs' data and model paths are relative to the repo root
    sweep, base = load_sweep(repo_root / "tune" / name)
    assert total_trials(sweep) >= 3
    assert sweep.output_dir.startswith(str(repo_root / "runs"))


def test_all_yaml_in_tune_validate(repo_root, monkeypatch):
    """Every sweep file, not only the named ones: it loads with its base config, whose inputs exist, and
    every dimension of its space is a key of that config."""
    import os

    monkeypatch.chdir(repo_root)
    paths = _sweeps(repo_root)
    assert paths
    for path in paths:
        sweep, base = load_sweep(path)
        assert total_trials(sweep) >= 1, path.name
        assert os.path.exists(base.data.train) and os.path.exists(base.model.name_or_path), path.name
        dumped = base.model_dump()
        for key in sweep.space:
            section, _, name = key.partition(".")
            assert name in dumped[section], (path.name, key)
