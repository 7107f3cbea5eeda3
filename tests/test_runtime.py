"""Machine settings of a run (esdlib.train.runtime): ``keep_freed_memory`` (freed tensors are
reused instead of re-faulted, measured in a fresh process) and what each ``precision`` resolves
to on each device."""

import subprocess
import sys

import pytest
import torch

import esdlib.train.runtime as runtime

# Twenty "training steps": hold a set of activation-sized tensors (5–40 MiB; a ResNet-18 stage-1
# map at T·B = 128 is 32 MiB), then free them; prints the median minor page faults of a step,
# first with glibc's defaults, then after keep_freed_memory() (the tuning only ever applies to
# the steps after it, so one fresh process measures both). glibc always serves blocks above
# 32 MiB (its largest mmap threshold) with a fresh mmap, so by default every step re-faults each
# 40 MiB block (10240 pages).
_PROBE = """
import resource, statistics, torch
import esdlib.train.runtime as rt
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    held = [torch.ones(n * 2**18) for n in (40, 20, 10, 40, 5)]
    del held
def median_faults():
    step()  # first touch of the heap (or of the tuned heap), not counted
    per_step = []
    for _ in range(20):
        start = faults()
        step()
        per_step.append(faults() - start)
    return int(statistics.median(per_step))
default = median_faults()
applied = rt.keep_freed_memory()
print(applied, default, median_faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_tensors_are_reused_without_page_faults():
    out = subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True,
                         text=True, timeout=120).stdout.split()
    applied, default, tuned = out[0], int(out[1]), int(out[2])
    assert applied == "True"
    assert default >= 10_000  # at least one 40 MiB block faulted afresh in a typical step
    # tuned: a typical step reuses the heap; at most one 1 MiB page run is touched afresh
    assert tuned <= 256


def test_invalid_top_pad_fails_before_changing_anything():
    with pytest.raises(ValueError, match="top_pad_bytes"):
        runtime.keep_freed_memory(-1)


# --- precision ---------------------------------------------------------------------------------


def _units(monkeypatch, amx=False, avx512=False):
    monkeypatch.setattr(runtime, "cpu_bf16_units",
                        lambda: {"amx_bf16": amx, "avx512_bf16": avx512})


@pytest.mark.parametrize(("amx", "avx512", "expected"),
                         [(False, False, "fp32"), (False, True, "bf16"), (True, True, "bf16"),
                          (True, False, "bf16")])
def test_auto_precision_on_the_cpu_follows_the_bf16_units(monkeypatch, amx, avx512, expected):
    _units(monkeypatch, amx, avx512)
    assert runtime.resolve_precision("auto", "cpu") == expected
    assert runtime.resolve_precision("auto", torch.device("cpu")) == expected


@pytest.mark.parametrize("bf16", [False, True])
def test_auto_precision_on_cuda_follows_native_bf16(monkeypatch, bf16):
    monkeypatch.setattr(runtime, "_cuda_bf16", lambda device: bf16)
    assert runtime.resolve_precision("auto", "cuda") == ("bf16" if bf16 else "fp32")
    assert runtime.resolve_precision("auto", "mps") == "fp32"


def test_explicit_precisions_resolve_to_themselves_where_they_can_run(monkeypatch):
    _units(monkeypatch)  # no bf16 units: explicit bf16 still runs (emulated), auto does not
    monkeypatch.setattr(runtime, "_cuda_bf16", lambda device: True)
    for p in ("fp32", "bf16"):
        assert runtime.resolve_precision(p, "cpu") == p
    assert runtime.resolve_precision("fp16", "cuda") == "fp16"


@pytest.mark.parametrize(("precision", "device", "needles"), [
    ("fp16", "cpu", ["fp16", "CUDA", "cpu"]),
    ("fp16", "mps", ["fp16", "CUDA"]),
    ("bf16", "mps", ["bf16", "mps"]),
    ("half", "cpu", ["'half'", "fp32, bf16, fp16, auto"]),
])
def test_impossible_precisions_are_refused_with_the_reason(precision, device, needles):
    problem = runtime.precision_problem(precision, device)
    assert problem is not None and all(n in problem for n in needles)
    with pytest.raises(ValueError) as err:
        runtime.resolve_precision(precision, device)
    assert str(err.value) == problem


def test_bf16_on_a_cuda_device_without_native_bf16_is_refused(monkeypatch):
    monkeypatch.setattr(runtime, "_cuda_bf16", lambda device: False)
    assert "compute capability 8.0" in runtime.precision_problem("bf16", "cuda")
    assert runtime.precision_problem("fp16", "cuda") is None


def test_autocast_contexts():
    with runtime.autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        out = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
        assert out.dtype == torch.bfloat16
    with runtime.autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    assert runtime.autocast_dtype("fp16") == torch.float16
    with pytest.raises(ValueError, match="resolved"):
        runtime.autocast_dtype("auto")


def test_cpu_bf16_units_reports_both_probes():
    units = runtime.cpu_bf16_units()
    assert set(units) == {"amx_bf16", "avx512_bf16"} and all(
        isinstance(v, bool) for v in units.values())


# --- device, the run's runtime, peak memory ----------------------------------------------------


def _no_gpu(monkeypatch, mps: bool = False):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: mps)


@pytest.mark.parametrize(("mps", "expected"), [(False, "cpu"), (True, "mps")])
def test_auto_device_is_cuda_then_mps_then_cpu(monkeypatch, mps, expected):
    _no_gpu(monkeypatch, mps)
    assert runtime.resolve_device("auto") == torch.device(expected)
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize(("name", "needle"), [("gpu", "not valid"), ("cuda", "not available"),
                                              ("cuda:1", "not available"), ("mps", "MPS")])
def test_unknown_or_absent_devices_are_refused(monkeypatch, name, needle):
    from esdlib.train.fields import ConfigError

    _no_gpu(monkeypatch)
    with pytest.raises(ConfigError, match=needle):
        runtime.resolve_device(name)


def test_the_record_names_the_device_auto_resolves_to(monkeypatch):
    from esdlib.train.records import environment_info

    _no_gpu(monkeypatch, mps=True)
    assert environment_info()["device_name"].startswith("Apple MPS")
    assert environment_info("auto")["device_name"].startswith("Apple MPS")
    assert not environment_info("cpu")["device_name"].startswith("Apple MPS")


def test_bench_resolves_auto_like_the_run(monkeypatch):
    from esdlib.bench.config import BenchConfig

    _no_gpu(monkeypatch, mps=True)
    assert BenchConfig(precisions=("fp32",)).device_type == "mps"


def _count_precision_checks(monkeypatch) -> list:
    calls, real = [], runtime.precision_problem
    monkeypatch.setattr(runtime, "precision_problem",
                        lambda *args: calls.append(args) or real(*args))
    return calls


def test_esd_train_checks_the_precision_once(monkeypatch, tmp_path):
    """Parsing `esd train` checks nothing; check_runtime checks and resolves once and returns
    the Runtime the engine needs."""
    from esdlib import cli
    from esdlib.train.config import RunConfig, check_runtime

    calls = _count_precision_checks(monkeypatch)
    _no_gpu(monkeypatch)
    args = cli.build_parser().parse_args(
        ["train", "--profile", "smoke", "--precision", "bf16", "--tf32",
         "--set", f"out_dir={tmp_path / 'r'}", "--set", f"checkpoint_dir={tmp_path / 'c'}"])
    assert calls == []  # building the parser no longer builds (and checks) a BenchConfig
    cfg = RunConfig.from_overrides(args.profile, cli.train_overrides(args))
    rt = check_runtime(cfg)
    assert len(calls) == 1
    assert (rt.device, rt.precision, rt.tf32) == (torch.device("cpu"), "bf16", False)
    assert "no effect on cpu" in rt.tf32_note
    assert rt.keep_freed_memory and rt.channels_last and rt.compile == "none"


def test_runtime_refuses_a_precision_the_device_cannot_run(monkeypatch):
    from esdlib.train.config import ConfigError, RunConfig

    _no_gpu(monkeypatch)
    with pytest.raises(ConfigError, match="fp16.*CUDA"):
        runtime.resolve_runtime(RunConfig.from_profile("smoke", precision="fp16"))


def test_runtime_apply_returns_the_record_settings(monkeypatch):
    from esdlib.train.config import RunConfig

    _no_gpu(monkeypatch)
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda *a: True)
    rt = runtime.resolve_runtime(RunConfig.from_profile("smoke", tf32=True))
    assert rt.apply() == {"precision": "fp32", "channels_last": True, "keep_freed_memory": True,
                          "compile": "none", "tf32": False, "tf32_note": rt.tf32_note}
    off = runtime.resolve_runtime(RunConfig.from_profile("smoke", keep_freed_memory=False))
    assert off.apply()["keep_freed_memory"] is False and "tf32_note" not in off.apply()


def test_peak_memory_is_one_counter_with_its_name():
    held = torch.ones(2**22)  # 16 MiB, resident
    peak, source = runtime.peak_memory("cpu")
    assert peak >= held.numel() * 4 and source in ("cpu_vmhwm", "cpu_ru_maxrss")
    assert runtime.peak_memory_bytes(torch.device("cpu")) >= peak - 2**20
    if source == "cpu_vmhwm":
        del held
        assert runtime.reset_peak_memory("cpu")
