"""The book: its structure (fast) and the whole smoke pipeline (``pipeline`` marker).

Fast checks: the toc lists exactly the chapter notebooks, the landing page links them, the
configuration needs no internet (vendored MathJax, no Thebe, no execution at build time), and a
bad chapter parameter fails before any kernel starts.

Pipeline (``pytest -m pipeline``): execute every chapter notebook in the ``smoke`` profile with
papermill into a temporary copy of the book, build it strictly (warnings are errors), then open
every page in Chromium with the network cut and assert no problem (failed requests, broken
images, untypeset math, missing tables). Only the browser part is skipped when Debian's chromium
is absent. A failing chapter leaves no torn notebook behind; the browser check itself is shown
to report each kind of problem on a deliberately broken page.
"""

import json
import pathlib
import shutil

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

import esdbook
from esdbook import build, check
from esdbook.build import (
    BookBuildError,
    ChapterExecutionError,
    build_book,
    chapter_notebooks,
    execute_chapters,
)
from esdbook.check import check_pages
from esdlib.analysis.evidence import NO_VERDICT

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
SOURCES = ROOT / "book" / "chapters"
CHROMIUM = pathlib.Path(check.DEFAULT_CHROMIUM)
NO_CHROMIUM = f"chromium not found at {CHROMIUM}: browser check skipped"


def _toc_files() -> list[str]:
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    files = []
    for entry in toc.get("chapters", []):
        files.append(entry["file"])
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part.get("chapters", [])]
    return files


# ---------------------------------------------------------------------------
# Structure (fast)
# ---------------------------------------------------------------------------


def test_toc_lists_exactly_the_chapter_notebooks():
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    assert toc["format"] == "jb-book" and toc["root"] == "intro"
    listed = [f for f in _toc_files() if f.startswith("_executed/")]
    expected = [f"_executed/{p.stem}" for p in chapter_notebooks(SOURCES)]
    assert listed == expected, (
        "book/_toc.yml must list every book/chapters/NN_name.ipynb, in order, as "
        f"`- file: _executed/NN_name`\n  toc:       {listed}\n  notebooks: {expected}"
    )


def test_landing_page_links_every_chapter():
    intro = (BOOK / "intro.md").read_text()
    missing = [f for f in _toc_files()
               if f"({f}.ipynb)" not in intro and f"({f}.md)" not in intro]
    assert not missing, f"book/intro.md has no table row linking {missing}"


def test_measurement_notes_are_one_page_of_the_book():
    assert "appendix_performance" in _toc_files()
    assert (BOOK / "appendix_performance.md").is_file()
    pointer = (ROOT / "benchmarks" / "README.md").read_text()
    assert len(pointer.splitlines()) <= 6 and "appendix_performance.md" in pointer


def test_config_needs_no_internet():
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    assert config["launch_buttons"]["thebe"] is False
    sphinx = config["sphinx"]["config"]
    assert "sphinx_thebe" not in sphinx["extensions"]
    mathjax = sphinx["mathjax_path"]
    assert "://" not in mathjax
    static = [BOOK / d for d in sphinx["html_static_path"]]
    assert any((d / mathjax).is_file() for d in static), f"vendored MathJax {mathjax} missing"
    fonts = BOOK / "_vendor" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert len(list(fonts.glob("*.woff"))) > 10
    size = sum(p.stat().st_size for p in (BOOK / "_vendor").rglob("*") if p.is_file())
    assert size < 3 * 2**20, f"book/_vendor is {size / 2**20:.1f} MiB"


def test_expected_content_keys_are_toc_pages():
    pages = {"intro.html"} | {f"{f}.html" for f in _toc_files()}
    chapters = {f"_executed/{n}.html" for n in (
        "04_table1_static", "05_dvs", "06_scalability", "07_firing_rates", "08_gradient_error",
        "09_ablations")}
    assert set(check.EXPECTED_CONTENT) <= pages | chapters


def test_unknown_parameter_fails_before_any_kernel(tmp_path):
    with pytest.raises(ValueError, match="unknown chapter parameter.*'profle'.*declare"):
        execute_chapters(SOURCES, tmp_path, {"profle": "smoke"}, progress=False)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        execute_chapters(SOURCES, tmp_path, {"profile": "smoke"}, progress=False, jobs=0)
    with pytest.raises(ValueError, match=r"no chapter\(s\) \['99_none'\].*01_introduction"):
        execute_chapters(SOURCES, tmp_path, {"profile": "smoke"}, progress=False,
                         only=["05_dvs", "99_none"])
    assert not list(tmp_path.iterdir())


