"""A safe re-run path: pages of another profile never replace the committed ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from esdbook.__main__ import main
from esdbook.build import is_committed_book, stage_book

ROOT = Path(__file__).resolve().parents[1]


def test_stage_book_copies_the_sources_but_not_the_committed_pages(tmp_path):
    staged = stage_book(ROOT / "book", tmp_path / "runs")
    assert staged == (tmp_path / "runs" / "book").resolve()
    for name in ("_config.yml", "_toc.yml", "intro.md", "references.bib", "chapters", "_vendor"):
        assert (staged / name).exists(), name
    for name in ("_executed", "_build", "esdbook", "experiments"):
        assert not (staged / name).exists(), name
    chapters = sorted(p.name for p in (ROOT / "book" / "chapters").glob("*.ipynb"))
    assert sorted(p.name for p in (staged / "chapters").glob("*.ipynb")) == chapters
    assert not is_committed_book(staged) and is_committed_book(ROOT / "book")
    (staged / "_executed").mkdir()
    (staged / "_executed" / "kept.ipynb").write_text("{}")
    stage_book(ROOT / "book", tmp_path / "runs")  # again: sources replaced, its pages kept
    assert (staged / "_executed" / "kept.ipynb").is_file()


@pytest.mark.parametrize("out", ["book", "book/_executed"])
def test_stage_book_refuses_a_folder_inside_the_book(out):
    with pytest.raises(ValueError, match="inside the book folder"):
        stage_book(ROOT / "book", ROOT / out)


@pytest.mark.parametrize("argv", [
    ["execute", "--profile", "quick"],
    ["all", "--profile", "smoke"],
    ["reproduce", "--profile", "quick"],
])
def test_other_profiles_need_out_before_any_work(argv, capsys, monkeypatch):
    import esdbook.build
    import esdbook.reproduce

    def never(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(esdbook.build, "execute_chapters", never)
    monkeypatch.setattr(esdbook.reproduce, "run_point", never)
    before = sorted((ROOT / "book" / "_executed").iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--out DIR" in err and "committed pages" in err
    assert sorted((ROOT / "book" / "_executed").iterdir()) == before


@pytest.mark.parametrize("extra", [["--fresh", "F"], ["--no-book"]])
def test_reproduce_out_is_refused_where_no_pages_are_written(extra, tmp_path, capsys):
    assert main(["reproduce", "--profile", "smoke", "--out", str(tmp_path), *extra]) == 2
    assert "--out names where the pages go" in capsys.readouterr().err


def test_execute_with_out_writes_pages_into_the_copy(tmp_path, monkeypatch):
    import esdbook.__main__ as cli

    calls = []
    monkeypatch.setattr(cli, "execute_chapters", lambda src, out, params, **kw: calls.append(
        (Path(src), Path(out), params)))
    assert main(["execute", "--profile", "quick", "--out", str(tmp_path)]) == 0
    (src, out, params), = calls
    book = (tmp_path / "book").resolve()
    assert (src, out) == (book / "chapters", book / "_executed")
    assert params["profile"] == "quick"


def test_a_results_folder_outside_the_checkout_still_gives_the_books_revision(tmp_path):
    import shutil

    import esdbook
    from esdlib.train.records import git_revision

    shutil.copytree(ROOT / "results" / "paper", tmp_path / "results" / "paper")
    ch = esdbook.open_chapter("default", str(tmp_path / "results"))
    assert git_revision(tmp_path) is None  # not a checkout
    assert ch.revision() == git_revision(ROOT) is not None
