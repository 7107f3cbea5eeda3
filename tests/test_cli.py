"""The commands ``esd`` (esdlib.cli) and ``python -m esdbook`` (esdbook.__main__).

Bad input is one line on stderr and an exit status, before any work (nothing written, not even
an empty folder), with no traceback; errors during the work (a full disk, out of memory, a folder
removed mid-run, divergence) are one line too. Flags that are shortcuts for ``--set`` become
overrides.

The cases call the commands' ``main(argv)`` in this process (the same code as the installed
commands, without paying the PyTorch import per case; ``tests/runs.py``). One smoke test per
command runs the real entry point in a subprocess (those that train or benchmark are ``slow``).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from runs import assert_one_line_error, copy_run, esd, esdbook, full_disk, train_args

from esdlib.train.config import RunConfig
from esdlib.train.records import load_record

REPO = Path(__file__).resolve().parents[1]


def real_command(*args, cwd, module="esdlib.cli", timeout=300):
    """``python -m MODULE ARGS`` in a subprocess: the real entry point."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'book'}", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# esd: help and flags
# ---------------------------------------------------------------------------------------------


def test_help_lists_every_command_and_key():
    proc = esd("train", "--help")
    assert proc.returncode == 0 and "batch_size" in proc.stdout and "--profile" in proc.stdout
    top = esd("--help")
    assert top.returncode == 0
    for cmd in ("train", "evaluate", "info", "bench"):
        assert cmd in top.stdout


def test_train_shortcut_flags_become_overrides_and_refuse_doubles():
    from esdlib.cli import CommandError, build_parser, train_overrides

    parser = build_parser()
    args = parser.parse_args(["train", "--set", "T=3", "--precision", "bf16",
                              "--no-channels-last", "--no-keep-freed-memory"])
    assert train_overrides(args) == ["T=3", "precision=bf16", "channels_last=false",
                                     "keep_freed_memory=false"]
    cfg = RunConfig.from_overrides("smoke", train_overrides(args))
    assert (cfg.precision, cfg.channels_last, cfg.keep_freed_memory) == ("bf16", False, False)
    assert train_overrides(parser.parse_args(["train"])) == []
    with pytest.raises(CommandError, match="precision is set twice"):
        train_overrides(parser.parse_args(["train", "--precision", "fp32",
                                           "--set", "precision=bf16"]))


# ---------------------------------------------------------------------------------------------
# esd train: bad input is one line, before any work
# ---------------------------------------------------------------------------------------------

TRAIN_CASES = [
    # (overrides, needles)
    (["T=0"], ["T"]),
    (["method=magic"], ["esd"]),
    (["arch=vgg"], ["spiking_resnet18"]),
    (["tempo=3"], ["unknown"]),
    (["beta=-1"], ["beta"]),
    (["dataset=cifar10", "image_size=16"], ["cifar10", "image_size"]),
    (["device=cuda"] if not torch.cuda.is_available() else ["device=cuda:99"], ["device=", "cuda"]),
    (["device=mps"], ["mps", "not available"]),
    (["width=1e4"], ["width", "<= 16"]),
    (["image_size=100000"], ["image_size", "<= 1024"]),
    (["lr=1e300"], ["lr", "<="]),
    (["lr=0"], ["lr", "> 0"]),
    (["lr=-1"], ["lr", "> 0"]),
    (["tau=1e300"], ["tau", "<="]),
    (["checkpoint_dir=/dev/null/x"], ["checkpoint_dir", "not a writable folder"]),
    (["out_dir=/proc/esd"], ["out_dir", "not a writable folder"]),
    (["experiment=" + "x" * 240], ["experiment", "240 characters"]),
    (["experiment=" + "x" * 170], ["experiment", "170 characters"]),
    (["device=cpu", "precision=fp16"], ["precision='fp16'", "CUDA", "cpu"]),  # machine check
]


