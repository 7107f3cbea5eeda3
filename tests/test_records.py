"""Run records (esdlib.train.records, esdlib.io): the schema, run ids, atomic writes, loading,
the environment and git revision they carry, and the paper tables beside them."""

import copy
import functools
import json
import multiprocessing
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runs import copy_run, esd, train_args

from esdlib.io import DiskFullError, atomic_open, atomic_write_json, atomic_write_text
from esdlib.train.config import RunConfig
from esdlib.train.engine import fit
from esdlib.train.paths import GENERATED_PATHS, paper_dir, project_root
from esdlib.train.records import (
    RecordError,
    environment_info,
    git_revision,
    load_paper_table,
    load_record,
    load_records,
    load_schema,
    make_record,
    make_run_id,
    paper_table_names,
    record_exists,
    record_path,
    to_jsonable,
    validate_record,
    write_record,
)

REPO = Path(__file__).resolve().parents[1]
ENV = {
    "python": "3.11.0",
    "torch": "2.14.1",
    "cuda": None,
    "device_name": "test cpu",
    "cpu_count": 2,
    "platform": "Linux",
}


def _record(cfg=None, status="complete", final=0.91, **kw):
    cfg = cfg or RunConfig.from_profile("smoke")
    return make_record(
        cfg,
        metrics={"final_test_acc": final, "best_test_acc": 0.93, "best_epoch": 0, "sop": 1.5e6},
        history=[
            {
                "epoch": 0,
                "train_loss": 1.2,
                "test_acc": 0.93,
                "lr": 0.1,
                "epoch_time_s": 2.5,
                "train_acc": 0.5,
            },
        ] + ([] if final is None else [{
                "epoch": 1, "train_loss": 1.1, "test_acc": final, "lr": 0.05,
                "epoch_time_s": 2.5, "train_acc": 0.6}]),  # fmt: skip
        firing_rates={
            "per_timestep": [0.15, 0.17],
            "per_layer": {"stem": 0.2, "layer1.0": 0.1},
            "definition": "mean spikes per neuron per timestep on the test set",
        },
        timing={"wall_s": 3.0, "train_s": 2.5, "peak_memory_bytes": None},
        status=status,
        environment=ENV,
        git_rev=None,
        created="2025-11-25T02:32:00Z",
        **kw,
    )


@pytest.fixture
def record():
    return _record()


def _no_temp_files(folder):
    return not [p for p in Path(folder).rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


# -- schema ---------------------------------------------------------------------


def test_headline_metrics_must_agree_with_the_history():
    """A hand-edited headline number is caught (the review's edited-record case)."""
    good = to_jsonable(_record())
    validate_record(good)
    for key, value, needle in [("final_test_acc", 0.99, "final_test_acc=0.99"),
                               ("best_test_acc", 0.99, "best_test_acc=0.99"),
                               ("best_epoch", 1, "at epoch 1"),
                               ("epochs_completed", 5, "epochs_completed=5")]:
        edited = json.loads(json.dumps(good))
        edited["metrics"][key] = value
        with pytest.raises(RecordError, match=needle):
            validate_record(edited)


def test_valid_record_passes(record):
    validate_record(record)
    assert record["schema_version"] == 1
    assert record["scale"]["label"] == RunConfig.from_profile("smoke").scale_label()
    assert record["config_hash"] == RunConfig.from_profile("smoke").config_hash()


def test_schema_is_valid_draft_2020_12():
    import jsonschema

    schema = load_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("field", load_schema()["required"])
def test_each_missing_required_field_fails(record, field):
    del record[field]
    with pytest.raises(RecordError, match=f"'{field}' is a required property"):
        validate_record(record)


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ("metrics", "final_test_acc"),
        ("metrics", "best_test_acc"),
        ("metrics", "best_epoch"),
        ("scale", "label"),
        ("scale", "dataset"),
        ("timing", "wall_s"),
        ("timing", "peak_memory_bytes"),
        ("environment", "torch"),
        ("firing_rates", "definition"),
    ],
)
def test_each_missing_nested_field_fails(record, block, field):
    del record[block][field]
    with pytest.raises(RecordError):
        validate_record(record)


