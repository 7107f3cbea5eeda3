"""Execute the chapter notebooks and build the book's HTML.

1. :func:`execute_chapters` runs every chapter source ``book/chapters/NN_name.ipynb`` (stored
   without outputs) through papermill with the given parameters and writes the executed copy to
   ``book/_executed/NN_name.ipynb``, atomically (:func:`run_notebook` runs one notebook, also
   the experiment notebooks of :mod:`esdbook.reproduce`);
2. :func:`build_book` runs ``jupyter-book build`` (1.x) strictly (warnings are errors) and
   returns the path of the built ``index.html``.

The browser check of the built pages is :mod:`esdbook.check`; the command line is
``python -m esdbook {execute,build,check,all}``. Importing this module has no side effects;
papermill and jupyter-book are imported only by the functions that need them.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from esdbook.chapter import check_parameter_names
from esdlib.io import commit_temp, remove_stale_temps, temp_path_for
from esdlib.train import paths

__all__ = [
    "BookBuildError",
    "CHAPTER_PATTERN",
    "ChapterExecutionError",
    "KernelSession",
    "PARAMETER_TYPES",
    "build_book",
    "chapter_notebooks",
    "check_parameter_values",
    "execute_chapters",
    "executed_profiles",
    "execution_error_message",
    "hide_injected_parameters",
    "ipc_kernel_manager",
    "is_committed_book",
    "kernel_environment",
    "run_notebook",
    "shown_path",
    "stage_book",
    "stale_temp_notebooks",
]

CHAPTER_PATTERN = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")
"""File names of chapter notebooks: two digits, an underscore, a name (``02_rate_bp.ipynb``)."""

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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


def chapter_notebooks(src_dir: str | os.PathLike) -> list[Path]:
    """The chapter notebooks of a folder, in chapter order.

    Args:
        src_dir: folder holding ``NN_name.ipynb`` files.

    Returns:
        Sorted paths of the files matching :data:`CHAPTER_PATTERN`.
    """
    return sorted(p for p in Path(src_dir).iterdir() if CHAPTER_PATTERN.match(p.name))


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
    jobs: int | None = None,
    only: Iterable[str] | None = None,
) -> list[Path]:
    """Execute the chapter notebooks of ``src_dir`` with papermill into ``out_dir``.

    Each notebook receives the entries of ``parameters`` that its ``parameters`` cell declares
    (papermill injects them after that cell). The executed notebook is written to a hidden
    temporary file in ``out_dir`` and moved over ``out_dir/<same name>`` only when execution
    succeeded, so a failure never leaves a torn or half-executed chapter behind. Notebooks run
    with the working directory ``cwd`` (default: the project root above ``src_dir``, where
    ``pyproject.toml`` lives), so relative paths such as ``results`` resolve; ``MPLBACKEND`` is
    removed from the kernels' environment so figures display inline.

    Args:
        src_dir: folder of source notebooks ``NN_name.ipynb`` (stored without outputs).
        out_dir: destination folder (created if needed), e.g. ``book/_executed``.
        parameters: papermill parameters, e.g. ``{"profile": "smoke", "results_dir": "results"}``.
        kernel: Jupyter kernel name.
        progress: show a tqdm progress bar over the notebooks.
        cwd: working directory of the kernels.
        timeout: per-cell time limit in seconds (``None``: no limit).
        threads: CPU threads per kernel (sets ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` for
            the kernels); ``None`` keeps the environment's setting. On a small, shared CPU
            ``threads=1`` is often several times faster for the small networks of the book.
        jobs: chapters executed at the same time, each in its own fresh kernel (default: one
            per CPU). The chapters only read records, so their order does not matter; after a
            failure no further chapter is started.
        only: execute only these chapters (names without ``.ipynb``, e.g. ``"05_dvs"``);
            default: all.

    Returns:
        Paths of the executed notebooks, in chapter order.

    Raises:
        FileNotFoundError: ``src_dir`` has no chapter notebooks.
        ValueError: a parameter that no notebook declares (the message lists the declared
            ones), a chapter in ``only`` that ``src_dir`` lacks, or a bad ``threads``/``jobs``.
        ChapterExecutionError: a notebook failed; names it and gives the papermill error.
    """
    import papermill
    from tqdm import tqdm

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    notebooks = chapter_notebooks(src_dir)
    if not notebooks:
        raise FileNotFoundError(f"no chapter notebooks (NN_name.ipynb) in {src_dir}")
    if only is not None:
        only = [only] if isinstance(only, str) else list(only)
        missing = sorted(set(only) - {nb.stem for nb in notebooks})
        if missing:
            raise ValueError(f"no chapter(s) {missing} in {src_dir}; chapters: "
                             f"{', '.join(nb.stem for nb in notebooks)}")
        notebooks = [nb for nb in notebooks if nb.stem in only]
    declared = {nb: set(papermill.inspect_notebook(str(nb))) for nb in notebooks}
    known = set().union(*declared.values())
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(f"unknown chapter parameter(s) {unknown}; the notebooks in {src_dir} "
                         f"declare: {sorted(known)}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    workdir = Path(cwd) if cwd is not None else paths.project_root(src_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = threading.Event()

    def run(nb_path: Path) -> None:
        if failed.is_set():
            return  # an earlier chapter failed: this one is not started
        params = {k: v for k, v in parameters.items() if k in declared[nb_path]}
        try:
            run_notebook(nb_path, out_dir / nb_path.name, params, cwd=workdir,
                         timeout=timeout, kernel=kernel)
        except BaseException:
            failed.set()
            raise

    with (kernel_environment(threads), tqdm(total=len(notebooks), desc="chapters", unit="nb",
                                            disable=not progress) as bar,
          cf.ThreadPoolExecutor(jobs) as pool):
        futures = {pool.submit(run, nb): nb for nb in notebooks}
        try:
            for fut in cf.as_completed(futures):
                fut.result()
                bar.set_postfix_str(futures[fut].name)
                bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the running ones end, none starts
            raise
    return [out_dir / nb.name for nb in notebooks]


def shown_path(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` relative to ``root`` when it lies inside it, else as given (absolute).

    Executed notebooks are read by people on other machines: a path inside the project is
    written relative to it, so pages and metadata carry no machine paths.
    """
    path, root = Path(path).resolve(), Path(root).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


PARAMETER_TYPES = (str, int, float, bool, type(None))
"""The only value types a papermill parameter may have (exactly these types, no subclasses):
papermill writes parameters into the notebook as Python source, and its encoding of anything
else (``bytes`` from a YAML ``!!binary`` value, objects with their own ``repr``) can run code."""


def check_parameter_values(parameters: Mapping[str, Any], where: str = "the notebook") -> None:
    """Refuse parameters that papermill could not write into a notebook as plain literals.

    papermill parameters are code: papermill injects them as Python assignments before the
    notebook's own checks run. A name must be a Python identifier (not a keyword) and a value
    one of :data:`PARAMETER_TYPES`.

    Args:
        parameters: name → value.
        where: the notebook, for the message.

    Raises:
        ValueError: the first bad name or value, named.
    """
    import keyword

    for name, value in parameters.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"parameter name {name!r} for {where} is not a Python identifier")
        if type(value) not in PARAMETER_TYPES:
            raise ValueError(f"parameter {name!r} for {where} is a {type(value).__name__}; "
                             "only str, int, float, bool and None values are passed to a "
                             "notebook")


@functools.cache
def ipc_kernel_manager() -> type:
    """A Jupyter ``KernelManager`` class whose kernels listen on Unix sockets, not TCP.

    A kernel on TCP accepts code from any local user who reads its ports (the messages are
    signed, but ipykernel warns on every start that they are not encrypted). These kernels
    talk over socket files in a fresh ``0700`` folder under the temporary directory, removed
    when the kernel is shut down: only this user can connect, and no warning is printed. Every
    kernel ``esdbook`` starts (chapters, grid points, :class:`KernelSession`) uses it.
    """
    import shutil
    import tempfile

    from jupyter_client.manager import KernelManager
    from traitlets import CaselessStrEnum, default

    class IpcKernelManager(KernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _private_socket_folder(self) -> str:
            return os.path.join(tempfile.mkdtemp(prefix="esdbook-kernel-"), "ipc")

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client interrupts every kernel before shutting it down. An idle kernel
            # ignores the signal, but one still inside a message handler (likely while kernels
            # share the CPUs) prints "KeyboardInterrupt caught in kernel" to our stderr. The
            # kernels shut down here are idle, or are killed after the shutdown wait.
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart and self.transport == "ipc":
                shutil.rmtree(os.path.dirname(self.ip), ignore_errors=True)

    return IpcKernelManager


class KernelSession:
    """One Jupyter kernel that executes several notebooks in turn (the points of a grid).

    Starting a kernel and importing PyTorch, esdlib and pandas in it costs about 5 s on the
    CPU host, as much as a tenth of a small grid point; a session pays it once per worker.
    Before each notebook the kernel's user namespace, input history and execution counter are
    reset (``InteractiveShell.reset``), so every notebook starts from an empty namespace and
    its saved copy is numbered from 1 as in a fresh kernel; only imported modules (and their
    caches, e.g. the generated digit images) are kept. A kernel that died is started again;
    :func:`run_notebook` discards the kernel after a failed notebook, and a kernel is retired
    after ``max_notebooks`` notebooks so that no state accumulates without bound.

    Use it as a context manager (the kernel is shut down on exit), one per thread.

    Args:
        cwd: working directory of the kernel (every notebook run in it shares it).
        kernel: Jupyter kernel name.
        max_notebooks: notebooks per kernel before a fresh one is started.
    """

    _RESET = "get_ipython().reset(new_session=True)\nimport gc as _gc; _gc.collect(); del _gc"

    def __init__(self, cwd: str | os.PathLike, kernel: str = "python3",
                 max_notebooks: int = 50) -> None:
        if max_notebooks < 1:
            raise ValueError(f"max_notebooks must be >= 1, got {max_notebooks}")
        self.cwd = str(cwd)
        self.kernel = kernel
        self.max_notebooks = max_notebooks
        self._km: Any = None
        self._used = 0

    def manager(self) -> Any:
        """The kernel manager of a live kernel with an empty namespace (started if needed)."""
        if self._km is not None and (not self._km.is_alive() or self._used >= self.max_notebooks
                                     or not self._reset()):
            self.discard()  # dead, retired, or its reset failed (never expected): a new one
        if self._km is None:
            km = ipc_kernel_manager()(kernel_name=self.kernel)
            km.start_kernel(cwd=self.cwd)
            self._km = km
        self._used += 1
        return self._km

    def _reset(self) -> bool:
        """Reset the used kernel's namespace, history and counter; whether that worked."""
        kc = self._km.blocking_client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            reply = kc.execute_interactive(self._RESET, store_history=False, timeout=60)
        finally:
            kc.stop_channels()
        return reply["content"]["status"] == "ok"

    def discard(self) -> None:
        """Shut the kernel down (the next :meth:`manager` call starts a fresh one)."""
        km, self._km, self._used = self._km, None, 0
        if km is not None:
            with contextlib.suppress(Exception):
                km.shutdown_kernel(now=True)

    def __enter__(self) -> KernelSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.discard()


@functools.cache
def _shared_kernel_engine() -> str:
    """Register (once) and name the papermill engine that runs a notebook in a given kernel.

    papermill passes ``km`` through to its notebook client, which then neither starts nor shuts
    down the kernel but also leaves its own client's channels open; this engine closes them.
    """
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.utils import merge_kwargs, remove_args

    name = "esdbook-shared-kernel"

    class SharedKernelEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False,
                                     stdout_file=None, stderr_file=None, start_timeout=60,
                                     execution_timeout=None, **kwargs):
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            client = PapermillNotebookClient(nb_man, **merge_kwargs(
                kwargs, timeout=execution_timeout, startup_timeout=start_timeout,
                kernel_name=kernel_name, log_output=log_output, stdout_file=stdout_file,
                stderr_file=stderr_file))
            try:
                return client.execute()
            finally:
                if client.kc is not None:
                    client.kc.stop_channels()

    papermill_engines.register(name, SharedKernelEngine)
    return name


