"""The spike and rate passes (esdlib.passes, with the layers of esdlib.layers): rate-pass values,
T = 1 exactness of rate-based backpropagation against BPTT, memory flat in T, BatchNorm
statistics updated once per step."""

import copy

import pytest
import torch

import esdlib as esd


def _net(arch="spiking_resnet18", aux="dsconv", in_ch=3, seed=0):
    torch.manual_seed(seed)
    return esd.build_model(arch, num_classes=10, in_channels=in_ch, width=0.125, aux=aux)


def _batch(seed=0, B=8, size=16, T=None, ch=3):
    g = torch.Generator().manual_seed(seed)
    shape = (B, ch, size, size) if T is None else (T, B, ch, size, size)
    return torch.randn(shape, generator=g) * 2, torch.randint(0, 10, (B,), generator=g)


ARCHS = ["spiking_resnet18", "spiking_resnet19", "preact_spiking_resnet34"]


def _both_passes(net, x, T, run=lambda f: f()):
    """The spike pass then the rate pass of ``net`` on ``x`` (each called through ``run``),
    recording every LIF module's ``(input, output)`` per call.

    Returns:
        ``(lifs, seen, rates, spike_out, rate_out)``: the LIF modules by name, their recorded
        ``[(spike-pass io), (rate-pass io)]`` by name, the rates after the spike pass and the
        two passes' outputs.
    """
    lifs = {n: m for n, m in net.named_modules() if isinstance(m, esd.LIF)}
    seen = {}

    def hook(name):
        def f(mod, inp, out):
            seen.setdefault(name, []).append((inp[0].detach().clone(), out.detach().clone()))
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in lifs.items()]
    try:
        spike_out = run(lambda: esd.spike_pass(net, x, T))
        rates = {n: m.rate.clone() for n, m in lifs.items()}
        rate_out = run(lambda: esd.rate_pass(net, x))
    finally:
        for h in handles:
            h.remove()
    return lifs, seen, rates, spike_out, rate_out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("time_varying", [False, True])
def test_rate_pass_values_equal_spike_pass_averages(arch, time_varying):
    T = 4
    if time_varying and arch == "preact_spiking_resnet34":  # max-pooling stem: static input only
        net, x = _net(arch, in_ch=2), _batch(T=T, ch=2)[0]
        with pytest.raises(ValueError, match="static input"):
            esd.spike_pass(net.train(), x, T)
        return
    net = _net(arch, in_ch=2 if time_varying else 3)
    x, _ = _batch(T=T if time_varying else None, ch=2 if time_varying else 3)
    lifs, seen, rates, spike_out, rate_out = _both_passes(net.train(), x, T)
    for name in lifs:
        (x_spk, s_spk), (x_rate, out_rate) = seen[name]
        B = x_rate.shape[0]
        torch.testing.assert_close(x_rate, x_spk.view(T, B, *x_rate.shape[1:]).mean(0),
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out_rate, s_spk.view(T, B, *out_rate.shape[1:]).mean(0))
        torch.testing.assert_close(out_rate, rates[name])
    torch.testing.assert_close(rate_out.logits, spike_out.logits, atol=1e-5, rtol=1e-4)
    esd.reset_state(net)


