# esdlib / ESD reproducibility book — every command users run, one target per job:
# make test | reproduce | book | bench.
# `make test` works on a fresh clone: it creates .venv, installs the package with its extras, runs
# ruff and pytest (unit tests + the smoke profile of the whole pipeline), then the cross-checks
# against SpikingJelly (tests marked `peer`) in their own pytest run.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast test-peer lint reproduce book bench clean

# The peer of the cross-checks (tests/test_peer.py), pinned: SpikingJelly 0.0.0.0.14, the release
# the published ESD code builds on, with a NumPy that still has `np.fromstring` (removed in 2.3;
# its AEDAT parser uses it). Installed without dependencies into the ignored side folder .peer/,
# which only the peer pytest run puts first on PYTHONPATH, so the main environment keeps its NumPy.
PEER := .peer
PEER_SPIKINGJELLY := 0.0.0.0.14
PEER_NUMPY_BELOW := 2.3
PEER_STAMP := $(PEER)/.installed-spikingjelly-$(PEER_SPIKINGJELLY)-numpy-below-$(PEER_NUMPY_BELOW)
PEER_PYTEST := PYTHONPATH="$(CURDIR)/$(PEER)$${PYTHONPATH:+:$$PYTHONPATH}" \
	$(PY) -m pytest -m peer tests/test_peer.py

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,dev]"
	touch $(STAMP)

venv: $(STAMP)

# The stamp's name holds the pins: changing them, or deleting .peer/, reinstalls the peer.
$(PEER_STAMP): | $(STAMP)
	rm -rf $(PEER)
	$(PY) -m pip install --quiet --no-deps --target $(PEER) \
		"spikingjelly==$(PEER_SPIKINGJELLY)" "numpy<$(PEER_NUMPY_BELOW)"
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# pytest-xdist: the test files spread over one worker per CPU (at most 4). A file's tests stay
# in one worker, so its expensive fixtures (the smoke book, the paper dry run) are built once;
# most of their time is single-threaded (kernels starting, notebooks, subprocesses), so two
# workers on two cores finish in about two thirds of the serial time. `pytest FILE` alone
# stays serial, for debugging.
XDIST := -n auto --maxprocesses 4 --dist loadfile

test: $(STAMP) $(PEER_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(XDIST) -m "not peer"
	$(PEER_PYTEST)

test-fast: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow and not pipeline and not peer"

# Only the peer checks, with .peer/ first on the path (under CI=true a skipped check fails).
test-peer: $(PEER_STAMP)
	$(PEER_PYTEST)

# The experiment grid of book/experiments/manifest.yaml (records skip finished points), then
# every chapter executed into book/_executed and the HTML built.
reproduce: $(STAMP)
	$(PY) -m esdbook reproduce --profile default

bench: $(STAMP)
	$(VENV)/bin/esd bench

book: $(STAMP)  # rebuild the HTML from the executed chapters in book/_executed
	$(PY) -m esdbook build

clean:
	rm -rf book/_build .pytest_cache
