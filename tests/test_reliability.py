"""Reliability of the checkpoint / resume / record side (issue 11, review findings F1-F6, F11,
F12): safe and checksummed checkpoints, runs that always finish, divergence, self-healing
records, consistent best.pt, temporary files, permissions and disk-full errors."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import esdlib.train.engine as engine
from esdlib.io import DiskFullError, _host_tag, atomic_open, file_mode
from esdlib.train.config import RunConfig
from esdlib.train.engine import (
    CHECKPOINT_MAGIC,
    CheckpointError,
    checkpoint_paths,
    fit,
    load_checkpoint,
    read_checkpoint_header,
)
from esdlib.train.paths import resolve_path
from esdlib.train.records import (
    RecordError,
    load_record,
    load_records,
    record_exists,
    record_path,
    validate_record,
)

ROOT = Path(__file__).resolve().parents[1]


def _cfg(root, **kw):
    base = dict(out_dir=str(root / "out"), checkpoint_dir=str(root / "ck"))
    return RunConfig.from_profile("smoke", **(base | kw))


def _cli(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "esdlib.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _train_args(root, *more):
    return ["train", "--profile", "smoke", "--quiet", "--set", f"out_dir={root / 'out'}",
            "--set", f"checkpoint_dir={root / 'ck'}", *more]


def _rec_path(cfg):
    return record_path(resolve_path(cfg.out_dir), cfg.experiment,
                       engine.make_run_id(cfg))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 1-epoch and a finished 2-epoch smoke run (copied by :func:`_copy`)."""
    base = tmp_path_factory.mktemp("finished")
    for epochs in (1, 2):
        fit(_cfg(base / f"e{epochs}", epochs=epochs), progress=False)
    return base


def _copy(finished, tmp_path, epochs):
    root = tmp_path / "run"
    shutil.copytree(finished / f"e{epochs}", root)
    cfg = _cfg(root, epochs=epochs)
    return root, cfg, checkpoint_paths(cfg), _rec_path(cfg)


def _payload_offset(path):
    raw = Path(path).read_bytes()
    assert raw.startswith(CHECKPOINT_MAGIC)
    return raw.index(b"\n") + 1


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"echo PWNED > {self.marker}",))


# ---------------------------------------------------------------------------------------------
# F1: loading a checkpoint never runs code
# ---------------------------------------------------------------------------------------------


def test_evaluate_refuses_a_code_executing_checkpoint(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"version": 1, "x": _Evil(marker)}, evil)
    proc = _cli("evaluate", evil, "--quiet", "--device", "cpu")
    assert not marker.exists(), "the checkpoint's payload was executed"
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "refusing to load" in proc.stderr and str(evil) in proc.stderr


def test_resume_refuses_a_planted_code_executing_last_pt(tmp_path):
    marker = tmp_path / "PWNED"
    cfg = _cfg(tmp_path, epochs=1)
    last = checkpoint_paths(cfg)["last"]
    last.parent.mkdir(parents=True)
    torch.save({"version": 1, "config_hash": cfg.config_hash(), "x": _Evil(marker)}, last)
    proc = _cli(*_train_args(tmp_path, "--set", "epochs=1"))
    assert not marker.exists(), "resume executed the planted checkpoint"
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "refusing to load" in proc.stderr and str(last) in proc.stderr
    assert not _rec_path(cfg).exists()


