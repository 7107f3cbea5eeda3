"""Fixtures shared across test files (helpers: ``tests/runs.py``), and the CPU share of each
pytest-xdist worker."""

import os
from pathlib import Path

import pytest


def pytest_configure(config):
    """Under pytest-xdist (``make test``), give each worker its share of the CPUs: one thread
    per worker on two cores. PyTorch's OpenMP threads spin while they wait: two workers of two
    threads each on two cores ran the suite 18 % slower than two workers of one thread, and
    some unit tests 15 times slower. Set before any test imports torch; subprocesses and
    kernels inherit it."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        threads = str(max(1, (os.cpu_count() or 1) // int(workers)))
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory):
    """Smoke runs trained once per session, for tests that copy them (``runs.copy_run``):
    ``e1`` a finished 1-epoch run, ``e2`` a finished 2-epoch run, ``mid`` the same 2-epoch
    configuration stopped after 2 of its 3 first-epoch steps (a mid-epoch checkpoint, no complete
    record). Trained on one thread, as the tests that compare a resumed run with them resume."""
    from runs import smoke_config, torch_threads

    from esdlib.train.engine import fit

    base = tmp_path_factory.mktemp("finished_runs")
    with torch_threads(1):
        fit(smoke_config(base / "e1", epochs=1), progress=False)
        fit(smoke_config(base / "e2", epochs=2), progress=False)
        fit(smoke_config(base / "mid", epochs=2), progress=False, stop_after_steps=2)
    return base


LONGEST_FILES = ("test_book.py", "test_paper_grid.py", "test_bench.py", "test_distributed.py",
                 "test_executed_chapters.py")
"""Test files of a minute or more (their fixtures run the smoke book, the paper dry run, the
GPU-check rehearsal, torchrun), longest first."""
_MISSING = [name for name in LONGEST_FILES if not (Path(__file__).parent / name).is_file()]
assert not _MISSING, f"tests/conftest.py LONGEST_FILES names missing files: {_MISSING}"


def pytest_collection_modifyitems(config, items):
    """Run the longest files first: pytest-xdist hands whole files to its workers in collection
    order, so a long file collected last would run alone while the other workers idle."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
