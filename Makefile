# Two entry points that work from a clean clone: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pinned: an unpinned torch pulls a multi-GB build.
PINS := torch==2.14.1 torchvision==0.29.1

$(BIN)/zsbench: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PINS)
	$(BIN)/python -m pip install -q -e '.[test]' $(PINS)
	touch $(BIN)/zsbench

.PHONY: install demo test test-slow lint format fault-suite
install: $(BIN)/zsbench

demo: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/zsbench demo --out zsbench-demo

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-slow: install
	$(BIN)/python -m pytest -q -m slow

fault-suite: install
	PYTHON=$(BIN)/python scripts/fault_suite.sh

lint: install
	$(BIN)/ruff check zsrobust_bench tests benchmarks scripts
	$(BIN)/ruff format --check zsrobust_bench tests benchmarks scripts

format: install
	$(BIN)/ruff format zsrobust_bench tests benchmarks scripts
