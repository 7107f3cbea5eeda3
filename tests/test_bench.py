"""esdlib.bench: exact saved-for-backward bytes, record layout, leak checks, peak-memory worker.

Properties only — no assertion depends on how fast this machine is.
"""

import argparse
import copy
import json

import pandas as pd
import pytest
import torch
from runs import torch_threads

import esdlib as esd
from esdlib import bench
from esdlib.bench import (
    BENCH_COLUMNS,
    BenchConfig,
    SavedTensorMeter,
    held_tensors,
    live_tensor_bytes,
    meter,
)
from esdlib.train.paths import project_root
from esdlib.train.records import RecordError

# one thread: on a shared 2-core machine, 2 OpenMP threads stall each other under load
TINY = dict(width=0.125, image_size=16, batches=(4,), in_channels=3, num_classes=10,
            quiet_wait_s=0.0, threads=1, keep_freed_memory=False)  # pytest process: no mallopt
TWO_PASS_PHASES = ("spike_pass", "rate_forward", "backward", "optimizer", "other")
BPTT_PHASES = ("forward", "backward", "optimizer", "other")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def record(one_thread):
    cfg = BenchConfig(**TINY, methods=("bptt", "ratebp", "esd"), Ts=(1, 4), warmup=1, steps=1,
                      peak_memory=False)
    return bench.run_bench(cfg, progress=False)


def _row(record, method, T):
    (row,) = [r for r in record["rows"] if r["method"] == method and r["T"] == T]
    return row


def _tiny_model(aux=None):
    torch.manual_seed(0)
    return esd.build_model("spiking_resnet18", 10, 3, 0.125, aux)


# --- saved-tensor meter: hand-computed cases ------------------------------------------------


@pytest.mark.parametrize("fn, nbytes, storages", [
    (lambda x: (x * x).sum(), 4000, 1),               # mul saves x twice: one storage
    (lambda x: x.exp().sin().sum(), 4000, 1),         # exp saves its output, sin that same input
    (lambda x: (x.exp() * x.sin()).sum(), 12000, 3),  # exp's output, x (for sin), sin's output
    (lambda x: x.sum() * 2.0, 0, 0),                  # sum and scalar mul save no tensor
])
def test_saved_tensor_meter_counts_unique_live_storages(fn, nbytes, storages):
    x = torch.randn(1000, requires_grad=True)
    with SavedTensorMeter() as meter:
        loss = fn(x)
        assert meter.live() == (nbytes, storages)
    loss.backward()
    assert meter.live() == (0, 0)  # the graph released everything


def test_saved_tensor_meter_excludes_parameters():
    lin = torch.nn.Linear(100, 10, bias=False)
    x = torch.randn(8, 100, requires_grad=True)
    with SavedTensorMeter() as meter:
        loss = lin(x).sum()
        assert meter.live(exclude=lin) == (8 * 100 * 4, 1)  # the input, not the weight
        assert meter.live()[0] == 8 * 100 * 4 + 100 * 10 * 4
    loss.backward()


# --- the benchmark record -------------------------------------------------------------------


def test_saved_bytes_flat_in_T_for_rate_bp_and_growing_for_bptt(record):
    for method in ("ratebp", "esd"):
        assert _row(record, method, 1)["saved_bytes"] == _row(record, method, 4)["saved_bytes"] > 0
        assert _row(record, method, 1)["state_bytes"] == pytest.approx(
            _row(record, method, 4)["state_bytes"], rel=0.01)  # only firing_per_t grows with T
    assert _row(record, "bptt", 4)["saved_bytes"] > 2 * _row(record, "bptt", 1)["saved_bytes"]
    assert _row(record, "esd", 1)["saved_bytes"] > _row(record, "ratebp", 1)["saved_bytes"]
    for r in record["rows"]:
        assert r["param_bytes"] > 0 and r["optimizer_state_bytes"] == r["param_bytes"]