def run_notebook(src: str | os.PathLike, target: str | os.PathLike,
                 parameters: Mapping[str, Any], *, cwd: str | os.PathLike,
                 timeout: float | None = None, kernel: str = "python3",
                 session: KernelSession | None = None) -> Path:
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
        session: run in this :class:`KernelSession`'s kernel (its ``cwd`` and kernel name
            apply) instead of a fresh kernel; after a failure its kernel is discarded.

    Returns:
        ``target`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a parameter the notebook's ``parameters`` cell does not declare, or a value
            that is not a plain literal (:func:`check_parameter_values`), before anything runs;
            the message lists the valid names.
        ChapterExecutionError: the notebook failed (names it and gives the cell's error).
    """
    import nbformat
    import papermill

    src, target = Path(src), Path(target)
    check_parameter_values(parameters, src.name)
    check_parameter_names(parameters, papermill.inspect_notebook(str(src)), src.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(target, suffix=".ipynb")  # also removes stale ones of killed runs
    remove_stale_temps(target.with_name(target.stem), ".ipynb")  # older ".<stem>.*.ipynb" ones
    shared = ({"kernel_manager_class": ipc_kernel_manager()} if session is None else
              {"km": session.manager(), "engine_name": _shared_kernel_engine()})
    try:
        papermill.execute_notebook(
            str(src), str(tmp), parameters=dict(parameters), kernel_name=kernel,
            progress_bar=False, log_output=False, request_save_on_cell_execute=False,
            cwd=str(cwd), execution_timeout=timeout, **shared,
        )
        nb = nbformat.read(tmp, as_version=4)
        meta = nb.metadata.setdefault("papermill", {})
        meta["input_path"] = shown_path(src, cwd)  # no machine paths in what readers get
        meta["output_path"] = shown_path(target, cwd)
        hide_injected_parameters(nb)
        nbformat.write(nb, tmp)
        commit_temp(tmp, target)  # mode from the umask (mkstemp alone gives 0600)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if session is not None:  # an interrupted or failed kernel is not used again
            session.discard()
        if isinstance(exc, Exception):
            raise ChapterExecutionError(src.name, execution_error_message(exc)) from exc
        raise
    return target



def hide_injected_parameters(nb: Any) -> None:
    """Tag papermill's injected-parameters cell ``remove-input``: the page shows its visible
    ``parameters`` cell once, and a ``results_dir`` given as an absolute path (a machine path)
    never reaches the reader. The values stay in the notebook's ``papermill.parameters``
    metadata."""
    for cell in nb.cells:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-input" not in tags:
            tags.append("remove-input")


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


_STAGING_PREFIX = ".esdbook-build-"


def stale_temp_notebooks(book_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary notebooks that killed executions left in the book's folders, and
    return the ones that remain (being written now, or left on another host).

    :func:`run_notebook` writes ``.<name>.ipynb.<host>-<pid>.<random>.ipynb`` beside its
    target; a writer killed with ``kill -9`` leaves it behind (:func:`esdlib.io.
    remove_stale_temps` decides what is stale).
    """
    book_dir = Path(book_dir)
    left = []
    for folder in [book_dir, *(p for p in book_dir.iterdir()
                               if p.is_dir() and not p.name.startswith(("_build", "."))
                               and p.name != "_vendor")]:
        for tmp in sorted(folder.glob(".*.ipynb")):
            target = tmp.name[1:].partition(".ipynb.")[0] + ".ipynb"
            remove_stale_temps(folder / target, ".ipynb")
            if tmp.exists():
                left.append(tmp)
    return left


def executed_profiles(book_dir: str | os.PathLike) -> dict[str, list[str]]:
    """The ``profile`` parameter each executed notebook of the toc was run with.

    Returns:
        profile → the toc pages (``_executed/NN_name``) executed with it; a notebook without
        papermill parameters counts as ``"unknown"``. Markdown pages are not listed.
    """
    import json

    book_dir = Path(book_dir)
    found: dict[str, list[str]] = {}
    for page in _toc_files(book_dir):
        path = book_dir / f"{page}.ipynb"
        if not path.is_file():
            continue
        try:
            meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
            profile = str(meta.get("papermill", {}).get("parameters", {}).get("profile",
                                                                                "unknown"))
        except (ValueError, AttributeError, OSError) as err:
            raise BookBuildError(f"{path} is not a readable notebook ({err}); execute the "
                                 "chapters again (`python -m esdbook execute`)") from err
        found.setdefault(profile, []).append(page)
    return found


def _remove_stale_staging(out: Path) -> None:
    import shutil

    for old in out.glob(_STAGING_PREFIX + "*"):
        m = re.match(re.escape(_STAGING_PREFIX) + r"(\d+)-", old.name)
        if m and int(m.group(1)) != os.getpid():
            try:
                os.kill(int(m.group(1)), 0)
            except ProcessLookupError:
                shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass


def _publish(new_html: Path, final: Path) -> None:
    """Swap the freshly built ``new_html`` in as ``final`` (two renames; the old site is
    removed afterwards)."""
    import shutil
    import tempfile

    for _ in range(5):  # a concurrent build may publish between our two renames: try again
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-old-",
                                        dir=final.parent))
            os.replace(final, old / "html")
        try:
            os.replace(new_html, final)
        except OSError:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            continue
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise BookBuildError(f"could not publish the built book at {final}")


_NOT_STAGED = ("_executed", "_build", "esdbook", "experiments", "__pycache__")


def stage_book(book_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Copy the book's sources to ``<out_dir>/book`` for pages re-run with other parameters.

    The copy holds what a build reads (``_config.yml``, ``_toc.yml``, the Markdown pages,
    ``chapters/``, assets, the bibliography, the vendored MathJax), not the committed executed
    pages (``_executed``) nor the HTML (``_build``): executing and building the copy leaves
    ``book/`` as committed. Sources already in the copy are replaced; its own ``_executed`` and
    ``_build`` are kept (a later build replaces them).

    Args:
        book_dir: the book source folder.
        out_dir: where the copy goes; must not lie inside ``book_dir``.

    Returns:
        ``<out_dir>/book``.

    Raises:
        ValueError: ``out_dir`` is inside ``book_dir`` (or is it), or is a file.
    """
    import shutil

    book_dir, out_dir = Path(book_dir).resolve(), Path(out_dir).resolve()
    if out_dir == book_dir or book_dir in out_dir.parents:
        raise ValueError(f"--out {out_dir} lies inside the book folder {book_dir}; choose a "
                         "folder outside it (e.g. my_runs/)")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is not a folder")
    target = out_dir / "book"
    target.mkdir(parents=True, exist_ok=True)
    for item in book_dir.iterdir():
        if item.name in _NOT_STAGED or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target / item.name)
    return target


def is_committed_book(book_dir: str | os.PathLike) -> bool:
    """Whether ``book_dir`` is the project's own ``book/`` (whose ``_executed`` is committed)."""
    return Path(book_dir).resolve() == (paths.project_root() / "book").resolve()


def build_book(book_dir: str | os.PathLike, build_dir: str | os.PathLike | None = None,
               strict: bool = True) -> Path:
    """Build the book with ``jupyter-book build`` (1.x); chapters must already be executed.

    Runs ``jupyter-book build <book_dir> --path-output <staging> --all`` plus ``-W
    --keep-going`` when ``strict`` (every Sphinx warning fails the build, after all warnings
    have been reported), into a fresh hidden staging folder inside ``<build_dir>/_build``.
    Only a build that succeeded (and, when ``strict``, shows no damaged record) replaces
    ``<build_dir>/_build/html``: a failed build leaves the previous site as it was and
    publishes no page, and the site never holds stale pages of an earlier table of contents
    (every page, ``index.html`` included, is written by this build).

    Before building, temporary notebooks of killed chapter executions are removed
    (:func:`stale_temp_notebooks`); executed chapters of different profiles
    (:func:`executed_profiles`) fail a strict build and give a warning otherwise.

    Args:
        book_dir: the book source (holds ``_config.yml``, ``_toc.yml``).
        build_dir: output folder; the HTML lands in ``<build_dir>/_build/html``
            (default: ``book_dir``).
        strict: treat warnings as errors.

    Returns:
        Path of the built ``index.html``.

    Raises:
        BookBuildError: a page listed in ``_toc.yml`` does not exist (chapters not executed
            yet), a temporary notebook is still being written (named), the chapters were
            executed with different profiles (``strict``), or the build failed (the message
            ends with the last lines of its log), or, when ``strict``, a page shows a damaged
            record (:func:`damaged_record_pages`).
    """
    import shutil
    import tempfile
    import warnings

    book_dir = Path(book_dir)
    build_dir = Path(build_dir) if build_dir is not None else book_dir
    missing = [f for f in _toc_files(book_dir)
               if not any((book_dir / f"{f}{ext}").is_file() for ext in (".ipynb", ".md"))]
    if missing:
        raise BookBuildError(
            f"{book_dir / '_toc.yml'} lists pages that do not exist: {missing}; execute the "
            "chapters first (`python -m esdbook execute`)"
        )
    busy = stale_temp_notebooks(book_dir)
    if busy:
        raise BookBuildError(
            "temporary notebooks of a chapter execution in progress (or killed on another "
            f"host) are in the book: {[str(p) for p in busy]}; wait for it or delete them")
    profiles = executed_profiles(book_dir)
    if len(profiles) > 1:
        mixed = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(profiles.items()))
        message = (f"the chapters were executed with different profiles ({mixed}); execute "
                   "them all with one profile (`python -m esdbook execute --profile ...`)")
        if strict:
            raise BookBuildError(message)
        warnings.warn(message, stacklevel=2)
    out = build_dir / "_build"
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=out))
    try:
        cmd = [*_jupyter_book_command(), "build", str(book_dir), "--path-output", str(staging),
               "--all"]
        if strict:
            cmd += ["-W", "--keep-going"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        log = _ANSI.sub("", proc.stdout + proc.stderr)
        new_html = staging / "_build" / "html"
        if proc.returncode != 0 or not (new_html / "index.html").is_file():
            tail = "\n".join(log.strip().splitlines()[-60:])
            warned = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
            summary = "\n".join(warned[:30])
            raise BookBuildError(
                f"jupyter-book build failed (exit code {proc.returncode}): {' '.join(cmd)}\n"
                f"--- warnings/errors ---\n{summary}\n--- log (end) ---\n{tail}"
            )
        from esdbook.check import damaged_record_pages

        damaged = damaged_record_pages(new_html) if strict else []
        if damaged:
            raise BookBuildError("pages show damaged run records (repair or re-run them, e.g. "
                                 "`python -m esdbook reproduce`):\n" + "\n".join(damaged))
        _publish(new_html, out / "html")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "html" / "index.html"
