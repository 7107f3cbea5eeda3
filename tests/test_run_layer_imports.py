"""Import directions of the run layer and the benchmark (parsed from the sources, nothing run).

The core never imports the run layer; the run layer (``esdlib.train``) never imports the opt-in
packages or the book tooling; only ``esdlib.train.paths`` locates files from ``__file__``.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "esdlib"
CORE = ("neurons", "passes", "layers", "losses", "methods", "models", "data", "io")
NOT_FROM_TRAIN = ("esdlib.bench", "esdlib.analysis", "esdbook")


def _imports(path: pathlib.Path) -> set[str]:
    """Every module named by an import statement of ``path`` (function-level ones included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _sources(*parts: str) -> list[pathlib.Path]:
    out = []
    for part in parts:
        path = PKG / part
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return [p for p in out if p.is_file()]


def test_the_rules_name_modules_that_exist():
    """A rule about a module that was renamed or removed checks nothing."""
    for name in CORE:
        assert (PKG / f"{name}.py").is_file() or (PKG / name / "__init__.py").is_file(), name
    for name in NOT_FROM_TRAIN:
        parts = name.split(".")
        where = ROOT.joinpath(*parts) if parts[0] == "esdlib" else ROOT / "book" / name
        assert where.with_suffix(".py").is_file() or (where / "__init__.py").is_file(), name


def _hits(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("path", _sources(*CORE), ids=lambda p: str(p.relative_to(PKG)))
def test_core_never_imports_the_run_layer(path):
    assert not _hits(_imports(path), ("esdlib.train", *NOT_FROM_TRAIN))


@pytest.mark.parametrize("path", _sources("train"), ids=lambda p: str(p.relative_to(PKG)))
def test_run_layer_never_imports_optional_packages_or_the_book(path):
    assert not _hits(_imports(path), NOT_FROM_TRAIN)


def test_only_paths_locates_the_repository_from_its_own_file():
    offenders = [str(p.relative_to(ROOT)) for p in PKG.rglob("*.py")
                 if ".parents[" in p.read_text(encoding="utf-8") and p.name != "paths.py"]
    assert offenders == []
