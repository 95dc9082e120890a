# `make demo` trains DGC on imbalanced Fashion-MNIST (seed 1); `make test` runs the test suite.
# Both first create or refresh the virtual environment (scripts/setup.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint

setup:
	VENV=$(VENV) bash scripts/setup.sh

# --resume: a second `make demo` continues (or re-scores) the first run instead of being refused.
demo: setup
	$(PY) -m dgc train --exp fashion --seed 1 --preset cpu --resume

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
