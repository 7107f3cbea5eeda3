"""The data sets (esdlib.data): embedded digits, emulated DVS, and the on-disk loaders on tiny
files written in the exact on-disk formats (CIFAR python pickles, ImageFolder PNGs, AEDAT 2.0);
bad files (non-finite samples and frame caches, FIFOs and devices, deeply nested JSON, oversized
files) are refused, naming the file, before they are opened or used."""

from __future__ import annotations

import json
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import esdlib as esd
import esdlib.data as data
import esdlib.io as eio
from esdlib.data import (
    DATASET_NAMES,
    DataError,
    DatasetInfo,
    DatasetNotFoundError,
    build_datasets,
    vision,
)
from esdlib.data import cifar10_dvs as c10dvs
from esdlib.data import digits as dg
from esdlib.data._common import TensorClassificationDataset, read_json_file
from esdlib.data.cifar10_dvs import CIFAR10DVSFrames, read_aedat2
from esdlib.train.evaluation import evaluate

# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(name="svhn"), ["svhn", "digits", "cifar10_dvs", "imagenet"]),
        (dict(name="digits", split="balanced"), ["balanced", "official"]),
        (dict(name="cifar10_dvs", split="random"), ["official", "balanced"]),
        (dict(name="dvs_digits", T=0), ["T"]),
        (dict(name="digits", T=-3), ["T"]),
        (dict(name="digits", T=2.0), ["T"]),
        (dict(name="cifar10", image_size=64), ["32"]),
        (dict(name="digits", image_size=0), ["image_size"]),
    ],
)
def test_invalid_arguments_raise_value_error_before_any_work(tmp_path, kwargs, words):
    # root does not exist: a ValueError (not DatasetNotFoundError) proves validation runs first
    with pytest.raises(ValueError) as err:
        build_datasets(root=tmp_path / "nothing", **kwargs)
    assert not isinstance(err.value, DatasetNotFoundError)
    for w in words:
        assert w in str(err.value)


def test_public_names_have_docstrings():
    for name in data.__all__:
        obj = getattr(data, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name
    assert DATASET_NAMES == ("digits", "dvs_digits", "digits_hard", "dvs_digits_hard", "mnist",
                             "cifar10", "cifar100", "imagenet", "cifar10_dvs")
    assert data.TIME_VARYING_DATASETS == {"dvs_digits", "dvs_digits_hard", "cifar10_dvs"}
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


# --------------------------------------------------------------------------- digits


def test_digits_shapes_info_and_classes():
    train, test, info = build_datasets("digits", augment=False)
    assert isinstance(info, DatasetInfo)
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, (16, 16))
    assert info.time_varying is False and info.T is None
    assert info.split == "digits-stratified-seed0 (1437/360)"
    assert "small" in info.description and "easy" in info.description
    assert (len(train), len(test)) == (1437, 360)
    x, y = train[0]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and isinstance(y, int)
    assert set(train.y.tolist()) == set(test.y.tolist()) == set(range(10))
    small, _, info8 = build_datasets("digits", image_size=8, augment=False)
    assert small[0][0].shape == (1, 8, 8) and info8.image_size == (8, 8)
    other, _, info1 = build_datasets("digits", seed=1, augment=False)
    assert info1.split == "digits-stratified-seed1 (1437/360)"
    assert not torch.equal(other.y, train.y)


def test_digits_split_file_matches_generator_and_is_stratified():
    with open(dg.DIGITS_SPLIT_FILE) as f:
        saved = json.load(f)
    assert saved == dg.make_digits_split()
    assert dg.DIGITS_SPLIT_FILE.read_text() == eio.dumps_one_key_per_line(saved)
    tr, te = saved["train"], saved["test"]
    assert (len(tr), len(te)) == (1437, 360)
    assert not set(tr) & set(te) and sorted(tr + te) == list(range(1797))
    labels = dg.digits_images(8)[1].numpy()
    n_all, n_test = Counter(labels.tolist()), Counter(labels[te].tolist())
    for c in range(10):  # each class has 20% (+-1 sample) of its members in the test set
        assert abs(n_test[c] - 0.2 * n_all[c]) <= 1, (c, n_test[c], n_all[c])


