"""The compiled spike pass (``RunConfig.compile``) and the TF32 switch (``RunConfig.tf32``).

What compiling must not change: the spike pass records the same rates, eligibilities,
convolution averages and BN statistics as the eager pass, the T = 1 rate-BP gradient still
equals the BPTT gradient, and the ESD step gives the same loss and gradients. The exactness
checks run in float64, where the compiled and the eager kernels differ only by rounding
(~1e-16 relative; a spike would flip only where a membrane lies that close to the threshold),
so every tolerance is orders of magnitude above rounding and orders below any real difference
(one flipped spike changes a rate by 1/T). The tests that run Inductor compile C++ kernels and
are marked ``slow``; TorchDynamo's capture alone (``backend="eager"``) is fast.
"""

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch

import esdlib as esd
from esdlib.layers import SpikeBatchNorm2d, SpikeConv2d
from esdlib.neurons import LIFParams
from esdlib.train.config import ConfigError, RunConfig, parse_override
from esdlib.train.records import make_run_id
from esdlib.train.runtime import tf32, tf32_state

REPO = Path(__file__).resolve().parents[1]
T4 = 4


def _net(aux="dsconv", seed=0):
    torch.manual_seed(seed)
    return esd.build_model("spiking_resnet18", num_classes=10, in_channels=3, width=0.125,
                           aux=aux)


def _batch(B=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, size, size, generator=g) * 2, torch.randint(0, 10, (B,), generator=g)


