"""Distributed training (DDP) in the run layer.

In this process: a collective timeout is set (and configurable), a failed or timed-out collective
is one clear error, BatchNorm statistics are averaged over ranks before every evaluation and
checkpoint. With torchrun and two gloo processes (``slow``): a run's record and evaluation cover
the whole test set with the saved model's metrics, and a run whose rank was killed resumes to the
uninterrupted run's record.
"""

import datetime

import pytest
import torch

import esdlib.train.distributed as distributed
import esdlib.train.engine as engine
from esdlib.train.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_header
from esdlib.train.config import ConfigError


def test_init_distributed_sets_a_collective_timeout(monkeypatch):
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, **kw: seen.update(backend=backend, **kw))
    assert engine.init_distributed(torch.device("cpu"))
    assert seen == {"backend": "gloo",
                    "timeout": datetime.timedelta(seconds=distributed.DDP_TIMEOUT_S)}
    assert distributed.DDP_TIMEOUT_S < 1800  # shorter than torch's 30-minute default
    monkeypatch.setenv("ESD_DDP_TIMEOUT_S", "42")
    engine.init_distributed(torch.device("cpu"))
    assert seen["timeout"] == datetime.timedelta(seconds=42)


@pytest.mark.parametrize("text", ["0", "-1", "soon", "nan"])
def test_bad_ddp_timeout_is_a_config_error(text, monkeypatch):
    monkeypatch.setenv("ESD_DDP_TIMEOUT_S", text)
    with pytest.raises(ConfigError, match="ESD_DDP_TIMEOUT_S"):
        distributed.ddp_timeout_s()


