"""Typed config: every problem reported at once, with dotted keys; overrides; shipped YAML validates."""
import glob
from pathlib import Path

import pytest
import yaml

from domainft.config import ConfigError, apply_overrides, load_config, to_dict, validate_dict
from domainft.config.load import parse_override
from problems import problems  # tests/unit/config/problems.py

ROOT = Path(__file__).resolve().parents[3]




def test_minimal_config_gets_defaults(base):
    cfg = validate_dict(base)
    assert cfg.optim.lr == 5e-5 and cfg.train.epochs == 3 and cfg.data.on_bad_record == "error"
    assert cfg.model.trust_remote_code is False
    assert validate_dict(to_dict(cfg)) == cfg  # the Ray boundary round-trips


def test_every_problem_is_reported_together(base):
    raw = apply_overrides(base, ["optim.lrr=1e-4", "train.epochs=0", "train.precision=fp8", "data.eval=/nope.jsonl",
                                 "scaling.num_workers=two"])
    p = problems(raw)
    assert "optim.lrr: unknown key (did you mean 'optim.lr'?)" in p
    assert any(x.startswith("train.epochs: Input should be greater than or equal to 1") for x in p)
    assert any(x.startswith("train.precision:") and "fp8" in x for x in p)
    assert any(x.startswith("scaling.num_workers:") for x in p)
    assert "data.eval: no such file, folder or glob match: /nope.jsonl" in p
    assert len(p) == 5


def test_unknown_section_and_nested_typo(base):
    p = problems(apply_overrides(base, ["unfreez.every_epochs=1", "deepspeed.zero_stag=2"]))
    assert "unfreez: unknown key (did you mean 'unfreeze'?)" in p
    assert "deepspeed.zero_stag: unknown key (did you mean 'deepspeed.zero_stage'?)" in p


def test_missing_required_keys():
    p = problems({"data": {}})
    assert "output_dir: required key is missing" in p
    assert "data.train: required key is missing" in p
    assert "model: required key is missing" in p


@pytest.mark.parametrize("override,expected", [
    ("train.precision=fp16", "train.precision: fp16 needs a GPU"),
    ("deepspeed.offload_optimizer=true", "deepspeed.offload_optimizer: needs deepspeed.zero_stage >= 1"),
    ("deepspeed.overrides.scheduler.type=WarmupLR", "deepspeed.overrides.scheduler: not allowed"),
    ("deepspeed.overrides.optimizer.type=Adam", "deepspeed.overrides.optimizer: not allowed"),
    ("deepspeed.overrides.zero_optimization.stage=3", "deepspeed.overrides.zero_optimization.stage: not allowed"),
    ("unfreeze.train_top_fraction=0.3", "unfreeze.train_top_fraction: fixed partial training excludes"),
    ("data.labels=[a]", "data.labels: need at least 2 labels"),
    ("data.labels=[a, a, b]", "data.labels: duplicate labels"),
    ("data.label_column=text", "data.label_column: must differ"),
    ("data.encoding=klingon", "data.encoding: unknown encoding"),
    ("augment.ab=true", "augment.ab: needs augment.enabled"),
])
def test_contradictions(base, override, expected):
    p = problems(apply_overrides(base, [override]))
    assert any(x.startswith(expected) for x in p), p


def test_missing_model_folder_and_non_hf_folder(base, tmp_path):
    assert problems(apply_overrides(base, [f"model.name_or_path={tmp_path}/absent"])) == [
        f"model.name_or_path: no such model folder: {tmp_path}/absent"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no config.json" in problems(apply_overrides(base, [f"model.name_or_path={empty}"]))[0]


def test_hub_names_are_not_checked_on_disk(base):
    cfg = validate_dict(apply_overrides(base, ["model.name_or_path=bert-base-chinese"]))
    assert cfg.model.name_or_path == "bert-base-chinese"


def test_overrides_parse_yaml_values():
    assert parse_override("optim.lr=3e-5") == ("optim.lr", 3e-5)
    assert parse_override("train.epochs=2") == ("train.epochs", 2)
    assert parse_override("data.labels=[a, b]") == ("data.labels", ["a", "b"])
    assert parse_override("optim.schedule=cosine") == ("optim.schedule", "cosine")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("optim.lr")


def test_relative_paths_become_absolute(base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = apply_overrides(base, ["data.train=corpus.jsonl", "output_dir=runs/x"])
    cfg = validate_dict(raw)
    assert cfg.data.train == str(tmp_path / "corpus.jsonl") and cfg.output_dir == str(tmp_path / "runs" / "x")


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml(.|\n)*not valid YAML line 2"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "configs" / "*.yaml"))), ids=lambda p: Path(p).name)
def test_every_shipped_config_validates(path):
    # Data and model paths exist only after `make resources`; types, keys and contradictions always.
    cfg = load_config(path, check_paths=False)
    assert cfg.output_dir
    assert yaml.safe_load(open(path))  # non-empty


def test_docs_config_reference_is_in_sync():
    from domainft.config.reference import BEGIN, DOC, embed

    text = (ROOT / DOC).read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1, f"{DOC} must hold the generated reference block once"
    assert embed(text) == text, f"run: python -m domainft.config.reference --write {DOC}"
    assert BEGIN not in (ROOT / "README.md").read_text(encoding="utf-8"), "the reference lives in docs/config.md"


def test_cli_exit_codes_user_error_2_bug_1_with_traceback(tmp_path, monkeypatch, capsys):
    """A user error is one line and exit 2; a bug says so, keeps its traceback in a file, exits 1."""
    import domainft.cli as cli

    assert cli.main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err

    def bug(args):
        raise KeyError("internal")

    monkeypatch.setattr(cli, "cmd_validate", bug)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli.main(["validate", "x.yaml"]) == 1
    err = capsys.readouterr().err
    assert "internal error (a bug" in err and "KeyError" in err
    log = err.split("traceback: ")[1].split(" ")[0]
    assert "Traceback (most recent call last)" in open(log).read()
    with pytest.raises(KeyError):
        cli.main(["validate", "x.yaml", "--debug"])