@pytest.mark.parametrize("field", ["epoch", "train_loss", "test_acc", "lr", "epoch_time_s"])
def test_history_entries_need_required_keys(record, field):
    del record["history"][0][field]
    with pytest.raises(RecordError, match="history/0"):
        validate_record(record)


BAD_RECORDS = [
    ("percent instead of fraction", lambda r: r["metrics"].update(final_test_acc=91.0)),
    ("unknown status", lambda r: r.__setitem__("status", "done")),
    ("unknown top-level key", lambda r: r.__setitem__("notes", "x")),
    ("path in run id", lambda r: r.__setitem__("run_id", "../evil")),
    ("schema version", lambda r: r.__setitem__("schema_version", 2)),
    ("local time", lambda r: r.__setitem__("created", "2025-11-25 02:32")),
    ("short hash", lambda r: r.__setitem__("config_hash", "abc")),
    ("non-numeric metric", lambda r: r["metrics"].update(note="good")),
    ("firing rate above 1", lambda r: r["firing_rates"]["per_layer"].update(x=1.5)),
    ("no seed", lambda r: r["scale"].pop("seed")),
    ("negative time", lambda r: r["timing"].update(wall_s=-1.0)),
    ("complete without accuracy", lambda r: r["metrics"].update(final_test_acc=None)),
]


