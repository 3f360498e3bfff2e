# mixopt: two commands on a fresh machine, `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
CORPUS := data/corpus
DEMO_OUT := runs/demo
# Without CUDA, torch==2.13.0 (a CPU build on this machine kind) goes in first, so that the
# pyproject's range is already met and pip never pulls a multi-GB CUDA build.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.2' || echo 'torch==2.13.0')

.PHONY: install demo test test-fast lint corpus bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

corpus: $(STAMP)
	$(VENV)/bin/mixopt data prepare --out $(CORPUS)

demo: corpus
	$(VENV)/bin/mixopt recommend --config configs/demo.yaml --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q

# the suite without the slow end-to-end tests and simulations (@pytest.mark.slow)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check mixopt workers tests benchmarks

# CPU benchmarks (each prints a one-line summary last; figures go to docs/benchmarks.md)
bench: corpus
	$(PY) benchmarks/regmix_public.py
	$(PY) benchmarks/simulated.py
	$(PY) benchmarks/online_sim.py
	$(PY) benchmarks/proxy_throughput.py --device cpu --corpus $(CORPUS)

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
