"""Time the ESD training step eager and with the compiled spike pass (``RunConfig.compile``).

One process, one model size, variants in order of importance (each on a fresh copy of the same
initial weights and the same random batch): fp32 eager (TF32 off), the compiled spike pass in
``reduce-overhead`` and ``default`` modes, bf16 eager and compiled, TF32 eager and compiled.
For each: the first step's wall time (it compiles), the median time of a full training step
(spike pass, rate pass, backward, SGD) and of the spike pass alone, and the first step's loss
next to the eager fp32 loss (the compiled fp32 pass must give the same loss up to rounding).
The JSON is rewritten after every variant, so a time limit still leaves what was measured.

    python benchmarks/compile_step.py --out results/bench/gpu            # CUDA, ResNet-18, B 128
    python benchmarks/compile_step.py --device cpu --width 0.125 --batch 2 --image-size 16 \\
        --T 2 --steps 1 --out /tmp/dry                                   # CPU rehearsal
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
import time
from pathlib import Path

import torch

import esdlib as esd
from esdlib.train.runtime import autocast, tf32

VARIANTS = (  # (name, compile mode, precision, tf32)
    ("eager fp32", "none", "fp32", False),
    ("reduce-overhead fp32", "reduce-overhead", "fp32", False),
    ("default fp32", "default", "fp32", False),
    ("eager bf16", "none", "bf16", False),
    ("reduce-overhead bf16", "reduce-overhead", "bf16", False),
    ("eager tf32", "none", "fp32", True),
    ("reduce-overhead tf32", "reduce-overhead", "fp32", True),
    ("max-autotune fp32", "max-autotune", "fp32", False),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def measure(net, x, y, args, compile_mode: str, precision: str, use_tf32: bool) -> dict:
    """Time one variant on a fresh copy of ``net``; see the module docstring."""
    device = x.device
    model = copy.deepcopy(net).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    spike = esd.compile_spike_pass(compile_mode)
    step_fn = esd.get_method("esd")
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(precision, device.type):
            res = step_fn(model, x, y, args.T, esd.LossConfig(), spike_fn=spike)
        opt.step()
        losses.append(res.loss)

    def spike_only():
        with autocast(precision, device.type):
            spike(model, x, args.T)
        esd.reset_state(model)

    with tf32(use_tf32):
        first = _time(step, device, 1)[0]
        _time(step, device, args.warmup)
        step_s = _time(step, device, args.steps)
        spike_s = _time(spike_only, device, args.steps)
    error = getattr(spike, "error", None)
    return {"compile": compile_mode, "precision": precision, "tf32": use_tf32,
            "first_step_s": first, "step_s_median": statistics.median(step_s),
            "step_s": step_s, "spike_pass_s_median": statistics.median(spike_s),
            "first_loss": float(losses[0]), "compile_error": error}


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the variants, write ``<out>/compile_step-<device>.json``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--arch", default="spiking_resnet18")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--T", type=int, default=6)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variants", default=",".join(v[0] for v in VARIANTS),
                   help="comma-separated variant names (default: all, in this order)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    chosen = [v.strip() for v in args.variants.split(",")]
    unknown = sorted(set(chosen) - {v[0] for v in VARIANTS})
    if unknown:
        p.error(f"unknown variant(s) {unknown}; valid: {[v[0] for v in VARIANTS]}")
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = esd.build_model(args.arch, num_classes=10, in_channels=3, width=args.width)
    net = net.to(device, memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), device=device)
    record = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu", "torch": torch.__version__, "method": "esd", "arch": args.arch,
              "width": args.width, "batch": args.batch, "image_size": args.image_size,
              "T": args.T, "warmup": args.warmup, "steps": args.steps, "channels_last": True,
              "rows": []}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"compile_step-{device.type}.json"
    for name, compile_mode, precision, use_tf32 in VARIANTS:
        if name not in chosen:
            continue
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            continue
        row = {"variant": name, **measure(net, x, y, args, compile_mode, precision, use_tf32)}
        record["rows"].append(row)
        print(f"{name:>22}: step {row['step_s_median'] * 1e3:8.2f} ms, spike pass "
              f"{row['spike_pass_s_median'] * 1e3:8.2f} ms, first step {row['first_step_s']:6.1f} "
              f"s, loss {row['first_loss']:.6f}"
              + (f", FELL BACK: {row['compile_error']}" if row["compile_error"] else ""),
              flush=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