def test_record_phases_are_complete_and_consistent(record):
    bench.validate_bench_record(record)
    assert record["device"]["type"] in ("cpu", "cuda") and record["threads"] == 1
    assert record["torch"] == torch.__version__
    assert len(record["rows"]) == 6
    for r in record["rows"]:
        have = TWO_PASS_PHASES if r["method"] != "bptt" else BPTT_PHASES
        for p in bench.PHASES:
            if p in have:
                assert r[f"{p}_s"] >= 0, (r["method"], p)
            else:
                assert r[f"{p}_s"] is None, (r["method"], p)
        assert r["n_steps"] == 1 and r["step_s_min"] <= r["step_s"] <= r["step_s_max"]
        assert r["infer_s"] > 0 and r["final_loss"] is not None and r["step_cpu_s"] >= 0
        assert r["load_other"] is None or 0 <= r["load_other"] <= 1
        assert 0 <= r["n_quiet"] <= r["n_steps"]
        s = r["samples"]
        for i, total in enumerate(s["step_s"]):  # phases are disjoint parts of the timed step
            assert sum(s[f"{p}_s"][i] for p in have) == pytest.approx(total, rel=1e-6)


def test_record_round_trip_table_and_figure(record, tmp_path):
    path = bench.write_bench_record(record, tmp_path)
    assert path.name == f"{record['bench_id']}.json"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    (tmp_path / "notes.txt").write_text("ignored")
    df = bench.load_bench(tmp_path)
    assert list(df.columns) == list(BENCH_COLUMNS) and len(df) == 6
    assert set(df["method"]) == {"bptt", "ratebp", "esd"}
    table = bench.bench_table(df)
    assert len(table) == 2 and not any("ref" in c for c in table)  # no cross-host reference
    for _, t in table.iterrows():
        esd_row = df[(df.method == "esd") & (df["T"] == t["T"])].iloc[0]
        rbp_row = df[(df.method == "ratebp") & (df["T"] == t["T"])].iloc[0]
        assert t["esd/ratebp saved"] == esd_row.saved_bytes / rbp_row.saved_bytes
        assert t["esd/ratebp step"] == esd_row.step_s / rbp_row.step_s
    assert table["esd/ratebp saved"].nunique() == 1  # same ratio at T=1 and T=4
    phases = bench.phase_table(df)
    assert phases.loc[phases.method == "bptt", "spike/infer"].isna().all()
    fig = bench.plot_bench(df)
    assert len(fig.axes) == 2 and all(ax.lines for ax in fig.axes)


def test_records_before_the_precision_axis_still_load(record):
    """Older records: ``device.amp`` instead of row precisions, a ``reference`` block."""
    old = copy.deepcopy(record)
    old["device"]["amp"] = True
    old["reference"] = {"source": "published implementation, another host"}
    for r in old["rows"]:
        del r["precision"]
    bench.validate_bench_record(old)
    assert set(bench.bench_frame(old)["precision"]) == {"fp16"}
    del old["device"]["amp"]
    assert set(bench.bench_frame(old)["precision"]) == {"fp32"}
    assert BenchConfig.from_dict({**TINY, "amp": False}).precisions == ("fp32",)


def test_bf16_is_one_more_axis_of_the_interleaved_grid():
    cfg = BenchConfig(**TINY, methods=("ratebp",), Ts=(2,), warmup=1, steps=1,
                      peak_memory=False, inference=False, precisions=("fp32", "bf16", "auto"))
    assert cfg.resolved_precisions == ("fp32", "bf16")  # auto is fp32 or bf16: no new cell
    record = bench.run_bench(cfg, progress=False)
    assert record["device"]["precisions"] == ["fp32", "bf16"]
    df = bench.bench_frame(record)
    assert sorted(df["precision"]) == ["bf16", "fp32"]
    fp32, bf16 = (df[df.precision == p].iloc[0] for p in ("fp32", "bf16"))
    # the rate pass saves its conv inputs and BN inputs in bf16 (eligibilities stay float32)
    assert bf16.saved_bytes < 0.8 * fp32.saved_bytes
    table = bench.bench_table(df)
    row = table[table.precision == "bf16"].iloc[0]
    assert row["ratebp step /fp32"] == pytest.approx(bf16.step_s / fp32.step_s)
    assert row["ratebp saved /fp32"] == pytest.approx(bf16.saved_bytes / fp32.saved_bytes)
    assert "ratebp step /fp32" not in table[table.precision == "fp32"].dropna(axis=1)
    assert list(bench.phase_table(df)["precision"]) == ["fp32", "bf16"]


