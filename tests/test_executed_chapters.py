"""The committed executed chapters still match their code, and every chapter still executes.

The chapters that compute what they show (02 rate-based backpropagation, 03 self-distillation)
are re-run cell by cell with ``pytest --nbval`` and every output is compared with the committed
one in ``book/_executed/`` after the volatile parts are sanitized (``book/nbval_sanitize.cfg``:
addresses, absolute paths, timings, dates, git revisions, rounding-level numbers); that run
happens in a subprocess, on copies of the notebooks in a temporary folder holding a ``results``
link to the repository's ``results/`` (nbval starts the kernel in the notebook's folder and the
chapters' ``results_dir`` parameter is relative), so nothing in the repository is written.

The chapters that read run records (01 and 04–11) are executed as ``python -m esdbook execute``
executes them (:func:`esdbook.build.execute_chapters`: a fresh kernel per chapter, one per CPU
at a time) on the committed records, into a temporary folder: every cell must still execute
without an error; outputs are not compared (they follow the records). The executed pages equal
their sources cell by cell (``tests/test_notebook_style.py``), so this runs the committed code.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "book" / "_executed"
SOURCES = ROOT / "book" / "chapters"
SANITIZE = ROOT / "book" / "nbval_sanitize.cfg"
COMPUTING = ("02_rate_bp", "03_self_distillation")
"""Chapters whose outputs are computed by their own cells: compared output by output, except
the cells tagged ``nbval-ignore-output``: chapter 3's outputs that follow its eight training
steps (a few ulps of difference between CPUs change a trained model's predictions, so those
outputs are only required to execute)."""


def _nbval(tmp_path: pathlib.Path, names: list[str]) -> subprocess.CompletedProcess:
    (tmp_path / "results").symlink_to(ROOT / "results", target_is_directory=True)
    for name in names:
        (tmp_path / f"{name}.ipynb").write_bytes((EXECUTED / f"{name}.ipynb").read_bytes())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "book")])}
    env.pop("MPLBACKEND", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--nbval-current-env",
           "--nbval", "--nbval-sanitize-with", str(SANITIZE),
           "--rootdir", str(tmp_path), *[f"{name}.ipynb" for name in names]]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)


def _chapters() -> list[str]:
    return sorted(p.stem for p in EXECUTED.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.slow
def test_computing_chapters_reproduce_their_committed_outputs(tmp_path):
    missing = [n for n in COMPUTING if not (EXECUTED / f"{n}.ipynb").is_file()]
    if missing:
        pytest.skip(f"not executed yet: {missing}")
    run = _nbval(tmp_path, list(COMPUTING))
    assert run.returncode == 0, (
        "a committed executed chapter no longer matches its code (re-execute with "
        f"`python -m esdbook execute`):\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}")


@pytest.mark.slow
def test_record_reading_chapters_still_execute(tmp_path):
    from esdbook.build import execute_chapters

    names = [n for n in _chapters() if n not in COMPUTING]
    if not names:
        pytest.skip("no executed chapters")
    executed = execute_chapters(SOURCES, tmp_path, {"profile": "default", "results_dir": "results"},
                                progress=False, cwd=ROOT, threads=1, only=names)
    assert [p.stem for p in executed] == names and all(p.is_file() for p in executed)


def test_sanitize_file_masks_volatile_output():
    import configparser
    import re

    cfg = configparser.ConfigParser()
    cfg.read(SANITIZE)
    text = ("<torch._C.Generator at 0x7f771e1f0550> /work/main/.venv/lib/x.py took 3.2 s "
            "at 2026-11-26 15:31:33, revision e6e1c8f+dirty, difference 1.5e-08")
    for section in cfg.sections():
        text = re.sub(cfg[section]["regex"], cfg[section]["replace"], text)
    for volatile in ("0x7f77", "/work/", "3.2 s", "2026-11-26", "e6e1c8f", "1.5e-08"):
        assert volatile not in text, (volatile, text)
