"""Checkpoints of the run layer: their format, damage, resume, and how they are written.

- Format: a header with the SHA-256 of the payload, then plain tensors and data read with
  ``torch.load(weights_only=True)``: loading a checkpoint never runs code (``esd evaluate``,
  resume, and a payload with a valid checksum alike); checkpoints of format 1 (before the header)
  still load and resume.
- Damage: a flipped bit, garbled or truncated payload, an empty file or a broken header is an
  error naming the file; contents that do not fit the run behind a valid checksum, a forged
  history, a file too large for memory are one clear error each.
- Resume: a stopped or killed run resumes to the uninterrupted run's history and weights;
  ``best.pt`` is never lost (re-derived where possible, reported where not).
- Writing: atomic, with the umask's permissions; leftovers of killed writers are removed; a full
  disk leaves the previous checkpoint intact.

The finished runs come from the session fixture ``finished_runs`` (``tests/conftest.py``); the
commands run in this process (``tests/runs.py``).
"""

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runs import (
    assert_one_line_error,
    copy_run,
    esd,
    full_disk,
    record_file,
    smoke_config,
    torch_threads,
    train_args,
)

import esdlib.train.checkpoint as checkpoint
import esdlib.train.engine as engine
from esdlib.io import DiskFullError, _host_tag, file_mode
from esdlib.train.checkpoint import (
    CHECKPOINT_MAGIC,
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    read_checkpoint_header,
    save_checkpoint,
)
from esdlib.train.engine import fit
from esdlib.train.records import load_record

HISTORY_KEYS = ("train_loss", "train_acc", "test_acc", "test_loss", "train_reliable_fraction")
"""What a resumed run must reproduce exactly (timings differ)."""


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
# Format: loading a checkpoint never runs code
# ---------------------------------------------------------------------------------------------


def test_evaluate_refuses_a_code_executing_checkpoint(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"version": 1, "x": _Evil(marker)}, evil)
    proc = esd("evaluate", evil, "--quiet", "--device", "cpu")
    assert not marker.exists(), "the checkpoint's payload was executed"
    assert_one_line_error(proc, "refusing to load", str(evil), status=2)


def test_resume_refuses_a_planted_code_executing_last_pt(tmp_path):
    marker = tmp_path / "PWNED"
    cfg = smoke_config(tmp_path, epochs=1)
    last = checkpoint_paths(cfg)["last"]
    last.parent.mkdir(parents=True)
    torch.save({"version": 1, "config_hash": cfg.config_hash(), "x": _Evil(marker)}, last)
    proc = esd(*train_args(tmp_path, "--set", "epochs=1"))
    assert not marker.exists(), "resume executed the planted checkpoint"
    assert_one_line_error(proc, "refusing to load", str(last), status=2)
    assert not record_file(cfg).exists()


def test_payload_with_a_valid_checksum_is_still_refused(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    save_checkpoint(evil, version=engine.CHECKPOINT_VERSION, x=_Evil(marker))
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_checkpoint_payload_is_plain_tensors_and_data(finished_runs, tmp_path):
    _, _, paths, _ = copy_run(finished_runs, tmp_path, "e1", 1)
    for kind in ("last", "best"):
        raw = paths[kind].read_bytes()
        payload = raw[_payload_offset(paths[kind]):]
        ckpt = torch.load(io.BytesIO(payload), weights_only=True)  # no allow-listed globals
        assert ckpt["version"] == engine.CHECKPOINT_VERSION
        assert isinstance(ckpt["rng"]["numpy"]["key"], torch.Tensor)


def test_checksum_covers_exactly_the_payload(finished_runs, tmp_path):
    _, _, paths, _ = copy_run(finished_runs, tmp_path, "e1", 1)
    header = read_checkpoint_header(paths["last"])
    payload = paths["last"].read_bytes()[header["_offset"]:]
    assert hashlib.sha256(payload).hexdigest() == header["sha256"]
    assert header["bytes"] == len(payload) and header["epoch"] == 1


def test_format_1_checkpoint_still_loads_and_resumes(finished_runs, tmp_path):
    """A checkpoint written before checksums (NumPy array in the RNG state) is read with the
    safe loader, and its NumPy RNG state is restored exactly."""
    import random

    import numpy as np

    rec_ref = load_record(copy_run(finished_runs, tmp_path, "e2", 2)[3])
    # an old-format last.pt of epoch 1 of the same config: train 1 epoch, rewrite as format 1
    cfg = smoke_config(tmp_path / "old", epochs=2)
    with torch_threads(1):  # as the reference
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
    checkpoint.set_rng_state(again["rng"])
    assert np.random.get_state()[1].tolist() == npst["key"].tolist()
    random.random()
    with pytest.warns(UserWarning, match="predates"), torch_threads(1):
        resumed = fit(cfg, progress=False)
    assert resumed["status"] == "complete"
    assert [h["train_loss"] for h in resumed["history"]] == \
        [h["train_loss"] for h in rec_ref["history"]]


# ---------------------------------------------------------------------------------------------
# Damage: detected, with the file named
# ---------------------------------------------------------------------------------------------


def _flip_bit(path, where):
    raw = bytearray(path.read_bytes())
    raw[where] ^= 0x40
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["flip", "garble", "truncate", "empty", "header"])
def test_damaged_checkpoint_is_an_error_naming_the_file(finished_runs, tmp_path, damage):
    _, _, paths, _ = copy_run(finished_runs, tmp_path, "e1", 1)
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