def _records(model):
    """Everything a spike pass leaves in ``model`` for the rate pass, and the BN buffers."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, esd.LIF):
            out[f"{name}.rate"], out[f"{name}.elig"] = m.rate, m.elig
        elif isinstance(m, SpikeConv2d):
            out[f"{name}.rate_out"] = m.rate_out
        elif isinstance(m, SpikeBatchNorm2d):
            out[f"{name}.spike_mean"], out[f"{name}.spike_var"] = m.spike_mean, m.spike_var
    out.update({f"buffer {k}": b for k, b in model.named_buffers()})
    return {k: v.detach().clone() for k, v in out.items() if v is not None}


def _spike_records(spike, model, x, T):
    logits = spike(model, x, T).logits.clone()
    records = _records(model)
    esd.reset_state(model)
    return logits, records


def _assert_records_equal(got, want, tol):
    assert got.keys() == want.keys()
    assert sum(k.endswith(".rate") for k in want) == 17  # every LIF of ResNet-18 recorded
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=tol, rtol=tol,
                                   msg=lambda m, k=k: f"{k}: {m}")
        # the rate pass sees the eager layout (the stride of a size-1 dim says nothing)
        assert [st for st, n in zip(got[k].stride(), got[k].shape, strict=True) if n > 1] == \
            [st for st, n in zip(want[k].stride(), want[k].shape, strict=True) if n > 1], k


# -- the traceable LIF kernel -------------------------------------------------------------


@pytest.mark.parametrize("reset", ["soft", "soft_nodetach", "hard"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_traceable_lif_spike_pass_equals_the_fused_kernel(reset, channels_last):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 4, 6, 6, generator=g, dtype=torch.float64) * 1.5
    if channels_last:  # time-major [T·B, C, H, W] channels-last, seen as [T, B, ...]
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(x.shape)
    p = LIFParams(decay=0.3, v_threshold=0.8, surrogate_alpha=3.0, reset=reset)
    s_ref, r_ref, e_ref = esd.lif_spike_pass(x, p)
    for decay in (None, torch.tensor(0.3, dtype=torch.float64)):  # float, or a traced tensor
        s, r, e = esd.lif_spike_pass_traceable(x, p, decay)
        assert torch.equal(s, s_ref) and s.stride() == s_ref.stride()
        assert 0 < float(r_ref.mean()) < 1  # neurons that fire and neurons that do not
        torch.testing.assert_close(r, r_ref, atol=1e-14, rtol=1e-14)
        torch.testing.assert_close(e, e_ref, atol=1e-13, rtol=1e-12)
        assert r.stride() == r_ref.stride() and e.stride() == e_ref.stride()


# -- capture: one graph, same records -------------------------------------------------------


def test_spike_pass_is_captured_as_one_graph_with_the_eager_records():
    """TorchDynamo captures the whole T-step pass (every LIF, conv and BN) without a graph
    break; running the captured graph records what the eager pass records."""
    net = _net().train().double()
    x = _batch()[0].double()
    want = _spike_records(esd.spike_pass, copy.deepcopy(net), x, T4)
    spike = esd.CompiledSpikePass("default", backend="eager", fullgraph=True)
    got = _spike_records(spike, copy.deepcopy(net), x, T4)
    assert spike.error is None, spike.error  # a graph break would have fallen back
    torch.testing.assert_close(got[0], want[0], atol=1e-12, rtol=1e-12)
    _assert_records_equal(got[1], want[1], 1e-12)


# -- Inductor (slow: C++ compilation) -------------------------------------------------------


@pytest.fixture(scope="module")
def compiled():
    """One compiled spike pass for the module: float64 at T = 4 compiles once and is reused."""
    return esd.CompiledSpikePass("default", fullgraph=True)


@pytest.mark.slow
def test_compiled_spike_pass_records_what_the_eager_pass_records(compiled):
    net = _net().train().double()
    x = _batch()[0].double()
    model, eager = copy.deepcopy(net), copy.deepcopy(net)
    for _ in range(2):  # the second call runs the cached code; BN statistics update again
        got = _spike_records(compiled, model, x, T4)
        want = _spike_records(esd.spike_pass, eager, x, T4)
        assert compiled.error is None, compiled.error
        torch.testing.assert_close(got[0], want[0], atol=1e-12, rtol=1e-12)
        _assert_records_equal(got[1], want[1], 1e-12)


def _grads(model, method, x, y, T, **kw):
    model.zero_grad(set_to_none=True)
    res = esd.get_method(method)(model, x, y, T, esd.LossConfig(), **kw)
    return res.loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow
def test_T1_rate_bp_gradient_equals_bptt_under_compile(compiled):
    net = _net().train().double()
    x, y = _batch()
    x = x.double()
    _, g_bptt = _grads(copy.deepcopy(net), "esd_bptt", x, y, 1)
    _, g_rate = _grads(copy.deepcopy(net), "esd", x, y, 1, spike_fn=compiled)
    assert compiled.error is None, compiled.error
    assert g_bptt.keys() == g_rate.keys() and len(g_bptt) == len(list(net.parameters()))
    for name in g_bptt:
        torch.testing.assert_close(g_rate[name], g_bptt[name], atol=1e-12, rtol=1e-9,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.slow
def test_compiled_esd_step_matches_eager_in_float64(compiled):
    net = _net().train().double()
    x, y = _batch()
    x = x.double()
    loss_e, g_e = _grads(copy.deepcopy(net), "esd", x, y, T4)
    loss_c, g_c = _grads(copy.deepcopy(net), "esd", x, y, T4, spike_fn=compiled)
    assert compiled.error is None, compiled.error
    torch.testing.assert_close(loss_c, loss_e, atol=1e-12, rtol=1e-12)
    assert g_c.keys() == g_e.keys()
    for name in g_e:
        torch.testing.assert_close(g_c[name], g_e[name], atol=1e-11, rtol=1e-9,
                                   msg=lambda m, n=name: f"{n}: {m}")


def _cosine(a, b):
    a = torch.cat([g.flatten() for g in a.values()])
    b = torch.cat([g.flatten() for g in b.values()])
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


@pytest.mark.slow
def test_compiled_esd_step_matches_eager_in_float32_channels_last():
    """The training configuration (float32, channels-last). Float32 rounding of the compiled
    kernels may flip a spike whose membrane lies within ~1e-7 of the threshold (a rate moves by
    1/T), so the check is the loss to 1e-4 and the gradient's direction, not every entry."""
    net = _net().train().to(memory_format=torch.channels_last)
    x, y = _batch()
    x = x.contiguous(memory_format=torch.channels_last)
    spike = esd.CompiledSpikePass("default", fullgraph=True)
    loss_e, g_e = _grads(copy.deepcopy(net), "esd", x, y, T4)
    loss_c, g_c = _grads(copy.deepcopy(net), "esd", x, y, T4, spike_fn=spike)
    assert spike.error is None, spike.error
    torch.testing.assert_close(loss_c, loss_e, atol=1e-4, rtol=1e-4)
    assert g_c.keys() == g_e.keys()
    assert _cosine(g_c, g_e) > 0.999


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graph_modes_compile_and_train_on_the_cpu(mode):
    """On the CPU there is no CUDA graph to replay: both modes compile like ``default``."""
    net = _net(aux=None).train()
    x, y = _batch(B=2)
    spike = esd.CompiledSpikePass(mode)
    loss_e, g_e = _grads(copy.deepcopy(net), "ratebp", x, y, 2)
    model = copy.deepcopy(net)
    for _ in range(2):
        loss_c, g_c = _grads(model, "ratebp", x, y, 2, spike_fn=spike)
        model.load_state_dict(net.state_dict())
    assert spike.error is None, spike.error
    torch.testing.assert_close(loss_c, loss_e, atol=1e-4, rtol=1e-4)
    assert _cosine(g_c, g_e) > 0.999


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("T", [1, T4])
def test_cuda_graph_spike_pass_matches_eager_over_replayed_steps(T):
    """``reduce-overhead`` on CUDA: the first call warms up, the second records the CUDA graph,
    later ones replay it — every step (with SGD updates in between) gives the eager step's loss
    and gradients in float64, and at T = 1 the BPTT gradient."""
    net = _net().train().double().cuda()
    x, y = _batch()
    x, y = x.double().cuda(), y.cuda()
    spike = esd.CompiledSpikePass("reduce-overhead", fullgraph=True)
    models = {"compiled": copy.deepcopy(net), "eager": copy.deepcopy(net)}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for k, m in models.items()}
    reference = "esd_bptt" if T == 1 else "esd"
    for step in range(4):
        loss_e, g_e = _grads(models["eager"], reference, x, y, T)
        loss_c, g_c = _grads(models["compiled"], "esd", x, y, T, spike_fn=spike)
        assert spike.error is None, spike.error
        torch.testing.assert_close(loss_c, loss_e, atol=1e-10, rtol=1e-10)
        for name in g_e:
            torch.testing.assert_close(g_c[name], g_e[name], atol=1e-10, rtol=1e-8,
                                       msg=lambda m, n=name, s=step: f"step {s}, {n}: {m}")
        for opt in opts.values():
            opt.step()
    for (name, b_c), b_e in zip(models["compiled"].named_buffers(),
                                models["eager"].buffers(), strict=True):
        torch.testing.assert_close(b_c, b_e, atol=1e-10, rtol=1e-10, msg=lambda m, n=name: n)


