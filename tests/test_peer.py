"""Cross-checks against SpikingJelly 0.0.0.0.14, the library the published ESD code builds on.

The peer is not a dependency of esdlib. ``make test`` (or ``make test-peer``) installs the pinned
peer without dependencies into the ignored side folder ``.peer/`` (``spikingjelly==0.0.0.0.14``
and ``numpy<2.3``: its AEDAT parser calls ``np.fromstring``, removed in NumPy 2.3) and runs the
tests marked ``peer`` in their own pytest run with ``.peer/`` first on ``PYTHONPATH``; the main
run deselects them (``-m "not peer"``) and keeps the environment's NumPy. Without the peer a
check skips with the command that enables it, except under CI (``CI`` set), where it fails.

Two checks:

* CIFAR10-DVS: :func:`esdlib.data.cifar10_dvs.read_aedat2` and the frame integration against
  ``CIFAR10DVS.load_origin_data`` and ``integrate_events_by_fixed_frames_number(..., "number",
  T, 128, 128)``, on random files and edge cases, and against the ``CIFAR10DVS`` data set folder
  end to end (sample order, labels, frames).
* LIF: esdlib's multistep LIF against ``spikingjelly.activation_based.neuron.LIFNode`` set to the
  same dynamics (spikes, membrane potentials, input gradients through the surrogate).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import esdlib as esd
from esdlib.data import cifar10_dvs as c10dvs

ROOT = Path(__file__).resolve().parents[1]
PEER_SPIKINGJELLY = "0.0.0.0.14"
PEER_NUMPY_BELOW = (2, 3)
ENABLE = ("run `make test-peer` (installs spikingjelly==0.0.0.0.14 and numpy<2.3 into .peer/ and "
          "runs these checks with PYTHONPATH=.peer)")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str):
    """Skip locally; fail under CI, where a skipped peer check would hide a broken set-up."""
    msg = f"SpikingJelly peer unavailable: {reason}; {ENABLE}"
    if _in_ci():
        pytest.fail(f"{msg} (CI is set: a skipped peer check is a failure)", pytrace=False)
    pytest.skip(msg)


def peer(module: str):
    """Import ``module`` of the pinned peer, or skip/fail (see :func:`_unavailable`)."""
    try:
        version = importlib.metadata.version("spikingjelly")
    except importlib.metadata.PackageNotFoundError:
        _unavailable("spikingjelly is not installed")
    if version != PEER_SPIKINGJELLY:
        _unavailable(f"spikingjelly {version} found, the checks are written for "
                     f"{PEER_SPIKINGJELLY}")
    if tuple(int(v) for v in np.__version__.split(".")[:2]) >= PEER_NUMPY_BELOW:
        _unavailable(f"numpy {np.__version__} lacks np.fromstring, which the peer's AEDAT parser "
                     f"needs (numpy<2.3)")
    try:
        return importlib.import_module(module)
    except ImportError as err:
        _unavailable(f"import {module} failed: {err}")


# --------------------------------------------------------------------------- set-up


def test_peer_pins_agree_with_makefile_and_readme():
    """The versions the Makefile installs are the ones these tests check for and the README
    documents (runs in the main pytest run, without the peer)."""
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^PEER_SPIKINGJELLY := (\S+)$", make, re.M)[1] == PEER_SPIKINGJELLY
    below = re.search(r"^PEER_NUMPY_BELOW := (\S+)$", make, re.M)[1]
    assert tuple(map(int, below.split("."))) == PEER_NUMPY_BELOW
    assert re.search(r'^\t\$\(PY\) -m pytest \$\(XDIST\) -m "not peer"$', make, re.M)
    assert ".peer/" in (ROOT / ".gitignore").read_text().splitlines()
    readme = (ROOT / "README.md").read_text()
    assert f"spikingjelly=={PEER_SPIKINGJELLY}" in readme and "numpy<2.3" in readme


# --------------------------------------------------------------------------- CIFAR10-DVS

AEDAT_HEADER = (b"#!AER-DAT2.0\r\n"
                b"# This is a raw AE data file - do not edit\r\n"
                b"# Data format is int32 address, int32 timestamp (8 bytes total), "
                b"repeated for each event\r\n"
                b"# Timestamps tick is 1 us\r\n"
                b"# created Mon Jan 01 00:00:00 CET 2017\r\n")


def write_aedat(path: Path, addr, t) -> Path:
    """AEDAT 2.0 body: big-endian ``uint32 address, uint32 timestamp`` pairs."""
    body = np.stack([np.asarray(addr, np.uint32), np.asarray(t, np.uint32)], 1).astype(">u4")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(AEDAT_HEADER + body.tobytes())
    return path


def address(x_raw, y_raw, p_raw):
    """DVS128 address: bit 0 polarity, bits 1-7 x, bits 8-14 y."""
    x_raw, y_raw, p_raw = (np.asarray(v, np.uint32) for v in (x_raw, y_raw, p_raw))
    return (y_raw << 8) | (x_raw << 1) | p_raw


def random_file(seed: int, n: int, p_raw=None, flag_bit: bool = False):
    """``n`` events at random pixels and polarities (or the fixed ``p_raw``), sorted times."""
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 2, n) if p_raw is None else np.full(n, p_raw)
    addr = address(rng.integers(0, 128, n), rng.integers(0, 128, n), p)
    if flag_bit:  # bit 15, the camera's special-event flag, is outside x/y/p: both readers mask
        # it (higher bits never occur in DVS128 data; esdlib refuses them as a corrupt stream)
        addr |= rng.integers(0, 2, n).astype(np.uint32) << 15
    return addr, np.sort(rng.integers(0, 2**32, n, dtype=np.uint64))


def border_file():
    """Every corner and edge midpoint of the sensor, both polarities, timestamps 0 and 2^32-1."""
    pts = [(a, b) for a in (0, 64, 127) for b in (0, 64, 127)]
    xr = [a for a, _ in pts for _ in (0, 1)]
    yr = [b for _, b in pts for _ in (0, 1)]
    pr = [q for _ in pts for q in (0, 1)]
    t = np.linspace(0, 2**32 - 1, len(xr)).astype(np.uint64)
    t[-1] = 2**32 - 1
    return address(xr, yr, pr), t


DVS_CASES = {
    "random_157": lambda: random_file(1, 157),
    "random_1000": lambda: random_file(2, 1000),
    "random_4096": lambda: random_file(3, 4096),
    "random_7_fewer_than_T": lambda: random_file(4, 7),
    "one_event": lambda: (address([17], [101], [1]), [123456]),
    "frame_borders": border_file,
    "only_polarity_raw0": lambda: random_file(5, 300, p_raw=0),
    "only_polarity_raw1": lambda: random_file(6, 300, p_raw=1),
    "special_event_flag_bit": lambda: random_file(7, 500, flag_bit=True),
}
FRAME_COUNTS = (1, 4, 10, 16)


@pytest.mark.peer
@pytest.mark.filterwarnings("ignore:The binary mode of fromstring:DeprecationWarning")
@pytest.mark.parametrize("case", list(DVS_CASES))
def test_aedat_events_and_frames_match_spikingjelly(tmp_path, case):
    """Events (t, x, y, p) equal ``CIFAR10DVS.load_origin_data``; frames for several T equal
    ``integrate_events_by_fixed_frames_number(events, "number", T, 128, 128)``."""
    sj_dvs = peer("spikingjelly.datasets.cifar10_dvs")
    sj_ds = peer("spikingjelly.datasets")
    addr, t = DVS_CASES[case]()
    path = write_aedat(tmp_path / f"{case}.aedat", addr, t)

    ours = c10dvs.read_aedat2(path)
    theirs = sj_dvs.CIFAR10DVS.load_origin_data(str(path))
    assert len(theirs["t"]) == len(addr)
    for k in "txyp":
        assert ours[k].shape == theirs[k].shape, k
        assert np.array_equal(ours[k], theirs[k].astype(np.int64)), k
    if case.startswith("only_polarity"):
        assert set(ours["p"].tolist()) == {1 - int(case[-1])}
    if case == "frame_borders":
        assert set(ours["x"].tolist()) == set(ours["y"].tolist()) == {0, 63, 127}

    for T in FRAME_COUNTS:
        ref = sj_ds.integrate_events_by_fixed_frames_number(theirs, "number", T, 128, 128)
        frames = c10dvs.events_to_frames(ours["x"], ours["y"], ours["p"], T)
        assert frames.shape == ref.shape == (T, 2, 128, 128)
        assert np.array_equal(frames, ref), T
        assert np.array_equal(c10dvs.aedat_to_frames(path, T, 128), ref), T
        assert frames.sum() == len(addr)


@pytest.mark.peer
@pytest.mark.filterwarnings("ignore:The binary mode of fromstring:DeprecationWarning")
def test_cifar10_dvs_folder_matches_spikingjelly_dataset(tmp_path):
    """A small release read by SpikingJelly's ``CIFAR10DVS(root, data_type="frame",
    frames_number=T, split_by="number")`` (events npz, then frames npz, then its DatasetFolder):
    the same samples in the same order (which the paper's seeded ``random_split`` indexes), the
    same labels and the same frames as :func:`list_files` and :func:`aedat_to_frames`."""
    sj_dvs = peer("spikingjelly.datasets.cifar10_dvs")
    rng = np.random.default_rng(11)
    release = tmp_path / "sj" / "extract"
    for cls in c10dvs.CIFAR10_DVS_CLASSES:
        for i in (0, 1, 2, 10):  # string order 0, 1, 10, 2 (torchvision's DatasetFolder)
            n = int(rng.integers(5, 200))
            write_aedat(release / cls / f"cifar10_{cls}_{i}.aedat",
                        *random_file(int(rng.integers(2**31)), n))
    # SpikingJelly converts extract/ to events_np/ itself only after checking (downloading)
    # the zips; the release is already extracted, so its own converter is called first.
    (tmp_path / "sj" / "events_np").mkdir()
    sj_dvs.CIFAR10DVS.create_events_np_files(str(release), str(tmp_path / "sj" / "events_np"))
    T = 10
    ds = sj_dvs.CIFAR10DVS(str(tmp_path / "sj"), data_type="frame", frames_number=T,
                           split_by="number")

    files, labels = c10dvs.list_files(release)
    assert len(ds) == len(files) == 40
    assert [Path(p).relative_to(ds.root).with_suffix("").as_posix() for p, _ in ds.samples] \
        == [Path(f).with_suffix("").as_posix() for f in files]
    assert [y for _, y in ds.samples] == labels
    assert files[:4] == [f"airplane/cifar10_airplane_{i}.aedat" for i in (0, 1, 10, 2)]
    for i in range(len(ds)):
        frames, label = ds[i]
        assert label == labels[i]
        assert frames.dtype == np.float32 and frames.shape == (T, 2, 128, 128)
        assert np.array_equal(c10dvs.aedat_to_frames(release / files[i], T, 128), frames), i


# --------------------------------------------------------------------------- LIF

DECAY, THRESHOLD, ALPHA, T_STEPS = 0.2, 1.0, 4.0, 8


def peer_lif(variant: str):
    """SpikingJelly's ``LIFNode`` realising ``v[t] = 0.2·v[t-1] + x[t]``, soft reset, detached
    reset, threshold 1, ``surrogate.Sigmoid(alpha=4)``, multi-step, recording ``v_seq``.

    SpikingJelly 0.0.0.0.14's ``LIFNode`` charges ``v + (x - v)/τ`` (``decay_input=True``,
    default) or ``v·(1 - 1/τ) + x`` (``decay_input=False``); ESD's LIF is the latter with
    ``λ = 1 - 1/τ``. Common to both variants: ``v_threshold=1.0`` (fire ``H(v - 1)``),
    ``v_reset=None`` (soft reset ``v - 1·s``), ``detach_reset=True`` (the reset path carries no
    gradient), ``surrogate.Sigmoid(alpha=4.0)`` (derivative ``4·σ(4u)(1 - σ(4u))``),
    ``step_mode="m"``, ``backend="torch"``, ``store_v_seq=True`` (``v_seq`` = post-reset
    membrane per step), training mode (the surrogate path).

    ``"tau"``: configuration only, ``decay_input=False, tau = 1/(1 - λ) = 1.25``.
    ``"decay"``: what the published ESD code does, a subclass overriding ``neuronal_charge``
    with ``self.v = self.decay * self.v + x`` (``decay = λ``); the rest is SpikingJelly's.
    """
    neuron = peer("spikingjelly.activation_based.neuron")
    surrogate = peer("spikingjelly.activation_based.surrogate")
    common = dict(v_threshold=THRESHOLD, v_reset=None, detach_reset=True,
                  surrogate_function=surrogate.Sigmoid(alpha=ALPHA), step_mode="m",
                  backend="torch", store_v_seq=True)
    if variant == "tau":
        return neuron.LIFNode(tau=1.0 / (1.0 - DECAY), decay_input=False, **common).train()

    class DecayLIFNode(neuron.LIFNode):
        """``LIFNode`` charging ``v = decay·v + x`` (the published code's override)."""

        def __init__(self, decay: float, **kwargs):
            super().__init__(decay_input=False, **kwargs)
            self.decay = decay

        def neuronal_charge(self, x: torch.Tensor) -> None:
            self.v = self.decay * self.v + x

    return DecayLIFNode(DECAY, **common).train()


def esd_lif_trace(x_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """esdlib's step function over time: spikes and the post-reset membrane of every step."""
    params = esd.LIFParams(decay=DECAY, v_threshold=THRESHOLD, surrogate_alpha=ALPHA,
                           reset="soft")
    state, spikes, vs = None, [], []
    for x in x_seq:
        s, state = esd.lif_step(x, state, params)
        spikes.append(s)
        vs.append(state.v)
    return torch.stack(spikes), torch.stack(vs)


@pytest.mark.peer
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # the peer's
@pytest.mark.parametrize("variant", ["tau", "decay"])
@pytest.mark.parametrize("shape", [(64,), (5, 12), (3, 4, 6, 6)])
def test_multistep_lif_matches_spikingjelly_lifnode(variant, shape):
    """Spikes equal; post-reset membrane potentials and input gradients (through the spikes and
    through the membrane) equal to 1e-12 for esdlib's step function and to 1e-6 for its ``LIF``
    module, over T = 8 on random float64 inputs."""
    torch.manual_seed(sum(shape) + len(variant))
    T, B = T_STEPS, shape[0]
    x = (torch.randn(T, *shape, dtype=torch.float64) * 0.8 + 0.45).requires_grad_()
    g_s, g_v = torch.randn(2, T, *shape, dtype=torch.float64)

    # esdlib's LIF module in the multistep (BPTT) mode: [T*B, ...] in, spikes out
    lif = esd.LIF(esd.LIFParams(decay=DECAY, v_threshold=THRESHOLD, surrogate_alpha=ALPHA,
                                reset="soft"))
    esd.set_mode(lif, "multistep", T)
    s_ours = lif(x.reshape(T * B, *shape[1:])).reshape(T, *shape)
    (gx_ours,) = torch.autograd.grad((s_ours * g_s).sum(), x)
    s_step, v_ours = esd_lif_trace(x)
    (gx_ours_v,) = torch.autograd.grad((s_step * g_s + v_ours * g_v).sum(), x)

    node = peer_lif(variant)
    s_sj = node(x)
    v_sj = node.v_seq
    (gx_sj,) = torch.autograd.grad((s_sj * g_s).sum(), x, retain_graph=True)
    (gx_sj_v,) = torch.autograd.grad((s_sj * g_s + v_sj * g_v).sum(), x)

    rate = s_sj.mean().item()
    assert 0.1 < rate < 0.7, rate  # both firing and silent steps are exercised
    assert s_sj.dtype == torch.float64 and v_sj.shape == (T, *shape)
    assert torch.equal(s_ours, s_sj)
    assert torch.equal(s_step, s_sj)
    # the step functions compute in float64 throughout: equal to rounding
    torch.testing.assert_close(v_ours, v_sj, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx_ours_v, gx_sj_v, rtol=0, atol=1e-12)
    # the module's leak is sigmoid(float32 logit(0.2)), within 1e-8 of 0.2: 1e-6
    torch.testing.assert_close(gx_ours, gx_sj, rtol=0, atol=1e-6)
    assert (gx_sj != 0).float().mean() > 0.5  # the surrogate gradient reaches most inputs

    # the comparison discriminates: SpikingJelly's default charge (decay_input=True) differs
    default = peer("spikingjelly.activation_based.neuron").LIFNode(
        tau=1.25, v_reset=None, detach_reset=True, step_mode="m", store_v_seq=True)
    default(x.detach())
    assert not torch.allclose(default.v_seq, v_sj, atol=1e-3)
