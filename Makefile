# The two front-door commands: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := dev,postgres,aws,local,openai,anthropic,mcp,webhook,embeddings,service,otel

.PHONY: setup demo doctor test test-fast bench lint clean

$(VENV)/.installed: pyproject.toml scripts/install-llama.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The embedding model runs on PyTorch: take the CPU build, never a CUDA one.
	$(BIN)/pip install --quiet torch==2.13.0
	# The local model runtime, built for any CPU of this architecture (not -march=native).
	scripts/install-llama.sh $(BIN)/python
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	scripts/demo.sh

doctor: setup
	$(BIN)/cadenza doctor

test: setup
	scripts/ensure-postgres.sh
	scripts/ensure-chromium.sh
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow and not postgres"

bench: setup
	$(BIN)/python benchmarks/bench_engine.py

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .cadenza .pytest_cache .mypy_cache .ruff_cache
