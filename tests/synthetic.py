"""Synthetic run records shared by tests/test_analysis.py and tests/test_book_chapters.py.

``records_table`` builds a :func:`esdlib.load_records`-like table; the ``*_record`` helpers build
full records; every expected value in the tests is computed by hand from these.
"""

from pathlib import Path

import nbformat
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]

BASE = {"status": "complete", "experiment": "table1", "config.profile": "default",
        "config.dataset": "digits", "config.image_size": 16, "config.width": 0.25,
        "config.epochs": 12, "config.max_train_steps": None, "config.arch": "spiking_resnet18",
        "config.method": "esd", "config.T": 4, "config.seed": 0, "config.split": "official",
        "config.branch_kind": "dsconv", "config.beta": 0.3, "config.teacher_space": "logits",
        "config.eta": 0.0, "config.rate_grad_scale": "1/T", "metrics.final_test_acc": 0.9,
        "metrics.best_test_acc": 0.95,
        "git_revision": "abc", "created": "2026-01-01T00:00:00Z", "timing.wall_s": 1.0,
        "scale_label": "digits", "branch_params": 75_000}


def records_table(rows):
    """A load_records-like table: BASE overridden by each row; run ids made unique."""
    out = []
    for i, r in enumerate(rows):
        row = {**BASE, **r}
        row.setdefault("run_id", f"run{i}")
        row.setdefault("path", f"/x/{row['run_id']}.json")
        out.append(row)
    return pd.DataFrame(out)


def accs(method, values, **kw):
    return [{"config.method": method, "config.seed": s, "metrics.final_test_acc": a, **kw}
            for s, a in enumerate(values)]


def synthetic_paper():
    """A small copy of the layout of ``results/paper/table1_static.csv``."""
    return pd.DataFrame([
        ("RateBP", "one-step", "ResNet-18", 4, 95.0, 78.0, np.nan),
        ("ESD (ours in paper)", "one-step", "ResNet-18", 4, 96.0, 80.0, np.nan),
        ("ESD (ours in paper)", "one-step", "ResNet-18", 6, 96.5, 81.0, 70.0),
        ("TET", "BPTT", "ResNet-19", 4, 94.0, 74.0, np.nan),
        ("OTTT", "online", "VGG-11", 6, 93.0, 71.0, 65.0),
    ], columns=["method", "training", "architecture", "T", "cifar10", "cifar100", "imagenet"])


def real_paper(name):
    """A table of the repository's ``results/paper``."""
    from esdlib.train.records import load_paper_table

    return load_paper_table(name, REPO / "results")


def fr_record(run_id, method, per_t, arch="spiking_resnet18", per_layer=None):
    return {"run_id": run_id, "experiment": "table1", "status": "complete",
            "config": {"method": method, "T": len(per_t), "arch": arch, "seed": 0},
            "firing_rates": {"per_timestep": per_t, "definition": "network rate per step",
                             "per_layer": per_layer or {"a": 0.2, "b": 0.1}}}


def grad_record(run_id, ks):
    hist = [{"epoch": e, "K_rate": kr, "K_esd": ke, "cos_rate": 0.5, "cos_esd": 0.6,
             "per_layer_rate": {"w1": kr, "w2": 0.1}, "per_layer_esd": {"w1": ke, "w2": 0.2}}
            for e, (kr, ke) in enumerate(ks)]
    return {"run_id": run_id, "config": {"T": 4, "seed": 0}, "extra": {"gradient_error": hist}}


def write_nb(path, meta, error=None):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1")
    if error:
        cell.outputs = [nbformat.v4.new_output("error", ename=error[0], evalue=error[1],
                                               traceback=[])]
    nb.cells = [cell]
    nb.metadata["papermill"] = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def bench_rows(saved):
    """A load_bench-like table: one run, T = 1 and 4, saved bytes per method and T."""
    rows = []
    for (method, T), nbytes in saved.items():
        rows.append({"bench_id": "b1", "created": "2026-01-01T00:00:00Z", "device_type": "cpu",
                     "device_name": "cpu0", "threads": 2, "arch": "spiking_resnet18",
                     "width": 0.5, "image_size": 16, "in_channels": 3, "num_classes": 10,
                     "batch": 4, "method": method, "T": T, "step_s": 0.1 * T,
                     "step_s_min": 0.1 * T, "step_s_max": 0.1 * T, "saved_bytes": nbytes,
                     "peak_growth_bytes": nbytes, "infer_s": 0.01})
    return pd.DataFrame(rows)
