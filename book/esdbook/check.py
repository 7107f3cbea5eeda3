"""Check the built book in a browser: every page loads offline, with its images, math and tables.

:func:`check_pages` opens every built page in Chromium (Playwright, served over a localhost HTTP
server, every non-local request blocked) and lists the problems: failed requests, broken images,
untypeset math, missing tables, damaged run records. :func:`screenshot_pages` saves PNGs.
Playwright is imported only by the functions that open a browser.
"""

from __future__ import annotations

import contextlib
import functools
import html as html_lib
import http.server
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from esdbook.display import DAMAGED_MARKER

__all__ = [
    "CHROMIUM_ARGS",
    "DEFAULT_CHROMIUM",
    "EXPECTED_CONTENT",
    "LEAK_PATTERNS",
    "SCROLL_CLASS",
    "broken_links",
    "check_pages",
    "leaks_in_text",
    "damaged_record_pages",
    "html_pages",
    "page_inventory",
    "screenshot_pages",
    "unsafe_markup",
]

DEFAULT_CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium (``apt-get install chromium``); Playwright's own browsers are never used."""

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Command-line switches for Chromium: headless, no background traffic to the internet."""

_DIAGRAM = "figure img[src$='.svg']"  # a diagram from book/figures/, in a captioned figure
_SOLUTION = "div.admonition.dropdown"  # an exercise's solution, collapsed until clicked

EXPECTED_CONTENT: dict[str, tuple[str, ...]] = {
    "intro.html": ("table",),
    "_executed/01_introduction.html": ("table",),
    "_executed/02_rate_bp.html": ("figure figcaption", "mjx-container", _DIAGRAM, _SOLUTION),
    "_executed/03_self_distillation.html": ("figure figcaption", "table", _DIAGRAM, _SOLUTION),
    "_executed/04_table1_static.html": ("table", "figure figcaption"),
    "_executed/05_dvs.html": ("table", "figure figcaption"),
    "_executed/06_scalability.html": ("table", "figure figcaption"),
    "_executed/07_firing_rates.html": ("table", "figure figcaption"),
    "_executed/08_gradient_error.html": ("table", "figure figcaption", _DIAGRAM, _SOLUTION),
    "_executed/09_ablations.html": ("table",),
    "appendix_performance.html": ("table",),
    "bibliography.html": ("div.citation",),
    "cite.html": ("pre",),
}
"""Per built page (path relative to the HTML root), CSS selectors that must match at least one
element inside the page's ``<article>`` (the teaching chapters 2, 3 and 8 must show a diagram and
an exercise with a collapsed solution). Pages absent from the build are not checked (the toc
test guards which chapters exist)."""

LEAK_PATTERNS: dict[str, re.Pattern[str]] = {
    "warning text": re.compile(r"\b\w+Warning\b|\bWarning:"),
    "traceback": re.compile(r"Traceback"),
    "object repr": re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>?| at 0x[0-9a-fA-F]{6,}"),
    "absolute machine path": re.compile(
        r"(?<![\w.~-])/(?:work|home|tmp|root|usr|opt|var|mnt|private|Users)/[^\s'\"<>)]*"
        r"|site-packages[^\s'\"<>)]*"),
}
"""What must never be visible in a page's article: a Python warning (``UserWarning``,
``Warning:``), a traceback, an object repr with its address (``<... at 0x7f...>``) and an
absolute path of the machine that built the book (``/work/...``, ``/tmp/...``,
``site-packages``). The words of an admonition titled "Warning" alone do not match."""

SCROLL_CLASS = "esd-scroll"
"""Class of a deliberate horizontal scroll container (:func:`esdbook.display.table` wraps wide
tables in ``<div class="esd-scroll" style="overflow-x:auto">``)."""

_REFRESH = re.compile(
    r"""<meta\s+http-equiv=["']refresh["']\s+content=["'][^"']*?url=([^"']+)["']""", re.IGNORECASE
)
_EXCLUDED_HTML_DIRS = ("_static", "_sources", "_images", "_downloads")




class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass


@contextlib.contextmanager
def _serve(html_dir: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def _browser_context(chromium: str | os.PathLike, base: str, blocked: list[str]):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True,
                                    args=list(CHROMIUM_ARGS))
        try:
            context = browser.new_context(service_workers="block",
                                          viewport={"width": 1280, "height": 900})

            def route(r):
                url = r.request.url
                if url.startswith(base) or url.startswith("data:") or url.startswith("blob:"):
                    r.continue_()
                else:  # the network is cut: anything non-local is a problem
                    blocked.append(url)
                    r.abort("blockedbyclient")

            context.route("**/*", route)
            yield context
        finally:
            browser.close()


_WAIT_MATH = """async (timeoutMs) => {
  const math = document.querySelectorAll('article .math');
  if (math.length === 0) return 'no-math';
  const deadline = Date.now() + timeoutMs;
  while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    if (Date.now() > deadline) return 'no-mathjax';
    await new Promise(r => setTimeout(r, 50));
  }
  const left = Math.max(deadline - Date.now(), 0);
  const timer = new Promise(r => setTimeout(() => r('timeout'), left));
  return await Promise.race([MathJax.startup.promise.then(() => 'typeset'), timer]);
}"""

_TEXT_AND_TABLES = """(scrollClass) => {
  const art = document.querySelector('article') || document.body;
  const column = art.clientWidth;
  const wide = [];
  for (const t of art.querySelectorAll('table')) {
    let el = t.parentElement, deliberate = false;
    while (el && el !== art) {
      const ox = el.style.overflowX || el.style.overflow;
      if (el.classList.contains(scrollClass) || ox === 'auto' || ox === 'scroll') {
        deliberate = true; break;
      }
      el = el.parentElement;
    }
    const width = Math.round(t.getBoundingClientRect().width);
    if (!deliberate && width > column + 1) {
      const head = Array.from(t.querySelectorAll('th')).slice(0, 3).map(h => h.innerText.trim());
      wide.push([width, column, head.join(' | ')]);
    }
  }
  return [art.innerText, wide];
}"""

_MEASURE = """() => {
  const art = document.querySelector('article') || document.body;
  const view = window.innerWidth;
  let widest = 0, tallest = 0, hidden = [];
  const tables = art.querySelectorAll('table');
  for (const t of tables) {
    widest = Math.max(widest, Math.round(t.getBoundingClientRect().width));
    for (const r of t.querySelectorAll('tr')) {
      tallest = Math.max(tallest, Math.round(r.getBoundingClientRect().height));
    }
    for (const th of t.querySelectorAll('th')) {
      if (th.innerText.trim().toLowerCase() !== 'verdict') continue;
      let box = th.closest('.esd-scroll') || art;
      const limit = Math.min(box.getBoundingClientRect().right, view);
      const right = Math.round(th.getBoundingClientRect().right);
      if (right > limit + 1) {
        const first = t.querySelector('th') ? t.querySelector('th').innerText.trim() : '';
        hidden.push([right, Math.round(limit), first]);
      }
    }
  }
  return {tables: tables.length, widest: widest, tallest: tallest,
          figures: art.querySelectorAll('figure').length, hidden: hidden};
}"""
"""Per page: tables, figures, the widest table and the tallest table row (px), and every
``verdict`` column header whose right edge lies beyond what is visible without scrolling."""

_IMAGES = """() => Array.from(document.querySelectorAll('article img')).map(
  i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.getAttribute('alt')])"""

_BAD_ALT = re.compile(r"^\s*$|^\S+\.(png|jpe?g|svg|gif)$|^_images/|^\S*/\S+$", re.IGNORECASE)


def _load(page, url: str, timeout_s: float) -> str:
    page.goto(url, wait_until="load", timeout=timeout_s * 1000)
    state = page.evaluate(_WAIT_MATH, timeout_s * 1000)
    page.wait_for_load_state("networkidle", timeout=timeout_s * 1000)
    with contextlib.suppress(Exception):  # lazy images: give them a moment to finish
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('article img')).every(i => i.complete)",
            timeout=timeout_s * 1000)
    return state


def html_pages(html_dir: Path) -> list[str]:
    """Every HTML file of a built book (relative POSIX paths), without the theme's and
    Sphinx's own folders (``_static``, ``_sources``, ``_images``, ``_downloads``)."""
    pages = []
    for path in sorted(html_dir.rglob("*.html")):
        rel = path.relative_to(html_dir).as_posix()
        if not rel.startswith(tuple(d + "/" for d in _EXCLUDED_HTML_DIRS)):
            pages.append(rel)
    return pages


