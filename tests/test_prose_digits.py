"""No sentence the data can contradict: the chapters' prose types no number of its own.

Every number about data, a measurement or the paper in a chapter's markdown comes from a code
cell through glue (``{glue:text}`key```), or — for notation and design constants — is written
as math (``$T = 4$``). This test strips from the markdown cells of ``book/chapters/NN_*.ipynb``
the short :data:`ALLOWED` list (names and references), then what may hold digits (glue and other
MyST roles, math, code, fenced code and figure blocks, link targets, HTML tags, dates), and fails
on any digit left. The bodies of fenced admonitions and notes are prose and are checked.
"""

import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book" / "chapters").glob("[0-9][0-9]_*.ipynb"))

MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|"
          "December")

PROSE_DIRECTIVES = ("admonition", "note", "tip", "hint", "important", "warning", "caution",
                    "attention", "danger", "error", "seealso")
"""Fenced directives whose body is prose (checked); other fenced blocks are code or figures."""

FENCED = re.compile(r"```(\{[\w:-]+\})?[^\n]*\n(.*?)```", re.S)


def _fenced(m: re.Match) -> str:
    """A fenced block: the body of a prose directive (without its ``:option:`` lines), else
    nothing."""
    name = (m.group(1) or "").strip("{}")
    if name not in PROSE_DIRECTIVES:
        return " "
    return "\n".join(line for line in m.group(2).splitlines()
                     if not line.lstrip().startswith(":"))


STRIPPED = [
    re.compile(r"\$\$.*?\$\$", re.S),                    # display math
    re.compile(r"\$[^$\n]+\$"),                          # inline math
    re.compile(r"\{[a-z][\w:-]*\}`[^`]*`"),              # roles: glue, cite, numref, doc, eq
    re.compile(r"`[^`]*`"),                              # code spans (names, commit hashes)
    re.compile(r"\]\([^)\s]*\)"),                        # link targets
    re.compile(r"<[^>\n]+>"),                            # HTML tags
    re.compile(rf"\b(?:(?:{MONTHS}) )?(?:19|20)\d\d(?:-\d\d-\d\d)?\b"),  # dates and years
]

ALLOWED = {
    # names that contain digits
    r"\b(?:PreAct-)?ResNet-(?:18|19|34)\b": "architecture names",
    r"\bPreAct-34\b": "the paper's short name of PreAct-ResNet-34",
    r"\bCIFAR-10(?:0|/100)?\b": "data set names",
    r"\bCIFAR10-DVS\b": "data set name",
    r"\b(?:bf16|fp32|float32|float64)\b": "number formats",
    r"\b[Tt]op-1\b": "the accuracy measure's name",
    r"\bSHA-256\b": "hash function name",
    r"\bAVX-512\b": "instruction set name",
    # references within the book
    r"\b[Cc]hapters? \d+(?:(?:–| to | and |, )\d+)*\b": "references to chapters",
    r"\b[Pp]ages \d+(?:(?:–| to | and |, )\d+)*\b": "references to pages (= chapters)",
    r"\[[^\]]*\]\(\d\d_[^)\s]*\)": "the text of a link to a chapter",
    r"\b[Tt]ables? \d+\b": "the paper's tables",
    r"\bExercises? \d+\.\d+(?:(?:–| to | and |, )\d+\.\d+)*\b": "exercise numbers",
    r"§\d+": "section numbers",
    r"\b(?:tutorials|sections?) \d+(?:–\d+)?\b":
        "parts of a cited work (snnTorch's tutorials, a paper's section)",
    r"\*\*Time\.\*\*[^\n]*(?:\n[^\n]+)*":
        "the reading-time estimate of a before-you-start box (the author's guess, not data)",
    r"^[ \t]*\d+\. ": "ordered-list markers",
}

ALLOWED_RE = re.compile("|".join(f"(?:{p})" for p in ALLOWED), re.M)
DIGITS = re.compile(r"[\w.%-]*\d[\w.%-]*")


def prose(markdown: str) -> str:
    """``markdown`` without what may hold digits (each piece replaced by a space)."""
    markdown = ALLOWED_RE.sub(" ", markdown)  # first: a chapter link's text precedes its target
    markdown = FENCED.sub(_fenced, markdown)
    for pattern in STRIPPED:
        markdown = pattern.sub(" ", markdown)
    return markdown


def typed_numbers(path: pathlib.Path) -> list[str]:
    """``"cell N: token in …context…"`` for every digit left in the prose of ``path``."""
    found = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        text = prose("".join(cell["source"]))
        for m in DIGITS.finditer(text):
            context = " ".join(text[max(0, m.start() - 40):m.end() + 30].split())
            found.append(f"cell {i}: {m.group(0)!r} in …{context}…")
    return found


def test_there_are_chapters():
    assert CHAPTERS


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_prose_types_no_number(path):
    found = typed_numbers(path)
    assert not found, ("numbers typed in the prose: glue them from the records, the paper "
                       "tables or the configuration, or write notation as $math$:\n"
                       + "\n".join(found))


@pytest.mark.parametrize("text, left", [
    ("ESD gains 0.54 points at T = 2", ["0.54", "2"]),
    ("{glue:text}`gain:.2f` points at $T = 2$ on CIFAR-10 (2025)", []),
    ("see [chapter 4](04_table1_static.ipynb) and Exercise 2.3", []),
    ("1. first\n2. second, ResNet-18 and `a5d2451`", []),
    ("the grid took 76.8 minutes", ["76.8"]),
    ("```{note}\n:class: x\nwidth 0.125 here\n```\n```python\nx = 3\n```", ["0.125"]),
    ("```{glue:figure} fig_4\n:name: a\nCaption\n```", []),
    ("**Time.** About 10 minutes for the neuron,\n5 for memory.\n\nThen 7 runs.", ["7"]),
])
def test_the_scanner(text, left):
    assert DIGITS.findall(prose(text)) == left
