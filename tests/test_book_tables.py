"""Tables of the book's chapters: every table a chapter shows is numbered and titled in its
caption (``Table <chapter>.<k>: …``, numbered in page order), and the numbering helper of
``esdbook.display`` restarts on each page."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from esdbook import display

EXECUTED = Path(__file__).resolve().parents[1] / "book" / "_executed"
CAPTION = re.compile(r"<caption>(.*?)</caption>", re.S)


def _shown_tables(path: Path) -> list[str]:
    """The HTML of every table a page shows (glue payloads, pasted elsewhere, excluded)."""
    shown = []
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        for out in cell.get("outputs", []):
            html = "".join(out.get("data", {}).get("text/html", ""))
            if "<table" in html and "scrapbook" not in out.get("metadata", {}):
                shown.append(html)
    return shown


@pytest.mark.parametrize("page", sorted(EXECUTED.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_every_table_of_a_chapter_is_numbered_and_titled_in_page_order(page):
    chapter = int(page.name[:2])
    tables = _shown_tables(page)
    assert tables, f"{page.name} shows no table"
    for k, html in enumerate(tables, start=1):
        caption = CAPTION.search(html)
        assert caption, f"{page.name}: table {k} has no caption"
        head = f"Table {chapter}.{k}: "
        assert caption.group(1).startswith(head), f"{page.name}: {caption.group(1)[:80]!r}"
        assert len(caption.group(1)) > len(head) + 10, f"{page.name}: table {k} has no title"


def test_numbering_restarts_per_page_and_is_off_outside_a_chapter():
    df = pd.DataFrame({"a": [1.5, 2.5]})
    try:
        display.number_tables(4)
        first = display.table(df, title="one").data
        second = display.html_table(df, {"a": "{:.1f}"}, title="two").data
        display.number_tables(5)
        again = display.table(df, title="three").data
        display.number_tables(None)
        bare = display.table(df, title="four").data
    finally:
        display.number_tables(None)
    assert "Table 4.1: one" in first and "Table 4.2: two" in second
    assert "Table 5.1: three" in again and ">four<" in bare and "Table" not in bare
