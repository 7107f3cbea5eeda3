"""Source notebooks: stored without outputs, typed papermill parameters, python3 kernel, short.

Checked for every notebook in ``book/chapters`` and ``book/experiments``:

- no outputs and no execution counts (executed copies live in ``book/_executed`` and
  ``papermill_runs``, never beside the sources);
- the first code cell is tagged ``parameters`` and holds only ``name = <primitive>`` assignments,
  each with a ``# type:`` comment (papermill and ``papermill.inspect_notebook`` read them);
- the kernelspec is ``python3``.

Chapter notebooks additionally: are named ``NN_name.ipynb``, define no functions or classes (they
belong in ``book/esdbook``), keep code cells short (:data:`MAX_LINES`), set no environment
variables, and validate every parameter in the code cell right after the parameters cell. Their
executed copies in ``book/_executed`` equal the sources apart from outputs and the injected
parameters, and glue only numbers and short labels (:data:`MAX_GLUE` characters).
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


TEACHING = ("01_introduction", "02_rate_bp", "03_self_distillation")
"""Chapters that build the method from scratch next to the library (the first implementation of
a concept is shown in full, as d2l does): their cells may be longer."""

MAX_LINES = 12
"""Non-blank lines of a code cell of a reproduction chapter (04–11): one table, figure or glue
step per cell, so that the page reads as text with numbers and every computation has a name in
``esdbook`` or ``esdlib.analysis``."""

MAX_TEACHING_LINES = 25
"""Non-blank lines of a code cell of a teaching chapter (01–03): a from-scratch computation
(a two-layer rate pass, the ESD loss by hand) fits one cell."""


def _lines(cell) -> int:
    return len([line for line in cell.source.splitlines() if line.strip()])


@pytest.mark.parametrize("path", CHAPTERS, ids=_ids(CHAPTERS))
def test_chapter_cells_are_short_and_define_nothing(path):
    from esdbook.build import CHAPTER_PATTERN

    assert CHAPTER_PATTERN.match(path.name), f"{path.name} is not named NN_name.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    offending = [i for i, c in code if DEF_OR_CLASS.search(c.source)]
    assert not offending, f"cells {offending} define functions/classes: move them to esdbook"
    limit = MAX_TEACHING_LINES if path.stem in TEACHING else MAX_LINES
    long = {i: _lines(c) for i, c in code if _lines(c) > limit}
    assert not long, f"cells longer than {limit} lines (cell: lines): {long}"


@pytest.mark.parametrize("path", CHAPTERS, ids=_ids(CHAPTERS))
def test_chapter_does_not_set_environment_variables(path):
    nb = nbformat.read(path, as_version=4)
    assert not [i for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and "os.environ" in c.source], \
        "pass folders explicitly (esdbook.open_chapter), not through the environment"


def _executed(path):
    return ROOT / "book" / "_executed" / path.name


def _input_cells(nb):
    """Cell types and sources, without papermill's injected-parameters cell."""
    return [(c.cell_type, c.source) for c in nb.cells
            if "injected-parameters" not in c.metadata.get("tags", [])]


@pytest.mark.parametrize("path", CHAPTERS, ids=_ids(CHAPTERS))
def test_executed_copy_equals_its_source(path):
    """book/_executed/NN.ipynb is generated from book/chapters/NN.ipynb and never edited: apart
    from outputs, execution counts, metadata and the injected parameters, the two are equal."""
    executed = _executed(path)
    assert executed.is_file(), f"{executed.name} missing: run `python -m esdbook execute`"
    source, copy = nbformat.read(path, as_version=4), nbformat.read(executed, as_version=4)
    assert _input_cells(copy) == _input_cells(source), (
        f"book/_executed/{path.name} differs from its source: edit book/chapters/{path.name} "
        "and re-execute (`python -m esdbook execute`)")


MAX_GLUE = 40
"""Longest glued text (esdbook.display.MAX_GLUE): numbers and short labels, not sentences."""


@pytest.mark.parametrize("path", CHAPTERS, ids=_ids(CHAPTERS))
def test_executed_pages_glue_numbers_and_short_labels(path):
    executed = _executed(path)
    if not executed.is_file():
        pytest.skip(f"{executed.name} not executed yet")
    nb = nbformat.read(executed, as_version=4)
    long = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is None:
                continue
            data = out.get("data", {})
            if any("image/" in mime for mime in data):
                continue  # a glued figure ({glue:figure}), captioned in the markdown
            if any(m.endswith("text/html") and ("<table" in str(v) or "<figure" in str(v))
                   for m, v in data.items()):
                continue  # a glued table or figure (the landing page pastes them)
            text = str(next(iter(data.values()), "")).strip("'\"")
            if len(text) > MAX_GLUE:
                long[name] = text
    assert not long, f"glued sentences (write the words in the markdown): {long}"


GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`:]+)")


@pytest.mark.parametrize("path", CHAPTERS, ids=_ids(CHAPTERS))
def test_every_glued_name_in_the_text_is_glued_by_the_page(path):
    """The prose quotes values by name ({glue:text}`name`); each name must be glued by a code
    cell of the executed page, or the strict build fails on a missing key."""
    executed = _executed(path)
    if not executed.is_file():
        pytest.skip(f"{executed.name} not executed yet")
    nb = nbformat.read(executed, as_version=4)
    quoted = {m for c in nb.cells if c.cell_type == "markdown"
              for m in GLUE_ROLE.findall(c.source)}
    glued = {out.get("metadata", {}).get("scrapbook", {}).get("name")
             for c in nb.cells for out in c.get("outputs", [])}
    assert not quoted - glued, f"quoted but never glued: {sorted(quoted - glued)}"


def test_glue_limit_is_the_book_packages():
    from esdbook.display import MAX_GLUE as BOOK_LIMIT

    assert BOOK_LIMIT == MAX_GLUE


@pytest.mark.parametrize("path", CHAPTERS, ids=_ids(CHAPTERS))
def test_chapter_validates_its_parameters_next(path):
    nb = nbformat.read(path, as_version=4)
    code = _code_cells(nb)
    params = _parameters(code[0])
    assert len(code) > 1, "no cell after the parameters cell"
    names = {n.id for n in ast.walk(ast.parse(code[1].source)) if isinstance(n, ast.Name)}
    missing = sorted(set(params) - names)
    assert not missing, f"the cell after the parameters does not check {missing}"
