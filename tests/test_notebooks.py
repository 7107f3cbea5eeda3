"""Notebook runs of the book (esdbook.chapter, esdbook.build.run_notebook, the experiment
manifest): parameters are checked before any work, and an executed notebook is written like
every other output.

- Parameters: ``run_notebook`` refuses names a notebook does not declare before a kernel
  starts; inside a kernel, the cell after the ``parameters`` cell of every chapter and experiment
  notebook checks the names papermill injected (so plain ``papermill -p`` refuses them too: one
  real papermill run per kind of notebook, ``slow``).
- The manifest of experiments: a broken file is an error naming it.
- Writing: the executed notebook gets the umask's permissions, leftovers of killed writers are
  removed.
"""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from esdlib.train.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "book"


def run_papermill(nb, out, params, cwd):
    args = [sys.executable, "-m", "papermill", str(nb), str(out), "--cwd", str(REPO)]
    for k, v in params:
        args += ["-p", k, v]
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'book'}", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # a Jupyter kernel per case (each pays the torch import)
@pytest.mark.parametrize(("nb", "params", "needles"), [
    ("chapters/01_introduction.ipynb", [("profil", "smoke")],
     ["unknown parameter(s) 'profil' (did you mean 'profile'?)", "profile, results_dir"]),
    ("experiments/train.ipynb", [("profile", "smoke"), ("T", "5")],
     ["unknown parameter(s) 'T'", "overrides_json"]),
])
def test_plain_papermill_refuses_unknown_parameters(tmp_path, nb, params, needles):
    proc = run_papermill(NOTEBOOKS / nb, tmp_path / "out.ipynb", params, tmp_path)
    assert proc.returncode != 0
    for needle in needles:
        assert needle in proc.stderr + proc.stdout
    assert not list(tmp_path.glob("**/*.json"))  # nothing trained, no record


def test_the_check_in_a_kernel_reads_the_injected_parameters(monkeypatch):
    """What the check cell sees inside a kernel: the names of papermill's injected cell (a
    kernel's input history, faked here), checked against the declared ones."""
    import IPython

    from esdbook.chapter import check_notebook_parameters, injected_parameter_names

    class Shell:
        class history_manager:  # noqa: N801 - IPython's attribute name
            input_hist_raw = ["", "# Parameters\nprofile = 'smoke'\n",
                              "# Parameters\nprofil = \"smoke\"\nresults_dir = 'r'\n",
                              "x = 1", "# Parameters\nbroken = ("]

    assert injected_parameter_names() == []  # outside a kernel: nothing to check
    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    assert injected_parameter_names() == ["profile", "profil", "results_dir"]
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) 'profil' \(did you mean "
                                         r"'profile'\?\).*valid parameters: profile, results_dir"):
        check_notebook_parameters(["profile", "results_dir"])
    check_notebook_parameters(["profile", "profil", "results_dir"])


def test_run_notebook_refuses_unknown_parameters_before_running(tmp_path):
    from esdbook.build import run_notebook

    with pytest.raises(ValueError, match=r"'T'.*valid parameters: profile, experiment"):
        run_notebook(NOTEBOOKS / "experiments" / "train.ipynb", tmp_path / "o.ipynb",
                     {"profile": "smoke", "T": 5}, cwd=REPO)
    assert list(tmp_path.iterdir()) == []


def test_notebook_checks_name_exactly_the_declared_parameters():
    import nbformat
    import papermill

    from esdbook.chapter import CHAPTER_PARAMETERS

    for path in sorted([*NOTEBOOKS.glob("chapters/*.ipynb"),
                        *NOTEBOOKS.glob("experiments/*.ipynb")]):
        declared = list(papermill.inspect_notebook(str(path)))
        nb = nbformat.read(path, as_version=4)
        source = [c for c in nb.cells if c.cell_type == "code"][1].source
        calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", getattr(n.func, "attr", "")) in
                 ("check_notebook_parameters", "open_chapter")]
        assert calls, f"{path.name}: no parameter check in the cell after the parameters"
        if getattr(calls[0].func, "id", "") == "check_notebook_parameters":
            assert ast.literal_eval(calls[0].args[0]) == declared, path.name
        else:
            assert list(CHAPTER_PARAMETERS) == declared, path.name


def test_broken_manifest_names_the_file(tmp_path):
    from esdbook.reproduce import load_manifest

    bad = tmp_path / "manifest.yaml"
    bad.write_text("experiments: {table1: [unclosed\n")
    with pytest.raises(ConfigError, match="manifest.yaml"):
        load_manifest(bad)


def test_executed_notebook_is_not_private(tmp_path, monkeypatch):
    import nbformat
    import papermill

    from esdbook.build import run_notebook
    from esdlib.io import _host_tag, file_mode

    nb = nbformat.v4.new_notebook()
    src = tmp_path / "src.ipynb"
    nbformat.write(nb, src)

    def fake_execute(input_path, output_path, **kw):
        shutil.copy(input_path, output_path)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    target = tmp_path / "out" / "run.ipynb"
    (tmp_path / "out").mkdir()
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    stale = tmp_path / "out" / f".run.ipynb.{_host_tag()}-{done.pid}.q1w2e3.ipynb"
    stale.write_text("{}")
    run_notebook(src, target, {}, cwd=tmp_path)
    assert target.stat().st_mode & 0o777 == file_mode()
    assert not stale.exists()
    assert [p.name for p in target.parent.iterdir()] == ["run.ipynb"]