def check_pages(html_dir: str | os.PathLike, chromium: str | os.PathLike = DEFAULT_CHROMIUM,
                expected: Mapping[str, Sequence[str]] | None = None,
                timeout_s: float = 60.0, stats: dict[str, Any] | None = None) -> list[str]:
    """Open every built HTML page in Chromium and list what is wrong with it.

    The folder is served by a localhost HTTP server (not ``file://``); every request to another
    origin is blocked (as if there were no internet) and reported. For each page, problems are:

    - a failed request, a response with status ≥ 400, or a blocked non-local request;
    - a JavaScript exception or a console error;
    - an ``<img>`` inside the ``<article>`` that did not load (``naturalWidth == 0``);
    - math on the page (Sphinx ``.math`` elements) that MathJax did not typeset (no
      ``mjx-container``) or typeset with an error (``mjx-merror``);
    - a selector of ``expected[page]`` that matches nothing inside the ``<article>``;
    - a leak in the article's visible text (:data:`LEAK_PATTERNS`: a warning, a traceback, an
      object repr with its address, an absolute machine path);
    - an ``<img>`` in the article whose alt text is empty or a file name/path (a figure needs
      alt text that says what it shows);
    - a ``<table>`` wider than the article's text column that is not inside a deliberate
      scroll container (an ancestor with class :data:`SCROLL_CLASS` or an inline
      ``overflow-x: auto|scroll`` style; the theme's own CSS overflow does not count);
    - a redirect stub (``<meta http-equiv="refresh">``, e.g. ``index.html``) whose target page
      does not exist (stubs are not opened; their target is checked as a page);
    - a link in an article to a local page or anchor that does not exist (:func:`broken_links`);
    - a script or inline event handler that is not the book's own (:func:`unsafe_markup`);
    - a table column headed ``verdict`` that is not visible without scrolling in the 1280-px
      window (its right edge beyond its scroll container or the window).

    Args:
        html_dir: the built HTML root (``<build_dir>/_build/html``).
        chromium: Chromium executable (Debian's; Playwright's bundled browsers are not used).
        expected: page → CSS selectors that must be present; default :data:`EXPECTED_CONTENT`.
        timeout_s: per-page load timeout in seconds.
        stats: when given, filled per page with what the browser measured: ``tables``,
            ``figures``, ``widest`` (the widest table, px) and ``tallest`` (the tallest table
            row, px), at a 1280-px window.

    Returns:
        Problem descriptions ``"<page>: <what>"``; empty when every page is fine.

    Raises:
        FileNotFoundError: ``html_dir`` has no ``index.html`` or ``chromium`` does not exist.
    """
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").is_file():
        raise FileNotFoundError(f"no index.html in {html_dir}: build the book first")
    if not Path(chromium).is_file():
        raise FileNotFoundError(f"chromium not found at {chromium}")
    expected = EXPECTED_CONTENT if expected is None else expected
    problems: list[str] = []
    pages, redirects = [], {}
    for rel in html_pages(html_dir):
        match = _REFRESH.search((html_dir / rel).read_text(encoding="utf-8", errors="replace"))
        if match:
            redirects[rel] = match.group(1).strip()
        else:
            pages.append(rel)
    # A redirect stub (jupyter-book's index.html) has no content: check that its target exists;
    # the target is checked as a page of its own.
    for rel, target in redirects.items():
        if not (html_dir / rel).parent.joinpath(target).is_file():
            problems.append(f"{rel}: redirects to missing page {target}")
    problems += damaged_record_pages(html_dir)
    problems += unsafe_markup(html_dir)
    problems += broken_links(html_dir)
    with _serve(html_dir) as base:
        blocked: list[str] = []
        with _browser_context(chromium, base, blocked) as context:
            for rel in pages:
                problems += _check_page(context, base, rel, blocked, expected.get(rel, ()),
                                        timeout_s, stats)
    return problems


