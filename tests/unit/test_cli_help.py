"""`domainft --help` and each command's help explain it to a newcomer: what it does, whether Ray starts,
what it writes; `--version`; bad arguments are usage errors (exit 2)."""
import pytest

from domainft import __version__
from domainft.cli import build_parser, main


def _help(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_says_what_it_is_and_the_path(capsys):
    out = _help(capsys)
    assert "Fine-tune pretrained transformers on a domain corpus" in out
    assert "the only reader of argv" not in out  # the module docstring is for developers
    for step in ("domainft validate run.yaml", "domainft train run.yaml", "domainft export", "domainft serve"):
        assert step in out
    assert "Exit codes: 0 done, 2 a problem with your input" in out


def test_every_command_has_a_paragraph_beyond_its_usage(capsys):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert parser.description and len(parser.description) > 60, name
        out = _help(capsys, name)
        assert parser.description.split(".")[0][:40] in " ".join(out.split()), name
    # the commands that start Ray say so; the light ones say they do not
    for name in ("prepare", "train", "tune", "audit", "serve"):
        assert "Starts Ray" in sub.choices[name].description or "starts Ray" in sub.choices[name].description, name
    for name in ("validate", "plan", "terms", "export"):
        assert "No Ray" in sub.choices[name].description, name


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"domainft {__version__}"


def test_honest_argument_names_and_defaults(capsys):
    assert "usage: domainft tune [-h] sweep [overrides ...]" in " ".join(_help(capsys, "tune").split())
    k8s = " ".join(_help(capsys, "k8s-validate").split())
    assert "(default: k8s)" in k8s and "kubectl" in k8s


@pytest.mark.parametrize("argv", [["plan", "run.yaml", "--gpus", "-1"], ["plan", "run.yaml", "--gpus", "0"],
                                  ["terms", "run.yaml", "--top", "0"], ["audit", "run.yaml", "--folds", "1"]])
def test_a_bad_argument_is_a_usage_error_naming_it(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "must be at least" in capsys.readouterr().err
