# Two commands set up a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEV_INSTALLED := $(VENV)/.dev-installed
LOCOMO ?= ../shared/datasets/locomo-dev.json
SWE_AGENT ?= ../shared/datasets/swe-agent-dev

.PHONY: run test lint bench bench-cluster bench-compression export clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# -qq: setuptools prints an informational notice on every editable install; errors still show.
$(INSTALLED): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install -qq -e .
	touch $@

$(DEV_INSTALLED): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install -qq -e '.[dev]'
	touch $@ $(INSTALLED)

run: $(INSTALLED)
	$(PY) -m proxy

test: $(DEV_INSTALLED)
	.ci/system-packages
	.ci/services
	$(PY) -m pytest -q

lint: $(DEV_INSTALLED)
	$(PY) -m ruff check proxy tests bench
	$(PY) -m ruff format --check proxy tests bench
	$(PY) -m mypy proxy

bench: $(DEV_INSTALLED)
	@command -v wrk >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; }
	$(PY) -m bench.proxy_overhead

# req/s of one process (SQLite, PostgreSQL), workers = 2 and three instances behind nginx
bench-cluster: $(DEV_INSTALLED)
	@command -v wrk >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; }
	.ci/system-packages
	.ci/services
	$(PY) -m bench.cluster $(ARGS)

bench-compression: $(DEV_INSTALLED)
	$(PY) -m bench.compression --locomo $(LOCOMO) --swe-agent $(SWE_AGENT) $(ARGS)

# make export FORMAT=json OUT=requests.json ARGS="--since 2026-11-01"
export: $(INSTALLED)
	$(PY) -m proxy export --format $(or $(FORMAT),csv) --output $(or $(OUT),requests.csv) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