_ARTICLE = re.compile(r"<article\b.*?</article>", re.S)
_HREF = re.compile(r"""<a\s[^>]*?href=["']([^"']*)["']""")
_IDS = re.compile(r"""\bid=["']([^"']+)["']""")


def _article(html: str) -> str:
    match = _ARTICLE.search(html)
    return match.group(0) if match else html


def _content_pages(html_dir: Path) -> list[str]:
    return [rel for rel in html_pages(html_dir)
            if not _REFRESH.search((html_dir / rel).read_text(encoding="utf-8", errors="replace"))]


def broken_links(html_dir: str | os.PathLike) -> list[str]:
    """Links in the built pages' articles to a local file or anchor that does not exist.

    Every ``href`` that is neither absolute (``http:``, ``mailto:`` …) nor empty is resolved
    against its page; the target file must exist, and a ``#fragment`` must be an ``id`` in the
    target page (or in the same page for ``#fragment`` alone).

    Args:
        html_dir: the built HTML root.

    Returns:
        ``"<page>: broken link <href>"`` lines; empty when every local link resolves.
    """
    html_dir = Path(html_dir)
    ids: dict[Path, set[str]] = {}

    def ids_of(path: Path) -> set[str]:
        if path not in ids:
            ids[path] = set(_IDS.findall(path.read_text(encoding="utf-8", errors="replace")))
        return ids[path]

    found = []
    for rel in _content_pages(html_dir):
        page = html_dir / rel
        for href in dict.fromkeys(_HREF.findall(_article(page.read_text(encoding="utf-8",
                                                                           errors="replace")))):
            if not href or re.match(r"^[a-zA-Z][\w+.-]*:", href):
                continue
            target, _, fragment = html_lib.unescape(href).partition("#")
            path = (page.parent / target.split("?")[0]).resolve() if target else page.resolve()
            if not path.is_file() or (fragment and path.suffix == ".html"
                                      and fragment not in ids_of(path)):
                found.append(f"{rel}: broken link {href}")
    return found