def _grads(net, method, x, y, T, **kw):
    net.zero_grad(set_to_none=True)
    esd.get_method(method)(net, x, y, T, esd.LossConfig(), **kw)
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pair", [("bptt", "ratebp"), ("esd_bptt", "esd")])
def test_T1_rate_bp_gradient_equals_bptt(arch, pair):
    aux = "dsconv" if pair[0] == "esd_bptt" else None
    net = _net(arch, aux=aux).train().double()  # float64: equal to rounding, not to a tolerance
    x, y = _batch()
    x = x.double()
    g_bptt = _grads(copy.deepcopy(net), pair[0], x, y, 1)
    g_rate = _grads(copy.deepcopy(net), pair[1], x, y, 1)
    assert g_bptt.keys() == g_rate.keys() and len(g_bptt) == len(list(net.parameters()))
    for name in g_bptt:
        torch.testing.assert_close(g_rate[name], g_bptt[name], atol=1e-12, rtol=1e-9,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_T_gt_1_rate_bp_gradient_differs_from_bptt():
    net = _net(aux=None).train()
    x, y = _batch()
    g_bptt = _grads(copy.deepcopy(net), "bptt", x, y, 4)
    g_rate = _grads(copy.deepcopy(net), "ratebp", x, y, 4, rate_grad_scale="none")
    rel = [((g_rate[n] - g_bptt[n]).norm() / g_bptt[n].norm().clamp(min=1e-12)).item()
           for n in g_bptt]
    assert max(rel) > 1e-2  # an approximation for T > 1 ...
    # ... except for the classifier, whose input (the time-averaged rates) is exact:
    torch.testing.assert_close(g_rate["head.weight"], g_bptt["head.weight"], atol=1e-6, rtol=1e-4)
    cos = torch.nn.functional.cosine_similarity(
        torch.cat([g.flatten() for g in g_rate.values()]),
        torch.cat([g.flatten() for g in g_bptt.values()]), dim=0)
    assert cos > 0.1  # positively aligned (the gradient chapter measures it per layer)


def test_rate_grad_scale_is_one_over_T():
    net = _net(aux=None).train()
    x, y = _batch()
    g1 = _grads(copy.deepcopy(net), "ratebp", x, y, 4, rate_grad_scale="none")
    g2 = _grads(copy.deepcopy(net), "ratebp", x, y, 4, rate_grad_scale="1/T")
    for n in g1:
        torch.testing.assert_close(g2[n] * 4, g1[n], atol=1e-6, rtol=1e-5)


def _saved_bytes(fn):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


@pytest.mark.parametrize("method", ["ratebp", "esd"])
def test_rate_pass_saved_memory_is_flat_in_T(method):
    net = _net(aux="dsconv" if method == "esd" else None).train()
    x, y = _batch()
    sizes = [_saved_bytes(lambda T=T: esd.get_method(method)(net, x, y, T)) for T in (1, 4, 8)]
    assert sizes[0] > 0 and sizes[0] == sizes[1] == sizes[2]


def test_bptt_saved_memory_grows_with_T():
    net = _net(aux=None).train()
    x, y = _batch()
    s1, s4, s8 = (_saved_bytes(lambda T=T: esd.get_method("bptt")(net, x, y, T)) for T in (1, 4, 8))
    assert s1 < s4 < s8
    assert s8 / s1 > 4  # roughly proportional to T


def test_bn_running_stats_updated_once_per_step_from_spike_pass():
    net = _net(aux=None).train()
    x, y = _batch()
    bn = net.stem.bn
    esd.get_method("ratebp")(net, x, y, 3)
    assert int(bn.num_batches_tracked) == 1
    # stem input is the same at every step: its spike statistics are those of conv(x)
    with torch.no_grad():
        h = net.stem.conv(x)
    var, mean = torch.var_mean(h, dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(bn.running_mean, 0.1 * mean, atol=1e-6, rtol=1e-5)
    n = h.numel() // h.shape[1] * 3
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * var * n / (n - 1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["bptt", "ratebp", "esd", "esd_bptt"])
def test_batchnorm_counts_one_batch_per_training_step(method):
    """``num_batches_tracked`` advances once per step in every BN, as ``nn.BatchNorm`` does."""
    net = _net(aux="dsconv" if method in esd.BRANCH_METHODS else None).train()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert any(isinstance(m, esd.SpikeBatchNorm2d) for m in bns)
    for step in range(2):
        x, y = _batch(seed=step)
        esd.get_method(method)(net, x, y, 3)
        assert {int(m.num_batches_tracked) for m in bns} == {step + 1}


@pytest.mark.parametrize("mode", ["multistep", "spike"])
def test_batchnorm_momentum_none_is_the_cumulative_average_of_nn_batchnorm(mode):
    bn, ref = esd.SpikeBatchNorm2d(4, momentum=None).train(), torch.nn.BatchNorm2d(4, momentum=None)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(6, 4, 5, 5, generator=g) * 3 + 1
        with esd.mode(bn, mode, 2), torch.no_grad():
            bn(x)
        ref(x)
        esd.reset_state(bn)
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)


def test_evaluate_leaves_no_state_behind():
    net = _net().eval()
    x, _ = _batch()
    out = esd.evaluate_batch(net, x, 4)
    assert out.logits.shape == (8, 10)
    assert all(r.shape == (4,) and 0 <= float(r.min()) <= float(r.max()) <= 1
               for r in out.firing_per_t.values())
    for m in net.modules():
        for k, v in vars(m).items():
            if k not in ("_parameters", "_buffers") and isinstance(v, torch.Tensor):
                raise AssertionError(f"{type(m).__name__}.{k} still holds a tensor")


def test_rate_pass_without_spike_pass_fails_clearly():
    net = _net(aux=None).train()
    x, _ = _batch()
    with pytest.raises(RuntimeError, match="spike_pass first"):
        esd.rate_pass(net, x)


def test_fused_rate_batchnorm_matches_the_straight_through_formula():
    """mu = sg(mu_s) + mu_r - sg(mu_r), var likewise: the fused backward equals autograd's."""
    from esdlib.layers import _RateBatchNorm

    torch.manual_seed(0)
    x = torch.randn(8, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    mean_s, var_s = torch.randn(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64) + 0.5
    g = torch.randn(8, 5, 4, 4, dtype=torch.float64)
    y = _RateBatchNorm.apply(x, w, b, mean_s, var_s, 1e-5)
    fused = torch.autograd.grad(y, (x, w, b), g)
    var_r, mean_r = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    mu = (mean_s + mean_r - mean_r.detach()).view(1, -1, 1, 1)
    var = (var_s + var_r - var_r.detach()).view(1, -1, 1, 1)
    y_ref = (x - mu) * torch.rsqrt(var + 1e-5) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
    ref = torch.autograd.grad(y_ref, (x, w, b), g)
    torch.testing.assert_close(y, y_ref)
    for a, r in zip(fused, ref, strict=True):
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize("pair", [("bptt", "ratebp"), ("esd_bptt", "esd")])
def test_T1_rate_bp_gradient_equals_bptt_in_channels_last(pair):
    aux = "dsconv" if pair[0] == "esd_bptt" else None
    net = _net(aux=aux).train().to(memory_format=torch.channels_last)
    x, y = _batch()
    x = x.contiguous(memory_format=torch.channels_last)
    g_bptt = _grads(copy.deepcopy(net), pair[0], x, y, 1)
    g_rate = _grads(copy.deepcopy(net), pair[1], x, y, 1)
    g_nchw = _grads(_net(aux=aux).train(), pair[1], x.contiguous(), y, 1)
    for name in g_bptt:
        torch.testing.assert_close(g_rate[name], g_bptt[name], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(g_rate[name], g_nchw[name], atol=1e-5, rtol=1e-4)


# --- mixed precision (bf16 autocast) -----------------------------------------------------------
# bfloat16 keeps 8 significant bits (unit roundoff 2**-9 ≈ 0.2 %). Under autocast the
# convolutions and linear layers compute in bf16; esdlib keeps membranes, eligibilities, rates,
# BN statistics and the losses in float32, and spikes (0/1) are exact. The tolerances below
# follow from that, not from a fit to one run: see each test.


def _bf16(fn):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn()


def _rel_err(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-30))


@pytest.mark.parametrize("pair", [("bptt", "ratebp"), ("esd_bptt", "esd")])
def test_T1_rate_bp_gradient_equals_bptt_in_bf16(pair):
    """At T = 1 rate-BP and BPTT are the same computation; in bf16 only the rounding differs.

    Both forwards run the same bf16 kernels on the same data (identical spikes); the backwards
    round at different places (BPTT passes bf16 gradients between layers, rate-BP float32 ones
    through its LIF and BN steps). Each rounding is ≤ 2**-9 relative; over the ~20 layers of
    ResNet-18 they compound to ~1 % of the whole gradient's norm (we allow 2 %) and to at most
    ~2.5 % of one tensor's (seeds 0-3; the worst are BN weights and biases, sums over every
    position of bf16 gradients in the BPTT path; we allow 6 %). A wrong eligibility, BN
    straight-through term or conv backward gives errors of order 100 %. Every
    gradient is float32 (the master weights' dtype), and the float32 step's gradient differs
    (bf16 really was in use: its rounding moves some membranes across the threshold, so the
    two precisions do not even fire the same spikes — no tolerance relates them).
    """
    aux = "dsconv" if pair[0] == "esd_bptt" else None
    net = _net(aux=aux).train()
    x, y = _batch()
    g_bptt = _bf16(lambda: _grads(copy.deepcopy(net), pair[0], x, y, 1))
    g_rate = _bf16(lambda: _grads(copy.deepcopy(net), pair[1], x, y, 1))
    g_fp32 = _grads(copy.deepcopy(net), pair[0], x, y, 1)
    assert g_bptt.keys() == g_rate.keys() and len(g_bptt) == len(list(net.parameters()))
    errors = {n: _rel_err(g_rate[n], g_bptt[n]) for n in g_bptt}
    worst = max(errors, key=errors.get)
    assert errors[worst] < 0.06, f"{worst}: relative error {errors[worst]:.3g}"
    flat = [torch.cat([g[n].flatten() for n in g_bptt]) for g in (g_rate, g_bptt, g_fp32)]
    assert _rel_err(flat[0], flat[1]) < 0.02
    assert all(g.dtype == torch.float32 for g in g_rate.values())
    assert _rel_err(flat[0], flat[2]) > 1e-3


def test_rate_pass_values_equal_spike_pass_averages_in_bf16():
    """Rate-pass forward values are the spike pass's time averages, up to bf16 rounding.

    - LIF outputs: the rate pass returns the float32 rate recorded from exact 0/1 spikes, so it
      equals the float32 mean of the spike-pass spikes to float32 rounding (tolerance 1e-6);
    - LIF inputs: the spike pass rounds each step's BN output to bf16 and the rate pass
      normalises the bf16 time average of the bf16 convolution outputs, so they agree to a
      few bf16 roundings of the currents' scale: |Δ| ≤ 2**-6 · max|x| (4 units of 2**-8);
    - logits: a time average of bf16 logits vs one bf16 linear layer on the float32 rates:
      |Δ| ≤ 2**-6 · max|logit|.
    """
    T = 4
    net = _net().train()
    x, _ = _batch()
    lifs, seen, rates, spike_out, rate_out = _both_passes(net, x, T, run=_bf16)
    esd.reset_state(net)
    assert spike_out.logits.dtype == torch.bfloat16  # autocast was on
    for name in lifs:
        (x_spk, s_spk), (x_rate, out_rate) = seen[name]
        B = x_rate.shape[0]
        assert x_spk.dtype == s_spk.dtype == torch.bfloat16 and rates[name].dtype == torch.float32
        assert set(s_spk.unique().tolist()) <= {0.0, 1.0}
        mean_s = s_spk.float().view(T, B, *out_rate.shape[1:]).mean(0)
        torch.testing.assert_close(out_rate, mean_s, atol=1e-6, rtol=0)
        torch.testing.assert_close(out_rate, rates[name], atol=0, rtol=0)
        mean_x = x_spk.float().view(T, B, *x_rate.shape[1:]).mean(0)
        scale = float(mean_x.abs().max())
        assert float((x_rate.float() - mean_x).abs().max()) <= 2**-6 * scale, name
    scale = float(spike_out.logits.float().abs().max())
    diff = (rate_out.logits.detach().float() - spike_out.logits.float()).abs().max()
    assert float(diff) <= 2**-6 * scale