def test_digits_normalisation_and_determinism():
    train, test, _ = build_datasets("digits", augment=False)
    x = torch.stack([train[i][0] for i in range(len(train))])
    assert abs(x.mean().item()) < 1e-4 and abs(x.std(unbiased=False).item() - 1) < 1e-4
    # test set uses the train statistics (so it is only approximately standardised)
    assert train.mean == test.mean and train.std == test.std
    # upsampling is bilinear from values/16: undo normalisation and compare with interpolate
    raw = dg.digits_images(16)[0][torch.tensor(dg.load_digits_split()[0])]
    assert torch.allclose(x[:, 0] * train.std + train.mean, raw, atol=1e-5)
    again, _, _ = build_datasets("digits", augment=False)
    assert torch.equal(train.x, again.x) and torch.equal(train.y, again.y)


def test_digits_augmentation_shifts_with_background_fill():
    train, _, _ = build_datasets("digits", augment=True)
    torch.manual_seed(0)
    base = train.x[5]
    outs = [train[5][0] for _ in range(20)]
    assert all(o.shape == (1, 16, 16) for o in outs)
    assert any(not torch.equal(o, base) for o in outs)  # at least one real shift
    background = (0.0 - train.mean) / train.std
    for o in outs:  # a shift only moves pixels and pads with the (normalised) black value
        vals = set(o.flatten().tolist()) - set(base.flatten().tolist())
        assert all(abs(v - background) < 1e-6 for v in vals)


# --------------------------------------------------------------------------- hard digits


def test_hard_digits_split_sizes_and_pairing_by_seed():
    train, test, info = build_datasets("digits_hard", augment=False)
    assert (len(train), len(test)) == (898, 899)
    assert info.split == "digits-hard-stratified-seed0 (898/899)"
    assert (info.in_channels, info.image_size, info.time_varying) == (1, (16, 16), False)
    tr, te = dg._split_for(True, 0)
    labels = dg.digits_images(8)[1].numpy()
    n_all, n_test = Counter(labels.tolist()), Counter(labels[te].tolist())
    for c in range(10):  # stratified: half of each class (+-1) is a test image
        assert abs(n_test[c] - 0.5 * n_all[c]) <= 1, (c, n_test[c], n_all[c])
    again, _, _ = build_datasets("digits_hard", augment=False)  # same seed: same split
    assert torch.equal(train.x, again.x) and torch.equal(train.y, again.y)
    other, _, _ = build_datasets("digits_hard", seed=1, augment=False)
    assert not torch.equal(other.y, train.y)


def test_hard_digits_are_distorted_versions_of_the_same_digits():
    plain, labels = dg.digits_images(16)
    hard, hard_labels = dg.hard_digits_images(16)
    assert hard.shape == plain.shape and torch.equal(labels, hard_labels)
    assert hard.min() >= 0 and hard.max() <= 1
    # fixed per image: the cache returns the same tensor, a rebuild the same values
    dg.hard_digits_images.cache_clear()
    assert torch.equal(dg.hard_digits_images(16)[0], hard)
    # every image is changed; the noise is what separates the static and the DVS source
    assert ((hard - plain).abs().flatten(1).amax(1) > 0.1).all()
    quiet = dg.hard_digits_images(16, noise=False)[0]
    assert (quiet - hard).abs().mean() > 0.03
    occluded = (hard == 0.5).flatten(1).sum(1) >= round(dg.HARD_OCCLUSION_SIDE * 16) ** 2
    assert 0.2 < occluded.float().mean() < 0.4  # HARD_OCCLUSION_P = 0.3 of the images


def test_hard_digits_geometry_by_hand(monkeypatch):
    # scale 1 (so the centre is 0), no rotation, no noise, no occlusion: the affine matrix built
    # per image must be the identity and give back the plain images
    for name, value in (("HARD_SCALE", (1.0, 1.0)), ("HARD_ROTATION_DEG", 0.0),
                        ("HARD_NOISE_STD", 0.0), ("HARD_OCCLUSION_P", 0.0)):
        monkeypatch.setattr(dg, name, value)
    dg.hard_digits_images.cache_clear()
    try:
        plain = dg.digits_images(16)[0]
        assert torch.allclose(dg.hard_digits_images(16)[0], plain, atol=1e-5)
        monkeypatch.setattr(dg, "HARD_ROTATION_DEG", 1e-9)  # rotation drawn, tiny: unchanged
        dg.hard_digits_images.cache_clear()
        assert torch.allclose(dg.hard_digits_images(16)[0], plain, atol=1e-5)
    finally:
        dg.hard_digits_images.cache_clear()


