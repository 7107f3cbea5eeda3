"""The training loop (esdlib.train.engine's ``fit``) and what it records.

A smoke run's record, the epoch sampler and learning-rate schedule, the runtime fast path and
what ``precision`` resolves to, divergence (detected, recorded, reported), operation counting,
the data of every path through ``datasets_of``, epoch timing. Checkpoints and resume:
``test_checkpoint.py``; DDP: ``test_distributed.py``; the command line: ``test_cli.py``.
"""


import pytest
import torch

import esdlib.train.divergence as divergence
from esdlib.train.checkpoint import load_trained_model
from esdlib.train.config import RunConfig
from esdlib.train.distributed import EpochSampler
from esdlib.train.engine import fit
from esdlib.train.records import load_record, load_records, validate_record
from esdlib.train.setup import lr_factor
from esdlib.train.state import record_diagnostics

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _cfg(tmp_path, **kw):
    base = dict(out_dir=str(tmp_path / "results"), checkpoint_dir=str(tmp_path / "ckpt"))
    return RunConfig.from_profile("smoke", **(base | kw))


def test_smoke_fit_writes_a_valid_record(tmp_path):
    cfg = _cfg(tmp_path, epochs=2)
    rec = fit(cfg, progress=False)
    validate_record(rec)
    assert rec["status"] == "complete" and len(rec["history"]) == 2
    assert 0 <= rec["metrics"]["final_test_acc"] <= 1
    assert rec["metrics"]["final_test_acc"] == rec["history"][-1]["test_acc"]
    assert len(rec["firing_rates"]["per_timestep"]) == cfg.T
    # operations are counted once, at the final epoch, for the record's metrics
    assert [("sops_per_sample" in h) for h in rec["history"]] == [False, True]
    assert rec["metrics"]["sops_per_sample"] == rec["history"][-1]["sops_per_sample"] > 0
    df = load_records(tmp_path / "results")
    assert list(df["run_id"]) == [rec["run_id"]]
    model, cfg2 = load_trained_model(tmp_path / "ckpt" / rec["run_id"] / "last.pt")
    assert cfg2 == cfg and not model.training and len(model.branches) == 3
    # a finished run is not retrained
    again = fit(cfg, progress=False)
    assert again["history"] == rec["history"]


def test_epoch_sampler_is_deterministic_sharded_and_resumable():
    s = EpochSampler(10, seed=3, rank=1, world=2)
    s.set_position(4)
    full = list(s)
    assert len(full) == 5 and all(i in range(10) for i in full)
    s.set_position(4, 2)
    assert list(s) == full[2:]
    other = EpochSampler(10, seed=3, rank=0, world=2)
    other.set_position(4)
    assert sorted(full + list(other)) == list(range(10))


def test_lr_schedule_warmup_then_cosine():
    cfg = RunConfig.from_profile("smoke", epochs=10, warmup_epochs=2)
    assert lr_factor(0, cfg) == pytest.approx(1 / 3)
    assert lr_factor(2, cfg) == pytest.approx(1.0)
    assert lr_factor(6, cfg) == pytest.approx(0.5)


def _spy_steps(monkeypatch):
    """Record, at every training step, the batch's and the weights' layout and the autocast."""
    import esdlib.train.engine as engine
    from esdlib.layers import SpikeConv2d

    seen = []
    real = engine.get_method

    def get_method(name):
        step = real(name)

        def spied(model, x, y, T, *args, **kwargs):
            conv = next(m for m in model.modules() if isinstance(m, SpikeConv2d))
            # (the digits batch has one channel: NCHW and NHWC are the same memory there)
            seen.append({"w_nhwc": conv.weight.stride(1) == 1 and not conv.weight.is_contiguous(),
                         "autocast": torch.get_autocast_dtype("cpu")
                         if torch.is_autocast_enabled("cpu") else None})
            return step(model, x, y, T, *args, **kwargs)
        return spied

    monkeypatch.setattr(engine, "get_method", get_method)
    return seen


def _spy_allocator(monkeypatch):
    import esdlib.train.runtime as runtime

    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda *a, **k: calls.append(a) or True)
    return calls


def test_fit_runs_the_fast_path_by_default_and_records_it(tmp_path, monkeypatch):
    calls, seen = _spy_allocator(monkeypatch), _spy_steps(monkeypatch)
    rec = fit(_cfg(tmp_path, device="cpu"), progress=False)
    assert len(calls) == 1
    assert seen and all(s == {"w_nhwc": True, "autocast": None} for s in seen)
    assert rec["extra"]["runtime"] == {"precision": "fp32", "channels_last": True,
                                       "keep_freed_memory": True, "compile": "none",
                                       "tf32": False}
    assert rec["config"]["channels_last"] is True and rec["config"]["keep_freed_memory"] is True
    validate_record(rec)