@pytest.mark.parametrize(("why", "mutate"), BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_bad_records_fail(record, why, mutate):
    mutate(record)
    with pytest.raises(RecordError):
        validate_record(record)


def test_allowed_variations_pass(record):
    r = copy.deepcopy(record)
    r["extra"] = {"anything": [1, "two"]}
    r["firing_rates"] = None
    r["scale"].pop("seed")
    r["scale"]["seeds"] = [0, 1, 2]
    r["history"][0]["train_loss"] = None  # a diverged loss is stored as null
    r["environment"]["hostname"] = "box"
    validate_record(r)
    running = _record(status="running", final=None)
    validate_record(running)


def test_error_lists_every_violation(record):
    record["status"] = "done"
    del record["timing"]
    with pytest.raises(RecordError) as err:
        validate_record(record)
    assert "status" in str(err.value) and "'timing' is a required property" in str(err.value)


def test_schema_ties_diverged_status_to_the_divergence_block(record):
    bad = dict(record, status="diverged")
    with pytest.raises(RecordError, match="divergence"):
        validate_record(bad)
    with pytest.raises(RecordError):
        validate_record(dict(record, divergence={"epoch": 1, "step": 1, "global_step": 1,
                                                 "reason": "x"}))
    validate_record(dict(bad, divergence={"epoch": 1, "step": 2, "global_step": 2,
                                          "reason": "non-finite training loss (nan)"}))


def test_make_record_converts_nan_and_numpy():
    rec = _record()
    rec2 = make_record(
        RunConfig.from_profile("smoke"),
        metrics={
            "final_test_acc": np.float32(0.5),
            "best_test_acc": 0.5,
            "best_epoch": np.int64(0),
        },
        history=[
            {
                "epoch": 0,
                "train_loss": float("nan"),
                "test_acc": 0.5,
                "lr": 0.1,
                "epoch_time_s": 1.0,
            }
        ],  # fmt: skip
        timing=rec["timing"],
        environment=ENV,
        git_rev="abc",
    )
    validate_record(rec2)
    assert rec2["history"][0]["train_loss"] is None
    assert type(rec2["metrics"]["best_epoch"]) is int
    json.dumps(rec2, allow_nan=False)


def test_to_jsonable():
    out = to_jsonable({"a": (1, 2), 3: np.arange(2), "n": float("inf"), "p": Path("x/y")})
    assert out == {"a": [1, 2], "3": [0, 1], "n": None, "p": "x/y"}
    with pytest.raises(TypeError):
        to_jsonable(object())


# -- run ids ----------------------------------------------------------------------


def test_run_id_deterministic_and_safe():
    cfg = RunConfig.from_profile("smoke")
    rid = make_run_id(cfg, "train")
    assert rid == make_run_id(RunConfig.from_profile("smoke"), "train")
    assert rid == make_run_id(cfg.to_dict(), "train")
    assert rid == make_run_id(cfg.replace(out_dir="x", device="cpu"), "train")
    assert rid.startswith("train-digits-esd-spiking_resnet18-T2-s0-")
    assert rid.endswith(cfg.config_hash()[:12])
    assert make_run_id(cfg, "my exp/1").startswith("my_exp_1-")
    assert make_run_id(cfg) == make_run_id(cfg, cfg.experiment)


def test_run_ids_never_collide_for_different_configs():
    base = RunConfig.from_profile("smoke")
    configs = [
        base.replace(method=m, T=t, seed=s, beta=b)
        for m in ("esd", "sd", "ratebp")
        for t in (1, 2, 4)
        for s in range(4)
        for b in (0.1, 0.3)
    ]
    ids = {make_run_id(c) for c in configs}
    assert len(ids) == len(configs)


# -- writing ---------------------------------------------------------------------


def test_write_and_load_roundtrip(tmp_path, record):
    path = write_record(record, tmp_path)
    assert path == tmp_path / "train" / f"{record['run_id']}.json"
    assert load_record(path) == record
    assert _no_temp_files(tmp_path)
    assert record_exists(tmp_path, "train", record["run_id"])


def test_invalid_record_writes_nothing(tmp_path, record):
    del record["metrics"]["final_test_acc"]
    with pytest.raises(RecordError, match="final_test_acc"):
        write_record(record, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_record_path_rejects_unsafe_names(tmp_path):
    with pytest.raises(RecordError):
        record_path(tmp_path, "..", "x")
    with pytest.raises(RecordError):
        record_path(tmp_path, "exp", "a/b")


def test_atomic_write_text_and_binary(tmp_path):
    p = atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert p.read_text(encoding="utf-8") == "héllo\n"
    with atomic_open(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert oct((tmp_path / "b.bin").stat().st_mode & 0o777) == oct(0o644)
    assert _no_temp_files(tmp_path)


def test_atomic_write_json_rejects_nan_before_touching_file(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"a": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1}
    assert _no_temp_files(tmp_path)


def test_failed_write_leaves_old_file_intact(tmp_path):
    target = tmp_path / "r.json"
    atomic_write_json(target, {"version": "old"})
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write('{"version": "ne')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"version": "old"}
    assert _no_temp_files(tmp_path)


def test_no_free_inode_is_a_disk_full_error(tmp_path, monkeypatch):
    import errno

    import esdlib.io

    def no_inode(path, suffix=".tmp"):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(esdlib.io, "temp_path_for", no_inode)
    with pytest.raises(DiskFullError, match="no space left on device while writing"):
        with atomic_open(tmp_path / "x.json") as f:
            f.write("{}")


def _die_mid_write(path):
    with atomic_open(path) as f:
        f.write('{"status": "half')
        f.flush()
        os._exit(1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_killed_writer_leaves_old_record_intact(tmp_path, record):
    path = write_record(record, tmp_path)
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_die_mid_write, args=(path,))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 1
    assert load_record(path) == record
    assert record_exists(tmp_path, "train", record["run_id"])
    assert len(load_records(tmp_path)) == 1  # the orphaned hidden temp file is ignored


def _write_many(out_dir, seed, shared_record, rounds):
    rec = _record(RunConfig.from_profile("smoke", seed=seed))
    for _ in range(rounds):
        write_record(rec, out_dir)
        write_record(shared_record, out_dir)


def test_concurrent_process_writers_lose_nothing(tmp_path):
    shared = _record(RunConfig.from_profile("smoke", seed=999))
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    procs = [ctx.Process(target=_write_many, args=(tmp_path, s, shared, 10)) for s in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    df = load_records(tmp_path)
    assert sorted(df["config.seed"]) == [*range(8), 999]
    assert load_record(record_path(tmp_path, "train", shared["run_id"])) == shared
    assert _no_temp_files(tmp_path)


def test_concurrent_threads_same_run_id(tmp_path):
    base = _record()
    variants = []
    for i in range(8):
        r = copy.deepcopy(base)
        r["metrics"]["sop"] = float(i)
        variants.append(r)
    errors = []

    def work(r):
        try:
            for _ in range(10):
                write_record(r, tmp_path)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(r,)) for r in variants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    files = list((tmp_path / "train").iterdir())
    assert len(files) == 1
    assert load_record(files[0]) in variants


# -- reading ---------------------------------------------------------------------


def test_record_exists_only_for_complete_valid_records(tmp_path):
    cfg = RunConfig.from_profile("smoke")
    rid = make_run_id(cfg)
    assert not record_exists(tmp_path, "train", rid)
    write_record(_record(status="running", final=None), tmp_path)
    assert not record_exists(tmp_path, "train", rid)
    write_record(_record(), tmp_path)
    assert record_exists(tmp_path, "train", rid)
    (tmp_path / "train" / f"{rid}.json").write_text('{"truncated": ')
    assert not record_exists(tmp_path, "train", rid)
    assert not record_exists(tmp_path, "train", "../x")


def test_load_records_dataframe(tmp_path):
    recs = [
        _record(RunConfig.from_profile("smoke", method="esd", experiment="a")),
        _record(RunConfig.from_profile("smoke", method="bptt", experiment="a"), final=0.5),
        _record(RunConfig.from_profile("default", T=6, experiment="b")),
    ]
    for r in recs:
        write_record(r, tmp_path)
    (tmp_path / "a" / "table.json").write_text('{"not": "a record"}')
    (tmp_path / "a" / ".x.json.abc.tmp").write_text("{")
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "t.csv").write_text("a\n1\n")

    df = load_records(tmp_path)
    assert len(df) == 3
    for col in ("run_id", "experiment", "path", "scale_label", "status", "config.T",
                "config.method", "metrics.final_test_acc", "metrics.best_epoch",
                "metrics.sop", "timing.wall_s"):  # fmt: skip
        assert col in df.columns, col
    assert list(df["experiment"]) == ["a", "a", "b"]
    assert list(df["run_id"]) == sorted(r["run_id"] for r in recs)
    by_id = df.set_index("run_id")
    for r in recs:
        row = by_id.loc[r["run_id"]]
        assert row["metrics.final_test_acc"] == r["metrics"]["final_test_acc"]
        assert row["config.method"] == r["config"]["method"]
        assert row["scale_label"] == r["scale"]["label"]
        assert Path(row["path"]).is_file()
    assert by_id.loc[recs[2]["run_id"], "config.T"] == 6
    assert "digits_hard 16×16" in by_id.loc[recs[2]["run_id"], "scale_label"]

    only_b = load_records(tmp_path, experiment="b")
    assert list(only_b["run_id"]) == [recs[2]["run_id"]]


def test_load_records_empty_and_invalid(tmp_path):
    empty = load_records(tmp_path / "missing")
    assert len(empty) == 0 and "run_id" in empty.columns
    write_record(_record(), tmp_path)
    bad = copy.deepcopy(_record(RunConfig.from_profile("smoke", seed=5)))
    bad["status"] = "weird"
    (tmp_path / "train" / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(RecordError, match="bad.json"):
        load_records(tmp_path)
    with pytest.warns(UserWarning, match="bad.json"):
        df = load_records(tmp_path, strict=False)
    # kept as a "damaged" row (issue 11) so pages can name it instead of dropping it
    assert len(df) == 2 and list(df["status"]).count("complete") == 1
    assert df.loc[df["status"] == "damaged", "path"].iloc[0].endswith("bad.json")


# -- records of a run on resume: completed, rebuilt or set aside -----------------------------
# (runs of the session fixture ``finished_runs``; ``esd train`` in this process)


def test_running_record_with_a_complete_checkpoint_is_finished(finished_runs, tmp_path):
    root, cfg, paths, rec = copy_run(finished_runs, tmp_path, "e2", 2)
    good = load_record(rec)
    stale = json.loads(rec.read_text())
    stale["status"] = "running"
    stale["history"] = stale["history"][:1]
    stale["metrics"]["epochs_completed"] = 1
    rec.write_text(json.dumps(stale))
    last_bytes = paths["last"].read_bytes()
    assert not record_exists(root / "out", cfg.experiment, good["run_id"])
    proc = esd(*train_args(root, "--set", "epochs=2"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "complete"
    fixed = load_record(rec)
    assert fixed["status"] == "complete" and fixed["history"] == good["history"]
    assert fixed["metrics"]["final_test_acc"] == good["metrics"]["final_test_acc"]
    assert fixed["firing_rates"] == good["firing_rates"]
    assert record_exists(root / "out", cfg.experiment, good["run_id"])
    assert paths["last"].read_bytes() == last_bytes, "the finished run was retrained"


@pytest.mark.parametrize("damage", ["truncated", "invalid", "edited", "missing"])
def test_damaged_or_missing_record_is_recreated_from_the_checkpoint(finished_runs, tmp_path,
                                                                     damage):
    root, cfg, paths, rec = copy_run(finished_runs, tmp_path, "e2", 2)
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
    proc = esd(*train_args(root, "--set", "epochs=2"))
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


def test_record_of_an_unrelated_config_is_moved_aside_not_returned(finished_runs, tmp_path):
    _, cfg, _, rec = copy_run(finished_runs, tmp_path, "e1", 1)
    other = json.loads(rec.read_text())
    other["config_hash"] = "0" * 64
    rec.write_text(json.dumps(other))
    with pytest.warns(UserWarning, match="another configuration"):
        out = fit(cfg, progress=False)
    assert out["config_hash"] == cfg.config_hash()
    assert len(list(rec.parent.glob(rec.name + ".corrupt-*"))) == 1


def test_moved_aside_warning_gives_every_reason(finished_runs, tmp_path):
    _, cfg, _, rec = copy_run(finished_runs, tmp_path, "e1", 1)
    data = json.loads(rec.read_text())
    data["unexpected_key"] = 1
    data["metrics"]["final_test_acc"] = "0.1"
    rec.write_text(json.dumps(data))
    with pytest.warns(UserWarning) as seen:
        fit(cfg, progress=False)
    text = " ".join(str(w.message) for w in seen if "moved to" in str(w.message))
    assert "unexpected_key" in text and "final_test_acc" in text, text


def test_record_of_a_newer_schema_is_neither_replaced_nor_moved(finished_runs, tmp_path):
    _, cfg, _, rec = copy_run(finished_runs, tmp_path, "e1", 1)
    data = json.loads(rec.read_text())
    data["schema_version"] = 2
    data["new_field"] = 1
    rec.write_text(json.dumps(data))
    with pytest.raises(RecordError, match="written by a newer esdlib"):
        fit(cfg, progress=False)
    assert json.loads(rec.read_text()) == data
    assert not list(rec.parent.glob("*.corrupt-*"))


# -- provenance ----------------------------------------------------------------------


def test_environment_info_matches_schema():
    info = environment_info("cpu")
    schema = load_schema()["properties"]["environment"]
    import jsonschema

    jsonschema.validate(info, schema)
    assert info["cuda"] is None and info["cpu_count"] == os.cpu_count()
    assert "hostname" not in info
    assert "hostname" in environment_info("cpu", include_hostname=True)


def test_git_revision_outside_repo(tmp_path):
    assert git_revision(tmp_path) is None
    assert git_revision(tmp_path / "does-not-exist") is None


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo), *args],
                   check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_revision_clean_and_dirty(tmp_path):
    git = functools.partial(_git, tmp_path)

    git("init", "-q")
    assert git_revision(tmp_path) is None  # no commit yet
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("commit", "-q", "-m", "init")
    rev = git_revision(tmp_path)
    assert rev is not None and len(rev) == 40 and int(rev, 16) >= 0
    (tmp_path / "untracked.json").write_text("{}")
    assert git_revision(tmp_path) == rev
    (tmp_path / "f.txt").write_text("b")
    assert git_revision(tmp_path) == rev + "+dirty"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_revision_ignores_generated_outputs_only(tmp_path):
    git = functools.partial(_git, tmp_path)

    generated = [tmp_path / p / "x.json" for p in GENERATED_PATHS]
    code = tmp_path / "esdlib" / "m.py"
    for f in [*generated, code]:
        f.parent.mkdir(parents=True)
        f.write_text("a")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    rev = git_revision(tmp_path)
    for f in generated:  # an executed chapter or a record rewritten: still the same code
        f.write_text("b")
    assert git_revision(tmp_path) == rev
    assert git_revision(tmp_path / "esdlib") == rev  # from a sub-folder too
    code.write_text("b")
    assert git_revision(tmp_path) == rev + "+dirty"


# -- paper tables ----------------------------------------------------------------------

PAPER_NAMES = ("table1_static", "table_dvs", "firing_rates")


def _csv_rows(name):
    lines = (REPO / "results" / "paper" / f"{name}.csv").read_text().splitlines()
    return len([line for line in lines if line.strip()]) - 1


def test_paper_tables_available():
    assert set(PAPER_NAMES) <= set(paper_table_names())
    assert paper_dir() == REPO / "results" / "paper"


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_paper_table_row_counts(name):
    df = load_paper_table(name)
    assert len(df) == _csv_rows(name) > 0


def test_table1_dtypes_and_values():
    df = load_paper_table("table1_static")
    for col in ("cifar10", "cifar10_std", "cifar100", "cifar100_std", "imagenet", "ref"):
        assert df[col].dtype == np.float64, col
    assert df["T"].dtype == np.int64
    assert df["uses_pretrained_ann"].dtype == bool
    assert pd.api.types.is_string_dtype(df["method"])
    esd = df[(df["method"] == "ESD (ours in paper)") & (df["architecture"] == "ResNet-19")]
    assert esd.set_index("T").loc[6, "cifar100"] == pytest.approx(82.14)
    assert esd["ref"].isna().all()
    assert df["cifar10_std"].isna().sum() == (df["method"] != "ESD (ours in paper)").sum()
    assert df.loc[df["method"] == "SEW-ResNet", "cifar10"].isna().all()


def test_dvs_and_firing_rate_dtypes():
    dvs = load_paper_table("table_dvs")
    assert dvs["cifar10_dvs"].dtype == np.float64 and dvs["T"].dtype == np.int64
    fr = load_paper_table("firing_rates")
    for col in ("t1", "t2", "t3", "t4", "t5", "t6", "avg"):
        assert fr[col].dtype == np.float64
    assert fr.loc[fr["trained_T"] == 4, ["t5", "t6"]].isna().all().all()
    assert fr.loc[fr["trained_T"] == 6, "t6"].notna().all()


def test_unknown_paper_table(monkeypatch):
    with pytest.raises(FileNotFoundError, match="table_dvs") as err:
        load_paper_table("table_dv")
    assert "did you mean" in str(err.value)


def test_paper_dir_found_from_outside_the_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert project_root() == REPO
    assert paper_dir() == REPO / "results" / "paper"


def test_project_root_from_a_subfolder(monkeypatch):
    monkeypatch.chdir(REPO / "results" / "paper")
    assert project_root() == REPO
    assert project_root(REPO / "esdlib" / "train") == REPO


def test_paper_tables_of_an_explicit_results_folder(tmp_path, monkeypatch):
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "mine.csv").write_text("a,b\n1,\n2,3.5\n")
    monkeypatch.setenv("ESD_RESULTS_DIR", str(tmp_path / "ignored"))  # no longer an API
    assert paper_table_names(tmp_path) == ("mine",)
    df = load_paper_table("mine", tmp_path)
    assert df["b"].isna().tolist() == [True, False] and df["b"].dtype == np.float64
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_paper_table("mine", tmp_path / "nope")


def test_the_records_table_says_where_each_run_ran():
    from esdlib.train.records import load_records

    df = load_records(REPO / "results", "gradient_error")
    assert len(df) and df["environment.device_name"].notna().all()
