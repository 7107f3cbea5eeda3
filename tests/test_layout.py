"""Rules that keep the architecture visible: who may import whom, one make target per job.

- ``esdlib`` never imports the book package ``esdbook``;
- the core (neurons, passes/modes, layers/conv/norm, losses, methods, models) never imports the
  run layer, the analysis, the benchmark or the book: the method can be read, imported and
  tested without them;
- the Makefile has one target per job: ``test``, ``reproduce``, ``book``, ``bench``.

Imports are read with :mod:`ast` (also those inside functions), relative imports resolved.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ESDLIB = ROOT / "esdlib"

CORE = ("neurons", "modes", "passes", "conv", "norm", "layers", "losses", "methods", "models")
"""Core modules and packages of esdlib (old and new names, so the rule holds across renames)."""

NOT_FROM_CORE = ("esdlib.train", "esdlib.config", "esdlib.engine", "esdlib.results",
                 "esdlib.records", "esdlib.metrics", "esdlib.gradients", "esdlib.runtime",
                 "esdlib.analysis", "esdlib.evidence", "esdlib.bench", "esdlib.report",
                 "esdlib.cli", "esdlib.data", "esdbook")
"""What the core must not import: the run layer, data sets, analysis, benchmark, CLI, book."""


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names."""
    package = _module_name(path).split(".")
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


def _is_under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


ALL = sorted(ESDLIB.rglob("*.py"))
CORE_FILES = [p for p in ALL if p.relative_to(ESDLIB).parts[0].removesuffix(".py") in CORE]


def test_relative_imports_are_resolved():
    here = ESDLIB / "models" / "__init__.py"
    assert any(m.startswith("esdlib.models.") for m in imported_modules(here))


@pytest.mark.parametrize("path", ALL, ids=[p.relative_to(ROOT).as_posix() for p in ALL])
def test_esdlib_never_imports_the_book(path):
    bad = sorted(m for m in imported_modules(path) if _is_under(m, ("esdbook",)))
    assert not bad, f"{path.name} imports the book package: {bad}"


@pytest.mark.parametrize("path", CORE_FILES,
                         ids=[p.relative_to(ROOT).as_posix() for p in CORE_FILES])
def test_core_never_imports_the_run_layer_analysis_bench_or_book(path):
    bad = sorted(m for m in imported_modules(path) if _is_under(m, NOT_FROM_CORE))
    assert not bad, f"{path.relative_to(ROOT)} (core) imports {bad}"


def test_there_is_a_core():
    assert len(CORE_FILES) >= 6


def test_makefile_has_one_target_per_job():
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    assert {"test", "reproduce", "book", "bench"} <= targets
