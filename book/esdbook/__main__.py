"""Command line of the book: ``python -m esdbook {reproduce,execute,build,check,screenshot,all}``.

::

    python -m esdbook reproduce --profile default        # grid -> records, chapters, HTML
    python -m esdbook reproduce --profile default --fresh /tmp/esd-fresh   # re-run check
    python -m esdbook reproduce --fresh /tmp/f --only dvs --seeds 5-9      # other seeds
    python -m esdbook reproduce --profile paper --data-dir /data --gpus 8  # paper grid (GPU)
    python -m esdbook reproduce --profile paper --dry-run   # every paper point, 2 steps
    python -m esdbook execute --profile default --results-dir results
    python -m esdbook build                              # HTML from book/_executed
    python -m esdbook check                              # every built page in Chromium
    python -m esdbook all --profile smoke                # execute + build + check
    python -m esdbook screenshot _executed/02_rate_bp.html --out screenshots
    python -m esdbook run book/chapters/04_table1_static.ipynb -p profile smoke --out my_runs

``run`` re-runs one page or experiment notebook with checked parameters. Prefer it to calling
papermill directly: papermill parameters are code (papermill writes them into the notebook as
Python source), and ``run`` passes only declared names with plain values.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from esdbook import paper_grid
from esdbook.build import build_book, execute_chapters, is_committed_book, stage_book
from esdbook.check import DEFAULT_CHROMIUM, check_pages, page_inventory, screenshot_pages
from esdlib.train.config import PROFILES
from esdlib.train.paths import project_root


def _reproduce(args: argparse.Namespace) -> int:
    from esdbook.reproduce import parse_seeds, reproduce, reproduce_fresh

    if args.out is not None and (args.fresh is not None or args.no_book or args.dry_run):
        raise ValueError("--out names where the pages go: it does not apply with --fresh, "
                         "--dry-run (they keep their pages in their own folder) or --no-book")
    writes_pages = not (args.no_book or args.fresh is not None or args.dry_run or args.plan)
    args.book_dir = _target_book(project_root() / "book", args.out, args.profile, writes_pages)
    if args.profile == "paper":  # checks, plan, GPUs, torchrun, --dry-run: esdbook.paper_grid
        return paper_grid.main(args)
    paper_grid.refuse_paper_options(args)

    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1 (leave it out for one per CPU), got {args.jobs}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    seeds = None if args.seeds is None else parse_seeds(args.seeds)
    if args.fresh is not None:
        found = reproduce_fresh(args.profile, args.fresh, progress=not args.quiet,
                                only=args.only, jobs=args.jobs, threads=args.threads,
                                seeds=seeds)
        v = found.verdicts
        for row in v.itertuples():
            mark = {"holds": "holds", "changed": "CHANGED", "not re-run": "not re-run"}[row.status]
            print(f"{mark:10} {row.key:28} committed: {row.verdict_committed:28} "
                  f"fresh: {row.verdict_fresh}")
        g = found.grid
        print(f"grid: {g['runs_executed']} of {g['runs_total']} runs executed in "
              f"{g['wall_s'] / 60:.1f} min wall on {g['device_name']}")
        compared = v[v["status"] != "not re-run"]
        changed = compared[compared["status"] == "changed"]
        for row in changed.itertuples():
            print(f"changed: {row.key}: {row.verdict_committed} -> {row.verdict_fresh}")
        print(f"{len(compared) - len(changed)} of {len(compared)} compared verdicts hold "
              f"({len(v) - len(compared)} not re-run); report: {found.report}")
        return 0 if found.all_hold else 1
    index = reproduce(args.profile, build=not args.no_book, progress=not args.quiet,
                      only=args.only, jobs=args.jobs, threads=args.threads, seeds=seeds,
                      book_dir=args.book_dir)
    if index is not None:
        print(f"book: {index}")
    return 0


def parameter_value(text: str) -> str | int | float | bool | None:
    """The value of ``-p NAME VALUE``: a JSON number, ``true``/``false``/``null`` or a quoted
    JSON string when ``text`` is one, otherwise ``text`` itself as a string (``smoke``, or a
    JSON object such as ``overrides_json``'s, which the notebook parses itself)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if type(value) in (str, int, float, bool, type(None)) else text


def _run(args: argparse.Namespace) -> int:
    from esdbook.build import check_parameter_values, run_notebook

    src = Path(args.notebook)
    if src.suffix != ".ipynb" or not src.is_file():
        raise ValueError(f"{src} is not a notebook file (.ipynb)")
    parameters: dict[str, object] = {}
    for name, text in args.parameter or []:
        if name in parameters:
            raise ValueError(f"parameter {name!r} is given twice")
        parameters[name] = parameter_value(text)
    check_parameter_values(parameters, src.name)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is not a folder")
    target = out / src.name
    if target.resolve() == src.resolve():
        raise ValueError(f"--out {out} would overwrite the source notebook {src}")
    print(run_notebook(src, target, parameters, cwd=project_root(), timeout=args.timeout))
    return 0


def _target_book(book: Path, out: str | None, profile: str, writes_pages: bool) -> Path:
    """The book folder a command writes pages to: a staged copy under ``--out``, or ``book``.

    Pages of another profile than ``default`` never replace the committed ones: without
    ``--out`` such a command is refused before any work.
    """
    if out is not None:
        return stage_book(book, out)
    if writes_pages and profile != "default" and is_committed_book(book):
        raise ValueError(f"--profile {profile} would replace the committed pages of the default "
                         f"profile in {book / '_executed'}; add --out DIR (e.g. --out my_runs) "
                         "to execute and build the pages in DIR/book instead")
    return book


def _book(args: argparse.Namespace) -> int:
    book = _target_book(Path(args.book), getattr(args, "out_book", None), args.profile,
                        args.command in ("execute", "all"))
    html = Path(args.build_dir or book) / "_build" / "html"
    if args.command in ("execute", "all"):
        execute_chapters(book / "chapters", book / "_executed",
                         {"profile": args.profile, "results_dir": args.results_dir},
                         cwd=project_root(), threads=args.threads, jobs=args.jobs)
    if args.command in ("build", "all"):
        print(build_book(book, args.build_dir))
    if args.command in ("check", "all"):
        measured: dict = {}
        problems = check_pages(html, args.chromium, stats=measured)
        inventory = page_inventory(html)
        totals = {k: sum(r[k] for r in inventory) for k in inventory[0] if k != "page"} \
            if inventory else {}
        print(f"{len(inventory)} pages: " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                                      for k, v in totals.items()))
        if measured:
            widest = max(measured.items(), key=lambda kv: kv[1]["widest"])
            tallest = max(measured.items(), key=lambda kv: kv[1]["tallest"])
            print(f"in the browser (1280 px): {sum(m['tables'] for m in measured.values())} "
                  f"tables, {sum(m['figures'] for m in measured.values())} figures on "
                  f"{len(measured)} pages; widest table {widest[1]['widest']} px ({widest[0]}), "
                  f"tallest table row {tallest[1]['tallest']} px ({tallest[0]})")
        print("\n".join(problems) or f"all pages of {html} are fine")
        if problems:
            return 1
    if args.command == "screenshot":
        for path in screenshot_pages(html, args.pages, args.out, args.chromium):
            print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m esdbook`` argument parser."""
    root = project_root()
    parser = argparse.ArgumentParser(prog="python -m esdbook", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reproduce", help="run a profile's experiment grid through papermill "
                                         "and build the book")
    p.add_argument("--profile", choices=PROFILES, default="default")
    p.add_argument("--only", action="append", metavar="EXPERIMENT",
                   help="run only these experiments of the manifest (repeatable)")
    p.add_argument("--no-book", action="store_true", help="run the grid only")
    p.add_argument("--jobs", type=int, default=None,
                   help="grid points run at once, each job in one kernel that runs point after "
                        "point (default: one per CPU)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per kernel (default 1)")
    p.add_argument("--fresh", metavar="DIR", default=None,
                   help="re-run the grid into DIR (never touching the committed records), then "
                        "compare every cell and verdict with the committed runs; writes "
                        "DIR/comparison.md and exits 1 when a verdict does not hold")
    p.add_argument("--seeds", metavar="SEEDS", default=None,
                   help="run the grid on these seeds instead of the manifest's, e.g. 5-9 or "
                        "0,2,4 (with --fresh: does a verdict depend on the seed set?)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="execute and build the pages in a copy of the book in DIR/book, leaving "
                        "the committed book/_executed as it is (required for a profile other "
                        "than default; the records still go to results/)")
    paper_grid.add_arguments(p)
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("run", help="re-run one page or experiment notebook with checked "
                                   "parameters (instead of papermill: its parameters are code)")
    p.add_argument("notebook", help="a chapter (book/chapters/NN_name.ipynb) or experiment "
                                    "notebook (book/experiments/*.ipynb)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter the notebook's parameters cell declares (repeatable); "
                        "VALUE is a JSON number, true/false/null, or text")
    p.add_argument("--out", required=True, help="folder for the executed copy (same file name)")
    p.add_argument("--timeout", type=float, default=None, help="per-cell limit in seconds")
    p.set_defaults(func=_run)

    for name, text in (("execute", "execute book/chapters into book/_executed"),
                       ("build", "build the HTML from book/_executed (jupyter-book, strict)"),
                       ("check", "check every built page in Chromium"),
                       ("all", "execute, build and check"),
                       ("screenshot", "PNG screenshots of built pages")):
        p = sub.add_parser(name, help=text)
        if name == "screenshot":
            p.add_argument("pages", nargs="+", help="pages relative to the html root")
            p.add_argument("--out", default="screenshots", help="screenshot folder")
        p.add_argument("--book", default=str(root / "book"))
        if name in ("execute", "build", "check", "all"):
            p.add_argument("--out", dest="out_book", metavar="DIR", default=None,
                           help="work on a copy of the book's sources in DIR/book (pages, "
                                "HTML), leaving the committed book/_executed as it is; "
                                "required for a profile other than default")
        p.add_argument("--build-dir", default=None, help="default: the book folder")
        p.add_argument("--profile", choices=PROFILES, default="default")
        p.add_argument("--results-dir", default="results")
        p.add_argument("--threads", type=int, default=None, help="CPU threads per kernel")
        if name in ("execute", "all"):
            p.add_argument("--jobs", type=int, default=None,
                           help="chapters executed at once, each in its own kernel (default: "
                                "one per CPU)")
        p.add_argument("--chromium", default=DEFAULT_CHROMIUM)
        p.set_defaults(func=_book)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m esdbook``.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status: 0 on success, 1 when a check failed (a page problem, a verdict of a fresh
        re-run that does not hold) or a notebook or the build failed (the error in one
        message, no traceback), 2 for invalid arguments or an invalid grid.
    """
    from esdbook.build import BookBuildError, ChapterExecutionError
    from esdlib.train.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError) as err:
        print(f"esdbook {args.command}: {err}", file=sys.stderr)
        return 2
    except (BookBuildError, ChapterExecutionError, FileNotFoundError) as err:
        print(f"esdbook {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
