"""Fixtures shared across test files (helpers: ``tests/runs.py``)."""

import pytest


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
