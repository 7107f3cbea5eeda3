"""Formatting at display time: short labels for glue, notes for empty tables, HTML tables.

Glued values are numbers with their unit or short labels (at most :data:`MAX_GLUE` characters,
a rule tests/test_notebook_style.py checks on the executed pages); the words around them are
in the chapters' markdown.
"""

from __future__ import annotations

import hashlib
import html as html_lib
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

__all__ = [
    "DAMAGED_MARKER",
    "INDICATIVE_PROFILES",
    "LEFT_OUT_WORDS",
    "damaged_labels",
    "evidence_rule",
    "MAX_GLUE",
    "glue_all",
    "figure_html",
    "glue_figure",
    "glue_html",
    "html_table",
    "indicative_banner",
    "left_out_rows",
    "left_out_table",
    "note",
    "num",
    "number_tables",
    "pm_columns",
    "readable_name",
    "signed",
    "span",
    "table",
]

MAX_GLUE = 40
"""Longest text a page may glue (a number with its unit, a verdict word, a scale label)."""

INDICATIVE_PROFILES = ("smoke", "quick")
"""Profiles whose pages are previews: unconverged runs of one seed, no verdicts."""


_PAGE: dict[str, Any] = {"chapter": None, "tables": 0}
"""The page being executed: its chapter number and how many tables it has numbered so far."""


def number_tables(chapter: int | None) -> None:
    """Number the titled tables shown from now on ``Table <chapter>.1``, ``.2``, … (``None``:
    titles without numbers). :func:`esdbook.open_chapter` calls it at the top of each page, so
    a kernel that executes several pages starts every page at 1."""
    _PAGE.update(chapter=chapter, tables=0)


def _numbered(title: str | None) -> str | None:
    """``"Table 4.2: <title>"`` (the page's next number), the bare title outside a chapter."""
    if title is None or _PAGE["chapter"] is None:
        return title
    _PAGE["tables"] += 1
    return f"Table {_PAGE['chapter']}.{_PAGE['tables']}: {title}"


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


def evidence_rule() -> dict[str, Any]:
    """The constants of the verdict rule (:mod:`esdlib.analysis.evidence`) as glue values, so
    that the prose that states the rule quotes the code: ``ci_level`` (``"95 %"``, the two-sided
    interval), ``q_ci`` (its Student-t quantile, ``0.975``), ``eq_level`` (``"90 %"``, the
    equivalence interval), ``q_eq`` (``0.95``), ``tost_level`` (``"5 %"``, each one-sided test),
    ``min_pairs`` (fewest paired seeds), ``power`` (of the detectable difference) and
    ``seed_block`` (seeds per block of the seed-set check). The margin ``δ`` is glued by the
    pages themselves (``margin``, with its unit)."""
    from esdlib.analysis import evidence as ev

    alpha = 1 - ev.CONFIDENCE  # the two-sided level; each one-sided test of TOST uses it too
    return {"ci_level": f"{100 * ev.CONFIDENCE:.0f} %", "q_ci": round(1 - alpha / 2, 4),
            "eq_level": f"{100 * (1 - 2 * alpha):.0f} %", "q_eq": round(1 - alpha, 4),
            "tost_level": f"{100 * alpha:.0f} %", "min_pairs": ev.MIN_PAIRS,
            "power": ev.POWER, "seed_block": ev.SEED_BLOCK}


def glue_html(name: str, html: Any) -> None:
    """``myst_nb.glue`` a displayable object (an HTML table of :func:`table`) under ``name``
    without displaying it, e.g. for a ``{glue}`` directive on another page (``:doc:``)."""
    from myst_nb import glue

    glue(name, html, display=False)


def figure_html(fig: Any, alt: str, caption: str, dpi: int = 90) -> Any:
    """A matplotlib figure as a self-contained HTML ``<figure>`` (the PNG inline as a ``data:``
    URL, with alt text and a caption), for pasting onto a page that is not a notebook: a
    ``{glue}`` directive with ``:doc:`` pastes outputs across pages but not a numbered
    ``{glue:figure}``. The alt text and caption are the book's own words, HTML-escaped."""
    import base64
    import io

    import matplotlib.pyplot as plt
    from IPython.display import HTML

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    alt = html_lib.escape(alt, quote=True)
    return HTML(f'<figure class="esd-figure"><img src="data:image/png;base64,{data}" '
                f'alt="{alt}" style="max-width:100%"><figcaption>{_escape(caption)}'
                "</figcaption></figure>")