def test_dvs_hard_digits_events():
    train, test, info = build_datasets("dvs_digits_hard", T=3, augment=False)
    assert (len(train), len(test)) == (898, 899) and info.time_varying and info.T == 3
    x, _ = train[0]
    assert x.shape == (3, 2, 16, 16) and set(x.unique().tolist()) <= {0.0, 1.0}


# --------------------------------------------------------------------------- dvs_digits


def test_dvs_digits_shape_values_determinism_and_events():
    train, test, info = build_datasets("dvs_digits", T=5, augment=False)
    assert info.time_varying and info.T == 5 and info.in_channels == 2
    assert info.image_size == (16, 16) and info.num_classes == 10
    x, y = train[3]
    assert x.shape == (5, 2, 16, 16) and x.dtype == torch.float32
    allx = train.x
    assert set(allx.unique().tolist()) <= {0, 1}
    counts = allx.float().sum(dim=(2, 3, 4))  # [N, T] events per frame
    assert counts.sum(1).min() > 0 and counts.mean() > 10  # non-trivial
    assert allx[:, :, 0].sum() > 0 and allx[:, :, 1].sum() > 0  # both polarities
    train2, test2, _ = build_datasets("dvs_digits", T=5, augment=False)
    assert torch.equal(train2.x, train.x) and torch.equal(test2.x, test.x)
    # sample i depends only on (seed, i): emulating a single image gives the same clip
    idx = dg.load_digits_split()[0][3]
    one = dg.emulate_dvs(dg.digits_images(16)[0][idx:idx + 1], 5, indices=torch.tensor([idx]))
    assert torch.equal(one[0], train.x[3])
    aug, _, _ = build_datasets("dvs_digits", T=5, augment=True)
    assert aug[3][0].shape == (5, 2, 16, 16)


# --------------------------------------------------------------------------- CIFAR

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path, n: int = 3, rng=None) -> tuple[np.ndarray, list, np.ndarray, list]:
    """CIFAR-10 python-version files: 5 train batches of n rows + a test batch of n rows."""
    rng = rng or np.random.default_rng(0)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train_x, train_y = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).tolist()
        names = [f"f{b}_{i}.png" for i in range(n)]
        _dump(base / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "data": x,
                                          "labels": y, "filenames": names})
        train_x.append(x)
        train_y += y
    tx = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    ty = rng.integers(0, 10, size=n).tolist()
    _dump(base / "test_batch", {"batch_label": "testing batch 1 of 1", "data": tx, "labels": ty,
                                "filenames": [f"t{i}.png" for i in range(n)]})
    _dump(base / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": n,
                                  "num_vis": 3072})
    return np.concatenate(train_x), train_y, tx, ty