def test_a_timed_out_collective_is_one_clear_error(monkeypatch, capsys):
    from esdlib import cli

    def stuck(tensor):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:446] Timed out waiting 600000ms\nmore")

    monkeypatch.setattr(distributed.dist, "all_reduce", stuck)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 0)
    with pytest.raises(distributed.DistributedError,
                       match="rank 0: averaging the gradients failed"):
        distributed.all_reduce(torch.zeros(3), "averaging the gradients")

    def fit(*args, **kwargs):
        distributed.all_reduce(torch.zeros(3), "averaging the gradients")

    monkeypatch.setattr(engine, "fit", fit)
    assert cli.main(["train", "--profile", "smoke", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "distributed run" in err and "Timed out" in err


def test_batchnorm_statistics_are_averaged_over_ranks(monkeypatch):
    import esdlib as esd

    torch.manual_seed(0)
    net = esd.build_model("spiking_resnet18", 10, 1, width=0.125)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(0.5, 2)
    mine = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    # the other rank's statistics: 3 + ours, so the average is ours + 1.5
    monkeypatch.setattr(distributed, "dist_info", lambda: (0, 2))
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda t: t.mul_(2).add_(3))
    engine.sync_batchnorm_stats(net)
    for m, (mean, var) in zip(bns, mine, strict=True):
        torch.testing.assert_close(m.running_mean, mean + 1.5)
        torch.testing.assert_close(m.running_var, var + 1.5)


def test_fit_syncs_batchnorm_before_every_evaluation_and_checkpoint(tmp_path, monkeypatch):
    from esdlib.train.config import RunConfig

    events = []
    real_eval, real_save = engine.evaluate, engine.save_checkpoint
    monkeypatch.setattr(engine, "sync_batchnorm_stats", lambda m: events.append("sync"))
    monkeypatch.setattr(engine, "evaluate",
                        lambda *a, **k: events.append("evaluate") or real_eval(*a, **k))
    monkeypatch.setattr(engine, "save_checkpoint",
                        lambda *a, **k: events.append("save") or real_save(*a, **k))
    cfg = RunConfig.from_profile("smoke", epochs=1, out_dir=str(tmp_path / "o"),
                                 checkpoint_dir=str(tmp_path / "c"))
    engine.fit(cfg, progress=False)
    assert "evaluate" in events and "save" in events
    for i, e in enumerate(events):
        if e in ("evaluate", "save"):
            assert events[i - 1] == "sync" or (e == "save" and events[i - 1] == "save"
                                                and events[i - 2] == "sync"), events


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One uninterrupted training in two processes under torchrun (gloo, smoke profile, 3 epochs
    of 20 steps): the run of the DDP test, and the reference of the killed-rank test."""
    base = tmp_path_factory.mktemp("ddp")
    proc = _torchrun_train(base / "r", base / "c")
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    return base


@pytest.mark.slow  # torchrun: two processes, each paying the torch import
def test_ddp_two_processes_gloo(ddp_run):
    import json

    from runs import esd

    records = list((ddp_run / "r").glob("*/*.json"))
    assert len(records) == 1
    rec = json.loads(records[0].read_text())
    assert rec["extra"]["world_size"] == 2 and rec["status"] == "complete"
    # the evaluation was sharded and reduced: it covers the whole test set
    assert rec["history"][0]["test_acc"] * 360 == pytest.approx(
        round(rec["history"][0]["test_acc"] * 360))
    # the record's metrics are those of the saved model (BN statistics synced over ranks)
    last = next((ddp_run / "c").glob("*/last.pt"))
    ev = esd("evaluate", last, "--device", "cpu", "--quiet")
    assert ev.returncode == 0, ev.stderr
    ev = json.loads(ev.stdout)
    assert ev["test_acc"] == rec["metrics"]["final_test_acc"]
    assert ev["test_loss"] == pytest.approx(rec["metrics"]["test_loss"], rel=1e-5)


def _torchrun_train(out, ck, *extra):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "esdlib.cli", "train", "--profile", "smoke", "--quiet", "--set",
           f"out_dir={out}", "--set", f"checkpoint_dir={ck}", "--set", "device=cpu", "--set",
           "epochs=3", "--set", "max_train_steps=20", "--set", "batch_size=16", "--set",
           "checkpoint_every=2", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _children(pid):
    from pathlib import Path

    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found += [int(child), *_children(int(child))]
    return found


@pytest.mark.slow
def test_resume_after_a_killed_rank_reproduces_the_uninterrupted_record(ddp_run, tmp_path):
    """N4: kill rank 1 in the middle of epoch 2, resume with the same command: the record equals
    the one of an uninterrupted run (weights, BatchNorm statistics and metrics)."""
    import json
    import os
    import signal
    import time

    out, ck = tmp_path / "k" / "r", tmp_path / "k" / "c"
    run = _torchrun_train(out, ck)
    deadline, killed = time.time() + 240, False
    while time.time() < deadline and run.poll() is None:
        found = list(ck.glob("*/last.pt"))
        if found:
            try:  # the header alone: cheap enough to poll often on a busy machine
                state = read_checkpoint_header(found[0])
            except CheckpointError:  # being replaced right now
                state = {"epoch": 0}
            if state["epoch"] == 1 and state["step_in_epoch"] >= 2:
                workers = [p for p in _children(run.pid)
                           if b"esdlib.cli" in open(f"/proc/{p}/cmdline", "rb").read()]
                victim = max(workers)  # the later-started worker: rank 1 in practice
                os.kill(victim, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.01)
    assert killed, "never caught the run in epoch 2: nothing was tested"
    assert run.wait(timeout=120) != 0  # torchrun tore the group down
    resumed = _torchrun_train(out, ck)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-3000:]
    a = json.loads(next((ddp_run / "r").glob("*/*.json")).read_text())
    b = json.loads(next(out.glob("*/*.json")).read_text())
    assert b["status"] == "complete" and b["run_id"] == a["run_id"]
    keys = ("train_loss", "train_acc", "test_acc", "test_loss", "firing_rate_mean")
    assert [{k: h.get(k) for k in keys} for h in a["history"]] == \
        [{k: h.get(k) for k in keys} for h in b["history"]]
    assert a["metrics"]["final_test_acc"] == b["metrics"]["final_test_acc"]
    wa = load_checkpoint(next((ddp_run / "c").glob("*/last.pt")))["model"]
    wb = load_checkpoint(next(ck.glob("*/last.pt")))["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