# -- fallback ---------------------------------------------------------------------------------


def test_a_failed_compilation_falls_back_once_with_the_bn_statistics_updated_once():
    net = _net().train()
    x, _ = _batch()
    eager = copy.deepcopy(net)
    want = _spike_records(esd.spike_pass, eager, x, T4)
    spike = esd.CompiledSpikePass("default")

    def broken(model, inp):  # a compiled piece ran (one BN updated), then compilation failed
        bn = next(m for m in model.modules() if isinstance(m, SpikeBatchNorm2d))
        bn.running_mean.add_(1.0)
        bn.num_batches_tracked.add_(1)
        raise RuntimeError("inductor: C++ compiler not found")

    spike._compiled = broken
    model = copy.deepcopy(net)
    with pytest.warns(UserWarning, match="spike pass runs eagerly.*C\\+\\+ compiler not found"):
        got = _spike_records(spike, model, x, T4)
    assert spike.error == "RuntimeError: inductor: C++ compiler not found"
    torch.testing.assert_close(got[0], want[0], atol=0, rtol=0)
    _assert_records_equal(got[1], want[1], 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per run, not one per step
        spike(model, x, T4)
    esd.reset_state(model)


def test_an_error_of_the_model_itself_propagates_and_does_not_disable_compilation():
    net = _net().train()
    spike = esd.CompiledSpikePass("default")

    def broken(model, inp):
        raise RuntimeError("compiled code saw a bad input")

    spike._compiled = broken
    with pytest.raises(ValueError, match=r"expected \[B, C, H, W\]"):
        spike(net, torch.zeros(4, 3, 16), T4)  # the eager pass rejects it too
    assert spike.error is None
    assert all(m.mode == "multistep" for m in net.modules() if isinstance(m, esd.ModeAware))


def test_compile_spike_pass_maps_the_config_values():
    assert esd.compile_spike_pass("none") is esd.spike_pass
    for mode in ("default", "reduce-overhead", "max-autotune"):
        spike = esd.compile_spike_pass(mode)
        assert isinstance(spike, esd.CompiledSpikePass) and spike.compile_mode == mode
    with pytest.raises(ValueError, match="compile mode must be one of"):
        esd.CompiledSpikePass("none")
    assert esd.COMPILE_MODES == ("none", "default", "reduce-overhead", "max-autotune")


# -- configuration ----------------------------------------------------------------------------


def test_compile_and_tf32_fields_are_validated():
    cfg = RunConfig.from_profile("smoke", compile="reduce-overhead", tf32=True)
    assert (cfg.compile, cfg.tf32) == ("reduce-overhead", True)
    assert RunConfig.from_profile("smoke").compile == "none"
    assert RunConfig.from_profile("smoke").tf32 is False
    with pytest.raises(ConfigError, match=r"compile='reduce_overhead' is not valid \(did you "
                                          r"mean 'reduce-overhead'\?\)"):
        RunConfig.from_profile("smoke", compile="reduce_overhead")
    with pytest.raises(ConfigError, match="tf32 must be a bool"):
        RunConfig.from_profile("smoke", tf32="yes")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) 'tf23' \(did you mean "
                                          r"'tf32'\?\)"):
        RunConfig.from_profile("smoke", tf23=True)
    for method in ("bptt", "esd_bptt"):
        with pytest.raises(ConfigError, match=f"method='{method}' has none"):
            RunConfig.from_profile("smoke", method=method, compile="default")
    assert parse_override("compile=max-autotune") == ("compile", "max-autotune")
    assert parse_override("tf32=on") == ("tf32", True)
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_default_configs_keep_the_run_ids_of_committed_records():
    """A record written before the fields existed rebuilds to its run id; setting either
    field gives another run id."""
    path = sorted((REPO / "results" / "table1").glob("table1-*-esd-*.json"))[0]  # two-pass
    record = json.loads(path.read_text())
    assert "compile" not in record["config"] and "tf32" not in record["config"]
    cfg = RunConfig.from_dict(record["config"])
    assert (cfg.compile, cfg.tf32) == ("none", False)
    assert make_run_id(cfg, record["experiment"]) == record["run_id"]
    assert "compile" not in cfg.hash_dict() and "tf32" not in cfg.hash_dict()
    ids = {make_run_id(cfg.replace(**kw), record["experiment"]) for kw in
           ({}, {"compile": "default"}, {"compile": "reduce-overhead"}, {"tf32": True})}
    assert len(ids) == 4


