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
