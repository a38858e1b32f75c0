"""First mistakes get one clear message naming what to change: a key given twice, an override with a
typo, a relative path read from elsewhere than the user thought, a hub name while offline."""
import pytest
import yaml

from domainft.config import ConfigError, load_config
from domainft.families import family_problems, hub_hint


def _write(tmp_path, base, text=""):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base) + text)
    return path


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path, base):
    # PyYAML keeps the last value silently: the user's first lr would be lost
    path = _write(tmp_path, base, "optim:\n  lr: 1.0e-3\n  warmup_ratio: 0.1\n  lr: 2.0e-3\n")
    first = len(yaml.safe_dump(base).splitlines()) + 2
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.source == str(path)
    assert e.value.problems == [f"not valid YAML line {first + 2}, column 3: duplicate key 'lr' "
                                f"(lines {first} and {first + 2}): keep one"]
    path.write_text(yaml.safe_dump(base) + "train: {epochs: 2, epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'epochs' \(twice on line \d+\)"):
        load_config(path)


def test_yaml_merge_keys_may_still_be_overridden():
    # `<<: *anchor` then one of the anchor's keys: YAML's way to override, not a duplicate
    from domainft.config.load import parse_yaml

    merged = parse_yaml("a: &x {lr: 1, wd: 2}\nb:\n  <<: *x\n  lr: 3\n", "s")
    assert merged["b"] == {"lr": 3, "wd": 2}


def test_an_unknown_key_in_an_override_is_blamed_on_the_override(tmp_path, base):
    path = _write(tmp_path, base)
    with pytest.raises(ConfigError) as e:
        load_config(path, ["optim.lrr=3e-5", "train.epochs=0"])
    assert e.value.problems == [
        "optim.lrr: unknown key (did you mean 'optim.lr'?) [from the command-line override 'optim.lrr=3e-5']",
        "train.epochs: Input should be greater than or equal to 1 (got 0) [from the command-line override "
        "'train.epochs=0']"]
    # the same typo in the file is the file's
    path = _write(tmp_path, {**base, "optim": {"lrr": 3e-5}})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == ["optim.lrr: unknown key (did you mean 'optim.lr'?)"]


def test_a_missing_relative_path_says_where_it_was_looked_for(tmp_path, base, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = _write(tmp_path, {**base, "data": {"train": "data/corpus.jsonl"}, "model": {"name_or_path": "./m"}})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    where = f"(relative paths are read from the current directory, {elsewhere})"
    assert e.value.problems == [f"data.train: no such file, folder or glob match: data/corpus.jsonl {where}",
                                f"model.name_or_path: no such model folder: ./m {where}"]
    # an absolute path needs no such note
    path = _write(tmp_path, {**base, "data": {"train": str(elsewhere / "none.jsonl")}})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [f"data.train: no such file, folder or glob match: {elsewhere / 'none.jsonl'}"]


def test_a_hub_name_that_cannot_be_fetched_says_what_to_do(monkeypatch, tmp_path):
    # offline (as `make` and the tests run): the hub is never asked, the cache is empty
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    (problem,) = family_problems("no-such-org/bert-typo")
    assert problem.startswith("model.name_or_path: cannot read the config.json of 'no-such-org/bert-typo': "
                              "cannot fetch config.json from the hub (")
    assert problem.endswith("; HF_HUB_OFFLINE=1 is set: give a local model folder, or set HF_HUB_OFFLINE=0 to "
                            "download")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online, a name the hub does not have
    assert hub_hint() == ("check the name on huggingface.co, or give a local model folder (a path starting with /, "
                          "./ or ~)")


def test_an_unreadable_config_json_is_a_user_error_naming_the_folder(tmp_path, base, capsys):
    from domainft.cli import main

    bad = tmp_path / "broken_model"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "bert", ')  # cut short
    path = _write(tmp_path, {**base, "model": {"name_or_path": str(bad)}})
    assert main(["validate", str(path)]) == 2  # not 1, "internal error (a bug)"
    err = capsys.readouterr().err
    assert f"model.name_or_path: cannot read the config.json of '{bad}': Expecting property name" in err