@pytest.mark.parametrize(("overrides", "needles"), TRAIN_CASES, ids=lambda v: str(v)[:40])
def test_train_bad_input_is_one_line_error_before_work(tmp_path, overrides, needles):
    args = ["train", "--profile", "smoke", "--quiet", "--set", "out_dir=out",
            "--set", "checkpoint_dir=ck"]
    for o in overrides:
        args += ["--set", o]
    proc = esd(*args, cwd=tmp_path)
    assert_one_line_error(proc, "esd train: invalid configuration: ", *needles, status=2)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even empty folders


def test_missing_dataset_is_one_line_error(tmp_path):
    """The smoke profile takes CIFAR's image size, so the command reaches the data set."""
    proc = esd("train", "--profile", "smoke", "--set", "dataset=cifar10",
               "--set", f"data_root={tmp_path / 'none'}", "--set", "out_dir=o",
               "--set", "checkpoint_dir=c", cwd=tmp_path)
    assert_one_line_error(proc, "data set not found", "cifar10", status=2)


# ---------------------------------------------------------------------------------------------
# esd train: errors during the work are one line
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_during_training_is_one_line(tmp_path, monkeypatch):
    full_disk(monkeypatch)
    proc = esd(*train_args(tmp_path, "--set", "epochs=1"))
    assert_one_line_error(proc, status=1)
    assert proc.stderr.startswith("esd: no space left on device while writing ")


@pytest.mark.parametrize("error, words", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't "
                  "allocate memory: you tried to allocate 96636764160 bytes."),
     ["out of memory", "DefaultCPUAllocator", "BPTT keeps all T steps"]),
    (MemoryError(), ["out of memory", "MemoryError"]),
    (FileNotFoundError(2, "No such file or directory", "/ck/run/.last.pt.tmp"),
     ["file error", "No such file or directory"]),
])
def test_out_of_memory_and_vanished_folders_are_one_line(error, words, monkeypatch):
    """T = 1024 with BPTT (or RLIMIT_AS lowered mid-run) runs out of memory, and a checkpoint
    folder deleted during training fails a write: one line each, no traceback."""
    from esdlib.train import engine

    def fit(*args, **kwargs):
        raise error

    monkeypatch.setattr(engine, "fit", fit)
    assert_one_line_error(esd("train", "--profile", "smoke", "--quiet"), *words, status=1)


def test_other_runtime_errors_are_not_called_out_of_memory(monkeypatch):
    from esdlib.train import engine

    monkeypatch.setattr(engine, "fit", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        esd("train", "--profile", "smoke", "--quiet")


def test_divergence_hint_names_more_than_the_learning_rate(monkeypatch):
    import esdlib.train.engine as engine

    monkeypatch.setattr(engine, "fit", lambda *a, **k: {
        "status": "diverged", "run_id": "r",
        "divergence": {"epoch": 1, "step": 1, "reason": "non-finite training loss (nan)"}})
    proc = esd("train", "--profile", "smoke", "--quiet", "--set", "tau=1e-300")
    assert_one_line_error(proc, "diverged", "tau", status=1)


# ---------------------------------------------------------------------------------------------
# esd evaluate
# ---------------------------------------------------------------------------------------------


def test_evaluate_reports_the_records_metrics(finished_runs, tmp_path):
    _, _, paths, rec = copy_run(finished_runs, tmp_path, "e1", 1)
    proc = esd("evaluate", paths["last"], "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr
    ev, record = json.loads(proc.stdout), load_record(rec)
    assert ev["test_acc"] == record["metrics"]["final_test_acc"]
    assert ev["test_loss"] == pytest.approx(record["metrics"]["test_loss"], rel=1e-5)
    assert len(ev["firing_rate_per_timestep"]) == record["config"]["T"]


@pytest.fixture
def not_a_checkpoint(tmp_path):
    p = tmp_path / "text.pt"
    p.write_text("hello\n")
    return p


@pytest.fixture
def foreign_torch_file(tmp_path):
    p = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, p)
    return p


def test_evaluate_bad_inputs_are_one_line_errors(tmp_path, not_a_checkpoint, foreign_torch_file):
    cases = [
        ([tmp_path / "missing.pt"], ["no checkpoint at", "missing.pt"]),
        ([tmp_path], ["is not a file"]),
        ([not_a_checkpoint], ["text.pt", "not a readable esdlib checkpoint"]),
        ([foreign_torch_file], ["foreign.pt", "not a readable esdlib checkpoint"]),
        ([foreign_torch_file, "--T", "0"], ["--T", "0"]),
        ([foreign_torch_file, "--T", "-1"], ["--T", "-1"]),
        ([foreign_torch_file, "--batch-size", "0"], ["--batch-size", "0"]),
        ([foreign_torch_file, "--batch-size", "-5"], ["--batch-size"]),
        ([foreign_torch_file, "--device", "tpu"], ["device='tpu'"]),
        ([foreign_torch_file, "--device", "cuda:99"], ["cuda:99"]),
    ]
    for args, needles in cases:
        assert_one_line_error(esd("evaluate", *args, cwd=tmp_path), *needles, status=2)


# ---------------------------------------------------------------------------------------------
# python -m esdbook
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "needle"), [(["--jobs", "0"], "--jobs"),
                                              (["--jobs", "-1"], "--jobs"),
                                              (["--threads", "0"], "--threads")])