def glue_figure(name: str, fig: Any) -> None:
    """``myst_nb.glue`` a matplotlib figure under ``name`` without displaying it, for a
    ``{glue:figure}`` directive with a numbered caption and alt text in the markdown; a pyplot
    figure is closed so that the inline backend does not show it a second time."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)


_CODE_SPAN = re.compile(r"(`+)(.*?)\1", re.S)


def escape_markdown_html(text: str) -> str:
    """``text`` with every ``<`` and ``&`` outside code spans backslash-escaped, so that
    Markdown renders them as characters and never as raw HTML (a ``<script>`` or an
    ``onerror=`` attribute in a file name or a record); code spans are literal already."""
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(text):
        out.append(re.sub(r"([<>&])", r"\\\1", text[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(re.sub(r"([<>&])", r"\\\1", text[pos:]))
    return "".join(out)


def note(text: str, show: bool = True) -> Any:
    """A short Markdown note for a page (e.g. when a table is empty); ``None`` when not
    ``show`` (a cell then displays nothing). Raw HTML in ``text`` is shown as text
    (:func:`escape_markdown_html`): notes may quote names from records and folders."""
    from IPython.display import Markdown

    return Markdown(escape_markdown_html(text)) if show else None


def _escape(v: Any) -> str:
    return html_lib.escape(str(v), quote=False)  # element text: quotes need no escape


def html_table(df: pd.DataFrame, formats: dict[str, str] | None = None,
               title: str | None = None) -> Any:
    """``df`` as HTML without its index, with column formats (``"{:.2f}×"``) and readable
    headers, in a scroll container; without ``formats`` it is :func:`table`. Every cell and
    header is HTML-escaped; ``title`` is numbered as in :func:`table`."""
    if not formats:
        return table(df, title=title)
    uuid = hashlib.sha1(df.to_csv().encode()).hexdigest()[:8]
    style = (df.style.set_uuid(uuid).hide(axis="index")
             .format(_escape, na_rep="—")  # every column, then the given formats
             .format(formats, na_rep="—", escape="html")
             .format_index(lambda c: _escape(readable_name(c)), axis="columns")
             .set_table_styles(TABLE_STYLES).set_table_attributes('class="dataframe"'))
    return _scrolled(style, _numbered(title))


def _scrolled(style: Any, caption: str | None) -> Any:
    """A styled table with its caption (HTML-escaped) in the book's horizontal scroll
    container, so a wide table scrolls instead of overflowing the text column."""
    from IPython.display import HTML

    if caption:
        style = style.set_caption(html_lib.escape(caption))
    return HTML('<div class="esd-scroll" style="overflow-x:auto">' + style.to_html() + "</div>")


COLUMN_WORDS = {
    "arch": "architecture", "architecture": "architecture", "method": "method",
    "run_id": "run", "n_seeds": "seeds", "n": "n", "ref": "paper ref.",
    "uses_pretrained_ann": "pre-trained ANN teacher", "lr": "learning rate",
    "max_train_steps": "max. train steps", "batch_size": "batch size",
    "image_size": "image size", "git_revision": "git revision",
}
"""Record column names (after any ``config.``-style prefix) → words shown in a table header."""

TABLE_STYLES = [
    {"selector": "", "props": "border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em"},
    {"selector": "th, td", "props": "padding: 0.25em 0.7em; text-align: left; "
                                    "border-bottom: 1px solid #ddd; vertical-align: top"},
    {"selector": "th", "props": "border-bottom: 2px solid #888"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; color: #555; "
                                     "padding-bottom: 0.3em"},
]
"""Styles of every table made by :func:`table` (padding, rules, a left-aligned caption)."""

NOWRAP = 28
"""Cells up to this many characters never wrap (a number ± its spread, a date, a short id):
long rows scroll in the table's container instead of growing tall."""

DATASET_WORDS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet",
                 "cifar10_dvs": "CIFAR10-DVS"}
"""Data set names in column names (the paper's tables) → how the paper writes them."""

_SUFFIXES = (("_mean_%", " mean (%)"), ("_std_%", " std (%)"), ("_%", " (%)"),
             ("_pts", " (pts)"), ("_s", " (s)"), ("_mib", " (MiB)"))


def readable_name(name: Any) -> str:
    """A table header for a record column: ``"final_%"`` → ``"final (%)"``, ``"config.T"`` →
    ``"T"``, ``"run_id"`` → ``"run"``, ``"best−final_pts"`` → ``"best−final (pts)"``; symbols
    such as ``K_rate`` and names that already read as words are kept."""
    text = str(name)
    if "." in text and " " not in text:
        text = text.rsplit(".", 1)[1]
    if text in COLUMN_WORDS:
        return COLUMN_WORDS[text]
    if text.startswith("K_") or " " in text:
        return text
    for key in sorted(DATASET_WORDS, key=len, reverse=True):  # cifar10_std -> CIFAR-10 std
        if text == key or text.startswith(key + "_"):
            rest = text[len(key) + 1:]
            return DATASET_WORDS[key] + ("" if not rest else " (%)" if rest == "%"
                                         else " " + readable_name(rest))
    for suffix, words in _SUFFIXES:
        if text.endswith(suffix) and len(text) > len(suffix):
            text = text[: -len(suffix)] + words
            break
    return text.replace("_", " ")


