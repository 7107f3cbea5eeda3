# esdlib / ESD reproducibility book — every command users run.
# `make test` works on a fresh clone: it creates .venv, installs the package with its extras, runs
# ruff and pytest (unit tests + the smoke profile of the whole pipeline).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast lint reproduce book bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not pipeline"

reproduce: $(STAMP)
	$(VENV)/bin/esd reproduce --profile default

bench: $(STAMP)
	$(VENV)/bin/esd bench

book: $(STAMP)  # rebuild the HTML from the executed chapters in book/chapters
	$(PY) -m esdlib.bookbuild build

clean:
	rm -rf book/_build .pytest_cache
