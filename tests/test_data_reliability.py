"""Reliability of data readers and evaluation inputs (review 2026-12, issue 22: N8, N9, N11):
non-finite evaluation data and frame caches, FIFOs and devices in data folders, deeply nested
JSON. Fast: tiny models and files written here."""

import os
import sys

import numpy as np
import pytest
import torch

import esdlib as esd
from esdlib.data import DataError
from esdlib.data._common import TensorClassificationDataset, read_json_file
from esdlib.data.cifar10_dvs import CIFAR10DVSFrames, read_aedat2
from esdlib.train.engine import evaluate

sys.path.insert(0, os.path.dirname(__file__))
from test_data import random_events, write_aedat  # noqa: E402


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_evaluate_refuses_non_finite_samples_with_their_count(bad):
    torch.manual_seed(0)
    net = esd.build_model("spiking_resnet18", 10, 1, width=0.125)
    x = torch.randn(14, 1, 16, 16)
    x[::7, 0, 3, 3] = bad  # 2 of 14 samples
    y = torch.randint(0, 10, (14,))
    with pytest.raises(DataError, match="2 of 14 samples with non-finite"):
        evaluate(net, TensorClassificationDataset(x, y), 2, batch_size=5)
    x[::7, 0, 3, 3] = 0.0
    assert evaluate(net, TensorClassificationDataset(x, y), 2, batch_size=5)["samples"] == 14


def _dvs_frames(tmp_path):
    rng = np.random.default_rng(0)
    write_aedat(tmp_path / "cat" / "a.aedat", *random_events(rng, 200))
    return CIFAR10DVSFrames(tmp_path, ["cat/a.aedat"], [3], T=2, image_size=16,
                            cache_dir=tmp_path / "frames")


def test_nan_filled_frame_cache_is_refused(tmp_path):
    ds = _dvs_frames(tmp_path)
    good = ds.frames(0)  # computes and caches
    assert torch.isfinite(good).all()
    np.savez_compressed(ds.cache_path(0), frames=np.full(tuple(good.shape), np.nan, np.float32))
    with pytest.raises(DataError, match=r"a\.npz: frame cache holds \d+ non-finite"):
        ds.frames(0)


@pytest.mark.parametrize("kind, word", [("fifo", "FIFO"), ("device", "device")])
def test_fifo_or_device_as_event_file_is_refused_before_opening(kind, word, tmp_path):
    path = tmp_path / "airplane" / "x.aedat"
    path.parent.mkdir()
    if kind == "fifo":
        os.mkfifo(path)  # open() would block forever
    else:
        path.symlink_to("/dev/zero")  # read_bytes() would never end
    with pytest.raises(DataError, match=f"x.aedat: the event file is a {word}, not a regular"):
        read_aedat2(path)


def test_fifo_and_deep_json_as_split_file_are_one_clear_error(tmp_path):
    fifo = tmp_path / "split.json"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="split index file is a FIFO"):
        read_json_file(fifo, "split index file")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(DataError, match="deep.json: unreadable cache index"):
        read_json_file(deep, "cache index")


def test_oversized_event_file_is_refused_before_reading(tmp_path, monkeypatch):
    import esdlib.data._common as common

    rng = np.random.default_rng(0)
    path = tmp_path / "cat" / "a.aedat"
    write_aedat(path, *random_events(rng, 200))
    monkeypatch.setattr(common, "MAX_DATA_FILE_BYTES", 100)
    monkeypatch.setattr(common.check_regular_file, "__defaults__", (100,))
    with pytest.raises(DataError, match="more than the 100 esdlib reads"):
        read_aedat2(path)


def test_cifar10_dvs_run_id_covers_its_file_list(tmp_path):
    from esdlib.train.config import RunConfig
    from esdlib.train.records import make_run_id

    rng = np.random.default_rng(0)
    for cls in ("airplane", "cat"):
        for i in range(2):
            write_aedat(tmp_path / "dvs" / cls / f"{cls}_{i}.aedat", *random_events(rng, 50))

    def run_id():
        return make_run_id(RunConfig.from_profile("smoke", dataset="cifar10_dvs",
                                                  data_root=str(tmp_path / "dvs")))

    partial = run_id()
    write_aedat(tmp_path / "dvs" / "dog" / "dog_0.aedat", *random_events(rng, 50))
    complete = run_id()
    assert complete != partial  # a class folder extracted later: another run
    (tmp_path / "dvs" / "dog" / "dog_0.aedat").unlink()
    assert run_id() == partial
    # the embedded digits' ids do not depend on any folder (test_records recomputes them all)
    digits = RunConfig.from_profile("smoke", data_root=str(tmp_path / "dvs"))
    assert "files_sha256" not in digits.hash_dict()


def test_fifo_in_a_cifar_folder_is_refused_before_torchvision_opens_it(tmp_path):
    from esdlib.data.vision import build_cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    os.mkfifo(folder / "data_batch_1")  # torchvision's checksum read would block forever
    with pytest.raises(DataError, match="data_batch_1: the cifar10 data file is a FIFO"):
        build_cifar("cifar10", tmp_path)
