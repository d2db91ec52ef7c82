# Two commands set up a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEV_INSTALLED := $(VENV)/.dev-installed
LOCOMO ?= ../shared/datasets/locomo-dev.json

.PHONY: run test lint bench bench-compression export clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(INSTALLED): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(DEV_INSTALLED): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(INSTALLED)

run: $(INSTALLED)
	$(PY) -m proxy

test: $(DEV_INSTALLED)
	.ci/system-packages
	$(PY) -m pytest -q

lint: $(DEV_INSTALLED)
	$(PY) -m ruff check proxy tests bench
	$(PY) -m ruff format --check proxy tests bench
	$(PY) -m mypy proxy

bench: $(DEV_INSTALLED)
	$(PY) -m bench.proxy_overhead

bench-compression: $(DEV_INSTALLED)
	$(PY) -m bench.compression --locomo $(LOCOMO)

# make export FORMAT=json OUT=requests.json ARGS="--since 2026-11-01"
export: $(INSTALLED)
	$(PY) -m proxy export --format $(or $(FORMAT),csv) --output $(or $(OUT),requests.csv) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