def test_train_flags_for_compile_and_tf32():
    from esdlib.cli import build_parser, train_overrides

    args = build_parser().parse_args(["train", "--compile", "reduce-overhead", "--tf32"])
    assert train_overrides(args) == ["compile=reduce-overhead", "tf32=true"]
    cfg = RunConfig.from_overrides("smoke", train_overrides(args))
    assert (cfg.compile, cfg.tf32) == ("reduce-overhead", True)


# -- TF32 -------------------------------------------------------------------------------------


def test_tf32_context_sets_both_flags_and_restores_them():
    before = tf32_state()
    for enabled in (True, False):
        with tf32(enabled):
            assert tf32_state() == {"matmul": enabled, "cudnn": enabled}
        assert tf32_state() == before
    with pytest.raises(KeyError), tf32(True):
        raise KeyError("restored on errors too")
    assert tf32_state() == before


def test_fit_applies_tf32_for_the_run_and_records_that_the_cpu_ignores_it(tmp_path, monkeypatch):
    import esdlib.train.engine as engine

    before = tf32_state()
    seen = []
    real = engine.get_method

    def get_method(name):
        step = real(name)

        def spied(*args, **kwargs):
            seen.append(tf32_state())
            return step(*args, **kwargs)
        return spied

    monkeypatch.setattr(engine, "get_method", get_method)
    cfg = RunConfig.from_profile("smoke", device="cpu", tf32=True, keep_freed_memory=False,
                                 out_dir=str(tmp_path / "r"), checkpoint_dir=str(tmp_path / "c"))
    rec = esd.fit(cfg, progress=False)
    assert seen and all(s == {"matmul": True, "cudnn": True} for s in seen)
    assert tf32_state() == before
    runtime = rec["extra"]["runtime"]
    assert runtime["tf32"] is False and "no effect on cpu" in runtime["tf32_note"]
    assert runtime["compile"] == "none" and rec["config"]["tf32"] is True


def test_fit_wires_the_compiled_pass_and_records_a_fallback(tmp_path, monkeypatch):
    """``fit`` builds the compiled pass from ``cfg.compile``; a compiler that fails makes the run
    train on eagerly, warn once and say so in the record."""
    calls = []

    def no_compiler(fn, **kwargs):
        calls.append(kwargs)

        def compiled(*args, **kw):
            raise RuntimeError("no C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", no_compiler)
    cfg = RunConfig.from_profile("smoke", device="cpu", compile="reduce-overhead",
                                 keep_freed_memory=False, out_dir=str(tmp_path / "r"),
                                 checkpoint_dir=str(tmp_path / "c"))
    with pytest.warns(UserWarning, match="spike pass runs eagerly") as caught:
        rec = esd.fit(cfg, progress=False)
    assert len([w for w in caught if "spike pass runs eagerly" in str(w.message)]) == 1
    assert [c["mode"] for c in calls] == ["reduce-overhead"]
    assert rec["status"] == "complete"
    runtime = rec["extra"]["runtime"]
    assert runtime["compile"] == "reduce-overhead"
    assert runtime["compile_error"] == "RuntimeError: no C++ compiler"
