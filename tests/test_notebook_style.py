"""Source notebooks: stored without outputs, typed papermill parameters, python3 kernel, thin.

Checked for every notebook in ``book/chapters`` and ``book/experiments``:

- no outputs and no execution counts (executed copies live in ``book/_executed`` and
  ``papermill_runs``, never beside the sources);
- the first code cell is tagged ``parameters`` and holds only ``name = <primitive>`` assignments,
  each with a ``# type:`` comment (papermill and ``papermill.inspect_notebook`` read them);
- the kernelspec is ``python3``.

Chapter notebooks additionally: are named ``NN_name.ipynb``, define no functions or classes
(reusable code belongs in ``esdlib``), and validate every parameter in the code cell right after
the parameters cell.
"""

import ast
import pathlib
import re

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book" / "chapters").glob("*.ipynb"))
EXPERIMENTS = sorted((ROOT / "book" / "experiments").glob("*.ipynb"))
NOTEBOOKS = CHAPTERS + EXPERIMENTS
PRIMITIVES = (bool, int, float, str, type(None))
DEF_OR_CLASS = re.compile(r"^\s*(async\s+def|def|class)\s", re.MULTILINE)


def _ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _parameters(cell) -> dict:
    """``{name: value}`` of a parameters cell; fails unless it is typed primitive assignments."""
    tree = ast.parse(cell.source)
    lines = cell.source.splitlines()
    params = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 \
            and isinstance(node.targets[0], ast.Name), \
            f"parameters cell may hold only `name = value` lines, got: {ast.unparse(node)}"
        value = ast.literal_eval(node.value)
        name = node.targets[0].id
        assert isinstance(value, PRIMITIVES), f"parameter {name} is not a primitive: {value!r}"
        line = lines[node.lineno - 1]
        assert re.search(r"#\s*type:\s*\w+", line), f"parameter {name} lacks a `# type:` comment"
        params[name] = value
    assert params, "the parameters cell is empty"
    return params


def test_there_are_chapter_notebooks():
    assert CHAPTERS, "no notebooks in book/chapters"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"cells {dirty} carry outputs: clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_typed_parameters_cell_first(path):
    nb = nbformat.read(path, as_version=4)
    code = _code_cells(nb)
    assert code, "no code cells"
    assert "parameters" in code[0].metadata.get("tags", []), \
        "the first code cell must be tagged `parameters`"
    _parameters(code[0])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_python3_kernel(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", CHAPTERS, ids=_ids(CHAPTERS))
def test_chapter_is_thin(path):
    from esdlib.bookbuild import CHAPTER_PATTERN

    assert CHAPTER_PATTERN.match(path.name), f"{path.name} is not named NN_name.ipynb"
    nb = nbformat.read(path, as_version=4)
    offending = [i for i, c in enumerate(nb.cells)
                 if c.cell_type == "code" and DEF_OR_CLASS.search(c.source)]
    assert not offending, f"cells {offending} define functions/classes: move them to esdlib"


@pytest.mark.parametrize("path", CHAPTERS, ids=_ids(CHAPTERS))
def test_chapter_validates_its_parameters_next(path):
    nb = nbformat.read(path, as_version=4)
    code = _code_cells(nb)
    params = _parameters(code[0])
    assert len(code) > 1, "no cell after the parameters cell"
    names = {n.id for n in ast.walk(ast.parse(code[1].source)) if isinstance(n, ast.Name)}
    missing = sorted(set(params) - names)
    assert not missing, f"the cell after the parameters does not check {missing}"
