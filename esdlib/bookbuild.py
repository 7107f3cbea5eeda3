"""Build the book: execute the chapter notebooks, build the HTML, check every page in a browser.

The book is produced in three explicit steps, each a function:

1. :func:`execute_chapters` runs every source notebook ``notebooks/chapters/NN_name.ipynb``
   (stored without outputs) through papermill with the given parameters and writes the executed
   copy to ``book/chapters/NN_name.ipynb``, atomically;
2. :func:`build_book` runs ``jupyter-book build`` (1.x) strictly (warnings are errors) and
   returns the path of the built ``index.html``;
3. :func:`check_pages` opens every built page in Chromium (Playwright, served over a localhost
   HTTP server, every non-local request blocked) and lists the problems: failed requests,
   broken images, untypeset math, missing tables. :func:`screenshot_pages` saves PNGs.

From the command line (repository root)::

    python -m esdlib.bookbuild execute --profile smoke --results-dir results
    python -m esdlib.bookbuild build
    python -m esdlib.bookbuild check
    python -m esdlib.bookbuild screenshot chapters/02_rate_bp.html --out screenshots

Importing this module has no side effects; papermill, jupyter-book and Playwright are imported
only by the functions that need them.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from esdlib.io import commit_temp, remove_stale_temps, temp_path_for

__all__ = [
    "BookBuildError",
    "CHAPTER_PATTERN",
    "CHROMIUM_ARGS",
    "ChapterExecutionError",
    "run_notebook",
    "DEFAULT_CHROMIUM",
    "EXPECTED_CONTENT",
    "build_book",
    "chapter_notebooks",
    "check_chapter_parameters",
    "check_notebook_parameters",
    "check_parameter_names",
    "injected_parameter_names",
    "check_pages",
    "damaged_record_pages",
    "execute_chapters",
    "execution_error_message",
    "kernel_environment",
    "main",
    "screenshot_pages",
]

CHAPTER_PATTERN = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")
"""File names of chapter notebooks: two digits, an underscore, a name (``02_rate_bp.ipynb``)."""

DEFAULT_CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium (``apt-get install chromium``); Playwright's own browsers are never used."""

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Command-line switches for Chromium: headless, no background traffic to the internet."""

EXPECTED_CONTENT: dict[str, tuple[str, ...]] = {
    "intro.html": ("table",),
    "_executed/01_introduction.html": ("table",),
    "_executed/02_rate_bp.html": ("img", "mjx-container"),
    "_executed/03_self_distillation.html": ("img", "table"),
    "_executed/04_table1_static.html": ("table",),
    "_executed/05_dvs.html": ("table",),
    "_executed/06_scalability.html": ("table",),
    "_executed/07_firing_rates.html": ("table",),
    "_executed/08_gradient_error.html": ("table",),
    "_executed/09_ablations.html": ("table",),
}
"""Per built page (path relative to the HTML root), CSS selectors that must match at least one
element inside the page's ``<article>``. Pages absent from the build are not checked (the toc
test guards which chapters exist)."""

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_REFRESH = re.compile(
    r"""<meta\s+http-equiv=["']refresh["']\s+content=["'][^"']*?url=([^"']+)["']""", re.IGNORECASE
)
_EXCLUDED_HTML_DIRS = ("_static", "_sources", "_images", "_downloads")


class ChapterExecutionError(RuntimeError):
    """A chapter (or experiment) notebook failed to execute; the message names the notebook,
    cell and error.

    Attributes:
        notebook: file name of the failing source notebook.
    """

    def __init__(self, notebook: str, message: str) -> None:
        super().__init__(f"{notebook}: {message}")
        self.notebook = notebook


class BookBuildError(RuntimeError):
    """``jupyter-book build`` failed (or warned, in strict mode); the message ends with its log."""


# ---------------------------------------------------------------------------
# Chapter parameters and execution
# ---------------------------------------------------------------------------


CHAPTER_PARAMETERS = ("profile", "results_dir")
"""The parameters every chapter notebook declares."""


def check_parameter_names(given: Iterable[str], declared: Iterable[str],
                          where: str = "the notebook") -> None:
    """Check papermill parameter names against the ones a notebook declares.

    papermill itself only warns about a parameter that the ``parameters`` cell does not
    declare (and the run then silently uses the default): this makes it an error.

    Args:
        given: Names passed (``-p NAME VALUE``).
        declared: Names the notebook's ``parameters`` cell assigns.
        where: The notebook, for the message.

    Raises:
        ValueError: Unknown names, with close matches and the list of valid names.
    """
    import difflib

    declared = list(declared)
    unknown = [n for n in given if n not in declared]
    if unknown:
        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, declared, n=1, cutoff=0.6)
            hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"unknown parameter(s) {', '.join(hints)} for {where}; valid "
                         f"parameters: {', '.join(declared)}")


def injected_parameter_names() -> list[str]:
    """Names papermill injected into the running IPython kernel (empty outside IPython).

    papermill runs the notebook's cells in order and inserts an ``injected-parameters`` cell
    whose source starts with ``# Parameters``; this reads the sources the kernel has executed
    and collects the names that cell assigns.
    """
    import ast

    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of papermill
        return []
    shell = get_ipython()
    if shell is None:
        return []
    names: list[str] = []
    for source in shell.history_manager.input_hist_raw:
        if not source.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        names += [t.id for node in tree.body if isinstance(node, ast.Assign)
                  for t in node.targets if isinstance(t, ast.Name)]
    return names


def check_notebook_parameters(declared: Iterable[str]) -> None:
    """Fail when papermill injected a parameter the notebook does not declare.

    Call it in the first code cell after the ``parameters`` cell, with the names that cell
    assigns: ``papermill nb.ipynb out.ipynb -p profil smoke`` then stops with
    ``ValueError: unknown parameter(s) 'profil' (did you mean 'profile'?) ...`` instead of
    running with the default profile. A no-op outside an IPython kernel.

    Raises:
        ValueError: see :func:`check_parameter_names`.
    """
    check_parameter_names(injected_parameter_names(), declared, "this notebook")


def check_chapter_parameters(profile: str, results_dir: str | os.PathLike) -> Path:
    """Validate the parameters every chapter notebook takes.

    Inside a papermill run it also refuses injected parameters other than ``profile`` and
    ``results_dir`` (:func:`check_notebook_parameters`).

    Args:
        profile: a run profile, one of :data:`esdlib.config.PROFILES`.
        results_dir: the results directory; must contain ``paper/`` (the paper's values).

    Returns:
        ``results_dir`` as an absolute path.

    Raises:
        ValueError: unknown profile (the message lists the valid ones), a ``results_dir`` that
            is not a path, or a results directory without ``paper/``.
    """
    from esdlib.config import PROFILES

    check_notebook_parameters(CHAPTER_PARAMETERS)
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    if not isinstance(results_dir, (str, os.PathLike)) or not str(results_dir):
        raise ValueError(f"results_dir must be a folder path (a string); got {results_dir!r}")
    path = Path(results_dir).resolve()
    if not (path / "paper").is_dir():
        raise ValueError(
            f"results_dir={str(results_dir)!r} ({path}) has no 'paper/' folder; pass the "
            "repository's 'results' directory or a copy of it"
        )
    return path


def chapter_notebooks(src_dir: str | os.PathLike) -> list[Path]:
    """The chapter notebooks of a folder, in chapter order.

    Args:
        src_dir: folder holding ``NN_name.ipynb`` files.

    Returns:
        Sorted paths of the files matching :data:`CHAPTER_PATTERN`.
    """
    return sorted(p for p in Path(src_dir).iterdir() if CHAPTER_PATTERN.match(p.name))


def _project_root(start: Path) -> Path:
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return Path.cwd()


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def kernel_environment(threads: int | None = None) -> Iterator[None]:
    """Environment for Jupyter kernels started inside the block (restored on exit).

    Kernels inherit this process's environment. ``MPLBACKEND`` is removed: a kernel started
    with ``MPLBACKEND=Agg`` renders figures nowhere and the pages silently lose them, while
    ipykernel picks the inline backend itself when the variable is unset. With ``threads``,
    ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are set so each kernel's PyTorch uses that many
    intra-op threads. This changes ``os.environ`` of the whole process for the block's duration.

    Args:
        threads: CPU threads per kernel, or ``None`` to leave the thread variables alone.

    Yields:
        Nothing.

    Raises:
        ValueError: ``threads`` is not a positive int or ``None``.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    changes: dict[str, str | None] = {"MPLBACKEND": None}
    if threads is not None:
        changes.update({name: str(threads) for name in _THREAD_VARIABLES})
    saved = {name: os.environ.get(name) for name in changes}
    try:
        _set_environment(changes)
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def execution_error_message(exc: BaseException) -> str:
    """A readable message for a failed papermill execution (cell, error, source, traceback end).

    Args:
        exc: the exception raised by ``papermill.execute_notebook``.

    Returns:
        For a ``PapermillExecutionError``: the cell's execution count, the error name and value,
        the cell source and the last traceback lines (ANSI colours removed); otherwise
        ``"<ExceptionType>: <message>"``.
    """
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        trace = _ANSI.sub("", "\n".join(exc.traceback)).strip().splitlines()
        tail = "\n".join(trace[-15:])
        return (f"cell {exc.exec_count} raised {exc.ename}: {exc.evalue}\n"
                f"--- cell source ---\n{exc.source}\n--- traceback (end) ---\n{tail}")
    return f"{type(exc).__name__}: {exc}"


def execute_chapters(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    parameters: Mapping[str, Any],
    kernel: str = "python3",
    progress: bool = True,
    *,
    cwd: str | os.PathLike | None = None,
    timeout: float | None = 900.0,
    threads: int | None = None,
) -> list[Path]:
    """Execute every chapter notebook of ``src_dir`` with papermill into ``out_dir``.

    Each notebook receives the entries of ``parameters`` that its ``parameters`` cell declares
    (papermill injects them after that cell). The executed notebook is written to a hidden
    temporary file in ``out_dir`` and moved over ``out_dir/<same name>`` only when execution
    succeeded, so a failure never leaves a torn or half-executed chapter behind. Notebooks run
    with the working directory ``cwd`` (default: the project root above ``src_dir``, where
    ``pyproject.toml`` lives), so relative paths such as ``results`` resolve; ``MPLBACKEND`` is
    removed from the kernels' environment so figures display inline.

    Args:
        src_dir: folder of source notebooks ``NN_name.ipynb`` (stored without outputs).
        out_dir: destination folder (created if needed), e.g. ``book/chapters``.
        parameters: papermill parameters, e.g. ``{"profile": "smoke", "results_dir": "results"}``.
        kernel: Jupyter kernel name.
        progress: show a tqdm progress bar over the notebooks.
        cwd: working directory of the kernels.
        timeout: per-cell time limit in seconds (``None``: no limit).
        threads: CPU threads per kernel (sets ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` for
            the kernels); ``None`` keeps the environment's setting. On a small, shared CPU
            ``threads=1`` is often several times faster for the small networks of the book.

    Returns:
        Paths of the executed notebooks, in chapter order.

    Raises:
        FileNotFoundError: ``src_dir`` has no chapter notebooks.
        ValueError: a parameter that no notebook declares (the message lists the declared
            ones), or a bad ``threads``.
        ChapterExecutionError: a notebook failed; names it and gives the papermill error.
    """
    import papermill
    from tqdm import tqdm

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    notebooks = chapter_notebooks(src_dir)
    if not notebooks:
        raise FileNotFoundError(f"no chapter notebooks (NN_name.ipynb) in {src_dir}")
    declared = {nb: set(papermill.inspect_notebook(str(nb))) for nb in notebooks}
    known = set().union(*declared.values())
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(f"unknown chapter parameter(s) {unknown}; the notebooks in {src_dir} "
                         f"declare: {sorted(known)}")
    workdir = Path(cwd) if cwd is not None else _project_root(src_dir.resolve())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    bar = tqdm(notebooks, desc="chapters", unit="nb", disable=not progress)
    with kernel_environment(threads):
        for nb_path in bar:
            bar.set_postfix_str(nb_path.name)
            params = {k: v for k, v in parameters.items() if k in declared[nb_path]}
            target = run_notebook(nb_path, out_dir / nb_path.name, params, cwd=workdir,
                                  timeout=timeout, kernel=kernel)
            written.append(target)
    return written


def shown_path(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` relative to ``root`` when it lies inside it, else as given (absolute).

    Executed notebooks are read by people on other machines: a path inside the project is
    written relative to it, so pages and metadata carry no machine paths.
    """
    path, root = Path(path).resolve(), Path(root).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def run_notebook(src: str | os.PathLike, target: str | os.PathLike,
                 parameters: Mapping[str, Any], *, cwd: str | os.PathLike,
                 timeout: float | None = None, kernel: str = "python3") -> Path:
    """Execute ``src`` with papermill into ``target`` atomically.

    The executed notebook is written to a hidden temporary file beside ``target`` (its papermill
    metadata pointing at ``target``) and renamed over it only on success, so a failure or an
    interruption never leaves a torn or half-executed notebook.

    Args:
        src: source notebook.
        target: executed copy (its folder is created if needed).
        parameters: papermill parameters (injected after the ``parameters`` cell).
        cwd: working directory of the kernel.
        timeout: per-cell limit in seconds (``None``: none).
        kernel: Jupyter kernel name.

    Returns:
        ``target`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a parameter the notebook's ``parameters`` cell does not declare (before
            anything runs; the message lists the valid names).
        ChapterExecutionError: the notebook failed (names it and gives the cell's error).
    """
    import nbformat
    import papermill

    src, target = Path(src), Path(target)
    check_parameter_names(parameters, papermill.inspect_notebook(str(src)), src.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(target, suffix=".ipynb")  # also removes stale ones of killed runs
    remove_stale_temps(target.with_name(target.stem), ".ipynb")  # older ".<stem>.*.ipynb" ones
    try:
        papermill.execute_notebook(
            str(src), str(tmp), parameters=dict(parameters), kernel_name=kernel,
            progress_bar=False, log_output=False, request_save_on_cell_execute=False,
            cwd=str(cwd), execution_timeout=timeout,
        )
        nb = nbformat.read(tmp, as_version=4)
        meta = nb.metadata.setdefault("papermill", {})
        meta["input_path"] = shown_path(src, cwd)  # no machine paths in what readers get
        meta["output_path"] = shown_path(target, cwd)
        nbformat.write(nb, tmp)
        commit_temp(tmp, target)  # mode from the umask (mkstemp alone gives 0600)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, Exception):
            raise ChapterExecutionError(src.name, execution_error_message(exc)) from exc
        raise
    return target



# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------


def _jupyter_book_command() -> list[str]:
    script = Path(sys.executable).with_name("jupyter-book")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]


def _toc_files(book_dir: Path) -> list[str]:
    import yaml

    toc = yaml.safe_load((book_dir / "_toc.yml").read_text(encoding="utf-8")) or {}
    entries = [toc["root"]] if "root" in toc else []
    stack = [toc]
    while stack:
        node = stack.pop()
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                if "file" in child:
                    entries.append(str(child["file"]))
                stack.append(child)
    return [e.removesuffix(".ipynb").removesuffix(".md") for e in entries]


def build_book(book_dir: str | os.PathLike, build_dir: str | os.PathLike | None = None,
               strict: bool = True) -> Path:
    """Build the book with ``jupyter-book build`` (1.x); chapters must already be executed.

    Runs ``jupyter-book build <book_dir> --path-output <build_dir> --all`` plus ``-W
    --keep-going`` when ``strict`` (every Sphinx warning fails the build, after all warnings
    have been reported). ``--all`` rebuilds every page so a warning is never hidden by an
    incremental build.

    Args:
        book_dir: the book source (holds ``_config.yml``, ``_toc.yml``).
        build_dir: output folder; the HTML lands in ``<build_dir>/_build/html``
            (default: ``book_dir``).
        strict: treat warnings as errors.

    Returns:
        Path of the built ``index.html``.

    Raises:
        BookBuildError: a page listed in ``_toc.yml`` does not exist (chapters not executed
            yet), or the build failed (the message ends with the last lines of its log), or,
            when ``strict``, a page shows a damaged record (:func:`damaged_record_pages`).
    """
    book_dir = Path(book_dir)
    build_dir = Path(build_dir) if build_dir is not None else book_dir
    missing = [f for f in _toc_files(book_dir)
               if not any((book_dir / f"{f}{ext}").is_file() for ext in (".ipynb", ".md"))]
    if missing:
        raise BookBuildError(
            f"{book_dir / '_toc.yml'} lists pages that do not exist: {missing}; execute the "
            "chapters first (execute_chapters / `python -m esdlib.bookbuild execute`)"
        )
    cmd = [*_jupyter_book_command(), "build", str(book_dir), "--path-output", str(build_dir),
           "--all"]
    if strict:
        cmd += ["-W", "--keep-going"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    log = _ANSI.sub("", proc.stdout + proc.stderr)
    index = build_dir / "_build" / "html" / "index.html"
    if proc.returncode != 0 or not index.is_file():
        tail = "\n".join(log.strip().splitlines()[-60:])
        warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
        summary = "\n".join(warnings[:30])
        raise BookBuildError(
            f"jupyter-book build failed (exit code {proc.returncode}): {' '.join(cmd)}\n"
            f"--- warnings/errors ---\n{summary}\n--- log (end) ---\n{tail}"
        )
    damaged = damaged_record_pages(index.parent) if strict else []
    if damaged:
        raise BookBuildError("pages show damaged run records (repair or re-run them, e.g. "
                             "`esd reproduce`):\n" + "\n".join(damaged))
    return index


# ---------------------------------------------------------------------------
# Browser check
# ---------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass


@contextlib.contextmanager
def _serve(html_dir: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def _browser_context(chromium: str | os.PathLike, base: str, blocked: list[str]):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True,
                                    args=list(CHROMIUM_ARGS))
        try:
            context = browser.new_context(service_workers="block",
                                          viewport={"width": 1280, "height": 900})

            def route(r):
                url = r.request.url
                if url.startswith(base) or url.startswith("data:") or url.startswith("blob:"):
                    r.continue_()
                else:  # the network is cut: anything non-local is a problem
                    blocked.append(url)
                    r.abort("blockedbyclient")

            context.route("**/*", route)
            yield context
        finally:
            browser.close()


_WAIT_MATH = """async (timeoutMs) => {
  const math = document.querySelectorAll('article .math');
  if (math.length === 0) return 'no-math';
  const deadline = Date.now() + timeoutMs;
  while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    if (Date.now() > deadline) return 'no-mathjax';
    await new Promise(r => setTimeout(r, 50));
  }
  const left = Math.max(deadline - Date.now(), 0);
  const timer = new Promise(r => setTimeout(() => r('timeout'), left));
  return await Promise.race([MathJax.startup.promise.then(() => 'typeset'), timer]);
}"""

_IMAGES = """() => Array.from(document.querySelectorAll('article img')).map(
  i => [i.getAttribute('src'), i.complete, i.naturalWidth])"""


def _load(page, url: str, timeout_s: float) -> str:
    page.goto(url, wait_until="load", timeout=timeout_s * 1000)
    state = page.evaluate(_WAIT_MATH, timeout_s * 1000)
    page.wait_for_load_state("networkidle", timeout=timeout_s * 1000)
    with contextlib.suppress(Exception):  # lazy images: give them a moment to finish
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('article img')).every(i => i.complete)",
            timeout=timeout_s * 1000)
    return state


def _html_pages(html_dir: Path) -> list[str]:
    pages = []
    for path in sorted(html_dir.rglob("*.html")):
        rel = path.relative_to(html_dir).as_posix()
        if not rel.startswith(tuple(d + "/" for d in _EXCLUDED_HTML_DIRS)):
            pages.append(rel)
    return pages


def check_pages(html_dir: str | os.PathLike, chromium: str | os.PathLike = DEFAULT_CHROMIUM,
                expected: Mapping[str, Sequence[str]] | None = None,
                timeout_s: float = 60.0) -> list[str]:
    """Open every built HTML page in Chromium and list what is wrong with it.

    The folder is served by a localhost HTTP server (not ``file://``); every request to another
    origin is blocked (as if there were no internet) and reported. For each page, problems are:

    - a failed request, a response with status ≥ 400, or a blocked non-local request;
    - a JavaScript exception or a console error;
    - an ``<img>`` inside the ``<article>`` that did not load (``naturalWidth == 0``);
    - math on the page (Sphinx ``.math`` elements) that MathJax did not typeset (no
      ``mjx-container``) or typeset with an error (``mjx-merror``);
    - a selector of ``expected[page]`` that matches nothing inside the ``<article>``;
    - a redirect stub (``<meta http-equiv="refresh">``, e.g. ``index.html``) whose target page
      does not exist (stubs are not opened; their target is checked as a page).

    Args:
        html_dir: the built HTML root (``<build_dir>/_build/html``).
        chromium: Chromium executable (Debian's; Playwright's bundled browsers are not used).
        expected: page → CSS selectors that must be present; default :data:`EXPECTED_CONTENT`.
        timeout_s: per-page load timeout in seconds.

    Returns:
        Problem descriptions ``"<page>: <what>"``; empty when every page is fine.

    Raises:
        FileNotFoundError: ``html_dir`` has no ``index.html`` or ``chromium`` does not exist.
    """
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").is_file():
        raise FileNotFoundError(f"no index.html in {html_dir}: build the book first")
    if not Path(chromium).is_file():
        raise FileNotFoundError(f"chromium not found at {chromium}")
    expected = EXPECTED_CONTENT if expected is None else expected
    problems: list[str] = []
    pages, redirects = [], {}
    for rel in _html_pages(html_dir):
        match = _REFRESH.search((html_dir / rel).read_text(encoding="utf-8", errors="replace"))
        if match:
            redirects[rel] = match.group(1).strip()
        else:
            pages.append(rel)
    # A redirect stub (jupyter-book's index.html) has no content: check that its target exists;
    # the target is checked as a page of its own.
    for rel, target in redirects.items():
        if not (html_dir / rel).parent.joinpath(target).is_file():
            problems.append(f"{rel}: redirects to missing page {target}")
    problems += damaged_record_pages(html_dir)
    with _serve(html_dir) as base:
        blocked: list[str] = []
        with _browser_context(chromium, base, blocked) as context:
            for rel in pages:
                problems += _check_page(context, base, rel, blocked, expected.get(rel, ()),
                                        timeout_s)
    return problems


def damaged_record_pages(html_dir: str | os.PathLike) -> list[str]:
    """Built pages that show a damaged record (:data:`esdlib.report.DAMAGED_MARKER`).

    Args:
        html_dir: the HTML output folder of the book.

    Returns:
        One line per page: ``"<page>: shows damaged record: <file> ..."``.
    """
    import html as html_lib

    from esdlib.report import DAMAGED_MARKER

    found = []
    tag = re.compile(r"<[^>]+>")
    for rel in _html_pages(Path(html_dir)):
        text = (Path(html_dir) / rel).read_text(encoding="utf-8", errors="replace")
        if DAMAGED_MARKER not in text:
            continue
        plain = " ".join(html_lib.unescape(tag.sub(" ", text)).split())
        hits = [m.group(0) for m in re.finditer(re.escape(DAMAGED_MARKER) + r" \S+", plain)]
        found.append(f"{rel}: shows {'; '.join(dict.fromkeys(hits)) or DAMAGED_MARKER}")
    return found


def _check_page(context, base: str, rel: str, blocked: list[str], selectors: Sequence[str],
                timeout_s: float) -> list[str]:
    found: list[str] = []

    def short(url: str) -> str:
        return url[len(base):] if url.startswith(base) else url

    def on_failed(request) -> None:
        if request.url not in blocked:
            found.append(f"failed request {short(request.url)} ({request.failure})")

    def on_response(response) -> None:
        if response.status >= 400:
            found.append(f"HTTP {response.status} for {short(response.url)}")

    def on_console(msg) -> None:
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            found.append(f"console error: {msg.text}")

    page = context.new_page()
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    page.on("pageerror", lambda exc: found.append(f"JavaScript error: {exc}"))
    page.on("console", on_console)
    n_blocked = len(blocked)
    try:
        math_state = _load(page, base + rel, timeout_s)
        if math_state == "no-mathjax":
            found.append("page has math but MathJax never loaded")
        elif math_state == "timeout":
            found.append("page has math but MathJax did not finish typesetting")
        elif math_state == "typeset":
            if page.locator("article mjx-container").count() == 0:
                found.append("page has math but MathJax typeset none of it (no mjx-container)")
            if page.locator("article mjx-merror").count():
                found.append("MathJax reported a TeX error (mjx-merror)")
        for src, complete, width in page.evaluate(_IMAGES):
            if not complete or width == 0:
                found.append(f"image did not load: {src}")
        for selector in selectors:
            if page.locator(f"article {selector}").count() == 0:
                found.append(f"expected content missing: no '{selector}' in the article")
    except Exception as exc:  # a timeout or navigation error is a problem of this page
        found.append(f"could not load page: {type(exc).__name__}: {exc}")
    finally:
        page.close()
    found += [f"blocked non-local request {url}" for url in blocked[n_blocked:]]
    return [f"{rel}: {msg}" for msg in dict.fromkeys(found)]


def screenshot_pages(html_dir: str | os.PathLike, pages: Sequence[str],
                     out_dir: str | os.PathLike, chromium: str | os.PathLike = DEFAULT_CHROMIUM,
                     full_page: bool = True, timeout_s: float = 60.0) -> list[Path]:
    """Save PNG screenshots of chosen built pages (after MathJax has typeset them).

    Args:
        html_dir: the built HTML root.
        pages: page paths relative to ``html_dir``, e.g. ``["_executed/02_rate_bp.html"]``.
        out_dir: folder for the PNGs (created); ``chapters/02_rate_bp.html`` →
            ``chapters__02_rate_bp.png``.
        chromium: Chromium executable.
        full_page: capture the whole scrollable page, not only the viewport.
        timeout_s: per-page load timeout in seconds.

    Returns:
        Paths of the PNG files written.
    """
    html_dir, out_dir = Path(html_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in pages if not (html_dir / p).is_file()]
    if missing:
        raise FileNotFoundError(f"no such page(s) in {html_dir}: {missing}")
    written = []
    with _serve(html_dir) as base, _browser_context(chromium, base, []) as context:
        for rel in pages:
            page = context.new_page()
            try:
                _load(page, base + rel, timeout_s)
                target = out_dir / (rel.removesuffix(".html").replace("/", "__") + ".png")
                page.screenshot(path=str(target), full_page=full_page)
                written.append(target)
            finally:
                page.close()
    return written


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m esdlib.bookbuild {execute,build,check,screenshot,all}``.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status (0 on success, 1 when the browser check found problems).
    """
    import argparse

    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(prog="python -m esdlib.bookbuild", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("execute", "build", "check", "screenshot", "all"))
    parser.add_argument("pages", nargs="*", help="pages to screenshot (relative to the html root)")
    parser.add_argument("--src", default=str(root / "book" / "chapters"))
    parser.add_argument("--book", default=str(root / "book"))
    parser.add_argument("--build-dir", default=None, help="default: the book folder")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per kernel")
    parser.add_argument("--chromium", default=DEFAULT_CHROMIUM)
    parser.add_argument("--out", default="screenshots", help="screenshot folder")
    args = parser.parse_args(argv)
    book = Path(args.book)
    html = Path(args.build_dir or book) / "_build" / "html"
    if args.command in ("execute", "all"):
        execute_chapters(args.src, book / "_executed",
                         {"profile": args.profile, "results_dir": args.results_dir}, cwd=root,
                         threads=args.threads)
    if args.command in ("build", "all"):
        print(build_book(book, args.build_dir))
    if args.command in ("check", "all"):
        problems = check_pages(html, args.chromium)
        print("\n".join(problems) or f"all pages of {html} are fine")
        if problems:
            return 1
    if args.command == "screenshot":
        for path in screenshot_pages(html, args.pages, args.out, args.chromium):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
