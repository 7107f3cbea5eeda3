"""The run configuration (esdlib.train.config): profiles, value validation, the machine checks
(device, precision, writable folders), overrides from the command line and from notebooks, the
config hash behind every run id."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from esdlib.train.config import (
    DATASETS,
    DEFAULT_PROFILE,
    HASH_EXCLUDED_FIELDS,
    HASHED_WHEN_NOT_DEFAULT,
    METHODS,
    PAPER_ASSUMED,
    PAPER_HPARAMS,
    PROFILES,
    SMOKE_PROFILE,
    ConfigError,
    RunConfig,
    canonical_json,
    check_runtime,
    check_writable_dir,
    parse_override,
)

REPO = Path(__file__).resolve().parents[1]


# -- profiles ---------------------------------------------------------------


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_builds(name):
    cfg = RunConfig.from_profile(name)
    assert isinstance(cfg, RunConfig)
    assert cfg.profile == name
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_profile_names():
    assert PROFILES == ("smoke", "quick", "default", "mnist", "paper")


def test_profile_is_both_factory_and_field():
    cfg = RunConfig.from_profile("smoke")
    assert cfg.profile == "smoke"
    assert RunConfig().profile == "default"
    assert RunConfig.from_profile("default") == RunConfig.from_profile("default")


def test_smoke_profile_values():
    cfg = RunConfig.from_profile("smoke")
    expected = dict(
        dataset="digits", arch="spiking_resnet18", width=0.125, T=2, epochs=1,
        batch_size=64, max_train_steps=3, image_size=16,
    )  # fmt: skip
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert all(getattr(cfg, k) == v for k, v in SMOKE_PROFILE.items())


def test_default_profile_values():
    cfg = RunConfig.from_profile("default")
    expected = dict(
        dataset="digits_hard", image_size=16, arch="spiking_resnet18", width=0.125, T=4,
        epochs=20, batch_size=16, lr=0.1, weight_decay=5e-4,
    )  # fmt: skip
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert all(getattr(cfg, k) == v for k, v in DEFAULT_PROFILE.items())


def test_quick_profile_is_the_default_cut_short():
    quick, default = RunConfig.from_profile("quick"), RunConfig.from_profile("default")
    assert quick.epochs == 3
    assert quick.replace(epochs=default.epochs, profile="default") == default


def test_profile_overrides_apply():
    cfg = RunConfig.from_profile("default", method="bptt", T=6, experiment="abl")
    assert (cfg.method, cfg.T, cfg.experiment, cfg.width) == ("bptt", 6, "abl", 0.125)


@pytest.mark.parametrize("dataset", list(PAPER_HPARAMS))
def test_paper_profile_picks_dataset_row(dataset):
    cfg = RunConfig.from_profile("paper", dataset=dataset)
    assert cfg.dataset == dataset
    for key, value in PAPER_HPARAMS[dataset].items():
        assert getattr(cfg, key) == value, key


def test_paper_rows_match_the_paper():
    c10 = RunConfig.from_profile("paper")
    assert (c10.dataset, c10.T, c10.lr, c10.weight_decay, c10.epochs, c10.batch_size) == (
        "cifar10", 6, 0.1, 5e-4, 300, 128,
    )  # fmt: skip
    assert (c10.alpha, c10.beta, c10.tau, c10.image_size, c10.momentum) == (1.0, 0.3, 3.0, 32, 0.9)
    inet = RunConfig.from_profile("paper", dataset="imagenet")
    assert (inet.arch, inet.lr, inet.weight_decay, inet.epochs, inet.batch_size) == (
        "preact_spiking_resnet34", 0.2, 2e-5, 100, 512,
    )  # fmt: skip
    assert (inet.T, inet.alpha, inet.beta, inet.image_size) == (4, 0.7, 0.3, 224)
    dvs = RunConfig.from_profile("paper", dataset="cifar10_dvs")
    assert (dvs.batch_size, dvs.T, dvs.image_size, dvs.beta, dvs.lr, dvs.epochs) == (
        32, 10, 48, 0.1, 0.1, 300,
    )  # fmt: skip


def test_paper_overrides_apply_after_dataset_row():
    cfg = RunConfig.from_profile("paper", T=2, dataset="imagenet", method="ratebp")
    assert (cfg.T, cfg.lr, cfg.arch, cfg.method) == (2, 0.2, "preact_spiking_resnet34", "ratebp")


def test_paper_profile_rejects_non_paper_dataset():
    with pytest.raises(ConfigError, match="cifar10_dvs") as err:
        RunConfig.from_profile("paper", dataset="digits")
    assert "default" in str(err.value)


def test_paper_assumed_names_are_row_keys():
    assert set(PAPER_ASSUMED) == set(PAPER_HPARAMS)
    for dataset, names in PAPER_ASSUMED.items():
        assert set(names) <= set(PAPER_HPARAMS[dataset])


def test_unknown_profile_lists_profiles():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_profile("smok")
    msg = str(err.value)
    assert "'smoke'" in msg and "smoke, quick, default, mnist, paper" in msg


def test_profile_key_cannot_be_overridden():
    with pytest.raises(ConfigError, match="profile"):
        RunConfig.from_profile("smoke", profile="paper")


def test_smoke_profile_with_cifar_takes_the_datasets_image_size():
    assert RunConfig.from_profile("smoke", dataset="cifar10").image_size == 32
    assert RunConfig.from_profile("default", dataset="cifar100").image_size == 32
    assert RunConfig.from_profile("smoke", dataset="cifar10", image_size=None).image_size is None


# -- validation -------------------------------------------------------------

BAD_VALUES = [
    # (overrides, substrings the message must contain)
    (dict(method="foo"), ["method", "'bptt'", "'esd_bptt'"]),
    (dict(method="ESD"), ["'esd'"]),
    (dict(dataset="svhn"), ["dataset", "'cifar10_dvs'", "'digits'"]),
    (dict(arch="resnet50"), ["arch", "'spiking_resnet19'", "'preact_spiking_resnet34'"]),
    (dict(branch_kind="mlp"), ["branch_kind", "'dsconv'", "'conv'", "'dsconv_wide'"]),
    (dict(branch_pool="max"), ["branch_pool", "'global'", "'published'"]),
    (dict(teacher_space="prob"), ["teacher_space", "'logits'", "'probs'"]),
    (dict(reset="zero"), ["reset", "'soft_nodetach'"]),
    (dict(rate_grad_scale="T"), ["rate_grad_scale", "'1/T'", "'none'"]),
    (dict(T=0), ["T=0", ">= 1"]),
    (dict(T=2.5), ["T", "integer", "float"]),
    (dict(T="4"), ["T", "integer", "str"]),
    (dict(T=True), ["T", "integer", "bool"]),
    (dict(epochs=False), ["epochs", "integer", "bool"]),
    (dict(beta=-0.1), ["beta", ">= 0"]),
    (dict(alpha=-1), ["alpha", ">= 0"]),
    (dict(eta=-1e-3), ["eta", ">= 0"]),
    (dict(lr=-0.1), ["lr", "> 0"]),
    (dict(lr=float("nan")), ["lr", "finite"]),
    (dict(weight_decay=float("inf")), ["weight_decay", "finite"]),
    (dict(weight_decay=-1e-4), ["weight_decay", ">= 0"]),
    (dict(tau=0), ["tau", "> 0"]),
    (dict(width=0.0), ["width", "> 0"]),
    (dict(width="wide"), ["width", "number"]),
    (dict(width=True), ["width", "number", "bool"]),
    (dict(momentum=1.0), ["momentum", "< 1"]),
    (dict(momentum=-0.5), ["momentum", ">= 0"]),
    (dict(decay=0.0), ["decay", "> 0"]),
    (dict(decay=1.0), ["decay", "< 1"]),
    (dict(v_threshold=0), ["v_threshold", "> 0"]),
    (dict(epochs=0), ["epochs", ">= 1"]),
    (dict(batch_size=0), ["batch_size", ">= 1"]),
    (dict(eval_batch_size=-1), ["eval_batch_size", ">= 1"]),
    (dict(max_train_steps=0), ["max_train_steps", ">= 1"]),
    (dict(image_size=0), ["image_size", ">= 1"]),
    (dict(num_workers=-1), ["num_workers", ">= 0"]),
    (dict(seed=-1), ["seed", ">= 0"]),
    (dict(warmup_epochs=30), ["warmup_epochs", "epochs"]),
    (dict(amp=1), ["'amp'", "replaced by precision", "precision=fp16"]),
    (dict(precision="bfloat16"), ["precision", "'bf16'", "'fp32'", "'auto'"]),
    (dict(channels_last=1), ["channels_last", "bool"]),
    (dict(keep_freed_memory="yes"), ["keep_freed_memory", "bool"]),
    (dict(augment="yes"), ["augment", "bool"]),
    (dict(device="gpu"), ["device", "cuda:N", "mps"]),
    (dict(device="cuda:x"), ["device", "cuda:N"]),
    (dict(experiment="a/b"), ["experiment"]),
    (dict(experiment=""), ["experiment"]),
    (dict(out_dir=""), ["out_dir"]),
    (dict(dataset=None), ["dataset", "None"]),
    (dict(split="balanced"), ["split", "'official'", "digits"]),
    (dict(split="random"), ["split", "'official'"]),
    (dict(lrr=0.1), ["'lrr'", "did you mean 'lr'", "valid keys", "weight_decay"]),
    # issue 11 (F9): absurd values are refused before any work
    (dict(lr=0.0), ["lr", "> 0"]),
    (dict(lr=1e300), ["lr", "<= 1000000"]),
    (dict(weight_decay=1e30), ["weight_decay", "<="]),
    (dict(v_threshold=1e300), ["v_threshold", "<="]),
    (dict(width=1e4), ["width", "<= 16"]),
    (dict(image_size=100000), ["image_size", "<= 1024"]),
    (dict(T=100000), ["T", "<= 1024"]),
    (dict(experiment="x" * 170), ["experiment", "170 characters", "at most 100"]),
    (dict(experiment="abc\n"), ["experiment", "letters, digits"]),
    (dict(device="cpu\n"), ["device", "cuda:N"]),
    (dict(dataset="cifar10", image_size=16), ["cifar10", "32", "image_size"]),
    (dict(cache_dir=""), ["cache_dir", "empty"]),
    (dict(Tt=3), ["'Tt'", "valid keys"]),
    (dict(branch_pool="published"), ["AvgPool2d(4, 4)", "image_size=16 gives 2 px"]),
]


@pytest.mark.parametrize(("overrides", "needles"), BAD_VALUES, ids=lambda v: repr(v)[:40])
def test_invalid_values_raise_config_error(overrides, needles):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_profile("default", **overrides)
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize(("overrides", "needles"), BAD_VALUES[:12], ids=lambda v: repr(v)[:40])
def test_constructor_validates_too(overrides, needles):
    with pytest.raises(ConfigError):
        RunConfig(**overrides)


def test_dvs_balanced_split_is_valid():
    cfg = RunConfig.from_profile("paper", dataset="cifar10_dvs", split="balanced")
    assert cfg.split == "balanced"


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_profile("default", method="x", T=0, beta=-1)
    msg = str(err.value)
    assert "method" in msg and "T=0" in msg and "beta" in msg


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_valid_devices(device):
    assert RunConfig.from_profile("smoke", device=device).device == device


def test_float_fields_accept_ints_and_store_floats():
    cfg = RunConfig.from_profile("default", lr=1, width=1, beta=0)
    assert isinstance(cfg.lr, float) and isinstance(cfg.width, float)
    assert (
        cfg.config_hash()
        == RunConfig.from_profile("default", lr=1.0, width=1.0, beta=0.0).config_hash()
    )


def test_path_like_strings_are_stored_as_str(tmp_path):
    cfg = RunConfig.from_profile("smoke", out_dir=tmp_path, data_root=tmp_path)
    assert cfg.out_dir == str(tmp_path) and cfg.data_root == str(tmp_path)
    json.dumps(cfg.to_dict())


def test_frozen():
    cfg = RunConfig.from_profile("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.T = 3


def test_replace_returns_new_validated_config():
    cfg = RunConfig.from_profile("smoke")
    new = cfg.replace(T=3, method="bptt")
    assert (new.T, new.method) == (3, "bptt")
    assert (cfg.T, cfg.method) == (2, "esd")
    with pytest.raises(ConfigError, match=">= 1"):
        cfg.replace(T=0)
    with pytest.raises(ConfigError, match="valid keys"):
        cfg.replace(timesteps=3)


def test_from_dict_roundtrip_and_unknown_keys():
    cfg = RunConfig.from_profile("paper", dataset="cifar100")
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="'bogus'"):
        RunConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="mapping"):
        RunConfig.from_dict(["T", 4])


def test_to_dict_is_flat_json_in_field_order():
    d = RunConfig.from_profile("smoke").to_dict()
    assert list(d) == [f.name for f in dataclasses.fields(RunConfig)]
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize("method", METHODS)
def test_uses_branches(method):
    cfg = RunConfig.from_profile("smoke", method=method)
    assert cfg.uses_branches == (method in ("sd", "esd", "esd_bptt"))
    assert cfg.uses_rate_backprop == (method in ("ratebp", "sd", "esd"))


def test_datasets_list():
    assert DATASETS == ("digits", "dvs_digits", "digits_hard", "dvs_digits_hard", "mnist",
                        "cifar10", "cifar100", "imagenet", "cifar10_dvs")


def test_api_names_with_trailing_newline_are_rejected():
    with pytest.raises(ConfigError, match="experiment"):
        RunConfig.from_profile("smoke", experiment="abc\n")
    with pytest.raises(ConfigError, match="device"):
        RunConfig.from_profile("smoke", device="cpu\n")


# -- machine checks: folders (device and precision: test_runtime.py, test_cli.py) ---------------


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


def test_relative_out_dir_resolves_against_the_working_directory(tmp_path, monkeypatch):
    from esdlib.train.checkpoint import checkpoint_paths
    from esdlib.train.paths import resolve_path

    monkeypatch.chdir(tmp_path)
    assert resolve_path("results") == tmp_path / "results"
    cfg = RunConfig.from_profile("smoke", checkpoint_dir="ck")
    assert checkpoint_paths(cfg)["dir"].parent == tmp_path / "ck"
    assert resolve_path("/abs/x") == Path("/abs/x")


# -- scale label ----------------------------------------------------------------


def test_scale_labels():
    assert (
        RunConfig.from_profile("default").scale_label()
        == "digits_hard 16×16, spiking_resnet18 ×0.125, T=4, 20 epochs"
    )
    assert (
        RunConfig.from_profile("paper").scale_label()
        == "cifar10 32×32, spiking_resnet18 ×1, T=6, 300 epochs"
    )
    smoke = RunConfig.from_profile("smoke").scale_label()
    assert smoke == "digits 16×16, spiking_resnet18 ×0.125, T=2, 1 epoch, ≤3 steps/epoch"
    assert "native size" in RunConfig.from_profile("default", image_size=None).scale_label()


@pytest.mark.parametrize("dataset", ["digits", "dvs_digits"])
def test_digits_label_never_reads_like_cifar(dataset):
    label = RunConfig.from_profile("default", dataset=dataset).scale_label()
    assert label.startswith(dataset + " ") and "cifar" not in label.lower()


# -- overrides ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("T=4", ("T", 4)),
        ("method=bptt", ("method", "bptt")),
        ("width=0.5", ("width", 0.5)),
        ("lr=1e-3", ("lr", 1e-3)),
        ("beta=0", ("beta", 0.0)),
        ("data_root=none", ("data_root", None)),
        ("data_root=NULL", ("data_root", None)),
        ("data_root=/data/cifar", ("data_root", "/data/cifar")),
        ("image_size=None", ("image_size", None)),
        ("max_train_steps=7", ("max_train_steps", 7)),
        ("precision=bf16", ("precision", "bf16")),
        ("channels_last=False", ("channels_last", False)),
        ("keep_freed_memory=off", ("keep_freed_memory", False)),
        ("augment=1", ("augment", True)),
        ("augment=0", ("augment", False)),
        (" lr = 0.05 ", ("lr", 0.05)),
        ("rate_grad_scale=1/T", ("rate_grad_scale", "1/T")),
        ("experiment=a=b", ("experiment", "a=b")),
    ],
)
def test_parse_override(text, expected):
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("T=2.5", ["T", "integer"]),
        ("T=abc", ["T", "integer"]),
        ("T=none", ["T", "integer"]),
        ("channels_last=maybe", ["channels_last", "true/false"]),
        ("amp=true", ["'amp'", "replaced by precision"]),
        ("lr=fast", ["lr", "number"]),
        ("image_size=big", ["image_size", "integer", "none"]),
        ("T4", ["key=value", "valid keys"]),
        ("lrr=0.1", ["'lrr'", "did you mean 'lr'", "valid keys"]),
    ],
)
def test_parse_override_errors(text, needles):
    with pytest.raises(ConfigError) as err:
        parse_override(text)
    for needle in needles:
        assert needle in str(err.value)


def test_from_overrides():
    cfg = RunConfig.from_overrides("smoke", ["T=4", "method=bptt", "width=0.5", "data_root=none"])
    assert (cfg.T, cfg.method, cfg.width, cfg.data_root, cfg.profile) == (
        4, "bptt", 0.5, None, "smoke",
    )  # fmt: skip
    assert RunConfig.from_overrides("default") == RunConfig.from_profile("default")
    assert RunConfig.from_overrides("smoke", ["T=3", "T=5"]).T == 5


def test_from_overrides_validates_values():
    with pytest.raises(ConfigError, match="'bptt'"):
        RunConfig.from_overrides("smoke", ["method=bpt"])
    with pytest.raises(ConfigError, match="list"):
        RunConfig.from_overrides("smoke", "T=4")


@pytest.mark.parametrize(("text", "needle"), [
    ("{bad", "not valid JSON"), ("[1, 2]", "JSON object"), ("3", "JSON object"),
    ('{"experiment": "x"}', "experiment must be set with the notebook parameter"),
    ('{"T": "4"}', "T must be an integer"),
])
def test_overrides_json_errors_are_config_errors(text, needle):
    with pytest.raises(ConfigError, match=needle):
        RunConfig.from_notebook("smoke", text, experiment="e", out_dir="r")
    assert RunConfig.from_notebook("smoke", '{"T": 3}', experiment="e").T == 3


def test_notebooks_take_the_precision_and_layout_through_overrides_json():
    cfg = RunConfig.from_notebook("smoke", '{"precision": "auto", "channels_last": false}',
                                  experiment="e")
    assert (cfg.precision, cfg.channels_last, cfg.keep_freed_memory) == ("auto", False, True)
    with pytest.raises(ConfigError, match="replaced by precision"):
        RunConfig.from_notebook("smoke", '{"amp": true}', experiment="e")


# -- hashing ----------------------------------------------------------------------


def test_hash_is_hex_sha256_and_deterministic():
    h = RunConfig.from_profile("default").config_hash()
    assert len(h) == 64 and int(h, 16) >= 0
    assert h == RunConfig.from_profile("default").config_hash()


@pytest.mark.slow  # a fresh interpreter pays the torch import; in the fast set,
# test_committed_records_keep_their_run_ids recomputes ids that other processes wrote
def test_hash_stable_across_processes():
    """Another interpreter, under another hash seed, computes the same hash."""
    code = ("from esdlib.train.config import RunConfig; "
            "print(RunConfig.from_profile('paper', dataset='imagenet', seed=3).config_hash())")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout.strip()
    assert out == RunConfig.from_profile("paper", dataset="imagenet", seed=3).config_hash()


def test_hash_ignores_locations_and_scheduling():
    base = RunConfig.from_profile("default")
    other = base.replace(
        out_dir="elsewhere", checkpoint_dir="ck2", num_workers=4, device="cpu",
        data_root="/data", download=True, checkpoint_every=7, cache_dir="/tmp/frames",
    )  # fmt: skip
    assert other.config_hash() == base.config_hash()
    layout = base.replace(channels_last=not base.channels_last, keep_freed_memory=False)
    assert layout.config_hash() == base.config_hash()  # memory layout and allocator: scheduling
    assert set(HASH_EXCLUDED_FIELDS) == {
        "out_dir", "checkpoint_dir", "num_workers", "device", "data_root", "download",
        "checkpoint_every", "cache_dir", "channels_last", "keep_freed_memory", "precision",
    }  # fmt: skip


def _old_style_hash(cfg):
    """The hash an esdlib before ``branch_pool``/``precision`` gave ``cfg``: ``amp`` and
    ``channels_last`` were hashed fields (default false), the others did not exist."""
    old_style = {k: v for k, v in cfg.to_dict().items()
                 if k not in HASH_EXCLUDED_FIELDS and k not in HASHED_WHEN_NOT_DEFAULT}
    old_style |= {"amp": cfg.precision == "fp16", "channels_last": False}
    return hashlib.sha256(canonical_json(old_style).encode("ascii")).hexdigest()


def test_fields_added_later_keep_earlier_run_ids_at_their_default():
    """A record written before ``branch_pool``/``precision`` existed still has its config's
    hash, with the channels-last default now on."""
    cfg = RunConfig.from_profile("default", image_size=32)
    assert cfg.channels_last and cfg.precision == "fp32"
    expected = _old_style_hash(cfg)
    assert cfg.config_hash() == expected
    assert cfg.replace(branch_pool="published").config_hash() != expected
    assert RunConfig.from_profile("default", method="bptt", branch_pool="published")  # no branches


def _another_value(name, value):
    """A valid value different from ``value`` for field ``name`` of the default profile."""
    spec = {f.name: f.metadata for f in dataclasses.fields(RunConfig)}[name]
    if "choices" in spec:
        return next(c for c in spec["choices"] if c != value)
    if isinstance(value, bool):
        return not value
    if name in ("image_size", "max_train_steps"):
        return 8 if value != 8 else 9
    if name in ("decay", "momentum"):
        return value / 2
    if name == "warmup_epochs":
        return value + 1
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    return value + "x"


def test_precision_is_hashed_in_the_legacy_amp_form():
    """fp32 and fp16 keep the run ids of the former ``amp`` flag; bf16 and auto get new ones."""
    base = RunConfig.from_profile("default")
    fp16 = base.replace(precision="fp16")
    assert fp16.config_hash() == _old_style_hash(fp16) != base.config_hash()
    legacy = dict(base.to_dict(), amp=True)
    del legacy["precision"]
    assert RunConfig.from_dict(legacy) == fp16
    hashes = {p: base.replace(precision=p).config_hash() for p in ("fp32", "bf16", "fp16", "auto")}
    assert len(set(hashes.values())) == 4
    assert base.replace(precision="bf16").hash_dict()["amp"] is False


def test_old_amp_dicts_load_and_contradictions_are_refused():
    d = RunConfig.from_profile("smoke").to_dict()
    del d["precision"], d["keep_freed_memory"]
    assert RunConfig.from_dict(d | {"amp": False}).precision == "fp32"
    assert RunConfig.from_dict(d | {"amp": True}).precision == "fp16"
    assert RunConfig.from_dict(d | {"amp": True, "precision": "fp16"}).precision == "fp16"
    with pytest.raises(ConfigError, match="contradicts"):
        RunConfig.from_dict(d | {"amp": True, "precision": "bf16"})
    with pytest.raises(ConfigError, match="amp must be a bool"):
        RunConfig.from_dict(d | {"amp": "yes"})


def test_committed_records_keep_their_run_ids():
    """Every run record under results/ rebuilds to its own config hash and run id, so
    `python -m esdbook reproduce` still finds them complete (configs written with ``amp``, NCHW)."""
    import json

    from esdlib.train.paths import results_dir
    from esdlib.train.records import make_run_id

    records = [json.loads(p.read_text()) for p in sorted(results_dir().glob("*/*.json"))]
    records = [r for r in records if "config_hash" in r]
    assert len(records) >= 10
    for r in records:
        cfg = RunConfig.from_dict(r["config"])
        assert cfg.config_hash() == r["config_hash"], r["run_id"]
        assert make_run_id(cfg, r["experiment"]) == r["run_id"]


@pytest.mark.parametrize(
    "name",
    [f.name for f in dataclasses.fields(RunConfig)
     if f.name not in HASH_EXCLUDED_FIELDS or f.name == "precision"],
)
def test_hash_covers_every_other_field(name):
    base = RunConfig.from_profile("default")
    if name == "split":
        base = RunConfig.from_profile("default", dataset="cifar10_dvs")
        changed = base.replace(split="balanced")
    elif name == "branch_pool":  # the published window needs a 32 px ResNet-18 input
        base = RunConfig.from_profile("default", image_size=32)
        changed = base.replace(branch_pool="published")
    elif name == "train_subset":  # None by default; hashed only when set
        changed = base.replace(train_subset=500)
    elif name == "profile":
        changed = RunConfig.from_profile(
            "smoke", **{k: v for k, v in base.to_dict().items() if k != "profile"}
        )
    else:
        changed = base.replace(**{name: _another_value(name, getattr(base, name))})
    assert getattr(changed, name) != getattr(base, name)
    assert changed.config_hash() != base.config_hash()


def test_lif_params_and_loss_config_are_the_fields_as_records():
    from esdlib.losses import LossConfig
    from esdlib.neurons import LIFParams

    cfg = RunConfig(decay=0.3, v_threshold=0.5, surrogate_alpha=2.0, reset="hard", alpha=0.7,
                    beta=0.1, tau=2.0, eta=0.5, teacher_space="probs")
    assert cfg.lif_params() == LIFParams(decay=0.3, v_threshold=0.5, surrogate_alpha=2.0,
                                         reset="hard")
    assert cfg.loss_config() == LossConfig(alpha=0.7, beta=0.1, tau=2.0, eta=0.5,
                                           teacher_space="probs")
