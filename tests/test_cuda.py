"""CUDA checks (skipped without a GPU): rate-BP exactness at T = 1 and CPU/CUDA parity.

``benchmarks/gpu_check.sh`` runs these on a GPU machine together with the GPU benchmark.
"""

import copy

import pytest
import torch

import esdlib as esd

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ARCHS = ["spiking_resnet18", "spiking_resnet19", "preact_spiking_resnet34"]


def _setup(arch, aux, seed=0, B=8, size=32):
    torch.manual_seed(seed)
    net = esd.build_model(arch, num_classes=10, in_channels=3, width=0.125, aux=aux)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, size, size, generator=g) * 2
    return net.train().double(), x.double(), torch.randint(0, 10, (B,), generator=g)


def _grads(net, method, x, y, T):
    net.zero_grad(set_to_none=True)
    step = esd.get_method(method)(net, x, y, T, esd.LossConfig())
    return step.loss.detach(), {n: p.grad for n, p in net.named_parameters()
                                if p.grad is not None}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pair", [("bptt", "ratebp"), ("esd_bptt", "esd")])
def test_T1_rate_bp_gradient_equals_bptt_on_cuda(arch, pair):
    net, x, y = _setup(arch, "dsconv" if pair[0] == "esd_bptt" else None)
    net, x, y = net.cuda(), x.cuda(), y.cuda()
    _, g_bptt = _grads(copy.deepcopy(net), pair[0], x, y, 1)
    _, g_rate = _grads(copy.deepcopy(net), pair[1], x, y, 1)
    assert g_bptt.keys() == g_rate.keys()
    for name in g_bptt:
        torch.testing.assert_close(g_rate[name], g_bptt[name], atol=1e-12, rtol=1e-9,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["bptt", "ratebp", "esd"])
def test_cpu_and_cuda_steps_agree(arch, method):
    """Same weights and batch, float64: loss and every gradient equal across devices."""
    net, x, y = _setup(arch, "dsconv" if method in esd.BRANCH_METHODS else None)
    loss_cpu, g_cpu = _grads(copy.deepcopy(net), method, x, y, 4)
    loss_gpu, g_gpu = _grads(copy.deepcopy(net).cuda(), method, x.cuda(), y.cuda(), 4)
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, atol=1e-10, rtol=1e-9)
    for name in g_cpu:
        torch.testing.assert_close(g_gpu[name].cpu(), g_cpu[name], atol=1e-9, rtol=1e-7,
                                   msg=lambda m, n=name: f"{n}: {m}")


def _rel_err(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-30))


@pytest.mark.parametrize("pair", [("bptt", "ratebp"), ("esd_bptt", "esd")])
def test_T1_rate_bp_gradient_equals_bptt_in_bf16_on_cuda(pair):
    """The CUDA twin of ``tests/test_passes.py::test_T1_rate_bp_gradient_equals_bptt_in_bf16``
    (same tolerances and reasons: bf16 rounding at different places of two equal computations,
    ≤ 2 % of the whole gradient, ≤ 6 % of one tensor; a wrong gradient is off by ~100 %)."""
    net, x, y = _setup("spiking_resnet18", "dsconv" if pair[0] == "esd_bptt" else None)
    net, x, y = net.float().cuda(), x.float().cuda(), y.cuda()
    grads = {}
    for method in pair:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            grads[method] = _grads(copy.deepcopy(net), method, x, y, 1)[1]
    g_bptt, g_rate = grads[pair[0]], grads[pair[1]]
    assert g_bptt.keys() == g_rate.keys()
    errors = {n: _rel_err(g_rate[n], g_bptt[n]) for n in g_bptt}
    worst = max(errors, key=errors.get)
    assert errors[worst] < 0.06, f"{worst}: relative error {errors[worst]:.3g}"
    flat = [torch.cat([g[n].flatten() for n in g_bptt]) for g in (g_rate, g_bptt)]
    assert _rel_err(*flat) < 0.02
    assert all(g.dtype == torch.float32 for g in g_rate.values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rate_pass_values_equal_spike_pass_averages_under_cuda_autocast(dtype):
    """Rate-pass LIF outputs are the float32 means of the exact 0/1 spike-pass spikes, and the
    logits agree to a few half-precision roundings (|Δ| ≤ 2**-6 · max|logit|), on CUDA."""
    net, x, _ = _setup("spiking_resnet18", "dsconv")
    net, x = net.float().cuda(), x.float().cuda()
    T = 4
    lifs = {n: m for n, m in net.named_modules() if isinstance(m, esd.LIF)}
    with torch.autocast("cuda", dtype=dtype):
        spike_out = esd.spike_pass(net, x, T)
        spikes = {n: m.rate.clone() for n, m in lifs.items()}
        rate_out = esd.rate_pass(net, x)
    esd.reset_state(net)
    assert spike_out.logits.dtype == dtype
    assert all(r.dtype == torch.float32 and 0 <= float(r.min()) <= float(r.max()) <= 1
               for r in spikes.values())
    scale = float(spike_out.logits.float().abs().max())
    diff = (rate_out.logits.detach().float() - spike_out.logits.float()).abs().max()
    assert float(diff) <= 2**-6 * scale