def test_payload_with_a_valid_checksum_is_still_refused(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    engine.save_checkpoint(evil, version=engine.CHECKPOINT_VERSION, x=_Evil(marker))
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_checkpoint_payload_is_plain_tensors_and_data(finished, tmp_path):
    _, _, paths, _ = _copy(finished, tmp_path, 1)
    for kind in ("last", "best"):
        raw = paths[kind].read_bytes()
        payload = raw[_payload_offset(paths[kind]):]
        import io

        ckpt = torch.load(io.BytesIO(payload), weights_only=True)  # no allow-listed globals
        assert ckpt["version"] == engine.CHECKPOINT_VERSION
        assert isinstance(ckpt["rng"]["numpy"]["key"], torch.Tensor)


def test_format_1_checkpoint_still_loads_and_resumes(tmp_path):
    """A checkpoint written before checksums (NumPy array in the RNG state) is read with the
    safe loader, and its NumPy RNG state is restored exactly."""
    import random

    import numpy as np

    ref = tmp_path / "ref"
    cfg_ref = _cfg(ref, epochs=2)
    rec_ref = fit(cfg_ref, progress=False)
    # an old-format last.pt of epoch 1 of the same config: train 1 epoch, rewrite as format 1
    old = tmp_path / "old"
    cfg = _cfg(old, epochs=2)
    fit(cfg, progress=False, stop_after_steps=3)  # smoke: 3 steps = one epoch
    last = checkpoint_paths(cfg)["last"]
    ckpt = load_checkpoint(last)
    npst = ckpt["rng"]["numpy"]
    ckpt["rng"]["numpy"] = (npst["kind"], npst["key"].numpy().astype(np.uint32), npst["pos"],
                            npst["has_gauss"], npst["cached_gaussian"])
    ckpt["version"] = 1
    torch.save(ckpt, last)  # plain torch zip, as esdlib 0.1 wrote it
    assert last.read_bytes()[:2] == b"PK"
    with pytest.warns(UserWarning, match="predates checkpoint checksums"):
        again = load_checkpoint(last)
    engine.set_rng_state(again["rng"])
    assert np.random.get_state()[1].tolist() == npst["key"].tolist()
    random.random()
    with pytest.warns(UserWarning, match="predates"):
        resumed = fit(cfg, progress=False)
    assert resumed["status"] == "complete"
    assert [h["train_loss"] for h in resumed["history"]] == \
        [h["train_loss"] for h in rec_ref["history"]]


# ---------------------------------------------------------------------------------------------
# F4: damaged checkpoints are detected, with the file named
# ---------------------------------------------------------------------------------------------


def _flip_bit(path, where):
    raw = bytearray(path.read_bytes())
    raw[where] ^= 0x40
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["flip", "garble", "truncate", "empty", "header"])
def test_damaged_checkpoint_is_an_error_naming_the_file(finished, tmp_path, damage):
    _, _, paths, _ = _copy(finished, tmp_path, 1)
    path = paths["best"]
    off = _payload_offset(path)
    size = path.stat().st_size
    if damage == "flip":
        _flip_bit(path, off + size // 2 - off // 2)
    elif damage == "garble":
        raw = bytearray(path.read_bytes())
        raw[off + 40000: off + 44096] = b"\x7f" * 4096
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[: size // 3])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(path.read_bytes()[:20] + b"\x00" + path.read_bytes()[21:])
    with pytest.raises(CheckpointError, match="damaged") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_evaluate_of_a_flipped_bit_is_a_clear_error(finished, tmp_path):
    _, _, paths, _ = _copy(finished, tmp_path, 1)
    _flip_bit(paths["last"], paths["last"].stat().st_size - 5000)
    proc = _cli("evaluate", paths["last"], "--quiet", "--device", "cpu")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "SHA-256" in proc.stderr and str(paths["last"]) in proc.stderr


def test_resume_from_a_garbled_last_pt_stops_with_advice(tmp_path):
    cfg = _cfg(tmp_path, epochs=2)
    fit(cfg, progress=False, stop_after_steps=2)  # mid-epoch checkpoint, record not complete
    last = checkpoint_paths(cfg)["last"]
    raw = bytearray(last.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 4096] = b"\x7f" * 4096
    last.write_bytes(bytes(raw))
    proc = _cli(*_train_args(tmp_path, "--set", "epochs=2"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(last) in proc.stderr and "delete" in proc.stderr and "--no-resume" in proc.stderr
    assert not _rec_path(cfg).exists()


def test_finished_run_with_intact_record_does_not_need_its_checkpoint(finished, tmp_path):
    _, cfg, paths, rec = _copy(finished, tmp_path, 1)
    before = load_record(rec)
    paths["last"].write_bytes(b"")
    assert fit(cfg, progress=False) == before


# ---------------------------------------------------------------------------------------------
# F2 and F6: a complete checkpoint always ends in a complete record
# ---------------------------------------------------------------------------------------------


def test_running_record_with_a_complete_checkpoint_is_finished(finished, tmp_path):
    root, cfg, paths, rec = _copy(finished, tmp_path, 2)
    good = load_record(rec)
    stale = json.loads(rec.read_text())
    stale["status"] = "running"
    stale["history"] = stale["history"][:1]
    stale["metrics"]["epochs_completed"] = 1
    rec.write_text(json.dumps(stale))
    last_bytes = paths["last"].read_bytes()
    assert not record_exists(root / "out", cfg.experiment, good["run_id"])
    proc = _cli(*_train_args(root, "--set", "epochs=2"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "complete"
    fixed = load_record(rec)
    assert fixed["status"] == "complete" and fixed["history"] == good["history"]
    assert fixed["metrics"]["final_test_acc"] == good["metrics"]["final_test_acc"]
    assert fixed["firing_rates"] == good["firing_rates"]
    assert record_exists(root / "out", cfg.experiment, good["run_id"])
    assert paths["last"].read_bytes() == last_bytes, "the finished run was retrained"


@pytest.mark.parametrize("damage", ["truncated", "invalid", "edited", "missing"])
def test_damaged_or_missing_record_is_recreated_from_the_checkpoint(finished, tmp_path, damage):
    root, cfg, paths, rec = _copy(finished, tmp_path, 2)
    good = load_record(rec)
    text = rec.read_text()
    if damage == "truncated":
        rec.write_text(text[: len(text) // 2])
    elif damage in ("invalid", "edited"):  # 1.5 breaks the schema; 0.99 only the history
        bad = json.loads(text)
        bad["metrics"]["final_test_acc"] = 1.5 if damage == "invalid" else 0.99
        rec.write_text(json.dumps(bad))
    else:
        rec.unlink()
    damaged = rec.read_bytes() if rec.exists() else None
    last_bytes = paths["last"].read_bytes()
    proc = _cli(*_train_args(root, "--set", "epochs=2"))
    assert proc.returncode == 0, proc.stderr
    fixed = load_record(rec)
    assert fixed["status"] == "complete" and fixed["history"] == good["history"]
    assert paths["last"].read_bytes() == last_bytes, "the finished run was retrained"
    aside = sorted(rec.parent.glob(rec.name + ".corrupt-*"))
    if damaged is None:
        assert aside == []
    else:
        assert len(aside) == 1 and aside[0].read_bytes() == damaged
        assert "esd: warning: damaged run record" in proc.stderr and "moved to" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert list(load_records(root / "out")["run_id"]) == [good["run_id"]]


def test_record_of_an_unrelated_config_is_moved_aside_not_returned(finished, tmp_path):
    _, cfg, _, rec = _copy(finished, tmp_path, 1)
    other = json.loads(rec.read_text())
    other["config_hash"] = "0" * 64
    rec.write_text(json.dumps(other))
    with pytest.warns(UserWarning, match="another configuration"):
        out = fit(cfg, progress=False)
    assert out["config_hash"] == cfg.config_hash()
    assert len(list(rec.parent.glob(rec.name + ".corrupt-*"))) == 1


# ---------------------------------------------------------------------------------------------
# F5: best.pt is never lost
# ---------------------------------------------------------------------------------------------


class _Killed(BaseException):
    pass


def test_kill_between_the_epoch_end_writes_keeps_best_pt(tmp_path, monkeypatch):
    """A kill during the second of the two epoch-end checkpoint writes (old order: best.pt)
    must not lose best.pt: after the resume it holds the record's best epoch."""
    cfg = _cfg(tmp_path, epochs=2)
    real = engine.save_checkpoint
    epoch_end_writes = []

    def killing(path, **payload):
        st = payload.get("state", {})
        if st.get("epoch") == 1 and st.get("step_in_epoch") == 0:
            epoch_end_writes.append(path.name)
            if len(epoch_end_writes) == 2:
                raise _Killed
        real(path, **payload)

    monkeypatch.setattr(engine, "save_checkpoint", killing)
    with pytest.raises(_Killed):
        fit(cfg, progress=False)
    monkeypatch.setattr(engine, "save_checkpoint", real)
    assert epoch_end_writes == ["best.pt", "last.pt"]
    rec = fit(cfg, progress=False)
    assert rec["status"] == "complete" and rec["metrics"]["best_epoch"] == 1
    best = checkpoint_paths(cfg)["best"]
    assert read_checkpoint_header(best)["epoch"] == rec["metrics"]["best_epoch"]
    assert load_checkpoint(best)["state"]["best_epoch"] == 1


def test_missing_best_pt_is_re_derived_on_resume(finished, tmp_path):
    _, cfg, paths, rec = _copy(finished, tmp_path, 1)
    rec.unlink()  # state of a kill after last.pt, before best.pt and the record (old order)
    expected = paths["best"].read_bytes()
    paths["best"].unlink()
    with pytest.warns(UserWarning, match="re-derived"):
        out = fit(cfg, progress=False)
    assert out["status"] == "complete"
    assert paths["best"].read_bytes() == expected
    assert load_checkpoint(paths["best"])["state"]["best_epoch"] == 1


def test_best_pt_that_cannot_be_re_derived_is_reported(finished, tmp_path):
    _, cfg, paths, rec = _copy(finished, tmp_path, 2)
    rec.unlink()
    paths["best"].unlink()  # best epoch 1, last.pt at epoch 2: the weights are gone
    with pytest.warns(UserWarning, match="cannot be re-derived"):
        out = fit(cfg, progress=False)
    assert out["status"] == "complete" and not paths["best"].exists()


# ---------------------------------------------------------------------------------------------
# F3: divergence is detected and recorded as such
# ---------------------------------------------------------------------------------------------


def test_huge_learning_rate_is_recorded_as_diverged(tmp_path):
    from esdlib.analysis.runs import left_out, runs_of

    proc = _cli(*_train_args(tmp_path, "--set", "lr=1e6", "--set", "epochs=2"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "diverged at epoch 1" in lines[0], proc.stderr
    cfg = _cfg(tmp_path, lr=1e6, epochs=2)
    rec = load_record(_rec_path(cfg))
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
    again = _cli(*_train_args(tmp_path, "--set", "lr=1e6", "--set", "epochs=2"))
    assert again.returncode == 1 and "diverged" in again.stderr


def test_non_finite_loss_is_divergence():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    checked = engine.checked_tensors(net)  # collected once: in-place updates stay visible
    assert "loss" in engine.divergence_reason(float("nan"), checked)
    assert engine.divergence_reason(1.0, checked) is None
    assert "exploding" in engine.divergence_reason(1.65e15, checked)  # finite, but blown up
    assert engine.divergence_reason(engine.DIVERGED_LOSS, checked) is None
    with torch.no_grad():
        net[1].running_var[1] = float("nan")  # a buffer counts as well as a parameter
    assert "weights" in engine.divergence_reason(1.0, checked)
    with torch.no_grad():
        net[1].running_var[1] = 1.0
        net[0].weight[0, 0] = float("inf")
    assert "weights" in engine.divergence_reason(1.0, checked)


def test_schema_ties_diverged_status_to_the_divergence_block(finished, tmp_path):
    _, _, _, rec = _copy(finished, tmp_path, 1)
    good = load_record(rec)
    bad = dict(good, status="diverged")
    with pytest.raises(RecordError, match="divergence"):
        validate_record(bad)
    with pytest.raises(RecordError):
        validate_record(dict(good, divergence={"epoch": 1, "step": 1, "global_step": 1,
                                               "reason": "x"}))
    validate_record(dict(bad, divergence={"epoch": 1, "step": 2, "global_step": 2,
                                          "reason": "non-finite training loss (nan)"}))


# ---------------------------------------------------------------------------------------------
# F11, F12: temporary files, permissions, disk full
# ---------------------------------------------------------------------------------------------


def test_stale_temp_files_of_killed_writers_are_removed(finished, tmp_path):
    _, cfg, paths, rec = _copy(finished, tmp_path, 1)
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = _host_tag()
        dead_ck = paths["dir"] / f".last.pt.{host}-{done.pid}.abc123.tmp"
        dead_rec = rec.parent / f".{rec.name}.{host}-{done.pid}.xyz_9.tmp"
        live = paths["dir"] / f".best.pt.{host}-{alive.pid}.def456.tmp"
        old_style = paths["dir"] / ".last.pt.jcltzh0q.tmp"
        fresh_old_style = paths["dir"] / ".best.pt.k2lmn0pq.tmp"
        other = paths["dir"] / ".unrelated.abc.tmp"
        for p in (dead_ck, dead_rec, live, old_style, fresh_old_style, other):
            p.write_bytes(b"x" * 10)
        os.utime(old_style, (1, 1))
        fit(cfg, progress=False)
        assert not dead_ck.exists() and not dead_rec.exists() and not old_style.exists()
        assert live.exists() and fresh_old_style.exists() and other.exists()
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert file_mode() == 0o666 & ~mask
        with atomic_open(tmp_path / "a.json") as f:
            f.write("{}")
        engine.save_checkpoint(tmp_path / "c.pt", version=engine.CHECKPOINT_VERSION)
    finally:
        os.umask(old)
    for name in ("a.json", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_executed_notebook_is_not_private(tmp_path, monkeypatch):
    import nbformat
    import papermill

    from esdbook.build import run_notebook

    nb = nbformat.v4.new_notebook()
    src = tmp_path / "src.ipynb"
    nbformat.write(nb, src)

    def fake_execute(input_path, output_path, **kw):
        shutil.copy(input_path, output_path)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    target = tmp_path / "out" / "run.ipynb"
    (tmp_path / "out").mkdir()
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    stale = tmp_path / "out" / f".run.ipynb.{_host_tag()}-{done.pid}.q1w2e3.ipynb"
    stale.write_text("{}")
    run_notebook(src, target, {}, cwd=tmp_path)
    assert target.stat().st_mode & 0o777 == file_mode()
    assert not stale.exists()
    assert [p.name for p in target.parent.iterdir()] == ["run.ipynb"]


def _full_disk(monkeypatch):
    import esdlib.io as eio

    real_open = open

    def open_on_full_disk(file, mode="r", *args, **kw):
        if "w" in mode and Path(file).name.endswith(".tmp"):
            return real_open("/dev/full", mode, *args, **kw)
        return real_open(file, mode, *args, **kw)

    monkeypatch.setattr(eio, "open", open_on_full_disk, raising=False)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_checkpoint_write_says_so(tmp_path, monkeypatch):
    target = tmp_path / "ck" / "last.pt"
    engine.save_checkpoint(target, version=engine.CHECKPOINT_VERSION, note="old")
    before = target.read_bytes()
    _full_disk(monkeypatch)
    with pytest.raises(DiskFullError, match="no space left on device") as err:
        engine.save_checkpoint(target, version=engine.CHECKPOINT_VERSION,
                               w=torch.zeros(200_000))
    assert str(target) in str(err.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.pt"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_during_training_is_one_line_on_the_cli(tmp_path, monkeypatch, capsys):
    from esdlib import cli

    _full_disk(monkeypatch)
    rc = cli.main(_train_args(tmp_path, "--set", "epochs=1"))
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("esd: no space left on device while writing ")
    assert len(err.strip().splitlines()) == 1


def test_checksum_covers_exactly_the_payload(finished, tmp_path):
    _, _, paths, _ = _copy(finished, tmp_path, 1)
    header = read_checkpoint_header(paths["last"])
    payload = paths["last"].read_bytes()[header["_offset"]:]
    assert hashlib.sha256(payload).hexdigest() == header["sha256"]
    assert header["bytes"] == len(payload) and header["epoch"] == 1
