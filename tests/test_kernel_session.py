"""KernelSession: grid points share one kernel, yet each notebook starts from an empty one."""

from __future__ import annotations

import json
import os

import nbformat
import pytest

from esdbook.build import ChapterExecutionError, KernelSession, run_notebook


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('tag = "a"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def _printed(path):
    nb = nbformat.read(path, as_version=4)
    return [json.loads(out["text"]) for cell in nb.cells for out in cell.get("outputs", [])
            if out.get("name") == "stdout"]


def _counts(path):
    nb = nbformat.read(path, as_version=4)
    return [c.execution_count for c in nb.cells if c.cell_type == "code"]


REPORT = ("import json, os\n"
          "print(json.dumps({'pid': os.getpid(), 'tag': tag, "
          "'leftover': 'kept' in globals()}))\n"
          "kept = tag")


def test_notebooks_share_the_kernel_but_not_its_namespace(tmp_path):
    src = _notebook(tmp_path / "nb.ipynb", REPORT)
    with KernelSession(tmp_path) as session:
        first = run_notebook(src, tmp_path / "1.ipynb", {"tag": "one"}, cwd=tmp_path,
                             session=session)
        second = run_notebook(src, tmp_path / "2.ipynb", {"tag": "two"}, cwd=tmp_path,
                              session=session)
        (a,), (b,) = _printed(first), _printed(second)
        assert a["pid"] == b["pid"]  # one kernel
        assert (a["tag"], b["tag"]) == ("one", "two")
        assert not a["leftover"] and not b["leftover"]  # the first notebook's globals are gone
        assert _counts(first) == _counts(second) == [1, 2, 3]  # numbered as in a fresh kernel


def test_a_failed_notebook_retires_its_kernel(tmp_path):
    good = _notebook(tmp_path / "good.ipynb", REPORT)
    bad = _notebook(tmp_path / "bad.ipynb", "raise RuntimeError('boom')")
    with KernelSession(tmp_path) as session:
        (a,) = _printed(run_notebook(good, tmp_path / "1.ipynb", {}, cwd=tmp_path,
                                     session=session))
        with pytest.raises(ChapterExecutionError, match="boom"):
            run_notebook(bad, tmp_path / "2.ipynb", {}, cwd=tmp_path, session=session)
        assert not (tmp_path / "2.ipynb").exists()
        (b,) = _printed(run_notebook(good, tmp_path / "3.ipynb", {}, cwd=tmp_path,
                                     session=session))
        assert a["pid"] != b["pid"]


def test_a_kernel_is_retired_after_max_notebooks(tmp_path):
    src = _notebook(tmp_path / "nb.ipynb", REPORT)
    with KernelSession(tmp_path, max_notebooks=2) as session:
        pids = [_printed(run_notebook(src, tmp_path / f"{i}.ipynb", {}, cwd=tmp_path,
                                      session=session))[0]["pid"] for i in range(3)]
    assert pids[0] == pids[1] != pids[2]
    with pytest.raises(ValueError, match="max_notebooks"):
        KernelSession(tmp_path, max_notebooks=0)


def test_reproduce_starts_the_longest_points_first():
    from esdbook.reproduce import grid_points, longest_first

    points = grid_points("default")
    ordered = longest_first(points)
    cost = [p.config.epochs * (p.config.T + 1) for p in ordered]
    assert sorted(ordered, key=lambda p: p.run_id) == sorted(points, key=lambda p: p.run_id)
    assert cost == sorted(cost, reverse=True)
    assert ordered[0].config.epochs == 30  # the 30-epoch event runs lead
    same = [p for p in points if p.config.epochs * (p.config.T + 1) == cost[-1]]
    assert [p for p in ordered if p in same] == same  # ties keep the manifest's order


def test_kernels_listen_on_private_unix_sockets_and_print_no_tcp_warning(tmp_path, capfd):
    import shutil
    import tempfile

    src = _notebook(tmp_path / "nb.ipynb", REPORT)
    # a temporary folder of its own (short: socket paths have ~100 bytes), so that the kernels
    # of tests running beside this one do not count
    private = tempfile.mkdtemp(prefix="esd-kt-")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tempfile, "tempdir", private)
            run_notebook(src, tmp_path / "fresh.ipynb", {}, cwd=tmp_path)
            with KernelSession(tmp_path) as session:
                run_notebook(src, tmp_path / "shared.ipynb", {}, cwd=tmp_path, session=session)
                km = session.manager()
                assert km.transport == "ipc"
                folder = km.ip.rsplit("/", 1)[0]
                assert folder.startswith(private + os.sep)
                assert os.stat(folder).st_mode & 0o777 == 0o700
        assert "without encryption" not in capfd.readouterr().err
        assert os.listdir(private) == []  # every kernel's socket folder removed
    finally:
        shutil.rmtree(private, ignore_errors=True)
