"""esdbook: the Python code only the ESD reproducibility book needs.

``esdlib`` is the library (the method, running it, generic analysis of run records); this
package is the book around it, one module per job or per chapter concept:

- :mod:`esdbook.chapter`: :func:`open_chapter` checks a chapter's parameters and finds its
  records (no environment variables);
- chapter tables, numbers only: :mod:`esdbook.paper` (the paper's tables and our rows beside
  them), :mod:`esdbook.table1`, :mod:`esdbook.dvs`, :mod:`esdbook.scalability`,
  :mod:`esdbook.ablations`, :mod:`esdbook.provenance`, :mod:`esdbook.verdicts`, and
  :mod:`esdbook.display` (labels, formatting at display time, notes for empty tables);
- tools: :mod:`esdbook.build` (execute chapters, jupyter-book), :mod:`esdbook.check`
  (browser check), :mod:`esdbook.reproduce` (the experiment grid);
  ``python -m esdbook {reproduce,execute,build,check,all}``.

The words of the book (what a table shows, which rule decides a verdict) are in the chapters'
markdown; this package returns numbers and short labels. ``esdlib`` never imports it.
"""

from esdbook.chapter import Chapter, open_chapter

__all__ = ["Chapter", "open_chapter"]
