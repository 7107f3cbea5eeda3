"""Reliability of the book's own code (review 2026-12, issue 22): what it renders, the
parameters it passes to notebooks, its build folder and its executed chapters.

Fast tests: no kernel, no jupyter-book build, except the synthetic three-builds test
(``pipeline`` marker), which builds a one-page book.
"""

import html as html_lib
import json
import pathlib
import re
import shutil

import nbformat
import pytest

from esdbook import display, provenance
from esdlib.train.records import load_records

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = "<script>document.title='XSS-label'</script>digits"
IMG = "<img src=x onerror=\"document.title='XSS-rev'\">"
SVG_NAME = "x<svg onload=document.title='XSS-dmg'>.json"


def _planted_results(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A results folder with a valid record carrying markup in ``scale.label`` and
    ``git_revision``, a damaged record whose file name is markup, and a papermill_runs folder
    with a failed notebook whose error text is markup."""
    results = tmp_path / "results" / "table1"
    results.mkdir(parents=True)
    src = sorted((ROOT / "results" / "table1").glob("*.json"))[0]
    record = json.loads(src.read_text())
    record["scale"]["label"] = SCRIPT
    record["git_revision"] = IMG
    (results / src.name).write_text(json.dumps(record, indent=2))
    (results / SVG_NAME).write_text("{not json")
    runs = tmp_path / "papermill_runs" / "table1"
    runs.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1/0")
    cell.outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue=IMG,
                                           traceback=[])]
    nb.cells = [cell]
    nb.metadata["papermill"] = {"exception": True, "duration": 1.0}
    nbformat.write(nb, runs / "bad.ipynb")
    return tmp_path / "results", tmp_path / "papermill_runs"


def _assert_escaped(html: str, *planted: str) -> None:
    for tag in re.finditer(r"<[^>]*>", html):  # no planted markup became a real tag
        assert not re.search(r"<\s*(script|img|svg)\b", tag.group(0), re.I), tag.group(0)
        assert not re.search(r"\son(error|load)\s*=", tag.group(0), re.I), tag.group(0)
    for text in planted:
        assert text in html_lib.unescape(html), f"{text!r} is not shown (escaped)"


def test_chapter10_tables_show_planted_markup_only_escaped(tmp_path):
    results, runs = _planted_results(tmp_path)
    with pytest.warns(UserWarning):
        records = load_records(results, strict=False)
    assert (records["status"] == "damaged").sum() == 1
    status = display.table(provenance.record_status(records)).data
    _assert_escaped(status, SCRIPT, IMG, "XSS-dmg")
    assert "&lt;svg onload=" in status
    revisions = display.table(provenance.revision_summary(records, None)).data
    _assert_escaped(revisions, IMG)
    notebooks = display.table(provenance.notebook_status(runs)).data
    _assert_escaped(notebooks, IMG)
    # the same strings through html_table (column formats) and as a table caption
    df = provenance.record_status(records)
    _assert_escaped(display.html_table(df, {"wall_s": "{:.1f}"}).data, SCRIPT, IMG)
    _assert_escaped(display.table(df.iloc[:1], caption=SCRIPT).data, SCRIPT)


def test_notes_show_markup_as_text():
    md = display.note(f"No runs of `{SCRIPT}` in {IMG} & more").data
    assert not re.search(r"(?<!\\)<img", md)  # only inside the code span, or escaped
    assert "\\<img" in md and "\\&" in md and f"`{SCRIPT}`" in md


def test_unsafe_markup_flags_foreign_scripts_and_handlers_only(tmp_path):
    from esdbook.check import unsafe_markup

    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "doctools.js").write_text("")
    (tmp_path / "searchindex.js").write_text("")
    head = ('<script src="_static/doctools.js?v=1"></script><script src="searchindex.js"></script>'
            "<script>DOCUMENTATION_OPTIONS.pagename = 'intro';</script>"
            "<script>\n  let toggleHintShow = 'Click to show';\n</script>"
            '<button onclick="window.print()">print</button>')
    (tmp_path / "good.html").write_text(
        f"<html><head>{head}</head><body><article><table><tr><td>"
        f"{display._escape(SCRIPT)} {display._escape(IMG)}</td></tr></table>"
        "<p>onerror= is only a word here</p></article></body></html>")
    (tmp_path / "bad.html").write_text(
        f"<html><head>{head}</head><body><article>{SCRIPT}{IMG}"
        "<svg onload=\"document.title='XSS-dmg'\"></svg><a href=' javascript:alert(1)'>x</a>"
        '<script src="https://cdn.example.com/x.js"></script>'
        '<script src="_static/missing.js"></script></article></body></html>')
    found = unsafe_markup(tmp_path)
    assert all(line.startswith("bad.html: ") for line in found), found
    text = "\n".join(found)
    for needle in ("inline script that is not the book's own: \"document.title='XSS-label'\"",
                   "inline event handler <img onerror=", "inline event handler <svg onload=",
                   "javascript: URL in <a href=",
                   "not one of the book's files: 'https://cdn.example.com/x.js'",
                   "not one of the book's files: '_static/missing.js'"):
        assert needle in text, f"{needle!r} not in {found}"
    assert len(found) == 6


# ---------------------------------------------------------------------------
# N2: papermill parameters are code; `python -m esdbook run` checks them
# ---------------------------------------------------------------------------


def _never_execute(*args, **kwargs):
    raise AssertionError("papermill.execute_notebook must not run")


@pytest.mark.parametrize("parameters", [
    {"profile": b"\" + str(__import__('os').system('touch MARK')) + \""},
    {'x=__import__("os").system("touch MARK")#': 1},
    {"profile": ["a"]},
    {"class": "x"},
    {"profile": type("S", (str,), {"__repr__": lambda s: "__import__('os')"})("smoke")},
])
def test_run_notebook_refuses_parameters_that_are_not_plain_literals(parameters, monkeypatch,
                                                                    tmp_path):
    import papermill

    from esdbook.build import run_notebook

    monkeypatch.setattr(papermill, "execute_notebook", _never_execute)
    with pytest.raises(ValueError, match="parameter"):
        run_notebook(ROOT / "book" / "experiments" / "train.ipynb", tmp_path / "o.ipynb",
                     parameters, cwd=tmp_path)


def test_esdbook_run_passes_typed_declared_parameters(monkeypatch, tmp_path, capsys):
    import esdbook.build
    from esdbook.__main__ import main

    calls = []
    monkeypatch.setattr(esdbook.build, "run_notebook",
                        lambda src, target, params, **kw: calls.append((src, target, params))
                        or target)
    nb = ROOT / "book" / "experiments" / "train.ipynb"
    assert main(["run", str(nb), "-p", "profile", "smoke", "-p", "overrides_json",
                 '{"T": 6}', "-p", "results_dir", '"7"', "--out", str(tmp_path / "o")]) == 0
    src, target, params = calls[0]
    assert target == tmp_path / "o" / "train.ipynb"
    assert params == {"profile": "smoke", "overrides_json": '{"T": 6}', "results_dir": "7"}


@pytest.mark.parametrize("argv, message", [
    (["-p", 'x=__import__("os").system("touch MARK")#', "1"], "not a Python identifier"),
    (["-p", "nosuch", "1"], "unknown parameter(s) 'nosuch'"),
    (["-p", "profile", "a", "-p", "profile", "b"], "given twice"),
])
def test_esdbook_run_refuses_bad_parameters_in_one_line(argv, message, monkeypatch, tmp_path,
                                                        capsys):
    import papermill

    from esdbook.__main__ import main

    monkeypatch.setattr(papermill, "execute_notebook", _never_execute)
    nb = ROOT / "book" / "experiments" / "train.ipynb"
    assert main(["run", str(nb), *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_readme_and_chapter1_recommend_esdbook_run_not_papermill():
    readme = (ROOT / "README.md").read_text()
    assert "papermill parameters are code" in readme
    assert "python -m esdbook run book/experiments/train.ipynb" in readme
    for text in (readme, (ROOT / "book" / "chapters" / "01_introduction.ipynb").read_text()):
        assert not re.search(r"^\s*\"?papermill book/", text, re.M)


# ---------------------------------------------------------------------------
# N5, N7, N12: the build keeps its site, publishes only a good build, refuses a mixed book
# ---------------------------------------------------------------------------


def _small_book(tmp_path: pathlib.Path) -> pathlib.Path:
    book = tmp_path / "book"
    shutil.copytree(ROOT / "book", book,
                    ignore=shutil.ignore_patterns("_build", "_executed", "__pycache__",
                                                  "chapters", "experiments", "esdbook"))
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: a\n"
                                   "- file: b\n")
    (book / "intro.md").write_text("# Title\n\nThe landing page.\n")
    (book / "a.md").write_text("# A\n\nPage a.\n")
    (book / "b.md").write_text("# B\n\nPage b.\n")
    return book


@pytest.mark.pipeline
def test_three_builds_keep_every_page_and_a_failed_build_publishes_nothing(tmp_path):
    from esdbook.build import BookBuildError, build_book

    book = _small_book(tmp_path)
    html = tmp_path / "build" / "_build" / "html"
    for _ in range(3):
        assert build_book(book, tmp_path / "build") == html / "index.html"
        assert {p.name for p in html.glob("*.html")} >= {"index.html", "intro.html", "a.html",
                                                         "b.html"}
    before = {p: p.stat().st_mtime_ns for p in html.rglob("*.html")}
    (book / "b.md").write_text("# B\n\nA broken reference: {ref}`no-such-label`.\n")
    with pytest.raises(BookBuildError, match="no-such-label"):
        build_book(book, tmp_path / "build")
    assert {p: p.stat().st_mtime_ns for p in html.rglob("*.html")} == before
    assert [p.name for p in html.parent.iterdir() if p.name.startswith(".")] == []


def _executed_chapter(path: pathlib.Path, profile: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}")]
    nb.metadata["papermill"] = {"parameters": {"profile": profile, "results_dir": "results"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_build_refuses_chapters_of_different_profiles_before_building(tmp_path, monkeypatch):
    import subprocess

    from esdbook.build import BookBuildError, build_book, executed_profiles

    book = _small_book(tmp_path)
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n"
                                   "- file: _executed/01_a\n- file: _executed/02_b\n")
    _executed_chapter(book / "_executed" / "01_a.ipynb", "smoke")
    _executed_chapter(book / "_executed" / "02_b.ipynb", "default")
    assert executed_profiles(book) == {"smoke": ["_executed/01_a"],
                                       "default": ["_executed/02_b"]}
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("built anyway"))
    with pytest.raises(BookBuildError, match=r"different profiles \(default: _executed/02_b; "
                                             r"smoke: _executed/01_a\)"):
        build_book(book, tmp_path / "build")


def test_build_removes_temp_notebooks_of_killed_runs_and_names_live_ones(tmp_path, monkeypatch):
    import os
    import subprocess

    from esdbook.build import BookBuildError, build_book, stale_temp_notebooks
    from esdlib.io import temp_path_for

    book = _small_book(tmp_path)
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n"
                                   "- file: _executed/01_a\n")
    _executed_chapter(book / "_executed" / "01_a.ipynb", "smoke")
    live = temp_path_for(book / "_executed" / "01_a.ipynb", suffix=".ipynb")  # this process
    dead = live.with_name(live.name.replace(f"-{os.getpid()}.", "-999999999."))
    dead.write_text("")  # a kill -9 leaves an empty one, of a process that is gone
    assert stale_temp_notebooks(book) == [live] and not dead.exists()
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("built anyway"))
    with pytest.raises(BookBuildError, match=re.escape(live.name)):
        build_book(book, tmp_path / "build")


# ---------------------------------------------------------------------------
# N6, N10, N11: --fresh folders, duplicate grid points, malformed manifests
# ---------------------------------------------------------------------------


def test_fresh_refuses_a_symlinked_sub_folder_into_the_committed_runs(tmp_path, capsys):
    from esdbook.__main__ import main

    fresh = tmp_path / "fr"
    fresh.mkdir()
    (fresh / "results").symlink_to(ROOT / "results")
    assert main(["reproduce", "--profile", "smoke", "--fresh", str(fresh)]) == 2
    err = capsys.readouterr().err
    assert "must not write into" in err and str((ROOT / "results").resolve()) in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["file", "below_a_file"])
def test_fresh_refuses_a_file_or_an_unwritable_place_in_one_line(kind, tmp_path, capsys):
    from esdbook.__main__ import main

    (tmp_path / "file").write_text("x")
    fresh = tmp_path / "file" if kind == "file" else tmp_path / "file" / "sub"
    assert main(["reproduce", "--profile", "smoke", "--fresh", str(fresh)]) == 2
    err = capsys.readouterr().err
    assert ("not a folder" in err or "not a writable folder" in err) and "Traceback" not in err


def _manifest(tmp_path: pathlib.Path, text: str) -> dict:
    from esdbook.reproduce import load_manifest

    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    return load_manifest(path)


def test_points_of_one_run_id_run_once(tmp_path):
    from esdbook.reproduce import grid_points

    manifest = _manifest(tmp_path, (
        "experiments: {table1: book/experiments/train.ipynb}\n"
        "profiles:\n  smoke:\n    table1:\n      grid: {method: [esd], T: [2]}\n"
        "      extra: [{method: esd}, {method: esd, seed: 0}, {method: esd, T: 2, seed: 0}]\n"))
    points = grid_points("smoke", manifest)
    assert len(points) == 1  # smoke's T and seed are 2 and 0: four spellings of one run


@pytest.mark.parametrize("text, message", [
    ("experiments: {table1: book/experiments/train.ipynb}\nprofiles: {smoke: null}\n",
     "profile 'smoke' must map experiment names"),
    ("experiments: {table1: 5}\nprofiles: {smoke: {table1: {}}}\n", "must name a notebook"),
    ("experiments: {table1: book/experiments/train.ipynb}\n"
     "profiles: {smoke: {table1: {base: {method: !!binary ZXNk}}}}\n", "not a plain"),
    ("experiments: {table1: book/experiments/train.ipynb}\nprofiles: {smoke: {table1: {grid: "
     + "{" + ", ".join(f"k{i}: [0,1,2,3,4,5,6,7,8,9]" for i in range(7)) + "}}}}\n",
     "10,000,000 points"),
    ("experiments: {table1: book/experiments/train.ipynb}\n"  # a YAML alias bomb (9^5 leaves)
     "profiles:\n  smoke:\n    table1:\n      grid:\n        seed: &e [&d [&c [&b "
     "[&a [1,1,1,1,1,1,1,1,1], *a,*a,*a,*a,*a,*a,*a,*a], *b,*b,*b,*b,*b,*b,*b,*b], "
     "*c,*c,*c,*c,*c,*c,*c,*c], *d,*d,*d,*d,*d,*d,*d,*d]\n", "not a plain"),
    ("experiments: {table1: book/experiments/train.ipynb}\n"
     "profiles: {smoke: {table1: {grid: {seed: []}}}}\n", "have no values"),
])
def test_malformed_manifests_are_one_clear_error_before_work(text, message, tmp_path):
    from esdbook.reproduce import grid_points
    from esdlib.train.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        grid_points("smoke", _manifest(tmp_path, text))


def test_chapter9_code_runs_on_a_results_folder_without_ablation_records(tmp_path):
    import pandas as pd

    import esdbook
    from esdbook import ablations

    (tmp_path / "results" / "paper").mkdir(parents=True)
    shutil.copytree(ROOT / "results" / "table1", tmp_path / "results" / "table1")
    ch = esdbook.open_chapter("default", str(tmp_path / "results"))
    table1, ablation = ch.runs("table1"), ch.runs("ablation")
    reference = table1[(table1["config.method"] == "esd")
                       & table1["config.T"].isin(ablation["config.T"].unique())]
    assert len(ablation) == 0 and len(reference) == 0
    ablations.ablation_table(pd.concat([reference, ablation]))


def test_a_missing_experiment_notebook_is_refused_before_any_point_runs(tmp_path):
    from esdbook.reproduce import grid_points
    from esdlib.train.config import ConfigError

    manifest = _manifest(tmp_path, "experiments: {table1: book/experiments/nosuch.ipynb}\n"
                                   "profiles: {smoke: {table1: {grid: {seed: [0]}}}}\n")
    with pytest.raises(ConfigError, match="nosuch.ipynb does not exist"):
        grid_points("smoke", manifest)