def test_evaluate_of_a_flipped_bit_is_a_clear_error(finished_runs, tmp_path):
    _, _, paths, _ = copy_run(finished_runs, tmp_path, "e1", 1)
    _flip_bit(paths["last"], paths["last"].stat().st_size - 5000)
    proc = esd("evaluate", paths["last"], "--quiet", "--device", "cpu")
    assert_one_line_error(proc, "SHA-256", str(paths["last"]), status=2)


def test_resume_from_a_garbled_last_pt_stops_with_advice(finished_runs, tmp_path):
    root, cfg, paths, rec = copy_run(finished_runs, tmp_path, "mid", 2)  # no complete record
    last = paths["last"]
    raw = bytearray(last.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 4096] = b"\x7f" * 4096
    last.write_bytes(bytes(raw))
    proc = esd(*train_args(root, "--set", "epochs=2"))
    assert_one_line_error(proc, str(last), "delete", "--no-resume", status=2)
    assert not rec.exists()


def _edit_state(ck):
    ck["state"]["epoch"] = "one"


def _drop_history(ck):
    del ck["state"]["history"]


def _bad_rng(ck):
    ck["rng"]["torch"] = torch.zeros(3, dtype=torch.uint8)


def _other_weights(ck):
    ck["model"] = {k: (v[..., :1] if v.dim() == 4 else v) for k, v in ck["model"].items()}


@pytest.mark.parametrize("edit", [_edit_state, _drop_history, _bad_rng, _other_weights])
def test_checkpoint_with_a_valid_checksum_but_wrong_contents_is_one_clear_error(
        edit, finished_runs, tmp_path):
    _, cfg, paths, _ = copy_run(finished_runs, tmp_path, "mid", 2)
    ck = load_checkpoint(paths["last"])
    edit(ck)
    save_checkpoint(paths["last"], **ck)
    with pytest.raises(CheckpointError, match="checksum is valid but its contents do not fit"):
        fit(cfg, progress=False)


def test_a_record_is_not_rebuilt_from_a_checkpoint_with_a_forged_history(finished_runs, tmp_path):
    _, cfg, paths, rec = copy_run(finished_runs, tmp_path, "e1", 1)
    honest = json.loads(rec.read_text())["metrics"]["final_test_acc"]
    rec.unlink()
    ck = load_checkpoint(paths["last"])
    for entry in ck["state"]["history"]:
        entry["test_acc"] = 0.99
    save_checkpoint(paths["last"], **ck)  # a valid checksum: forgery, not damage
    with pytest.raises(CheckpointError, match="the checkpoint was altered"):
        fit(cfg, progress=False)
    assert not rec.exists()
    ck["state"]["history"][-1]["test_acc"] = honest  # the genuine history is rebuilt as before
    save_checkpoint(paths["last"], **ck)
    assert fit(cfg, progress=False)["metrics"]["final_test_acc"] == honest


def test_a_checkpoint_too_large_for_memory_is_a_checkpoint_error(finished_runs, tmp_path,
                                                                  monkeypatch):
    _, _, paths, _ = copy_run(finished_runs, tmp_path, "mid", 2)

    def no_memory(self):
        raise MemoryError

    monkeypatch.setattr(Path, "read_bytes", no_memory)
    with pytest.raises(CheckpointError, match="does not fit in this process's memory"):
        load_checkpoint(paths["last"])


# ---------------------------------------------------------------------------------------------
# Resume: exact, and best.pt is never lost
# ---------------------------------------------------------------------------------------------


def test_stopped_run_resumes_exactly(finished_runs, tmp_path):
    """A run stopped mid-epoch (after its checkpoint) resumes to the history and the weights of
    the same run trained without a stop. (The same after ``kill -9``: the slow test below.)"""
    _, _, ref_paths, ref_rec = copy_run(finished_runs, tmp_path, "e2", 2)
    _, cfg, paths, _ = copy_run(finished_runs, tmp_path, "mid", 2)
    ref = load_record(ref_rec)
    with torch_threads(1):  # as the fixture's runs
        resumed = fit(cfg, progress=False)
    assert resumed["status"] == "complete" and resumed["run_id"] == ref["run_id"]
    for a, b in zip(ref["history"], resumed["history"], strict=True):
        assert {k: a[k] for k in HISTORY_KEYS} == {k: b[k] for k in HISTORY_KEYS}
    assert ref["firing_rates"]["per_timestep"] == resumed["firing_rates"]["per_timestep"]
    wa, wb = (load_checkpoint(p["last"])["model"] for p in (ref_paths, paths))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow  # a subprocess (torch import) and two training runs
