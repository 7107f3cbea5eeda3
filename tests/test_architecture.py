"""The architecture's rules: who may import whom, where files are located, one make target per job.

Layers, bottom up: the core (the method: neurons, passes, layers, losses, methods, models), then
data and io, then the run layer (``esdlib.train``), then the opt-in packages (analysis, bench),
the CLI and the book (``esdbook``). A layer never imports one above it:

- ``esdlib`` never imports the book package ``esdbook``;
- the core never imports data sets, the run layer, analysis, benchmark or CLI: the method can be
  read, imported and tested without them; data and io never import the run layer or above;
- the run layer never imports the opt-in packages, the CLI or the book;
- ``import esdlib`` loads neither the opt-in packages nor pandas (checked in a fresh interpreter);
- only ``esdlib.train.paths`` locates the repository from ``__file__``;
- the Makefile has one target per job: ``test``, ``reproduce``, ``book``, ``bench``.

Imports are read with :mod:`ast` from the sources (also those inside functions), relative imports
resolved; nothing is imported.
"""

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ESDLIB = ROOT / "esdlib"

CORE = ("neurons", "passes", "layers", "losses", "methods", "models")
"""The method: modules and packages of esdlib that import nothing above them."""

BELOW_RUN_LAYER = (*CORE, "data", "io")
"""The core with the data sets and the file writers: what the run layer builds on."""

ABOVE_RUN_LAYER = ("esdlib.analysis", "esdlib.bench", "esdlib.cli", "esdbook")
"""The opt-in packages, the command line and the book."""

NOT_FROM_BELOW_RUN_LAYER = ("esdlib.train", *ABOVE_RUN_LAYER)
NOT_FROM_CORE = ("esdlib.data", *NOT_FROM_BELOW_RUN_LAYER)


def module_name(path: pathlib.Path) -> str:
    """``esdlib/data/__init__.py`` -> ``esdlib.data``; ``esdlib/io.py`` -> ``esdlib.io``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports (function-level imports included), as absolute dotted names;
    ``from m import n`` counts as ``m`` and ``m.n`` (``n`` may be a submodule)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def sources(*names: str) -> list[pathlib.Path]:
    """The source files of esdlib's modules and packages ``names``."""
    out = []
    for name in names:
        path = ESDLIB / name
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return out


def _under(names, prefixes) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


def _ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


ALL = sorted(ESDLIB.rglob("*.py"))
CORE_FILES = sources(*CORE)
DATA_IO_FILES = sources("data", "io")
RUN_LAYER_FILES = sources("train")


def test_the_rules_name_modules_that_exist():
    """A rule about a module that was renamed or removed checks nothing."""
    for name in BELOW_RUN_LAYER:
        assert (ESDLIB / f"{name}.py").is_file() or (ESDLIB / name / "__init__.py").is_file(), name
    for name in NOT_FROM_CORE:
        parts = name.split(".")
        where = ROOT.joinpath(*parts) if parts[0] == "esdlib" else ROOT / "book" / name
        assert where.with_suffix(".py").is_file() or (where / "__init__.py").is_file(), name
    assert len(CORE_FILES) >= 6 and DATA_IO_FILES and RUN_LAYER_FILES


def test_relative_imports_are_resolved():
    found = imported_modules(ESDLIB / "data" / "__init__.py")  # ``from .build import ...``
    assert "esdlib.data.build" in found and not any(m.startswith(".") for m in found)
    found = imported_modules(ESDLIB / "data" / "digits.py")
    assert any(m.startswith("esdlib.data.") for m in found)
    assert not any(m.startswith(".") for m in found)


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_esdlib_never_imports_the_book(path):
    assert not _under(imported_modules(path), ("esdbook",))


@pytest.mark.parametrize("path", CORE_FILES, ids=_ids(CORE_FILES))
def test_core_never_imports_data_run_layer_analysis_bench_cli_or_book(path):
    assert not _under(imported_modules(path), NOT_FROM_CORE)


@pytest.mark.parametrize("path", DATA_IO_FILES, ids=_ids(DATA_IO_FILES))
def test_data_and_io_never_import_the_run_layer_or_above(path):
    assert not _under(imported_modules(path), NOT_FROM_BELOW_RUN_LAYER)


@pytest.mark.parametrize("path", RUN_LAYER_FILES, ids=_ids(RUN_LAYER_FILES))
def test_run_layer_never_imports_optional_packages_the_cli_or_the_book(path):
    assert not _under(imported_modules(path), ABOVE_RUN_LAYER)


@pytest.mark.slow  # a fresh interpreter pays the torch import (3-5 s)
def test_import_esdlib_loads_no_opt_in_package_and_no_pandas():
    """In a fresh interpreter (this process has imported everything already)."""
    code = ("import sys, esdlib; print(sorted(m for m in sys.modules if m == 'pandas' or "
            f"m.split('.')[0] == 'esdbook' or m.startswith({ABOVE_RUN_LAYER[:3]!r})))")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120, cwd=ROOT, env=env).stdout
    assert out.strip() == "[]"


def test_only_paths_locates_the_repository_from_its_own_file():
    offenders = [p.relative_to(ROOT).as_posix() for p in ALL
                 if ".parents[" in p.read_text(encoding="utf-8") and p.name != "paths.py"]
    assert offenders == []


def test_makefile_has_one_target_per_job():
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    assert {"test", "reproduce", "book", "bench"} <= targets