def write_cifar100(root: Path, n: int = 6, rng=None) -> tuple[np.ndarray, list, np.ndarray, list]:
    rng = rng or np.random.default_rng(1)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    out = []
    for name in ("train", "test"):
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = rng.integers(0, 100, size=n).tolist()
        _dump(base / name, {"filenames": [f"{name}{i}.png" for i in range(n)], "data": x,
                            "fine_labels": y, "coarse_labels": [v // 5 for v in y]})
        out += [x, y]
    _dump(base / "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                          "coarse_label_names": [f"super{i}" for i in range(20)]})
    return tuple(out)


@pytest.fixture
def no_md5(monkeypatch):
    """Bypass only torchvision's md5 check: files must still exist."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity",
                        lambda fpath, md5=None: Path(fpath).is_file())


def _undo(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return torch.round((x * s + m) * 255)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pixels_exact_and_augmentation_runs(tmp_path, no_md5, name):
    if name == "cifar10":
        trx, tr_y, tex, tey = write_cifar10(tmp_path)
        mean, std, classes = vision.CIFAR10_MEAN, vision.CIFAR10_STD, 10
    else:
        trx, tr_y, tex, tey = write_cifar100(tmp_path)
        mean, std, classes = vision.CIFAR100_MEAN, vision.CIFAR100_STD, 100
    train, test, info = build_datasets(name, tmp_path, augment=False)
    assert (info.num_classes, info.in_channels, info.image_size) == (classes, 3, (32, 32))
    assert not info.time_varying and info.T is None
    assert info.split == f"{name} official train/test ({len(trx)}/{len(tex)})"
    for ds, xs, ys in ((train, trx, tr_y), (test, tex, tey)):
        assert len(ds) == len(xs)
        for i in (0, len(xs) - 1):
            x, y = ds[i]
            assert type(x) is torch.Tensor and x.dtype == torch.float32
            assert x.shape == (3, 32, 32) and y == ys[i]
            # on-disk row = R(1024) G(1024) B(1024), each row-major 32x32
            expected = torch.from_numpy(xs[i].reshape(3, 32, 32).astype(np.float32))
            assert torch.equal(_undo(x, mean, std), expected)
    aug, _, _ = build_datasets(name, tmp_path, augment=True)
    torch.manual_seed(0)
    for i in range(3):
        x, _ = aug[i]
        assert type(x) is torch.Tensor and x.shape == (3, 32, 32)
        # Cutout-16: a 16x16 window that is exactly 0 in every channel
        zero = (x == 0).all(0).float()[None, None]
        assert torch.nn.functional.max_pool2d(-(1 - zero), 16, stride=1).max() == 0


def test_cifar_missing_and_corrupted(tmp_path, no_md5):
    with pytest.raises(DatasetNotFoundError) as err:
        build_datasets("cifar10", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "download=True" in msg
    assert "--set download=true" in msg
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python"):
        build_datasets("cifar100", tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()  # present but empty -> clear error too
    with pytest.raises(DatasetNotFoundError, match="could not be loaded"):
        build_datasets("cifar10", tmp_path)


# --------------------------------------------------------------------------- ImageNet


def test_imagenet_imagefolder_labels_and_center_crop(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for side in ("train", "val"):
        for cls in ("n02", "n01"):  # written unsorted; ImageFolder sorts -> n01=0, n02=1
            (tmp_path / side / cls).mkdir(parents=True)
            for k in range(2):
                a = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
                Image.fromarray(a).save(tmp_path / side / cls / f"img{k}.png")
                arrays[(side, cls, k)] = a
    train, val, info = build_datasets("imagenet", tmp_path, augment=False)
    assert info.num_classes == 2 and info.image_size == (224, 224) and info.in_channels == 3
    assert info.split == "imagenet official train/val (4/4)"
    assert train.class_to_idx == {"n01": 0, "n02": 1}
    x, y = val[2]  # sorted: n01/img0, n01/img1, n02/img0, ...
    assert y == 1 and x.shape == (3, 224, 224) and x.dtype == torch.float32
    # Resize(256) of a 256x256 image is the identity; CenterCrop(224) starts at (16, 16)
    crop = arrays[("val", "n02", 0)][16:240, 16:240].transpose(2, 0, 1).astype(np.float32)
    assert torch.equal(_undo(x, vision.IMAGENET_MEAN, vision.IMAGENET_STD),
                       torch.from_numpy(crop))
    aug, _, _ = build_datasets("imagenet", tmp_path, augment=True, image_size=64)
    assert aug[0][0].shape == (3, 64, 64)


def test_imagenet_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        build_datasets("imagenet", tmp_path)
    assert str(tmp_path / "train") in str(err.value) and "val" in str(err.value)
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no class folders"):
        build_datasets("imagenet", tmp_path)


# --------------------------------------------------------------------------- CIFAR10-DVS

AEDAT_HEADER = (b"#!AER-DAT2.0\r\n"
                b"# This is a raw AE data file - do not edit\r\n"
                b"# Data format is int32 address, int32 timestamp (8 bytes total), "
                b"repeated for each event\r\n"
                b"# Timestamps tick is 1 us\r\n")


def write_aedat(path: Path, x_raw, y_raw, p_raw, t) -> None:
    """AEDAT 2.0 with the DVS128 address layout: bit 0 polarity, bits 1-7 x, bits 8-14 y."""
    x_raw, y_raw, p_raw, t = (np.asarray(v, dtype=np.uint32) for v in (x_raw, y_raw, p_raw, t))
    addr = (y_raw << 8) | (x_raw << 1) | p_raw
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(AEDAT_HEADER + np.stack([addr, t], 1).astype(">u4").tobytes())


def random_events(rng, n):
    return (rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n),
            np.sort(rng.integers(0, 10**6, n)))


def reference_frames(x, y, p, T):
    """Loop version of split_by='number' (frame i: [i*di, (i+1)*di), last up to N)."""
    di = len(x) // T
    out = np.zeros((T, 2, 128, 128), np.float32)
    for k in range(len(x)):
        out[min(k // di, T - 1), p[k], y[k], x[k]] += 1
    return out


@pytest.fixture
def dvs_root(tmp_path):
    """10 classes x 12 files named cifar10_<class>_<i>.aedat with 12..40 random events."""
    rng = np.random.default_rng(0)
    for cls in c10dvs.CIFAR10_DVS_CLASSES:
        for i in range(12):
            write_aedat(tmp_path / "dvs" / cls / f"cifar10_{cls}_{i}.aedat",
                        *random_events(rng, int(rng.integers(12, 41))))
    return tmp_path / "dvs"


def test_aedat_decoding_follows_spikingjelly_convention(tmp_path):
    x_raw = [0, 127, 5, 64, 100]
    y_raw = [0, 3, 127, 64, 1]
    p_raw = [0, 1, 1, 0, 1]
    t = [10, 20, 30, 40, 2**32 - 1]
    write_aedat(tmp_path / "a.aedat", x_raw, y_raw, p_raw, t)
    ev = c10dvs.read_aedat2(tmp_path / "a.aedat")
    assert ev["t"].tolist() == t
    assert ev["x"].tolist() == [127 - v for v in y_raw]  # x comes from the raw y field
    assert ev["y"].tolist() == [127 - v for v in x_raw]
    assert ev["p"].tolist() == [1 - v for v in p_raw]
    (tmp_path / "bad.aedat").write_bytes(AEDAT_HEADER + b"\x00" * 12)
    with pytest.raises(ValueError, match="8-byte"):
        c10dvs.read_aedat2(tmp_path / "bad.aedat")


def test_frames_split_by_number_with_leftovers(tmp_path):
    rng = np.random.default_rng(1)
    xr, yr, pr, t = random_events(rng, 203)
    write_aedat(tmp_path / "a.aedat", xr, yr, pr, t)
    frames = c10dvs.aedat_to_frames(tmp_path / "a.aedat", T=4, image_size=128)
    assert frames.shape == (4, 2, 128, 128) and frames.dtype == np.float32
    assert frames.sum(axis=(1, 2, 3)).tolist() == [50, 50, 50, 53]  # leftovers in the last
    ref = reference_frames(127 - yr, 127 - xr, 1 - pr, 4)
    assert np.array_equal(frames, ref)
    start, stop = c10dvs.frame_bounds(203, 4)
    assert start.tolist() == [0, 50, 100, 150] and stop.tolist() == [50, 100, 150, 203]
    # resize = torchvision Resize((48, 48)) on a tensor (bilinear, antialias)
    small = c10dvs.aedat_to_frames(tmp_path / "a.aedat", T=4, image_size=48)
    expected = torchvision.transforms.v2.Resize((48, 48))(torch.from_numpy(ref))
    assert small.shape == (4, 2, 48, 48) and np.allclose(small, expected.numpy(), atol=1e-6)


def test_cifar10_dvs_build_cache_roundtrip(dvs_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    train, test, info = build_datasets("cifar10_dvs", dvs_root, T=3, augment=False,
                                       cache_dir=cache)
    assert info.time_varying and info.T == 3 and info.in_channels == 2
    assert info.image_size == (48, 48) and info.num_classes == 10
    x, y = test[0]
    assert x.shape == (3, 2, 48, 48) and x.dtype == torch.float32 and isinstance(y, int)
    assert y == c10dvs.CIFAR10_DVS_CLASSES.index(test.files[0].split("/")[0])
    cached = test.cache_path(0)
    assert cached.is_file() and cached.parent.parent == cache
    assert not list(cache.rglob("*.tmp"))
    expected = c10dvs.aedat_to_frames(dvs_root / test.files[0], 3, 48)
    assert np.array_equal(x.numpy(), expected)

    def boom(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(c10dvs, "read_aedat2", boom)
    _, test2, _ = build_datasets("cifar10_dvs", dvs_root, T=3, augment=False, cache_dir=cache)
    assert torch.equal(test2[0][0], x)
    with pytest.raises(ValueError, match="other settings"):  # same cache, other T
        build_datasets("cifar10_dvs", dvs_root, T=5, cache_dir=cache)
    monkeypatch.undo()
    aug, _, _ = build_datasets("cifar10_dvs", dvs_root, T=3, augment=True, cache_dir=cache)
    assert aug[0][0].shape == (3, 2, 48, 48)
    torch.manual_seed(0)  # one random draw for the whole clip: same erased hole in all frames
    hole = c10dvs.dvs_train_transform(48)(torch.ones(3, 2, 48, 48)) == 0
    assert 0 < hole[0, 0].sum() and all(torch.equal(hole[0, 0], h) for h in hole.flatten(0, 1))
    # default cache location
    _, t3, _ = build_datasets("cifar10_dvs", dvs_root, T=2, image_size=16, augment=False)
    t3[0]
    assert (dvs_root / "frames_T2_16" / "cache_meta.json").is_file()
    assert t3.cache_path(0).is_file()


def test_cifar10_dvs_order_and_splits(dvs_root, tmp_path):
    files, labels = c10dvs.list_files(dvs_root)
    assert len(files) == 120 and labels[:12] == [0] * 12 and labels[-1] == 9
    # DatasetFolder order: names sorted as strings (..._1, ..._10, ..._11, ..._2, ...)
    assert [f.split("_")[-1] for f in files[:4]] == ["0.aedat", "1.aedat", "10.aedat",
                                                     "11.aedat"]
    cache = tmp_path / "c"
    train, test, info = build_datasets("cifar10_dvs", dvs_root, T=2, cache_dir=cache)
    assert info.split == "cifar10_dvs paper random_split seed 42 (108/12)"
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(42)).tolist()
    saved = json.loads((cache / "split_official.json").read_text())
    assert saved["files"] == files and saved["train"] == perm[:108]
    assert saved["test"] == perm[108:]
    assert train.files == [files[i] for i in perm[:108]]
    assert train.labels == [labels[i] for i in perm[:108]]
    train_b, test_b, info_b = build_datasets("cifar10_dvs", dvs_root, T=2, cache_dir=cache,
                                             split="balanced")
    assert info_b.split == "cifar10_dvs balanced per-class 9:1 (100/20)"
    assert Counter(test_b.labels) == {c: 2 for c in range(10)}
    assert all(f.endswith(("_10.aedat", "_11.aedat")) for f in test_b.files)  # natural order
    assert (cache / "split_balanced.json").is_file()
    # stable: a second build reads the same files; a changed folder is refused
    before = (cache / "split_official.json").read_text()
    again, _, _ = build_datasets("cifar10_dvs", dvs_root, T=2, cache_dir=cache)
    assert again.files == train.files and (cache / "split_official.json").read_text() == before
    extra = random_events(np.random.default_rng(2), 9)
    write_aedat(dvs_root / "cat" / "cifar10_cat_99.aedat", *extra)
    with pytest.raises(ValueError, match="different set of files"):
        build_datasets("cifar10_dvs", dvs_root, T=2, cache_dir=cache)


def test_cifar10_dvs_full_size_split_numbers():
    files = [f"c{i // 1000}/f{i % 1000}.aedat" for i in range(10000)]
    d = c10dvs.make_split(files, [i // 1000 for i in range(10000)], "official")
    assert (len(d["train"]), len(d["test"])) == (9000, 1000)
    b = c10dvs.make_split(files, [i // 1000 for i in range(10000)], "balanced")
    assert (len(b["train"]), len(b["test"])) == (9000, 1000)
    assert Counter(i // 1000 for i in b["test"]) == {c: 100 for c in range(10)}


def test_cifar10_dvs_partial_classes_warn_and_missing(tmp_path):
    rng = np.random.default_rng(3)
    for cls in ("cat", "airplane"):
        for i in range(5):
            write_aedat(tmp_path / "d" / cls / f"cifar10_{cls}_{i}.aedat", *random_events(rng, 20))
    with pytest.warns(UserWarning, match="no .aedat files for classes"):
        train, test, _ = build_datasets("cifar10_dvs", tmp_path / "d", augment=False)
    assert sorted(set(train.labels + test.labels)) == [0, 3]  # labels keep the canonical index
    for root in (tmp_path / "absent", tmp_path / "empty"):
        if root.name == "empty":
            root.mkdir()
        with pytest.raises(DatasetNotFoundError) as err:
            build_datasets("cifar10_dvs", root)
        msg = str(err.value)
        assert "figshare" in msg and "CIFAR10-DVS" in msg and str(root) in msg
        assert "airplane" in msg and "truck" in msg and ".aedat" in msg


def _bad_aedat_files(tmp_path, rng):
    good = np.stack([np.arange(8, dtype=np.uint32), np.arange(8, dtype=np.uint32)], 1)
    back = good.copy()
    back[5, 1] = 1  # timestamp goes back
    return {
        "random bytes": (rng.integers(0, 256, 8 * 200, dtype=np.uint8).tobytes(), "AER-DAT"),
        "empty": (b"", "AER-DAT"),
        "header only": (AEDAT_HEADER, "no events"),
        "aedat 3.1": (b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + bytes(range(56)) * 4,
                      "AER-DAT3.1 is not supported"),
        "headerless events": (good.astype(">u4").tobytes(), "AER-DAT"),
        "random body": (AEDAT_HEADER + rng.integers(0, 256, 8 * 50, dtype=np.uint8).tobytes(),
                        "bits above"),
        "decreasing time": (AEDAT_HEADER + back.astype(">u4").tobytes(), "timestamps decrease"),
        "truncated": (AEDAT_HEADER + good.astype(">u4").tobytes()[:-3], "whole number"),
    }


def test_bad_aedat_files_are_refused_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    for i, (name, (content, needle)) in enumerate(_bad_aedat_files(tmp_path, rng).items()):
        path = tmp_path / f"bad{i}.aedat"
        path.write_bytes(content)
        with pytest.raises(data.DataError, match=needle) as err:
            c10dvs.read_aedat2(path)
        assert str(path) in str(err.value), name


def test_training_set_with_a_random_bytes_file_fails_naming_it(dvs_root, tmp_path):
    victim = dvs_root / "cat" / "cifar10_cat_3.aedat"
    victim.write_bytes(np.random.default_rng(1).integers(0, 256, 800, dtype=np.uint8).tobytes())
    train, test, _ = build_datasets("cifar10_dvs", dvs_root, T=2, augment=False,
                                    cache_dir=tmp_path / "c")
    ds = train if "cat/cifar10_cat_3.aedat" in train.files else test
    with pytest.raises(data.DataError, match="cifar10_cat_3.aedat"):
        ds.precompute()


def test_damaged_dvs_cache_files_are_named(dvs_root, tmp_path):
    cache = tmp_path / "c"
    _, test, _ = build_datasets("cifar10_dvs", dvs_root, T=2, augment=False, cache_dir=cache)
    test[0]
    npz = test.cache_path(0)
    npz.write_bytes(npz.read_bytes()[:40])
    with pytest.raises(data.DataError, match=f"{npz.name}.*damaged frame cache"):
        test[0]
    meta = cache / "cache_meta.json"
    meta.write_text(meta.read_text()[:20])
    with pytest.raises(data.DataError, match="cache_meta.json"):
        build_datasets("cifar10_dvs", dvs_root, T=2, cache_dir=cache)


def _edit_split(path, edit):
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda d: d["train"].extend(d["test"]), "in both train and test"),
    (lambda d: d["test"].__setitem__(0, 10**6), "out of range"),
    (lambda d: d["train"].append(d["train"][0]), "duplicate"),
    (lambda d: d.update(test=d["test"][:3], train=d["train"] + d["test"][3:]), "differs from"),
    (lambda d: d.update(train=d["train"][1:]), "covers"),
    (lambda d: d.update(train="all"), "list of ints"),
])
def test_edited_dvs_split_file_is_refused(dvs_root, tmp_path, edit, needle):
    cache = tmp_path / "c"
    build_datasets("cifar10_dvs", dvs_root, T=2, cache_dir=cache)
    split = cache / "split_official.json"
    _edit_split(split, edit)
    with pytest.raises(data.DataError, match=needle) as err:
        build_datasets("cifar10_dvs", dvs_root, T=2, cache_dir=cache)
    assert str(split) in str(err.value)
    split.write_text(split.read_text()[:30])  # truncated
    with pytest.raises(data.DataError, match="split_official.json"):
        build_datasets("cifar10_dvs", dvs_root, T=2, cache_dir=cache)


def test_read_only_dvs_root_works_with_cache_dir(dvs_root, tmp_path, monkeypatch):
    import errno

    import esdlib.train.engine as engine
    from esdlib.train.config import RunConfig

    cfg = RunConfig.from_profile("smoke", dataset="cifar10_dvs", data_root=str(dvs_root),
                            cache_dir=str(tmp_path / "frames"), image_size=16)
    train, _, _, _ = engine.build_run(cfg)
    train[0]
    assert (tmp_path / "frames" / "cache_meta.json").is_file()
    assert not [p for p in dvs_root.iterdir() if p.name.startswith("frames")]  # root untouched

    real_mkdir = Path.mkdir

    def read_only_mkdir(self, *a, **k):
        if dvs_root in (self, *self.parents):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only_mkdir)
    with pytest.raises(data.DataError, match="set cache_dir"):
        build_datasets("cifar10_dvs", dvs_root, T=2)


def _write_digits_split(path, edit):
    d = json.loads(dg.DIGITS_SPLIT_FILE.read_text())
    edit(d)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda d: d["train"].extend(d["test"][:100]), "in both train and test"),
    (lambda d: d.update(test=d["test"][:10]), "covers"),
    (lambda d: d["test"].__setitem__(0, 5000), "out of range"),
    (lambda d: d.update(train=d["train"][:-10], test=d["test"] + d["train"][-10:]), "1427/370"),
])
def test_bad_digits_split_file_is_refused(tmp_path, monkeypatch, edit, needle):
    path = tmp_path / "digits_split.json"
    _write_digits_split(path, edit)
    monkeypatch.setattr(dg, "DIGITS_SPLIT_FILE", path)
    with pytest.raises(data.DataError, match=needle):
        build_datasets("digits", augment=False)


def test_changed_digits_split_changes_the_run_id(tmp_path, monkeypatch):
    from esdlib.train.config import RunConfig
    from esdlib.train.records import make_run_id

    cfg = RunConfig.from_profile("smoke")
    dvs = RunConfig.from_profile("smoke", dataset="dvs_digits")
    before, before_dvs = make_run_id(cfg), make_run_id(dvs)
    path = tmp_path / "digits_split.json"

    def swap(d):  # a valid split of the same sizes, one train/test pair exchanged
        d["train"][0], d["test"][0] = d["test"][0], d["train"][0]

    _write_digits_split(path, swap)
    monkeypatch.setattr(dg, "DIGITS_SPLIT_FILE", path)
    assert make_run_id(cfg) != before and make_run_id(dvs) != before_dvs
    assert make_run_id(cfg.replace(seed=1)) == make_run_id(RunConfig.from_profile("smoke", seed=1))
    monkeypatch.undo()
    assert make_run_id(cfg) == before and make_run_id(dvs) == before_dvs


def test_committed_records_keep_their_run_ids():
    from esdlib.train.records import make_run_id

    paths = [p for p in (Path(__file__).resolve().parents[1] / "results").glob("*/*.json")
             if p.parent.name not in ("bench", "paper")]
    assert paths
    for p in paths:
        rec = json.loads(p.read_text())
        assert make_run_id(rec["config"], rec["experiment"]) == rec["run_id"], p


def test_unreadable_imagenet_images_are_named(tmp_path):
    for side in ("train", "val"):
        for cls in ("n01", "n02"):
            (tmp_path / side / cls).mkdir(parents=True)
            a = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / side / cls / "a.jpg", quality=95)
    jpg = tmp_path / "train" / "n01" / "a.jpg"
    jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 3])
    (tmp_path / "train" / "n02" / "a.jpg").write_text("<html>not an image</html>")
    train, val, _ = build_datasets("imagenet", tmp_path, augment=False, image_size=32)
    assert val[0][0].shape == (3, 32, 32)
    for i, name in ((0, "n01/a.jpg"), (1, "n02/a.jpg")):
        with pytest.raises(data.DataError, match=name):
            train[i]
    (tmp_path / "val" / "n03").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "val" / "n03" / "b.png")
    with pytest.raises(data.DataError, match="n03"):
        build_datasets("imagenet", tmp_path)


class _Marker:
    """A pickle that runs code when loaded (writes a marker file)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_synthetic_cifar_reads_exact_pixels_and_never_runs_a_pickle(tmp_path, name):
    from esdlib.data._common import SYNTHETIC_MARKER

    write = write_cifar10 if name == "cifar10" else write_cifar100
    trx, tr_y, _, _ = write(tmp_path)
    (tmp_path / SYNTHETIC_MARKER).write_text("test data\n")
    train, _, info = build_datasets(name, tmp_path, augment=False)  # no MD5: not the archive
    assert info.split.startswith("SYNTHETIC TEST DATA") and len(train) == len(trx)
    x, y = train[0]
    mean, std = vision.CIFAR_STATS[name]
    assert y == tr_y[0]
    assert torch.equal(_undo(x, mean, std),
                       torch.from_numpy(trx[0].reshape(3, 32, 32).astype(np.float32)))
    folder = tmp_path / vision.CIFAR_FOLDERS[name]
    batch = "data_batch_1" if name == "cifar10" else "train"
    ran = tmp_path / "code-ran"
    _dump(folder / batch, {"data": _Marker(ran), "labels": [0]})
    with pytest.raises(data.DataError, match="refusing to load"):
        build_datasets(name, tmp_path, augment=False)
    assert not ran.exists()


# --------------------------------------------------------------------------- bad files
# (readers refuse them before opening or using them, naming the file)


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
