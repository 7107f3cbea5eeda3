"""Formatting at display time: short labels for glue, notes for empty tables, HTML tables.

Glued values are numbers with their unit or short labels (at most :data:`MAX_GLUE` characters,
a rule tests/test_notebook_style.py checks on the executed pages); the words around them are
in the chapters' markdown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

__all__ = [
    "INDICATIVE_PROFILES",
    "MAX_GLUE",
    "glue_all",
    "html_table",
    "indicative_banner",
    "left_out_table",
    "note",
    "num",
    "pm_columns",
    "signed",
    "span",
]

MAX_GLUE = 40
"""Longest text a page may glue (a number with its unit, a verdict word, a scale label)."""

INDICATIVE_PROFILES = ("smoke", "quick")
"""Profiles whose pages are previews: unconverged runs of one seed, no verdicts."""


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def signed(x: float | None, unit: str = " pts", digits: int = 2) -> str:
    """``"+1.23 pts"`` / ``"-0.40 pts"``; ``"n/a"`` for None or NaN."""
    return "n/a" if _missing(x) else f"{x:+.{digits}f}{unit}"


def num(x: float | None, digits: int = 2, unit: str = "") -> str:
    """``x`` with ``digits`` decimals and ``unit``; ``"n/a"`` for None or NaN."""
    return "n/a" if _missing(x) else f"{x:.{digits}f}{unit}"


def span(values: Iterable[float], unit: str = "×") -> str:
    """The range of ``values`` as ``"0.91–1.05×"`` (one value when they agree; ``"n/a"`` if
    there is none)."""
    v = pd.Series(list(values), dtype=float).dropna()
    if not len(v):
        return "n/a"
    lo, hi = float(v.min()), float(v.max())
    return f"{lo:.2f}{unit}" if abs(hi - lo) < 0.005 else f"{lo:.2f}–{hi:.2f}{unit}"


def glue_all(values: dict[str, Any]) -> None:
    """``myst_nb.glue`` every item (``display=False``), refusing text longer than
    :data:`MAX_GLUE` characters: pages glue numbers and short labels, not sentences.

    Raises:
        ValueError: a value whose text is too long (the message names it).
    """
    from myst_nb import glue

    for name, value in values.items():
        if isinstance(value, str) and len(value) > MAX_GLUE:
            raise ValueError(f"glue {name!r} is {len(value)} characters long (> {MAX_GLUE}): "
                             f"write the words in the markdown and glue the numbers: {value!r}")
        glue(name, value, display=False)


def note(text: str, show: bool = True) -> Any:
    """A short Markdown note for a page (e.g. when a table is empty); ``None`` when not
    ``show`` (a cell then displays nothing)."""
    from IPython.display import Markdown

    return Markdown(text) if show else None


def html_table(df: pd.DataFrame, formats: dict[str, str] | None = None) -> Any:
    """``df`` as HTML without its index, with optional column formats (``"{:+.2f}"``)."""
    from IPython.display import HTML

    style = df.style.hide(axis="index")
    if formats:
        style = style.format(formats, na_rep="—")
    return HTML(style.to_html())


def indicative_banner(profile: str) -> Any:
    """An HTML banner for pages built from a preview profile (``None`` for the others).

    Displayed at the top of each reproduction chapter: the runs of ``smoke``/``quick`` are
    unconverged and have one seed, so nothing on the page is evidence.
    """
    from IPython.display import HTML

    if profile not in INDICATIVE_PROFILES:
        return None
    return HTML(
        '<div class="admonition warning"><p class="admonition-title">Indicative only</p>'
        f"<p>This page was built from the <code>{profile}</code> profile: short, unconverged "
        "runs of one seed. Its numbers preview the layout of the page; they are not evidence "
        "and no claim gets a verdict. The <code>default</code> profile gives the verdicts."
        "</p></div>")


def left_out_table(records: pd.DataFrame, profile: str) -> Any:
    """The records a page does not count, as an HTML table captioned "Records not counted on
    this page" (:func:`esdlib.analysis.runs.left_out`); ``None`` when every record counts."""
    from IPython.display import HTML

    from esdlib.analysis.runs import left_out

    t = left_out(records, profile)
    if not len(t):
        return None
    return HTML(t.style.hide(axis="index").set_caption("Records not counted on this page")
                .to_html())


def pm_columns(df: pd.DataFrame, *names: str, digits: int = 2) -> pd.DataFrame:
    """A display copy of ``df`` whose ``<name>_mean_%`` and ``<name>_std_%`` columns become one
    ``<name>_%`` column ``"mean ± std"`` (``"mean"`` alone where std is NaN, one seed)."""
    columns: dict[str, Any] = {}
    for col in df.columns:
        name = col.removesuffix("_mean_%")
        if col.endswith("_mean_%") and name in names:
            columns[f"{name}_%"] = [
                num(m, digits) if _missing(sd) else f"{m:.{digits}f} ± {sd:.{digits}f}"
                for m, sd in zip(df[col], df[f"{name}_std_%"], strict=True)]
        elif not (col.endswith("_std_%") and col.removesuffix("_std_%") in names):
            columns[col] = df[col]
    return pd.DataFrame(columns, index=df.index)
