# Every target creates .venv from nothing when it is missing (or when pyproject.toml changed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench lint tensorboard clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.train

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m scripts.bench

lint: $(STAMP)
	$(PY) -m ruff check .

LOGDIR ?= outputs
tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir $(LOGDIR)

clean:
	rm -rf $(VENV) outputs multirun