def test_open_chapter_checks_its_parameters_and_finds_the_folders(tmp_path):
    with pytest.raises(ValueError, match="smoke, quick, default, mnist, paper"):
        esdbook.open_chapter("fast", ROOT / "results")
    with pytest.raises(ValueError, match="no 'paper/' folder"):
        esdbook.open_chapter("smoke", tmp_path)
    ch = esdbook.open_chapter("smoke", ROOT / "results")
    assert ch.results.is_absolute() and ch.bench_dir == ch.results / "bench"
    assert ch.papermill_runs == ROOT / "papermill_runs"
    assert "training" in ch.paper("table_dvs").columns
    for bad in (5, None, ""):  # e.g. `papermill … -p results_dir 5` injects an int
        with pytest.raises(ValueError, match="results_dir must be a folder path"):
            esdbook.open_chapter("smoke", bad)


def test_kernel_environment_drops_mplbackend_and_restores(monkeypatch):
    import os

    monkeypatch.setenv("MPLBACKEND", "Agg")  # would silently drop every figure of the book
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with build.kernel_environment(threads=1):
        assert "MPLBACKEND" not in os.environ and os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["MPLBACKEND"] == "Agg" and "OMP_NUM_THREADS" not in os.environ
    with pytest.raises(ValueError, match="positive int"), build.kernel_environment(0):
        pass


