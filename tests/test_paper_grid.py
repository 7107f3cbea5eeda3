"""``python -m esdbook reproduce --profile paper``: the manifest's paper grid, the data and GPU
checks, the plan, the torchrun command, and (marker ``pipeline``) the dry run of every point on
synthetic files through papermill, torchrun (2 gloo processes) and the chapters.

Records written here are synthetic test data in temporary folders, never in ``results/``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from esdbook import paper_grid
from esdbook.__main__ import main
from esdbook.build import run_notebook
from esdbook.paper_data import (
    PAPER_DATASETS,
    data_problem,
    data_roots,
    parse_data_roots,
    write_synthetic_data,
)
from esdbook.paper_grid import PaperGridError, paper_points
from esdlib.data import DatasetNotFoundError, build_datasets
from esdlib.train.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def _cells(points):
    return {(p.experiment, p.config.dataset, p.config.arch, p.config.method, p.config.T)
            for p in points}


# ------------------------------------------------------------------------------------ the grid


def test_paper_grid_mirrors_the_papers_tables():
    points = paper_points()
    cells = _cells(points)
    assert len(points) == len({p.run_id for p in points}) == 39
    assert len(cells) == 37  # the 3 ablations share one (data set, network, method, T)
    assert all(p.config.profile == "paper" and p.config.seed == 0 for p in points)
    for ds in ("cifar10", "cifar100"):  # Table 1: every architecture, T and one-step method
        for arch in ("spiking_resnet18", "spiking_resnet19"):
            for T in (2, 4, 6):
                for method in ("ratebp", "esd"):
                    assert ("table1", ds, arch, method, T) in cells
    for T in (4, 6):  # the firing-rate table compares BPTT and ESD at T = 4 and 6
        assert ("table1", "cifar10", "spiking_resnet18", "bptt", T) in cells
    imagenet = [p.config for p in points if p.config.dataset == "imagenet"]
    assert {c.method for c in imagenet} == {"ratebp", "esd"}
    assert {(c.arch, c.T, c.image_size, c.epochs) for c in imagenet} == {
        ("preact_spiking_resnet34", 4, 224, 100)}
    dvs = [p.config for p in points if p.experiment == "dvs"]
    assert {c.dataset for c in dvs} == {"cifar10_dvs"} and {c.T for c in dvs} == {10}
    assert {(c.arch, c.method) for c in dvs} >= {(a, m) for a in ("spiking_resnet18",
                                                                  "spiking_resnet19")
                                                  for m in ("esd", "esd_bptt")}
    ablation = [p.config for p in points if p.experiment == "ablation"]
    assert {(c.branch_kind, c.beta, c.teacher_space) for c in ablation} == {
        ("conv", 0.3, "logits"), ("dsconv", 0.5, "logits"), ("dsconv", 0.3, "probs")}
    # every ablation has its reference ESD run (same data set, network, T) in table1
    for c in ablation:
        assert ("table1", c.dataset, c.arch, "esd", c.T) in cells
    assert ("table1", "cifar100", "spiking_resnet18", "sd", 6) in cells
    assert [p.config.method for p in points if p.experiment == "gradient_error"] == ["esd"]
    full = [p.config for p in points]
    assert all(c.width == 1.0 and c.max_train_steps is None for c in full)


def test_seeds_knob_repeats_every_cell_with_new_run_ids():
    one, three = paper_points(), paper_points(3)
    assert len(three) == 3 * len(one) and len({p.run_id for p in three}) == len(three)
    assert {p.config.seed for p in three} == {0, 1, 2}
    # seed 0 of the knob is the manifest's point: same run id, so finished runs are kept
    assert {p.run_id for p in three if p.config.seed == 0} == {p.run_id for p in one}
    # where a data set lives or which device runs it does not change the run id
    roots = {d: f"/data/{d}" for d in PAPER_DATASETS}
    moved = paper_points(1, overrides={"device": "cpu", "num_workers": 4}, roots=roots)
    assert [p.run_id for p in moved] == [p.run_id for p in one]
    assert all(p.config.data_root == f"/data/{p.config.dataset}" for p in moved)
    with pytest.raises(PaperGridError, match="positive"):
        paper_points(0)


# ------------------------------------------------------------------------------------ the data


def test_data_roots_and_problems(tmp_path, monkeypatch):
    monkeypatch.setenv("ESDLIB_DATA", str(tmp_path / "env"))
    assert parse_data_roots(["cifar10=/a", "imagenet = /b"]) == {"cifar10": "/a",
                                                                  "imagenet": "/b"}
    for bad, words in ((["cifar10"], "DATASET=PATH"), (["mnist=/a"], "unknown data set"),
                       (["cifar10=/a", "cifar10=/b"], "twice")):
        with pytest.raises(ValueError, match=words):
            parse_data_roots(bad)
    roots = data_roots(["cifar10", "imagenet", "cifar100"], {"cifar10": str(tmp_path / "c")},
                       tmp_path / "dir")
    assert roots == {"cifar10": tmp_path / "c", "imagenet": tmp_path / "dir" / "imagenet",
                     "cifar100": tmp_path / "dir" / "cifar100"}
    assert data_roots(["cifar100"]) == {"cifar100": tmp_path / "env" / "cifar100"}
    for name in PAPER_DATASETS:
        msg = data_problem(name, tmp_path / "none" / name)
        assert str(tmp_path / "none" / name) in msg and f"--data-root {name}=PATH" in msg
    synthetic = write_synthetic_data(tmp_path / "syn")
    assert all(data_problem(n, r) is None for n, r in synthetic.items())
    (synthetic["cifar10"] / "cifar-10-batches-py" / "data_batch_3").unlink()
    assert "lacks data_batch_3" in data_problem("cifar10", synthetic["cifar10"])
    for cls in ("ship", "truck"):
        for f in (synthetic["cifar10_dvs"] / cls).glob("*.aedat"):
            f.unlink()
    assert "ship, truck" in data_problem("cifar10_dvs", synthetic["cifar10_dvs"])
    (tmp_path / "taken" / "cifar10").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not marked"):
        write_synthetic_data(tmp_path / "taken", ["cifar10"])


def test_synthetic_files_load_through_the_library_and_say_so(tmp_path):
    roots = write_synthetic_data(tmp_path)
    for name, root in roots.items():
        train, test, info = build_datasets(name, root, T=10, augment=True)
        assert info.split.startswith("SYNTHETIC TEST DATA: ")
        assert info.description.startswith("SYNTHETIC TEST DATA")
        x, y = train[0]
        assert x.dtype == torch.float32 and 0 <= y < info.num_classes
        assert len(test) <= paper_grid.DRY_RUN_OVERRIDES["eval_batch_size"]
    # without the marker the same files are checked against the real archive's MD5
    (roots["cifar10"] / "ESDLIB_SYNTHETIC_TEST_DATA").unlink()
    with pytest.raises(DatasetNotFoundError, match="could not be loaded"):
        build_datasets("cifar10", roots["cifar10"])


# --------------------------------------------------------------------------- command and plan


def _run(argv, capsys):
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_refusals_are_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = sorted(p for p in (ROOT / "results").rglob("*"))
    cases = [
        (["--profile", "paper"], ["would replace the committed pages", "--out DIR"]),
        (["--profile", "paper", "--no-book"], ["no CUDA GPU", "--device cpu", "--dry-run"]),
        (["--profile", "paper", "--out", str(tmp_path / "o")], ["no CUDA GPU"]),
        (["--profile", "paper", "--no-book", "--device", "cpu", "--data-dir",
          str(tmp_path / "d")],
         ["4 data set(s) missing", str(tmp_path / "d" / "imagenet"), "--data-root imagenet="]),
        (["--profile", "paper", "--no-book", "--device", "cpu", "--data-root", "svhn=/x"],
         ["unknown data set 'svhn'"]),
        (["--profile", "paper", "--no-book", "--seeds", "x", "--device", "cpu"], ["--seeds"]),
        (["--profile", "default", "--gpus", "2"], ["--gpus only apply to --profile paper"]),
        (["--profile", "paper", "--dry-run", "--data-dir", "/x"], ["synthetic data"]),
        (["--profile", "paper", "--dry-run", "--dry-run-dir", str(ROOT / "results" / "x")],
         ["must not write into"]),
    ]
    for args, words in cases:
        status, out, err = _run(["reproduce", *args, "--quiet"], capsys)
        assert status == 2, (args, out, err)
        assert len(err.strip().splitlines()) == 1, err
        for w in words:
            assert w in err, (args, err)
    assert sorted(p for p in (ROOT / "results").rglob("*")) == before
    assert not (ROOT / "results" / "x").exists()


def test_plan_counts_points_hours_and_disk(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    roots = write_synthetic_data(tmp_path)
    status, out, err = _run(["reproduce", "--profile", "paper", "--plan", "--seeds", "0-1",
                             "--data-dir", str(tmp_path), "--gpus", "8"], capsys)
    assert status == 0, err
    assert out.startswith("paper grid: 78 points (2 seeds per cell), 78 to run, 0 done")
    assert "NVIDIA H100" in out and "GPU-hours" in out and "checkpoints:" in out
    assert "torchrun --nproc-per-node 8" in out
    for name, root in roots.items():
        assert f"data: {name} from {root}" in out
    refusals = [line for line in out.splitlines() if line.startswith("would refuse")]
    assert len(refusals) == 1 and "no CUDA GPU" in refusals[0]  # the data are there


def test_estimate_scales_with_T_seeds_and_not_with_gpus():
    one = paper_grid.estimate(paper_points())
    rows = {(r["dataset"], r["arch"], r["method"], r["T"]): r for r in one.per_point}
    hours = [rows[("cifar10", "spiking_resnet18", "esd", T)]["gpu_hours"] for T in (2, 4, 6)]
    assert 0 < hours[0] < hours[2]
    r = rows[("cifar10", "spiking_resnet18", "esd", 6)]
    assert r["steps_per_epoch"] == 391  # ceil(50,000 / 128)
    # ESD, ResNet-18, T = 6: 391 steps × the H100 record's step (~50 ms), 300 epochs
    assert r["gpu_hours"] == pytest.approx(300 * 391 * r["step_s"] / 3600, rel=0.1)
    dvs = rows[("cifar10_dvs", "spiking_resnet18", "esd", 10)]
    assert dvs["step_s"] > rows[("cifar10", "spiking_resnet18", "esd", 6)]["step_s"]
    imagenet = [x["gpu_hours"] for x in one.per_point if x["dataset"] == "imagenet"]
    eight = [x["gpu_hours"] for x in paper_grid.estimate(paper_points(), gpus=8).per_point
             if x["dataset"] == "imagenet"]
    assert imagenet == pytest.approx(eight, rel=0.01) and min(imagenet) > 50
    two = paper_grid.estimate(paper_points(2))
    assert two.gpu_hours == pytest.approx(2 * one.gpu_hours)
    assert two.checkpoint_bytes == 2 * one.checkpoint_bytes > 1e9


def test_torchrun_command_trains_the_points_run_id(tmp_path):
    point = next(p for p in paper_points(overrides={"device": "cpu"},
                                         roots={"imagenet": "/data/imagenet"})
                 if p.config.dataset == "imagenet")
    cmd = paper_grid.torchrun_command(point, 4, tmp_path / "r", tmp_path / "c")
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4"]
    assert cmd[6:10] == ["-m", "esdlib.cli", "train", "--profile"]
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    assert f"out_dir={tmp_path / 'r'}" in sets and "data_root=/data/imagenet" in sets
    cfg = RunConfig.from_overrides("paper", sets)
    assert cfg.config_hash() == point.config.config_hash() and cfg.device == "cpu"


# ------------------------------------------------------------------------------------- dry run


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    """``reproduce --profile paper --dry-run`` into a scratch folder, as a user runs it."""
    folder = tmp_path_factory.mktemp("paper-dry-run")
    before = sorted((ROOT / "results").rglob("*"))
    t0 = time.perf_counter()
    status = main(["reproduce", "--profile", "paper", "--dry-run", "--dry-run-dir",
                   str(folder), "--quiet"])
    wall = time.perf_counter() - t0
    print(f"paper dry run: {wall:.0f} s wall")
    # the run ids of the dry run's points: the data folder does not enter them, except through
    # the CIFAR10-DVS file list (a run is tied to the files it trained on)
    roots = {name: folder / "data" / name for name in PAPER_DATASETS}
    points = paper_points(overrides={**paper_grid.DRY_RUN_OVERRIDES, "device": "cpu"},
                          roots=roots)
    return {"status": status, "folder": folder, "wall_s": wall, "results_before": before,
            "points": points}


@pytest.mark.pipeline
def test_dry_run_trains_every_paper_point_on_synthetic_files(dry):
    assert dry["status"] == 0
    results = dry["folder"] / "results"
    for p in dry["points"]:
        record = json.loads((results / p.experiment / f"{p.run_id}.json").read_text())
        assert record["status"] == "complete", p.run_id
        assert record["config"]["profile"] == "paper" and len(record["history"]) == 1
        assert record["extra"]["dataset_split"].startswith("SYNTHETIC TEST DATA"), p.run_id
        c = record["config"]
        assert (c["dataset"], c["arch"], c["method"], c["T"]) == (
            p.config.dataset, p.config.arch, p.config.method, p.config.T)
        assert c["max_train_steps"] == 2 and c["batch_size"] == 2
        assert (dry["folder"] / "checkpoints" / p.run_id / "last.pt").is_file()
        if p.config.dataset == "imagenet":
            assert record["extra"]["world_size"] == 2  # torchrun, 2 gloo processes
        if p.experiment == "gradient_error":
            assert len(record["extra"]["gradient_error"]) == 2  # before training, epoch 1
    # nothing of the dry run in the repository's results
    assert sorted((ROOT / "results").rglob("*")) == dry["results_before"]


@pytest.mark.pipeline
def test_dry_run_notebooks_and_chapters_executed_without_errors(dry):
    import nbformat

    runs = sorted((dry["folder"] / "papermill_runs").rglob("*.ipynb"))
    kinds = {(p.parent.name, p.name.split("-")[1]) for p in runs}
    # every experiment notebook on each of its data sets (ImageNet: after torchrun)
    assert kinds == {("table1", "cifar10"), ("table1", "cifar100"), ("table1", "imagenet"),
                     ("dvs", "cifar10_dvs"), ("gradient_error", "cifar10")}
    chapters = sorted((dry["folder"] / "_executed").glob("*.ipynb"))
    assert [c.stem for c in chapters] == list(paper_grid.DRY_RUN_CHAPTERS)
    for path in runs + chapters:
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert outputs and not [o for o in outputs if o.output_type == "error"], path.name
    params = nbformat.read(chapters[0], as_version=4).metadata.papermill.parameters
    assert params["profile"] == "paper"


@pytest.mark.pipeline
def test_dry_run_resumes_skipping_finished_points(dry, capsys):
    results = dry["folder"] / "results"
    stamps = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    t0 = time.perf_counter()
    assert main(["reproduce", "--profile", "paper", "--dry-run", "--dry-run-dir",
                 str(dry["folder"]), "--no-book", "--quiet"]) == 0
    assert time.perf_counter() - t0 < 30
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*.json")} == stamps
    assert "0 chapters" in capsys.readouterr().out


@pytest.mark.pipeline
def test_chapter_11_renders_the_paper_records(dry):
    # the paper grid's cells (method, T, arch) hold CIFAR-10 and CIFAR-100 runs of one seed: the
    # page renders and says it cannot decide those claims (evidence.cell_runs: several data
    # sets), instead of failing
    src = ROOT / "book" / "chapters" / "11_verdicts.ipynb"
    out = run_notebook(src, dry["folder"] / "_executed" / src.name,
                       {"profile": "paper", "results_dir": str(dry["folder"] / "results")},
                       cwd=ROOT, timeout=300)
    assert "cannot decide" in out.read_text()
