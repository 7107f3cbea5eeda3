"""Reliability of the run layer, round 2 (review 2026-12, issue 22: N11, N12): checkpoints
whose checksum is valid but whose contents do not fit, records of a newer schema, the reasons
of a moved-aside record, an empty best.pt of a finished run, no free inodes, the divergence
hint."""

import errno
import json
import shutil

import pytest
import torch

import esdlib.io
from esdlib.io import DiskFullError, atomic_open
from esdlib.train.config import RunConfig
from esdlib.train.engine import (
    CheckpointError,
    checkpoint_paths,
    fit,
    load_checkpoint,
    make_run_id,
    save_checkpoint,
)
from esdlib.train.paths import resolve_path
from esdlib.train.records import RecordError, record_path


def _cfg(root, **kw):
    base = dict(out_dir=str(root / "out"), checkpoint_dir=str(root / "ck"))
    return RunConfig.from_profile("smoke", **(base | kw))


def _rec(cfg):
    return record_path(resolve_path(cfg.out_dir), cfg.experiment, make_run_id(cfg))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished 1-epoch smoke run and a 2-epoch run stopped mid-epoch 1 (checkpoint, no
    complete record)."""
    base = tmp_path_factory.mktemp("runs")
    fit(_cfg(base / "done", epochs=1), progress=False)
    fit(_cfg(base / "mid", epochs=2), progress=False, stop_after_steps=2)
    return base


def _copy(runs, tmp_path, name, epochs):
    shutil.copytree(runs / name, tmp_path / name)
    cfg = _cfg(tmp_path / name, epochs=epochs)
    return cfg, checkpoint_paths(cfg), _rec(cfg)


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
        edit, runs, tmp_path):
    cfg, paths, _ = _copy(runs, tmp_path, "mid", 2)
    ck = load_checkpoint(paths["last"])
    edit(ck)
    save_checkpoint(paths["last"], **ck)
    with pytest.raises(CheckpointError, match="checksum is valid but its contents do not fit"):
        fit(cfg, progress=False)


def test_record_of_a_newer_schema_is_neither_replaced_nor_moved(runs, tmp_path):
    cfg, _, rec = _copy(runs, tmp_path, "done", 1)
    data = json.loads(rec.read_text())
    data["schema_version"] = 2
    data["new_field"] = 1
    rec.write_text(json.dumps(data))
    with pytest.raises(RecordError, match="written by a newer esdlib"):
        fit(cfg, progress=False)
    assert json.loads(rec.read_text()) == data
    assert not list(rec.parent.glob("*.corrupt-*"))


def test_moved_aside_warning_gives_every_reason(runs, tmp_path):
    cfg, _, rec = _copy(runs, tmp_path, "done", 1)
    data = json.loads(rec.read_text())
    data["unexpected_key"] = 1
    data["metrics"]["final_test_acc"] = "0.1"
    rec.write_text(json.dumps(data))
    with pytest.warns(UserWarning) as seen:
        fit(cfg, progress=False)
    text = " ".join(str(w.message) for w in seen if "moved to" in str(w.message))
    assert "unexpected_key" in text and "final_test_acc" in text, text


def test_empty_best_pt_of_a_finished_run_is_re_derived(runs, tmp_path):
    cfg, paths, _ = _copy(runs, tmp_path, "done", 1)
    paths["best"].write_bytes(b"")
    with pytest.warns(UserWarning, match="re-derived"):
        record = fit(cfg, progress=False)
    assert record["status"] == "complete" and paths["best"].stat().st_size > 0
    assert load_checkpoint(paths["best"])["state"]["epoch"] == 1


def test_no_free_inode_is_a_disk_full_error(tmp_path, monkeypatch):
    def no_inode(path, suffix=".tmp"):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(esdlib.io, "temp_path_for", no_inode)
    with pytest.raises(DiskFullError, match="no space left on device while writing"):
        with atomic_open(tmp_path / "x.json") as f:
            f.write("{}")


def test_divergence_hint_names_more_than_the_learning_rate(monkeypatch, capsys):
    import esdlib.train.engine as engine
    from esdlib import cli

    monkeypatch.setattr(engine, "fit", lambda *a, **k: {
        "status": "diverged", "run_id": "r",
        "divergence": {"epoch": 1, "step": 1, "reason": "non-finite training loss (nan)"}})
    assert cli.main(["train", "--profile", "smoke", "--quiet", "--set", "tau=1e-300"]) == 1
    assert "tau" in capsys.readouterr().err


def test_a_checkpoint_too_large_for_memory_is_a_checkpoint_error(runs, tmp_path, monkeypatch):
    from pathlib import Path

    cfg, paths, _ = _copy(runs, tmp_path, "mid", 2)

    def no_memory(self):
        raise MemoryError

    monkeypatch.setattr(Path, "read_bytes", no_memory)
    with pytest.raises(CheckpointError, match="does not fit in this process's memory"):
        load_checkpoint(paths["last"])


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
    assert engine.stuck_reason(3.9, 1.0) is None and engine.stuck_reason(4.1, 1.0)
    assert engine.stuck_reason(100.0, None) is None  # resumed from an older checkpoint


def test_a_record_is_not_rebuilt_from_a_checkpoint_with_a_forged_history(runs, tmp_path):
    cfg, paths, rec = _copy(runs, tmp_path, "done", 1)
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


@pytest.mark.parametrize("error, words", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't "
                  "allocate memory: you tried to allocate 96636764160 bytes."),
     ["out of memory", "DefaultCPUAllocator", "BPTT keeps all T steps"]),
    (MemoryError(), ["out of memory", "MemoryError"]),
    (FileNotFoundError(2, "No such file or directory", "/ck/run/.last.pt.tmp"),
     ["file error", "No such file or directory"]),
])
def test_out_of_memory_and_vanished_folders_are_one_line(error, words, monkeypatch, capsys):
    """N11: T = 1024 with BPTT (or RLIMIT_AS lowered mid-run) runs out of memory, and a
    checkpoint folder deleted during training fails a write: one line each, no traceback."""
    from esdlib import cli
    from esdlib.train import engine

    def fit(*args, **kwargs):
        raise error

    monkeypatch.setattr(engine, "fit", fit)
    assert cli.main(["train", "--profile", "smoke", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for w in words:
        assert w in err, err


def test_other_runtime_errors_are_not_called_out_of_memory(monkeypatch):
    from esdlib import cli
    from esdlib.train import engine

    monkeypatch.setattr(engine, "fit", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        cli.main(["train", "--profile", "smoke", "--quiet"])