def page_inventory(html_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """What each built page shows, counted in its article's HTML (no browser needed).

    Args:
        html_dir: the built HTML root.

    Returns:
        One dict per content page: ``page``, ``tables``, ``figures`` (``<figure>`` elements),
        ``numbered_figures`` (with a "Fig. N" caption number), ``equations`` (numbered display
        equations), ``solutions`` (collapsed dropdown admonitions), ``internal_links`` and
        ``external_links``.
    """
    html_dir = Path(html_dir)
    rows = []
    for rel in _content_pages(html_dir):
        art = _article((html_dir / rel).read_text(encoding="utf-8", errors="replace"))
        hrefs = _HREF.findall(art)
        rows.append({
            "page": rel, "tables": art.count("<table"), "figures": art.count("<figure"),
            "numbered_figures": len(re.findall(r'class="caption-number">Fig\.', art)),
            "equations": art.count('class="eqno"'),
            "solutions": len(re.findall(r'class="(?=[^"]*\badmonition\b)(?=[^"]*\bdropdown\b)',
                                        art)),
            "internal_links": sum(1 for h in hrefs if h and not h.startswith(("http:", "https:",
                                                                             "mailto:", "#"))),
            "external_links": sum(1 for h in hrefs if h.startswith(("http:", "https:")))})
    return rows


def leaks_in_text(text: str) -> list[str]:
    """The leaks of :data:`LEAK_PATTERNS` in a page's visible text, one line per kind with the
    first match (``"warning text: 'TqdmWarning'"``)."""
    found = []
    for kind, pattern in LEAK_PATTERNS.items():
        match = pattern.search(text)
        if match:
            found.append(f"{kind}: {match.group(0)[:80]!r}")
    return found


def damaged_record_pages(html_dir: str | os.PathLike) -> list[str]:
    """Built pages that show a damaged record (:data:`esdbook.display.DAMAGED_MARKER`).

    Args:
        html_dir: the HTML output folder of the book.

    Returns:
        One line per page: ``"<page>: shows damaged record: <file> ..."``.
    """
    found = []
    tag = re.compile(r"<[^>]+>")
    for rel in html_pages(Path(html_dir)):
        text = (Path(html_dir) / rel).read_text(encoding="utf-8", errors="replace")
        if DAMAGED_MARKER not in text:
            continue
        plain = " ".join(html_lib.unescape(tag.sub(" ", text)).split())
        hits = [m.group(0) for m in re.finditer(re.escape(DAMAGED_MARKER) + r" \S+", plain)]
        found.append(f"{rel}: shows {'; '.join(dict.fromkeys(hits)) or DAMAGED_MARKER}")
    return found


BOOK_INLINE_SCRIPTS: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in (
    r'document\.documentElement\.dataset\.mode = localStorage\.getItem\("mode"\) \|\| "\w+"; '
    r'document\.documentElement\.dataset\.theme = localStorage\.getItem\("theme"\) \|\| "\w+";',
    r"let toggleHint(Show|Hide) = '[\w ]*';",
    r"let toggleOpenOnPrint = '(true|false)';",
    r"var togglebuttonSelector = '[\w .,#-]*';",
    r'window\.MathJax = \{"options": \{"processHtmlClass": "[\w|]*"\}\}',
    r"DOCUMENTATION_OPTIONS\.pagename = '[\w/.-]*';",
    r"DOCUMENTATION_OPTIONS\.search_as_you_type = (true|false);",
    r'// Activate the search field on page load let searchInput = document\.querySelector\('
    r'"form\.bd-search input"\); if \(searchInput\) \{ searchInput\.focus\(\); '
    r'searchInput\.select\(\); console\.log\("\[PST\]: Set focus on search field\."\); \}',
))
"""The inline scripts the built book legitimately has (sphinx-book-theme's colour mode and
search field, sphinx-togglebutton's settings, the MathJax options, Sphinx's page name), each
matched in full after whitespace is collapsed. Anything else inline is not the book's own."""

