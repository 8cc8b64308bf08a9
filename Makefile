# Newcomer entry points: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp

.PHONY: demo demo-multitask test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.demo

demo-multitask: $(STAMP)
	$(PY) -m experiments.demo --multitask

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow" --durations=15

bench: $(STAMP)
	$(PY) -m experiments.bench_pipeline
	$(PY) -m experiments.bench_backbones

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