def test_invalid_records_are_rejected(record, tmp_path):
    older = copy.deepcopy(record)  # records written before a column existed still load
    del older["rows"][0]["page_faults"]
    bench.validate_bench_record(older)
    assert bench.bench_frame(older)["page_faults"].isna().iloc[0]
    bad = copy.deepcopy(record)
    del bad["rows"][0]["saved_bytes"]
    bad["rows"][1]["step_s"] = -1.0
    with pytest.raises(ValueError, match="rows/0: 'saved_bytes' is a required property") as err:
        bench.validate_bench_record(bad)
    assert "rows/1/step_s: -1.0 is less than the minimum of 0" in str(err.value)
    assert isinstance(err.value, RecordError)  # the run records' error: one validator for both
    (tmp_path / "x.json").write_text(json.dumps({"kind": "other"}))
    with pytest.raises(ValueError, match="x.json"):
        bench.load_bench(tmp_path)
    assert bench.load_bench(tmp_path / "missing").columns.tolist() == list(BENCH_COLUMNS)


def test_committed_records_satisfy_the_schema():
    """Every record under results/bench (CPU and GPU) validates against bench_record.schema.json
    (a JSON file beside a CSV of the same name is that table's sidecar, not a record)."""
    paths = sorted(p for p in (project_root() / "results" / "bench").rglob("*.json")
                   if not p.with_suffix(".csv").is_file())
    assert len(paths) >= 2
    for path in paths:
        bench.validate_bench_record(json.loads(path.read_text()))


def test_config_validation():
    with pytest.raises(ValueError, match="valid"):
        BenchConfig(methods=("esd", "nope"))
    with pytest.raises(ValueError, match="Ts"):
        BenchConfig(Ts=(0, 2))
    with pytest.raises(ValueError, match="unknown BenchConfig keys"):
        BenchConfig.from_dict({"stepz": 3})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp16.*CUDA"):
            BenchConfig(precisions=("fp32", "fp16"))
    with pytest.raises(ValueError, match="precision='half'"):
        BenchConfig(precisions="half")
    assert BenchConfig(precisions="bf16").precisions == ("bf16",)
    cfg = BenchConfig(**TINY)
    assert BenchConfig.from_dict(cfg.to_dict()) == cfg


