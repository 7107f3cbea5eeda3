"""Helpers shared by the run-layer tests: smoke configs in a folder, copies of finished runs, and
the commands (``esd``, ``python -m esdbook``) run in this process.

The session fixture ``finished_runs`` (``tests/conftest.py``) trains the few smoke runs that the
checkpoint, record and CLI tests copy and damage, so each is trained once per test session.
"""

import contextlib
import io
import shutil
import subprocess
from pathlib import Path

from esdlib.train.checkpoint import checkpoint_paths
from esdlib.train.config import RunConfig
from esdlib.train.paths import resolve_path
from esdlib.train.records import make_run_id, record_path


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run torch on ``n`` CPU threads (restored afterwards). Runs whose numbers are compared
    bit for bit must use the same count: it changes the order of the float reductions."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def smoke_config(root: Path, **overrides) -> RunConfig:
    """The smoke profile writing its records to ``root/out`` and checkpoints to ``root/ck``."""
    base = dict(out_dir=str(root / "out"), checkpoint_dir=str(root / "ck"))
    return RunConfig.from_profile("smoke", **(base | overrides))


def record_file(cfg: RunConfig) -> Path:
    """Where the run record of ``cfg`` is written."""
    return record_path(resolve_path(cfg.out_dir), cfg.experiment, make_run_id(cfg))


def copy_run(finished_runs: Path, tmp_path: Path, name: str, epochs: int):
    """A private copy of the run ``name`` of :func:`finished_runs`, as
    ``(root, cfg, checkpoint_paths(cfg), record_file(cfg))``."""
    root = tmp_path / name
    shutil.copytree(finished_runs / name, root)
    cfg = smoke_config(root, epochs=epochs)
    return root, cfg, checkpoint_paths(cfg), record_file(cfg)


def train_args(root: Path, *more: str) -> list[str]:
    """``esd train`` arguments of :func:`smoke_config` in ``root``."""
    return ["train", "--profile", "smoke", "--quiet", "--set", f"out_dir={root / 'out'}",
            "--set", f"checkpoint_dir={root / 'ck'}", *more]


def run_main(main, args, cwd=None) -> subprocess.CompletedProcess:
    """``main(args)`` in this process (in ``cwd``) as a finished process: exit status (argparse's
    ``SystemExit`` included), stdout and stderr. An exception that escapes ``main`` is raised:
    it is what a user would see as a traceback."""
    out, err = io.StringIO(), io.StringIO()
    args = [str(a) for a in args]
    with (contextlib.chdir(cwd or Path.cwd()), contextlib.redirect_stdout(out),
          contextlib.redirect_stderr(err)):
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def esd(*args, cwd=None) -> subprocess.CompletedProcess:
    """``esd ARGS`` in this process (:func:`esdlib.cli.main`)."""
    from esdlib.cli import main

    return run_main(main, args, cwd)


def esdbook(*args, cwd=None) -> subprocess.CompletedProcess:
    """``python -m esdbook ARGS`` in this process (``esdbook.__main__.main``)."""
    from esdbook.__main__ import main

    return run_main(main, args, cwd)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str, status=None):
    """A failed command: non-zero exit (``status`` if given), one line on stderr holding every
    needle, no traceback."""
    assert proc.returncode != 0, proc.stdout
    if status is not None:
        assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def full_disk(monkeypatch):
    """Writes of temporary files (every atomic write of esdlib.io) go to ``/dev/full``."""
    import esdlib.io as eio

    real_open = open

    def open_on_full_disk(file, mode="r", *args, **kw):
        if "w" in mode and Path(file).name.endswith(".tmp"):
            return real_open("/dev/full", mode, *args, **kw)
        return real_open(file, mode, *args, **kw)

    monkeypatch.setattr(eio, "open", open_on_full_disk, raising=False)
