# Every target creates .venv from nothing when it is missing (or when pyproject.toml changed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench claims lint tensorboard clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.train

# Two workers, one test file each at a time (module fixtures are built once); plain `pytest` runs serially.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) -m scripts.bench

# Trains the image presets of claims 1, 2 and 4 (about an hour on 2 CPU cores) and rewrites their
# section of docs/RESULTS.md and its figures in docs/images/.
claims: $(STAMP)
	$(PY) -m experiments.claims

lint: $(STAMP)
	$(PY) -m ruff check .

LOGDIR ?= outputs
tensorboard: $(STAMP)
	@echo "open http://localhost:6006/#scalars&_smoothingWeight=0 (smoothing off: evaluation curves have few points)"
	$(VENV)/bin/tensorboard --logdir $(LOGDIR)

clean:
	rm -rf $(VENV) outputs multirun