def _is_float(v: Any) -> bool:
    return isinstance(v, float) and not math.isnan(v)


def _decimals(header: str, values: list[float]) -> int | None:
    """Decimals for a float column: accuracies (%, pts) 2, ratios 2, rates 3; otherwise by
    magnitude (``None``: scientific notation for tiny values)."""
    h = header.lower()
    if "%" in h or "pts" in h or "acc" in h or "std" in h or any(
            w.lower() in h for w in DATASET_WORDS.values()):
        return 2
    if re.search(r"\brates?\b", h) and "/" not in h:  # a firing rate, not "RateBP"
        return 3
    if "/" in h or "ratio" in h or "×" in h:
        return 2
    if h.endswith(" s") or " s " in h or "(s)" in h:  # times: one precision per column kind
        return 3
    top = max((abs(v) for v in values), default=0.0)
    if top >= 100:
        return 1
    if top >= 1:
        return 2
    if top >= 1e-3 or top == 0:
        return 3
    return None


def _formatter(values: list[Any], decimals: int | None) -> Any:
    floats = [v for v in values if _is_float(v)]
    integral = bool(floats) and all(v.is_integer() and abs(v) < 1e15 for v in floats)

    def fmt(v: Any) -> str:
        if _missing(v) or v is pd.NA or v is pd.NaT or (isinstance(v, str) and not v.strip()):
            return "—"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, int) or (_is_float(v) and integral):
            return f"{int(v):,}" if abs(v) >= 10_000 else str(int(v))
        if _is_float(v):
            return f"{v:.2e}" if decimals is None else f"{v:.{decimals}f}"
        return str(v)

    return fmt


def table(df: pd.DataFrame, caption: str | None = None, digits: dict[str, int] | None = None,
          constants_to_caption: bool = True, keep: Iterable[str] = (),
          cell_css: dict[str, Sequence[str]] | None = None, title: str | None = None) -> Any:
    """``df`` as a reader's HTML table: the one presentation of every table of the book.

    - a named or labelled index becomes ordinary columns (an unnamed integer index is row
      positions and is dropped), and no index is shown;
    - record names become words (:func:`readable_name`: ``final_%`` → ``final (%)``);
    - numbers are rounded for reading (accuracies and points 2 decimals, ratios 2, rates 3,
      others by magnitude; ``digits`` overrides by original column name), integers show no
      ``.0``, and missing values show "—";
    - with three or more rows, a column holding one value in every row is stated once in the
      caption instead (not the columns named in ``keep``);
    - every cell, header and the caption is HTML-escaped: text from records, notebooks and
      file names shows as text and never runs as markup or script;
    - every column is shown, and the table sits in a deliberate horizontal scroll container
      (``<div class="esd-scroll" style="overflow-x:auto">``) so a wide table scrolls instead
      of overflowing the text column.

    Args:
        df: the table (a DataFrame; anything else is returned unchanged).
        caption: text above the table.
        digits: decimals per original column name.
        constants_to_caption: move constant columns into the caption.
        keep: original column names never moved into the caption.
        cell_css: per original column name, one CSS declaration per row (the book's own
            styling, e.g. a verdict's background colour; never text from records).
        title: what the table shows, with its units and scale; numbered ``Table <chapter>.<k>:``
            on a chapter page (:func:`number_tables`) and placed first in the caption.

    Returns:
        An ``IPython.display.HTML`` object.
    """
    if not isinstance(df, pd.DataFrame):
        return df
    d = df.copy()
    positional = (all(n is None for n in d.index.names)
                  and pd.api.types.is_integer_dtype(d.index.dtype))
    if not positional:  # a named or labelled index (e.g. architecture names) is data
        d = d.reset_index()
        d.columns = [c if c != "index" else "" for c in d.columns]
    d = d.reset_index(drop=True)
    notes: list[str] = []
    if constants_to_caption and len(d) >= 3:
        for col in list(d.columns):
            values = d[col].tolist()
            if (col not in set(keep) and len(d.columns) > 1
                    and all(not _missing(v) and str(v).strip() for v in values)
                    and len({repr(v) for v in values}) == 1):
                notes.append(f"{readable_name(col)}: {_formatter(values, 2)(values[0])}")
                d = d.drop(columns=col)
    formats, headers = {}, {}
    for col in d.columns:
        header = readable_name(col)
        values = d[col].astype(object).tolist()
        floats = [float(v) for v in values if _is_float(v)]
        decimals = (digits or {}).get(str(col), _decimals(header, floats))
        # escaped: text from records, notebooks and file names is never markup
        formats[col] = (lambda f: lambda v: _escape(f(v)))(_formatter(values, decimals))
        headers[col] = header
    uuid = hashlib.sha1(d.to_csv().encode()).hexdigest()[:8]  # stable HTML ids for nbval
    style = (d.style.set_uuid(uuid).hide(axis="index").format(formats)
             .format_index(lambda c: _escape(headers.get(c, c)), axis="columns")
             .set_table_styles(TABLE_STYLES).set_table_attributes('class="dataframe"'))
    numeric = [c for c in d.columns if all(
        _missing(v) or (isinstance(v, int | float) and not isinstance(v, bool))
        for v in d[c].astype(object))]
    if numeric:  # numbers align right, words left
        style = style.set_properties(subset=numeric, **{"text-align": "right"})
    style = style.map(lambda v: "white-space: nowrap" if len(str(v)) <= NOWRAP else "")
    for col, css in (cell_css or {}).items():
        if col in d.columns:
            if len(css) != len(d):
                raise ValueError(f"cell_css[{col!r}] has {len(css)} entries for {len(d)} rows")
            style = style.apply(lambda _, css=list(css): css, subset=[col], axis=0)
    return _scrolled(style, " · ".join(
        [t for t in (_numbered(title), caption, "; ".join(notes)) if t]))


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
        f"<p>This page was built from the <code>{_escape(profile)}</code> profile: short, "
        "unconverged runs of one seed. Its numbers preview the layout of the page; they are "
        "not evidence and no claim gets a verdict. The <code>default</code> profile gives the "
        "verdicts.</p></div>")