def test_fit_fast_path_switches_off_and_bf16_runs_under_autocast(tmp_path, monkeypatch):
    calls, seen = _spy_allocator(monkeypatch), _spy_steps(monkeypatch)
    cfg = _cfg(tmp_path, device="cpu", channels_last=False, keep_freed_memory=False,
               precision="bf16")
    rec = fit(cfg, progress=False)
    assert calls == []
    assert seen and all(s == {"w_nhwc": False, "autocast": torch.bfloat16}
                        for s in seen)
    assert rec["extra"]["runtime"] == {"precision": "bf16", "channels_last": False,
                                       "keep_freed_memory": False, "compile": "none",
                                       "tf32": False}
    assert rec["status"] == "complete" and all(
        p.dtype == torch.float32 for p in load_trained_model(
            tmp_path / "ckpt" / rec["run_id"] / "last.pt")[0].parameters())


@pytest.mark.parametrize(("units", "resolved"), [(False, "fp32"), (True, "bf16")])
def test_fit_records_what_auto_precision_resolved_to(tmp_path, monkeypatch, units, resolved):
    import esdlib.train.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_bf16_units",
                        lambda: {"amx_bf16": False, "avx512_bf16": units})
    seen = _spy_steps(monkeypatch)
    rec = fit(_cfg(tmp_path, device="cpu", precision="auto", keep_freed_memory=False),
              progress=False)
    assert rec["config"]["precision"] == "auto"
    assert rec["extra"]["runtime"]["precision"] == resolved
    assert {s["autocast"] for s in seen} == {torch.bfloat16 if units else None}


def test_record_keys_number_the_outputs_branches_first_main_last():
    """The history keeps its ``acc_out{i}`` keys: branches first, main last; out0 = main alone."""
    three = {"reliable_fraction": 0.5, "acc_branch1": 0.1, "acc_branch2": 0.2,
             "acc_branch3": 0.3, "acc_main": 0.4, "loss_hard": 1.0}
    assert record_diagnostics(three) == {"reliable_fraction": 0.5, "acc_out0": 0.1,
                                         "acc_out1": 0.2, "acc_out2": 0.3, "acc_out3": 0.4,
                                         "loss_hard": 1.0}
    assert list(record_diagnostics(three)) == ["reliable_fraction", "acc_out0", "acc_out1",
                                               "acc_out2", "acc_out3", "loss_hard"]
    assert record_diagnostics({"acc_main": 0.9, "loss_soft": 0.0}) == {"acc_out0": 0.9,
                                                                      "loss_soft": 0.0}


def test_op_counter_counts_macs_on_real_inputs_and_acs_on_spikes():
    """SOP energy bookkeeping by hand: a real-valued input costs MACs, a spike map costs one AC
    per non-zero input per weight it reaches; branches are not counted."""
    from esdlib.train.metrics import E_AC_PJ, E_MAC_PJ, OpCounter

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
            self.fc = torch.nn.Linear(8, 3)
            self.branches = torch.nn.ModuleList([torch.nn.Linear(8, 3)])

        def forward(self, x):
            s = (self.conv(x) > 0).float().flatten(1)[:, :8]  # binary: a spike map
            return self.fc(s), self.branches[0](s), s

    torch.manual_seed(0)
    net, x = Net(), torch.rand(5, 1, 4, 4)
    with OpCounter(net) as ops:
        _, _, spikes = net(x)
        ops.add_samples(5)
    assert not ops._handles  # hooks removed on exit
    macs = 5 * 2 * 4 * 4 * 9  # conv: outputs x (in_channels * 3 * 3)
    acs = 5 * 3 * 8 * spikes.mean().item()  # fc: outputs x 8 inputs, times the spike fraction
    s = ops.summary()
    assert s["macs_per_sample"] == pytest.approx(macs / 5)
    assert s["sops_per_sample"] == pytest.approx(acs / 5)
    assert s["energy_uj_per_sample"] == pytest.approx((E_AC_PJ * acs + E_MAC_PJ * macs) / 5e6)
    assert 0 < spikes.mean().item() < 1