def test_cli_defaults_and_command(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench.add_bench_arguments(parser)
    assert bench.config_from_args(parser.parse_args([])) == BenchConfig()
    args = parser.parse_args(["--methods", "ratebp", "--T", "2", "--batch", "2", "--width",
                              "0.125", "--image-size", "8", "--warmup", "0", "--steps", "1",
                              "--no-peak", "--no-infer", "--no-progress", "--quiet-wait", "0",
                              "--threads", "1", "--no-keep-freed-memory",
                              "--out", str(tmp_path)])
    assert bench.bench_command(args) == 0
    (row,) = bench.load_bench(tmp_path).itertuples()
    assert row.saved_bytes > 0 and row.n_steps == 1 and pd.isna(row.infer_s)
    assert "record:" in capsys.readouterr().out
    assert bench.bench_command(parser.parse_args(["--T", "0"])) == 2
    assert bench.bench_command(parser.parse_args(["--methods", "esd,nope"])) == 2
    commas = bench.config_from_args(parser.parse_args(["--methods", "bptt,esd", "--T", "1,2",
                                                        "4", "--batch", "8,16", "--precision",
                                                        "fp32,bf16"]))
    assert (commas.methods, commas.Ts, commas.batches) == (("bptt", "esd"), (1, 2, 4), (8, 16))
    assert commas.precisions == ("fp32", "bf16")


# --- memory after evaluation and training ---------------------------------------------------


def test_evaluate_leaves_no_tensors_behind():
    model = _tiny_model().eval()
    x = torch.randn(4, 3, 16, 16)
    esd.evaluate_batch(model, x, 4)  # first call: lazy initialisation
    before = live_tensor_bytes()
    out = esd.evaluate_batch(model, x, 4)
    assert out.logits.shape == (4, 10) and out.firing_per_t
    del out
    assert held_tensors(model) == []
    assert abs(live_tensor_bytes() - before) <= 1024


def test_leak_detectors_see_a_leak():
    model = _tiny_model().eval()
    before = live_tensor_bytes()
    model.stages[0][0].lif1.spike_map = torch.zeros(64, 64)  # what the published code keeps
    assert [n for n, _ in held_tensors(model)] == ["stages.0.0.lif1.spike_map"]
    assert live_tensor_bytes() - before >= 64 * 64 * 4


def test_leak_detectors_skip_the_fake_tensors_of_a_compiled_graph():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():  # what torch.compile leaves alive in a process that compiled
        fake = torch.zeros(64, 64)
    before = live_tensor_bytes()  # no error from the fake tensor in the process
    assert meter.storage_bytes(iter([fake])) == {}
    del fake
    assert live_tensor_bytes() == before


@pytest.mark.parametrize("method", ["bptt", "esd"])
def test_training_step_leaves_no_tensors_behind(method):
    model = _tiny_model("dsconv").train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    esd.get_method(method)(model, x, y, 2, esd.LossConfig())
    assert held_tensors(model) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evaluate_releases_cuda_memory():
    model = _tiny_model().cuda().eval()
    x = torch.randn(4, 3, 16, 16, device="cuda")
    esd.evaluate_batch(model, x, 4)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = esd.evaluate_batch(model, x, 4)
    del out
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before
    assert held_tensors(model) == []


# --- peak memory in a fresh subprocess ------------------------------------------------------


def test_peak_memory_worker_runs_in_a_subprocess():
    cfg = BenchConfig(**TINY, device="cpu")
    out = bench.measure_peak(cfg, "spiking_resnet18", 4, "ratebp", 2)
    assert out["peak_source"].startswith("cpu_")
    for k in ("peak_baseline_bytes", "peak_bytes", "peak_growth_bytes"):
        assert isinstance(out[k], int) and out[k] >= 0
    assert out["peak_growth_bytes"] == max(0, out["peak_bytes"] - out["peak_baseline_bytes"])
    assert out["peak_baseline_bytes"] > 0


@pytest.mark.slow
def test_gpu_check_rehearsal_runs_every_call_on_the_cpu(tmp_path):
    """``GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh`` (about a minute): the same calls as on a
    GPU at toy sizes — channels-last on/off × fp32/bf16 (fp16 needs CUDA) × two arch groups,
    and the paper grid's dry run on one point."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, GPU_CHECK_DRY="1", PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    df = bench.load_bench(tmp_path)
    assert df["bench_id"].nunique() == 8
    assert set(df["precision"]) == {"fp32", "bf16"} and set(df["channels_last"]) == {True, False}
    assert set(df["arch"]) == {"spiking_resnet18", "spiking_resnet19", "preact_spiking_resnet34"}
    assert (tmp_path / "host.txt").is_file() and (tmp_path / "tests.txt").is_file()
    # the paper grid's dry run, rehearsed on its gradient-error point (synthetic data, CPU)
    assert "dry run: 1 points" in (tmp_path / "paper_dry_run.txt").read_text()
    # the compiled step's timings, beside (not among) the bench records
    assert (tmp_path / "compile_step" / "compile_step-cpu.json").is_file()