def test_killed_run_resumes_exactly(tmp_path):
    common = dict(epochs=2, max_train_steps=5, checkpoint_every=1, method="esd")
    with torch_threads(1):  # as the killed process (OMP_NUM_THREADS=1)
        ref = fit(smoke_config(tmp_path / "ref", **common), progress=False)

    cfg = smoke_config(tmp_path / "killed", **common)
    script = (
        "import sys, json; from esdlib.train.config import RunConfig; "
        "from esdlib.train.engine import fit; "
        "fit(RunConfig.from_dict(json.loads(sys.argv[1])), progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(cfg.to_dict())],
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    last = tmp_path / "killed" / "ck"
    deadline = time.time() + 120
    ckpt_file = None
    while time.time() < deadline and proc.poll() is None:
        found = list(last.glob("*/last.pt"))
        if found:
            ckpt_file = found[0]
            with contextlib.suppress(CheckpointError):  # being replaced right now
                if read_checkpoint_header(ckpt_file)["global_step"] >= 2:
                    break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt_file is not None, "the subprocess never wrote a checkpoint"
    state = load_checkpoint(ckpt_file)["state"]
    assert state["epoch"] < 2, "the run finished before it was killed: nothing was tested"

    with torch_threads(1):
        resumed = fit(cfg, progress=False)
    assert resumed["status"] == "complete"
    for a, b in zip(ref["history"], resumed["history"], strict=True):
        assert {k: a[k] for k in HISTORY_KEYS} == {k: b[k] for k in HISTORY_KEYS}
    assert ref["firing_rates"]["per_timestep"] == resumed["firing_rates"]["per_timestep"]


def test_finished_run_with_intact_record_does_not_need_its_checkpoint(finished_runs, tmp_path):
    _, cfg, paths, rec = copy_run(finished_runs, tmp_path, "e1", 1)
    before = load_record(rec)
    paths["last"].write_bytes(b"")
    assert fit(cfg, progress=False) == before


class _Killed(BaseException):
    pass


def test_kill_between_the_epoch_end_writes_keeps_best_pt(tmp_path, monkeypatch):
    """A kill during the second of the two epoch-end checkpoint writes (old order: best.pt)
    must not lose best.pt: after the resume it holds the record's best epoch."""
    cfg = smoke_config(tmp_path, epochs=2)
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


def test_missing_best_pt_is_re_derived_on_resume(finished_runs, tmp_path):
    _, cfg, paths, rec = copy_run(finished_runs, tmp_path, "e1", 1)
    rec.unlink()  # state of a kill after last.pt, before best.pt and the record (old order)
    expected = paths["best"].read_bytes()
    paths["best"].unlink()
    with pytest.warns(UserWarning, match="re-derived"):
        out = fit(cfg, progress=False)
    assert out["status"] == "complete"
    assert paths["best"].read_bytes() == expected
    assert load_checkpoint(paths["best"])["state"]["best_epoch"] == 1


def test_empty_best_pt_of_a_finished_run_is_re_derived(finished_runs, tmp_path):
    _, cfg, paths, _ = copy_run(finished_runs, tmp_path, "e1", 1)
    paths["best"].write_bytes(b"")
    with pytest.warns(UserWarning, match="re-derived"):
        record = fit(cfg, progress=False)
    assert record["status"] == "complete" and paths["best"].stat().st_size > 0
    assert load_checkpoint(paths["best"])["state"]["epoch"] == 1


def test_best_pt_that_cannot_be_re_derived_is_reported(finished_runs, tmp_path):
    _, cfg, paths, rec = copy_run(finished_runs, tmp_path, "e2", 2)
    rec.unlink()
    paths["best"].unlink()  # best epoch 1, last.pt at epoch 2: the weights are gone
    with pytest.warns(UserWarning, match="cannot be re-derived"):
        out = fit(cfg, progress=False)
    assert out["status"] == "complete" and not paths["best"].exists()


# ---------------------------------------------------------------------------------------------
# Writing: atomic, the umask's permissions, leftovers of killed writers, a full disk
# ---------------------------------------------------------------------------------------------


def test_stale_temp_files_of_killed_writers_are_removed(finished_runs, tmp_path):
    _, cfg, paths, rec = copy_run(finished_runs, tmp_path, "e1", 1)
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
    from esdlib.io import atomic_open

    old = os.umask(mask)
    try:
        assert file_mode() == 0o666 & ~mask
        with atomic_open(tmp_path / "a.json") as f:
            f.write("{}")
        save_checkpoint(tmp_path / "c.pt", version=engine.CHECKPOINT_VERSION)
    finally:
        os.umask(old)
    for name in ("a.json", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_checkpoint_write_says_so(tmp_path, monkeypatch):
    target = tmp_path / "ck" / "last.pt"
    save_checkpoint(target, version=engine.CHECKPOINT_VERSION, note="old")
    before = target.read_bytes()
    full_disk(monkeypatch)
    with pytest.raises(DiskFullError, match="no space left on device") as err:
        save_checkpoint(target, version=engine.CHECKPOINT_VERSION, w=torch.zeros(200_000))
    assert str(target) in str(err.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.pt"]
