"""``python -m esdlib.bench``: the ``esd bench`` options, plus ``--worker SPEC`` (internal)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from esdlib.bench.config import add_bench_arguments
from esdlib.bench.run import bench_command, peak_worker


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m esdlib.bench``: the ``esd bench`` options, plus ``--worker SPEC`` (internal).

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m esdlib.bench",
                                     description="Training cost (time, memory) versus T.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(peak_worker(json.loads(args.worker))), flush=True)
        return 0
    return bench_command(args)


if __name__ == "__main__":
    sys.exit(main())