# ---------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """The whole smoke pipeline in a temporary tree: the manifest's smoke grid through papermill
    (records + executed experiment notebooks), every chapter executed, the book built strictly."""
    from esdbook.reproduce import grid_points, reproduce

    tmp = tmp_path_factory.mktemp("book")
    book = tmp / "book"
    shutil.copytree(BOOK, book, ignore=shutil.ignore_patterns("_build", "_executed", "__pycache__"))
    results = tmp / "results"
    for sub in ("paper", "bench"):
        if (ROOT / "results" / sub).is_dir():
            shutil.copytree(ROOT / "results" / sub, results / sub)
    index = reproduce("smoke", progress=False, results_dir=results,
                      runs_dir=tmp / "papermill_runs", checkpoint_dir=tmp / "checkpoints",
                      book_dir=book, build_dir=tmp / "build")
    return {"executed": chapter_notebooks(book / "_executed"), "index": index,
            "parameters": {"profile": "smoke", "results_dir": str(results)},
            "points": grid_points("smoke"), "tmp": tmp}


@pytest.mark.pipeline
def test_smoke_grid_wrote_a_record_and_a_notebook_per_point(smoke_book):
    tmp = smoke_book["tmp"]
    for point in smoke_book["points"]:
        record = tmp / "results" / point.experiment / f"{point.run_id}.json"
        run = tmp / "papermill_runs" / point.experiment / f"{point.run_id}.ipynb"
        assert record.is_file() and run.is_file(), point.run_id
        assert json.loads(record.read_text())["status"] == "complete"


@pytest.mark.pipeline
def test_pipeline_smoke(smoke_book):
    executed = smoke_book["executed"]
    assert [p.name for p in executed] == [p.name for p in chapter_notebooks(SOURCES)]
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata.papermill.parameters == smoke_book["parameters"]
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert outputs, f"{path.name} has no outputs"
        assert not [o for o in outputs if o.output_type == "error"]
    assert not [p for p in executed[0].parent.iterdir() if p.name.startswith(".")], \
        "temporary files left in the executed chapters folder"
    html = smoke_book["index"].parent
    for page in ["intro", *_toc_files()]:
        assert (html / f"{page}.html").is_file(), f"{page}.html was not built"
    if not CHROMIUM.is_file():
        pytest.skip(NO_CHROMIUM)
    problems = check_pages(html, CHROMIUM)
    assert problems == [], "browser check:\n" + "\n".join(problems)


@pytest.mark.pipeline
def test_fresh_rerun_compares_without_touching_the_committed_records(smoke_book):
    from esdbook.reproduce import reproduce_fresh

    tmp = smoke_book["tmp"]
    committed = tmp / "results"
    before = {p: p.stat().st_mtime_ns for p in committed.rglob("*.json")}
    fresh = tmp / "fresh"
    found = reproduce_fresh("smoke", fresh, committed_dir=committed, progress=False,
                            only=["gradient_error"])
    assert {p: p.stat().st_mtime_ns for p in committed.rglob("*.json")} == before
    assert list((fresh / "results" / "gradient_error").glob("*.json"))
    cells = found.cells.set_index("cell")
    row = cells.loc["gradient_error: method=esd, arch=spiking_resnet18"]
    assert row["n_committed"] == row["n_fresh"] == 1 and np.isfinite(row["mean_fresh"])
    assert found.report.read_text().startswith("# Fresh re-run of the smoke profile")
    by_key = found.verdicts.set_index("key")
    assert by_key.loc["K_esd<=K_rate", "verdict_fresh"] == NO_VERDICT  # one seed: no verdict
    assert by_key.loc["K_esd<=K_rate", "status"] == "holds"
    others = by_key.drop(index="K_esd<=K_rate")  # --only: the other claims were not re-run
    assert set(others["status"]) == {"not re-run"} and others["holds"].isna().all()
    assert found.all_hold
    data = json.loads((fresh / "comparison.json").read_text())
    assert data["profile"] == "smoke" and len(data["verdicts"]) == len(found.verdicts)
    grid = data["grid"]  # what ran, how long, where: the budget is checked with these
    assert grid == found.grid and grid["runs_executed"] == grid["runs_total"] == 1
    assert grid["wall_s"] > 0 and grid["cpu_count"] >= 1
    again = reproduce_fresh("smoke", fresh, committed_dir=committed, progress=False,
                            only=["gradient_error"])
    assert again.grid["runs_executed"] == 0  # resumed: nothing left to run
    other = reproduce_fresh("smoke", tmp / "fresh-seeds", committed_dir=committed,
                            progress=False, only=["gradient_error"], seeds=[3])
    row = other.verdicts.set_index("key").loc["K_esd<=K_rate"]
    assert (row["seeds_committed"], row["seeds_fresh"]) == ("0", "3")
    assert [json.loads(p.read_text())["config"]["seed"]
            for p in (tmp / "fresh-seeds" / "results").rglob("*.json")] == [3]


@pytest.mark.pipeline
def test_failed_chapter_leaves_no_torn_notebook(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = nbformat.v4.new_code_cell('profile = "default"  # type: str')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("raise ValueError(f'bad profile {profile}')")]
    nbformat.write(nb, src / "01_broken.ipynb")
    nb.cells = nb.cells[:1]
    nbformat.write(nb, src / "02_fine.ipynb")
    previous = out / "01_broken.ipynb"
    previous.write_text("previous good copy")
    with pytest.raises(ChapterExecutionError, match=r"01_broken\.ipynb.*ValueError.*bad profile"):
        execute_chapters(src, out, {"profile": "smoke"}, progress=False, cwd=tmp_path, jobs=1)
    assert previous.read_text() == "previous good copy"
    # one job: the chapter after the failed one is never started
    assert [p.name for p in out.iterdir()] == ["01_broken.ipynb"]


@pytest.mark.pipeline
def test_strict_build_fails_on_a_warning(tmp_path):
    book = tmp_path / "book"
    shutil.copytree(BOOK, book, ignore=shutil.ignore_patterns("_build", "_executed", "__pycache__"))
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (book / "intro.md").write_text("# Title\n\nA broken reference: {ref}`no-such-label`.\n")
    with pytest.raises(BookBuildError, match="undefined label: 'no-such-label'"):
        build_book(book, tmp_path / "build", strict=True)


def test_build_without_executed_chapters_says_what_to_do(tmp_path):
    book = tmp_path / "book"
    shutil.copytree(BOOK, book, ignore=shutil.ignore_patterns("_build", "_executed", "__pycache__"))
    with pytest.raises(BookBuildError, match="execute the chapters first"):
        build_book(book, tmp_path / "build")


@pytest.mark.pipeline
def test_browser_check_reports_each_kind_of_problem(tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(NO_CHROMIUM)
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=page.html" />')
    (tmp_path / "stale.html").write_text('<meta http-equiv="Refresh" content="0; url=gone.html" />')
    (tmp_path / "page.html").write_text(
        "<!doctype html><html><head>"
        '<script src="https://cdn.example.com/lib.js"></script></head><body><article>'
        '<img src="missing.png" alt="figure"><span class="math">\\(x^2\\)</span>'
        "<script>undefinedFunction();</script></article></body></html>"
    )
    problems = check_pages(tmp_path, CHROMIUM, expected={"page.html": ("table",)}, timeout_s=3)
    text = json.dumps(problems)
    for needle in ("stale.html: redirects to missing page gone.html",
                   "blocked non-local request https://cdn.example.com/lib.js",
                   "HTTP 404 for missing.png", "image did not load: missing.png",
                   "MathJax never loaded", "JavaScript error", "no 'table' in the article"):
        assert needle in text, f"{needle!r} not reported; got {problems}"


def test_shown_path_is_relative_inside_the_project_only(tmp_path):
    root = tmp_path / "project"
    (root / "results").mkdir(parents=True)
    assert build.shown_path(root / "results", root) == "results"
    assert build.shown_path(root / "book" / ".." / "results", root) == "results"
    assert build.shown_path(tmp_path / "elsewhere", root) == str(tmp_path / "elsewhere")


def test_leak_patterns_catch_warnings_tracebacks_reprs_and_paths():
    leaky = {
        "warning text": ".venv/lib/tqdm/auto.py:21: TqdmWarning: IProgress not found",
        "traceback": "Traceback (most recent call last):",
        "object repr": "<torch._C.Generator at 0x7f771e1f0550>",
        "absolute machine path": "saved to /work/main/results/x.json",
    }
    for kind, text in leaky.items():
        assert any(hit.startswith(kind) for hit in check.leaks_in_text(text)), (kind, text)
    for path in ("/home/me/a.png", "/tmp/run", "/root/x", "lib/python3.12/site-packages/x"):
        assert check.leaks_in_text(f"see {path} here"), path
    clean = ("Warning\nRead the size of any gap. 0.28 points, 3 × 10, results/table1/ and "
             "book/_executed/02_rate_bp.ipynb, ~/esd-fresh, my_runs/02.ipynb, and/or 1/T")
    assert check.leaks_in_text(clean) == []


def test_browser_check_fails_leaks_and_wide_tables_but_not_scroll_containers(tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(NO_CHROMIUM)
    heads = "".join(f"<th>column number {i}</th>" for i in range(40))
    wide = f"<table><tr>{heads}</tr></table>"
    body = {
        "leak.html": "<pre>UserWarning: x\nTraceback (most recent call last)</pre>"
                     "<p>&lt;object at 0x7f00deadbeef&gt; in /home/user/site-packages/x.py</p>"
                     '<img src="a.png" alt="_images/0459f6.png">',
        "wide.html": wide,
        "scrolls.html": f'<div class="{check.SCROLL_CLASS}" style="overflow-x:auto">{wide}</div>'
                        f'<div style="overflow-x: scroll">{wide}</div>',
        "hidden.html": '<p>fine</p><div style="display:none">/tmp/secret Traceback</div>',
    }
    for name, html in body.items():
        (tmp_path / name).write_text("<!doctype html><html><body><article style='width:600px'>"
                                     f"{html}</article></body></html>")
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=leak.html">')
    problems = check_pages(tmp_path, CHROMIUM, expected={}, timeout_s=10)
    text = "\n".join(problems)
    for kind in ("warning text", "traceback", "object repr", "absolute machine path"):
        assert f"leak.html: leak in the visible text: {kind}" in text, problems
    assert "leak.html: image without alt text (alt='_images/0459f6.png')" in text, problems
    assert "wide.html: table wider than the text column" in text, problems
    assert not [p for p in problems if p.startswith(("scrolls.html", "hidden.html"))], problems


@pytest.mark.pipeline
def test_browser_check_measures_tables_and_finds_a_verdict_column_off_screen(tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(NO_CHROMIUM)
    pad = "".join(f"<th>a long column header number {i}</th>" for i in range(12))
    scroll = f'<div class="{check.SCROLL_CLASS}" style="overflow-x:auto">'
    pages = {"late.html": f"{scroll}<table><tr><th>claim</th>{pad}<th>verdict</th></tr>"
                          "<tr><td>x</td></tr></table></div>",
             "early.html": f"{scroll}<table><tr><th>claim</th><th>verdict</th>{pad}</tr>"
                           "<tr style='height:120px'><td>x</td></tr></table></div>"}
    for name, html in pages.items():
        (tmp_path / name).write_text("<!doctype html><html><body><article style='width:700px'>"
                                     f"{html}</article></body></html>")
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=early.html">')
    stats: dict = {}
    problems = check_pages(tmp_path, CHROMIUM, expected={}, timeout_s=10, stats=stats)
    assert [p for p in problems if "verdict column not visible" in p] == [
        p for p in problems if p.startswith("late.html")] != []
    assert stats["early.html"]["tables"] == 1 and stats["early.html"]["tallest"] >= 120
    assert stats["late.html"]["widest"] > 700


def test_display_table_is_a_reader_table():
    from esdbook import display

    df = pd.DataFrame({"config.T": [4.0, 4.0, 4.0], "final_%": [99.12345, np.nan, 97.1],
                       "esd/ratebp step": [1.23456, 2.0, 3.3], "n_seeds": [3.0, 1.0, 2.0],
                       "K_rate": [0.051234, 0.1, 0.2], "run_id": ["a", "b", "c"]},
                      index=pd.Index([7, 8, 9]))
    html = display.table(df, caption="Our runs").data
    assert html.startswith(f'<div class="{check.SCROLL_CLASS}" style="overflow-x:auto">')
    for text in (">final (%)<", ">esd/ratebp step<", ">seeds<", ">K_rate<", ">run<",
                 ">99.12<", ">97.10<", ">—<", ">1.23<", ">3<", ">0.051<", "Our runs · T: 4"):
        assert text in html, text
    for text in ("nan", "NaN", "99.123", ">3.0<", ">7<", "config.T"):  # no index, no noise
        assert text not in html, text
    assert display.table(df).data == display.table(df).data  # stable ids (nbval)
    rates = display.table(pd.DataFrame({"RateBP CIFAR-10": [95.9], "firing rate": [0.1234]})).data
    assert ">95.90<" in rates and ">0.123<" in rates
    blank = display.table(pd.DataFrame({"status": ["ok"] * 3, "error": [""] * 3, "n": [1, 2, 3]}))
    assert "status: ok" in blank.data and "error:" not in blank.data and ">—<" in blank.data
    two = display.table(df.head(2)).data
    assert ">T<" in two  # a constant column stays a column in a short table


def test_no_markdown_line_starts_with_a_myst_comment():
    bad = []
    for path in sorted(SOURCES.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                bad += [f"{path.name}: {line}" for line in cell.source.splitlines()
                        if line.lstrip().startswith("%")]
    assert not bad, f"a markdown line starting with % is a MyST comment (dropped): {bad}"


def test_injected_parameters_cell_is_hidden_from_the_page():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('profile = "default"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('results_dir = "/tmp/x/results"',
                                  metadata={"tags": ["injected-parameters"]})])
    build.hide_injected_parameters(nb)
    build.hide_injected_parameters(nb)
    assert nb.cells[0].metadata.tags == ["parameters"]
    assert nb.cells[1].metadata.tags == ["injected-parameters", "remove-input"]
    for path in chapter_notebooks(BOOK / "_executed"):
        cells = nbformat.read(path, as_version=4).cells
        assert all("remove-input" in c.metadata.get("tags", []) for c in cells
                   if "injected-parameters" in c.metadata.get("tags", [])), path.name


def _page(body: str) -> str:
    nav = "<nav><a href='gone.html'>menu</a></nav>"
    return f"<html><body>{nav}<article>{body}</article></body></html>"


def test_broken_links_finds_missing_pages_and_anchors_but_not_good_links(tmp_path):
    (tmp_path / "ch").mkdir()
    (tmp_path / "ch" / "a.html").write_text(_page(
        "<h1 id='top'>A</h1><a href='b.html#fig-1'>ok</a> <a href='#top'>self</a>"
        " <a href='../intro.html'>up</a> <a href='https://example.org/x'>web</a>"
        " <a href='c.html'>missing page</a> <a href='b.html#nope'>missing anchor</a>"
        " <a href='#gone'>missing own anchor</a>"))
    (tmp_path / "ch" / "b.html").write_text(_page("<figure id='fig-1'></figure>"))
    (tmp_path / "intro.html").write_text(_page("<p>intro</p>"))
    assert check.broken_links(tmp_path) == [  # the nav's link is outside the article
        "ch/a.html: broken link c.html", "ch/a.html: broken link b.html#nope",
        "ch/a.html: broken link #gone"]


def test_page_inventory_counts_what_each_article_shows(tmp_path):
    (tmp_path / "p.html").write_text(_page(
        '<table></table><table></table><figure><span class="caption-number">Fig. 2.1 </span>'
        '</figure><figure></figure><div class="math"><span class="eqno">(2.1)</span></div>'
        '<div class="admonition dropdown">solution</div><div class="admonition note"></div>'
        '<div class="dropdown admonition">jupyter-book writes the classes in this order</div>'
        '<a href="q.html">in</a><a href="https://x.org">out</a><a href="#here">anchor</a>'))
    (tmp_path / "index.html").write_text('<meta http-equiv="refresh" content="0; url=p.html">')
    assert check.page_inventory(tmp_path) == [{
        "page": "p.html", "tables": 2, "figures": 2, "numbered_figures": 1, "equations": 1,
        "solutions": 2, "internal_links": 1, "external_links": 1}]