DAMAGED_MARKER = "damaged record:"
"""Text a page shows for each record file that could not be read (``status == "damaged"``
rows of ``load_records(strict=False)``); the strict book build fails on pages that show it
(:func:`esdbook.check.damaged_record_pages`)."""

LEFT_OUT_WORDS = {"damaged": "unreadable", "diverged": "diverged", "unfinished": "not finished",
                  "old_branches": "shown; branches predate the published block (dsconv_wide)"}
"""What a page says for each reason of :func:`esdlib.analysis.runs.left_out` (runs of another
profile are counted per profile: ``"profile <name>"``)."""


def _damaged_label(path: Any, problem: Any) -> str:
    return f"{DAMAGED_MARKER} {path} ({problem})"


def damaged_labels(df: pd.DataFrame) -> list[str]:
    """``"damaged record: <path> (<problem>)"`` for each row of ``df`` (damaged rows)."""
    errors = df["error"] if "error" in df else [""] * len(df)
    return [_damaged_label(p, e) for p, e in zip(df["path"], errors, strict=True)]


def left_out_rows(records: pd.DataFrame, profile: str) -> pd.DataFrame:
    """The records a page does not count, in words: columns ``record`` (run id, ``"damaged
    record: <path> (<problem>)"``, or ``"<n> runs"`` per other profile), ``status`` and ``why``
    (:data:`LEFT_OUT_WORDS`); the rows of :func:`esdlib.analysis.runs.left_out`, runs of other
    profiles counted after the others and before the runs with old branches."""
    from esdlib.analysis.runs import left_out

    t = left_out(records, profile)
    rows, other, stale = [], {}, []
    for r in t.itertuples():
        if r.why == "other_profile":
            other[r.detail] = other.get(r.detail, 0) + 1
            continue
        record = _damaged_label(r.record, r.detail) if r.why == "damaged" else r.record
        row = {"record": record, "status": r.status, "why": LEFT_OUT_WORDS.get(r.why, r.why)}
        (stale if r.why == "old_branches" else rows).append(row)
    rows += [{"record": f"{n} run{'s' if n != 1 else ''}", "status": "complete",
              "why": f"profile {name}"} for name, n in sorted(other.items())]
    return pd.DataFrame(rows + stale, columns=["record", "status", "why"])


def left_out_table(records: pd.DataFrame, profile: str) -> Any:
    """The records a page does not count (:func:`left_out_rows`), as an HTML table titled
    "Records not counted on this page"; ``None`` when every record counts."""
    t = left_out_rows(records, profile)
    if not len(t):
        return None
    return table(t, title="Records not counted on this page", constants_to_caption=False)


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