def test_reproduce_jobs_and_threads_must_be_positive(tmp_path, args, needle):
    proc = esdbook("reproduce", "--profile", "smoke", "--no-book", *args, cwd=tmp_path)
    assert_one_line_error(proc, needle, ">= 1")


# ---------------------------------------------------------------------------------------------
# One smoke test per command: the real entry point in a subprocess
# ---------------------------------------------------------------------------------------------


def test_esdbook_command_refuses_fresh_runs_over_the_committed_records(tmp_path):
    proc = real_command("reproduce", "--profile", "smoke", "--fresh", REPO / "results",
                        module="esdbook", cwd=tmp_path)
    assert_one_line_error(proc, "--fresh", "separate folder")


def test_esd_evaluate_command_is_one_line_error_and_exit_status(tmp_path):
    proc = real_command("evaluate", tmp_path / "missing.pt", cwd=tmp_path)
    assert_one_line_error(proc, "no checkpoint at", "missing.pt", status=2)


@pytest.mark.slow  # trains (and pays the torch import)
def test_esd_train_command_writes_a_record_and_prints_its_summary(tmp_path):
    proc = real_command(*train_args(tmp_path, "--set", "max_train_steps=1"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "complete"
    (record,) = (tmp_path / "out").glob(f"*/{summary['run_id']}.json")
    assert load_record(record)["metrics"]["final_test_acc"] == summary["final_test_acc"]


@pytest.mark.slow  # builds every data set it finds (and pays the torch import)
def test_esd_info_command_lists_the_environment_and_every_data_set(tmp_path):
    from esdlib.data import DATASET_NAMES

    proc = real_command("info", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "environment:" in proc.stdout and "precision=auto resolves to" in proc.stdout
    for name in DATASET_NAMES:
        assert f"  {name}: " in proc.stdout
    assert "  digits: available" in proc.stdout  # embedded: found from any folder


@pytest.mark.slow  # benchmarks (and pays the torch import)
def test_esd_bench_command_writes_a_bench_record(tmp_path):
    from esdlib import bench

    proc = real_command("bench", "--methods", "ratebp", "--T", "2", "--batch", "2", "--width",
                        "0.125", "--image-size", "8", "--warmup", "0", "--steps", "1",
                        "--no-peak", "--no-infer", "--no-progress", "--quiet-wait", "0",
                        "--threads", "1", "--out", tmp_path / "bench", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "record:" in proc.stdout
    (row,) = bench.load_bench(tmp_path / "bench").itertuples()
    assert row.method == "ratebp" and row.T == 2 and row.saved_bytes > 0
