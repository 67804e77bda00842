# `make demo` and `make test` work from a fresh clone: they build .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
SHARED  := $(abspath ../shared/data)
export I2DL_DATA ?= $(if $(wildcard $(SHARED)),$(SHARED),)

.PHONY: install demo test lint bench app clean

$(BIN)/i2dl: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, from the pinned releases the machine provides (never a newer one)
	$(BIN)/pip install -q "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1"
	$(BIN)/pip install -q -e ".[rl,video,dev,app]"
	touch $(BIN)/i2dl

install: $(BIN)/i2dl

demo: install
	$(BIN)/python -m i2dl.demo

test: install
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

app: install
	$(BIN)/i2dl app

bench: install
	$(BIN)/python benchmarks/digits.py

clean:
	rm -rf runs .pytest_cache