BOOK_EVENT_HANDLERS = frozenset({("button", "onclick", "window.print()"),
                                 ("button", "onclick", "toggleFullScreen()")})
"""Inline event handlers the theme writes (its print and full-screen buttons):
``(tag, attribute, value)``. Any other ``on*=`` attribute is not the book's own."""


BOOK_SCRIPT_FILES = ("searchindex.js",)
"""Scripts the book loads from its HTML root; every other script file is in ``_static/``."""


class _MarkupScan(HTMLParser):
    def __init__(self, page: Path, html_dir: Path) -> None:
        super().__init__(convert_charrefs=True)
        self.page, self.html_dir = page, html_dir.resolve()
        self.found: list[str] = []
        self._script: tuple[dict[str, str | None], list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name.startswith("on") and (tag, name, value) not in BOOK_EVENT_HANDLERS:
                self.found.append(f"inline event handler <{tag} {name}={value!r}>")
            if (name in ("href", "src", "action", "formaction") and value
                    and re.sub(r"[\s\x00-\x1f]", "", value).lower().startswith("javascript:")):
                self.found.append(f"javascript: URL in <{tag} {name}={value!r}>")
        if tag == "script":
            self._script = (dict(attrs), [])

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self._check_script(*self._script)
            self._script = None

    def _check_script(self, attrs: dict[str, str | None], parts: list[str]) -> None:
        src = attrs.get("src")
        if src is not None:
            path = (self.page.parent / src.split("?")[0].split("#")[0]).resolve()
            own = (path.is_relative_to(self.html_dir / "_static")
                   or path in {self.html_dir / n for n in BOOK_SCRIPT_FILES})
            if re.match(r"^[a-zA-Z][\w+.-]*:|^//", src) or not own or not path.is_file():
                self.found.append(f"script that is not one of the book's files: {src!r}")
            return
        if attrs.get("type") not in (None, "", "text/javascript", "module"):
            return  # a data block (e.g. JSON), never run by the browser
        code = " ".join("".join(parts).split())
        if code and not any(p.fullmatch(code) for p in BOOK_INLINE_SCRIPTS):
            self.found.append(f"inline script that is not the book's own: {code[:80]!r}")


def unsafe_markup(html_dir: str | os.PathLike) -> list[str]:
    """Scripts and inline event handlers in the built pages that are not the book's own.

    Every content page (:func:`html_pages`, redirect stubs included) is parsed; a problem is

    - an ``on*=`` attribute other than the theme's (:data:`BOOK_EVENT_HANDLERS`),
    - a ``javascript:`` URL,
    - a ``<script src>`` that is not a file of the book's ``_static`` folder (or
      :data:`BOOK_SCRIPT_FILES`),
    - an inline ``<script>`` whose code is not one of :data:`BOOK_INLINE_SCRIPTS`.

    Text from records and notebooks is escaped on the pages (:func:`esdbook.display.table`),
    so planted markup shows as text and is not found here.

    Args:
        html_dir: the built HTML root.

    Returns:
        ``"<page>: <what>"`` lines; empty when every script and handler is the book's own.
    """
    html_dir = Path(html_dir)
    found = []
    for rel in html_pages(html_dir):
        scan = _MarkupScan(html_dir / rel, html_dir)
        scan.feed((html_dir / rel).read_text(encoding="utf-8", errors="replace"))
        scan.close()
        found += [f"{rel}: {msg}" for msg in dict.fromkeys(scan.found)]
    return found


def _check_page(context, base: str, rel: str, blocked: list[str], selectors: Sequence[str],
                timeout_s: float, stats: dict[str, Any] | None = None) -> list[str]:
    found: list[str] = []

    def short(url: str) -> str:
        return url[len(base):] if url.startswith(base) else url

    def on_failed(request) -> None:
        if request.url not in blocked:
            found.append(f"failed request {short(request.url)} ({request.failure})")

    def on_response(response) -> None:
        if response.status >= 400:
            found.append(f"HTTP {response.status} for {short(response.url)}")

    def on_console(msg) -> None:
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            found.append(f"console error: {msg.text}")

    page = context.new_page()
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    page.on("pageerror", lambda exc: found.append(f"JavaScript error: {exc}"))
    page.on("console", on_console)
    n_blocked = len(blocked)
    try:
        math_state = _load(page, base + rel, timeout_s)
        if math_state == "no-mathjax":
            found.append("page has math but MathJax never loaded")
        elif math_state == "timeout":
            found.append("page has math but MathJax did not finish typesetting")
        elif math_state == "typeset":
            if page.locator("article mjx-container").count() == 0:
                found.append("page has math but MathJax typeset none of it (no mjx-container)")
            if page.locator("article mjx-merror").count():
                found.append("MathJax reported a TeX error (mjx-merror)")
        for src, complete, width, alt in page.evaluate(_IMAGES):
            if not complete or width == 0:
                found.append(f"image did not load: {src}")
            if _BAD_ALT.search(alt or ""):
                found.append(f"image without alt text (alt={alt!r}): {src}")
        for selector in selectors:
            if page.locator(f"article {selector}").count() == 0:
                found.append(f"expected content missing: no '{selector}' in the article")
        text, wide = page.evaluate(_TEXT_AND_TABLES, SCROLL_CLASS)
        found += [f"leak in the visible text: {leak}" for leak in leaks_in_text(text)]
        found += [f"table wider than the text column ({width} px > {column} px) outside a "
                  f"scroll container: {head}" for width, column, head in wide]
        measured = page.evaluate(_MEASURE)
        found += [f"verdict column not visible without scrolling (its right edge at {right} px, "
                  f"the visible area ends at {limit} px): table starting '{first}'"
                  for right, limit, first in measured.pop("hidden")]
        if stats is not None:
            stats[rel] = measured
    except Exception as exc:  # a timeout or navigation error is a problem of this page
        found.append(f"could not load page: {type(exc).__name__}: {exc}")
    finally:
        page.close()
    found += [f"blocked non-local request {url}" for url in blocked[n_blocked:]]
    return [f"{rel}: {msg}" for msg in dict.fromkeys(found)]


def screenshot_pages(html_dir: str | os.PathLike, pages: Sequence[str],
                     out_dir: str | os.PathLike, chromium: str | os.PathLike = DEFAULT_CHROMIUM,
                     full_page: bool = True, timeout_s: float = 60.0) -> list[Path]:
    """Save PNG screenshots of chosen built pages (after MathJax has typeset them).

    Args:
        html_dir: the built HTML root.
        pages: page paths relative to ``html_dir``, e.g. ``["_executed/02_rate_bp.html"]``.
        out_dir: folder for the PNGs (created); ``chapters/02_rate_bp.html`` →
            ``chapters__02_rate_bp.png``.
        chromium: Chromium executable.
        full_page: capture the whole scrollable page, not only the viewport.
        timeout_s: per-page load timeout in seconds.

    Returns:
        Paths of the PNG files written.
    """
    html_dir, out_dir = Path(html_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in pages if not (html_dir / p).is_file()]
    if missing:
        raise FileNotFoundError(f"no such page(s) in {html_dir}: {missing}")
    written = []
    with _serve(html_dir) as base, _browser_context(chromium, base, []) as context:
        for rel in pages:
            page = context.new_page()
            try:
                _load(page, base + rel, timeout_s)
                target = out_dir / (rel.removesuffix(".html").replace("/", "__") + ".png")
                page.screenshot(path=str(target), full_page=full_page)
                written.append(target)
            finally:
                page.close()
    return written