def test_every_path_to_data_goes_through_datasets_of(tmp_path, monkeypatch):
    """Training, the gradient study and ``esd evaluate`` build their data with the config's
    cache folder, split and seed (the gradient study used to drop ``cache_dir``, so a read-only
    DVS data folder would have been written to)."""
    import esdlib.train.setup as setup
    from esdlib.train.gradients import gradient_study

    seen = []

    class Stop(Exception):
        pass

    def build_datasets(name, root, **kw):
        seen.append(kw)
        raise Stop

    monkeypatch.setattr(setup, "build_datasets", build_datasets)
    cfg = _cfg(tmp_path, method="esd", cache_dir=str(tmp_path / "cache"), seed=3)
    for call in (lambda: setup.build_run(cfg), lambda: gradient_study(cfg, progress=False)):
        with pytest.raises(Stop):
            call()
    assert [kw["cache_dir"] for kw in seen] == [tmp_path / "cache"] * 2
    assert [kw["seed"] for kw in seen] == [3, 3] and seen[1]["augment"] is False


def test_epoch_time_covers_the_whole_epoch_with_mid_epoch_checkpoints(tmp_path):
    """``epoch_time_s`` (and the throughput) used to cover only the steps after an epoch's last
    mid-epoch checkpoint; it is the epoch's share of ``train_s``."""
    rec = fit(_cfg(tmp_path, epochs=2, max_train_steps=6, checkpoint_every=4), progress=False)
    times = [h["epoch_time_s"] for h in rec["history"]]
    assert sum(times) == pytest.approx(rec["timing"]["train_s"], rel=1e-9)
    # epoch 1 has a checkpoint after step 4 of 6, epoch 2 after its step 2 (global step 8)
    assert min(times) > 0.25 * max(times)


# --- divergence: detected, recorded as such, reported in one line ----------------------------


def test_huge_learning_rate_is_recorded_as_diverged(tmp_path):
    from runs import esd, record_file, smoke_config, train_args

    from esdlib.analysis.runs import left_out, runs_of
    from esdlib.train.checkpoint import checkpoint_paths, load_checkpoint

    proc = esd(*train_args(tmp_path, "--set", "lr=1e6", "--set", "epochs=2"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "diverged at epoch 1" in lines[0], proc.stderr
    cfg = smoke_config(tmp_path, lr=1e6, epochs=2)
    rec = load_record(record_file(cfg))
    validate_record(rec)
    assert rec["status"] == "diverged"
    d = rec["divergence"]
    assert d["epoch"] == 1 and d["step"] >= 1
    assert "non-finite" in d["reason"] or "exploding" in d["reason"]
    assert rec["metrics"]["final_test_acc"] is None
    last = checkpoint_paths(cfg)["last"]
    if last.exists():  # any checkpoint kept is from before the divergence
        ckpt = load_checkpoint(last)
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values()
                   if t.is_floating_point())
    df = load_records(tmp_path / "out")
    assert len(runs_of(df, "smoke")) == 0
    assert left_out(df, "smoke")["why"].tolist() == ["diverged"]
    again = esd(*train_args(tmp_path, "--set", "lr=1e6", "--set", "epochs=2"))
    assert again.returncode == 1 and "diverged" in again.stderr


def test_non_finite_loss_is_divergence():

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    checked = divergence.checked_tensors(net)  # collected once: in-place updates stay visible
    assert "loss" in divergence.divergence_reason(float("nan"), checked)
    assert divergence.divergence_reason(1.0, checked) is None
    assert "exploding" in divergence.divergence_reason(1.65e15, checked)  # finite, but blown up
    assert divergence.divergence_reason(divergence.DIVERGED_LOSS, checked) is None
    with torch.no_grad():
        net[1].running_var[1] = float("nan")  # a buffer counts as well as a parameter
    assert "weights" in divergence.divergence_reason(1.0, checked)
    with torch.no_grad():
        net[1].running_var[1] = 1.0
        net[0].weight[0, 0] = float("inf")
    assert "weights" in divergence.divergence_reason(1.0, checked)


def test_a_loss_stuck_far_above_its_start_is_divergence(tmp_path, monkeypatch):
    import esdlib.train.engine as engine

    real = engine.get_method
    calls = []

    def inflated(name):
        step = real(name)

        def run(*args, **kwargs):
            res = step(*args, **kwargs)
            calls.append(1)
            factor = 1.0 if len(calls) == 1 else 10.0  # the loss goes up 10x and stays there
            return res._replace(loss=res.loss.detach() * factor)
        return run

    monkeypatch.setattr(engine, "get_method", inflated)
    with pytest.warns(engine.DivergenceWarning, match="stuck far above its start"):
        record = fit(_cfg(tmp_path, epochs=2), progress=False)
    assert record["status"] == "diverged" and record["divergence"]["epoch"] == 1
    assert divergence.stuck_reason(3.9, 1.0) is None and divergence.stuck_reason(4.1, 1.0)
    assert divergence.stuck_reason(100.0, None) is None  # resumed from an older checkpoint
