"""Bad input is a one-line error before any work (review F9/F12 and Appendix A).

CLI cases call the commands' ``main(argv)`` in this process (the same code as ``esd`` and
``python -m esdbook``, without paying the PyTorch import per case) and check: non-zero exit,
one line on stderr naming the problem, no Python traceback, and nothing written. One case per
command runs the real entry point in a subprocess.
"""

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esdlib.train.config import ConfigError, RunConfig, check_runtime, check_writable_dir

REPO = Path(__file__).resolve().parents[1]


def run_main(main, args, cwd):
    """``main(args)`` in this process, in ``cwd``, as a finished process: exit status (argparse's
    ``SystemExit`` included), stdout and stderr. An exception that escapes ``main`` is raised:
    it is what a user would see as a traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_cli(args, cwd):
    from esdlib.cli import main

    return run_main(main, args, cwd)


def run_book_cli(args, cwd):
    from esdbook.__main__ import main

    return run_main(main, args, cwd)


def run_book_cli_subprocess(args, cwd):
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'book'}", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "esdbook", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_clear_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


TRAIN_CASES = [
    # (overrides, needles)
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
]
if not torch.cuda.is_available():
    TRAIN_CASES.append((["precision=fp16"], ["precision='fp16'", "CUDA", "cpu"]))


@pytest.mark.parametrize(("overrides", "needles"), TRAIN_CASES, ids=lambda v: str(v)[:40])
def test_train_bad_input_is_one_line_error_before_work(tmp_path, overrides, needles):
    args = ["train", "--profile", "smoke", "--quiet", "--set", "out_dir=out",
            "--set", "checkpoint_dir=ck"]
    for o in overrides:
        args += ["--set", o]
    proc = run_cli(args, tmp_path)
    assert_clear_error(proc, *needles)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even empty folders


def test_smoke_profile_with_cifar_takes_the_datasets_image_size(tmp_path):
    cfg = RunConfig.from_profile("smoke", dataset="cifar10")
    assert cfg.image_size == 32
    assert RunConfig.from_profile("default", dataset="cifar100").image_size == 32
    assert RunConfig.from_profile("smoke", dataset="cifar10", image_size=None).image_size is None
    # and the CLI reaches the data-set check (no data here) with a clear message
    proc = run_cli(["train", "--profile", "smoke", "--set", "dataset=cifar10",
                    "--set", f"data_root={tmp_path / 'none'}", "--set", "out_dir=o",
                    "--set", "checkpoint_dir=c"], tmp_path)
    assert_clear_error(proc, "data set not found", "cifar10")


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
        ([str(tmp_path / "missing.pt")], ["no checkpoint at", "missing.pt"]),
        ([str(tmp_path)], ["is not a file"]),
        ([str(not_a_checkpoint)], ["text.pt", "not a readable esdlib checkpoint"]),
        ([str(foreign_torch_file)], ["foreign.pt", "not a readable esdlib checkpoint"]),
        ([str(foreign_torch_file), "--T", "0"], ["--T", "0"]),
        ([str(foreign_torch_file), "--T", "-1"], ["--T", "-1"]),
        ([str(foreign_torch_file), "--batch-size", "0"], ["--batch-size", "0"]),
        ([str(foreign_torch_file), "--batch-size", "-5"], ["--batch-size"]),
        ([str(foreign_torch_file), "--device", "tpu"], ["device='tpu'"]),
        ([str(foreign_torch_file), "--device", "cuda:99"], ["cuda:99"]),
    ]
    for args, needles in cases:
        assert_clear_error(run_cli(["evaluate", *args], tmp_path), *needles)


@pytest.mark.parametrize(("args", "needle"), [(["--jobs", "0"], "--jobs"),
                                              (["--jobs", "-1"], "--jobs"),
                                              (["--threads", "0"], "--threads")])
def test_reproduce_jobs_and_threads_must_be_positive(tmp_path, args, needle):
    assert_clear_error(run_book_cli(["reproduce", "--profile", "smoke", "--no-book", *args],
                                    tmp_path), needle, ">= 1")


def test_reproduce_fresh_refuses_the_committed_records(tmp_path):
    proc = run_book_cli_subprocess(["reproduce", "--profile", "smoke", "--fresh",
                                    str(REPO / "results")], tmp_path)  # the real entry point
    assert_clear_error(proc, "--fresh", "separate folder")


def test_broken_manifest_names_the_file(tmp_path):
    from esdbook.reproduce import load_manifest

    bad = tmp_path / "manifest.yaml"
    bad.write_text("experiments: {table1: [unclosed\n")
    with pytest.raises(ConfigError, match="manifest.yaml"):
        load_manifest(bad)


def test_api_names_with_trailing_newline_are_rejected():
    with pytest.raises(ConfigError, match="experiment"):
        RunConfig.from_profile("smoke", experiment="abc\n")
    with pytest.raises(ConfigError, match="device"):
        RunConfig.from_profile("smoke", device="cpu\n")


def test_runtime_check_leaves_nothing_behind(tmp_path):
    cfg = RunConfig.from_profile("smoke", out_dir=str(tmp_path / "a" / "b"),
                            checkpoint_dir=str(tmp_path / "c"), device="cpu")
    check_runtime(cfg)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="out_dir"):
        check_writable_dir(tmp_path / "file" / "sub", "out_dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_out_dir_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not a writable folder"):
            check_writable_dir(ro / "results", "out_dir")
    finally:
        ro.chmod(0o700)


def test_relative_out_dir_resolves_against_the_working_directory(tmp_path, monkeypatch):
    from esdlib.train.engine import checkpoint_paths
    from esdlib.train.paths import resolve_path

    monkeypatch.chdir(tmp_path)
    assert resolve_path("results") == tmp_path / "results"
    cfg = RunConfig.from_profile("smoke", checkpoint_dir="ck")
    assert checkpoint_paths(cfg)["dir"].parent == tmp_path / "ck"
    assert resolve_path("/abs/x") == Path("/abs/x")


# --------------------------------------------------------------------------- papermill parameters

NOTEBOOKS = REPO / "book"


def run_papermill(nb, out, params, cwd):
    args = [sys.executable, "-m", "papermill", str(nb), str(out), "--cwd", str(REPO)]
    for k, v in params:
        args += ["-p", k, v]
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'book'}", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("nb", "params", "needles"), [
    ("chapters/01_introduction.ipynb", [("profil", "smoke")],
     ["unknown parameter(s) 'profil' (did you mean 'profile'?)", "profile, results_dir"]),
    ("experiments/train.ipynb", [("profile", "smoke"), ("T", "5")],
     ["unknown parameter(s) 'T'", "overrides_json"]),
])
def test_plain_papermill_refuses_unknown_parameters(tmp_path, nb, params, needles):
    proc = run_papermill(NOTEBOOKS / nb, tmp_path / "out.ipynb", params, tmp_path)
    assert proc.returncode != 0
    for needle in needles:
        assert needle in proc.stderr + proc.stdout
    assert not list(tmp_path.glob("**/*.json"))  # nothing trained, no record


def test_run_notebook_refuses_unknown_parameters_before_running(tmp_path):
    from esdbook.build import run_notebook

    with pytest.raises(ValueError, match=r"'T'.*valid parameters: profile, experiment"):
        run_notebook(NOTEBOOKS / "experiments" / "train.ipynb", tmp_path / "o.ipynb",
                     {"profile": "smoke", "T": 5}, cwd=REPO)
    assert list(tmp_path.iterdir()) == []


def test_notebook_checks_name_exactly_the_declared_parameters():
    import ast

    import nbformat
    import papermill

    from esdbook.chapter import CHAPTER_PARAMETERS

    for path in sorted([*NOTEBOOKS.glob("chapters/*.ipynb"),
                        *NOTEBOOKS.glob("experiments/*.ipynb")]):
        declared = list(papermill.inspect_notebook(str(path)))
        nb = nbformat.read(path, as_version=4)
        source = [c for c in nb.cells if c.cell_type == "code"][1].source
        calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", getattr(n.func, "attr", "")) in
                 ("check_notebook_parameters", "open_chapter")]
        assert calls, f"{path.name}: no parameter check in the cell after the parameters"
        if getattr(calls[0].func, "id", "") == "check_notebook_parameters":
            assert ast.literal_eval(calls[0].args[0]) == declared, path.name
        else:
            assert list(CHAPTER_PARAMETERS) == declared, path.name


@pytest.mark.parametrize(("text", "needle"), [
    ("{bad", "not valid JSON"), ("[1, 2]", "JSON object"), ("3", "JSON object"),
    ('{"experiment": "x"}', "experiment must be set with the notebook parameter"),
    ('{"T": "4"}', "T must be an integer"),
])
def test_overrides_json_errors_are_config_errors(text, needle):
    with pytest.raises(ConfigError, match=needle):
        RunConfig.from_notebook("smoke", text, experiment="e", out_dir="r")
    assert RunConfig.from_notebook("smoke", '{"T": 3}', experiment="e").T == 3


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


def test_fp16_flag_on_the_cpu_is_one_line_error_before_work(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("fp16 is valid on this machine")
    proc = run_cli(["train", "--profile", "smoke", "--quiet", "--precision", "fp16",
                    "--set", "device=cpu", "--set", "out_dir=out", "--set", "checkpoint_dir=ck"],
                   tmp_path)
    assert_clear_error(proc, "precision='fp16'", "CUDA")
    assert list(tmp_path.iterdir()) == []


def test_notebooks_take_the_precision_and_layout_through_overrides_json():
    cfg = RunConfig.from_notebook("smoke", '{"precision": "auto", "channels_last": false}',
                                  experiment="e")
    assert (cfg.precision, cfg.channels_last, cfg.keep_freed_memory) == ("auto", False, True)
    with pytest.raises(ConfigError, match="replaced by precision"):
        RunConfig.from_notebook("smoke", '{"amp": true}', experiment="e")


def test_writable_check_survives_a_concurrent_checker(tmp_path, monkeypatch):
    """Two DDP ranks check the same new folder: one removes it (its own clean-up) between the
    other's mkdir and probe; the other must create it again, not report it unwritable."""
    import tempfile

    target = tmp_path / "new" / "out"
    real, calls = tempfile.TemporaryFile, []

    def other_rank_cleans_up_first(*args, **kwargs):
        if not calls:
            calls.append(1)
            target.rmdir()
            raise FileNotFoundError(2, "No such file or directory")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", other_rank_cleans_up_first)
    check_writable_dir(target, "out_dir")
    assert calls and not (tmp_path / "new").exists()  # retried, then left nothing behind
