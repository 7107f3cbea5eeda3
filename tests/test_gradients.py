"""Gradient-error analysis: exact at T = 1, positive for T > 1, model left untouched."""

import torch

import esdlib as esd


def _setup():
    torch.manual_seed(0)
    net = esd.build_model("spiking_resnet18", 10, 1, width=0.125, aux="dsconv")
    g = torch.Generator().manual_seed(0)
    return net, torch.randn(8, 1, 16, 16, generator=g) * 2, torch.randint(0, 10, (8,), generator=g)


def test_errors_vanish_at_T1_and_appear_for_T_gt_1():
    net, x, y = _setup()
    at1 = esd.gradient_errors(net, x, y, 1)
    assert at1["K_rate"]["overall"] < 1e-4 and at1["K_esd"]["overall"] < 1e-4
    assert at1["K_rate"]["cosine"] > 0.9999
    at4 = esd.gradient_errors(net, x, y, 4)
    assert at4["K_rate"]["overall"] > 1e-2 and at4["K_esd"]["overall"] > 1e-2
    assert set(at4["K_rate"]["per_layer"]) == {n for n, p in net.named_parameters()
                                              if p.dim() >= 2 and not n.startswith("branches")}


def test_measurement_leaves_the_model_untouched():
    net, x, y = _setup()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    esd.gradient_errors(net, x, y, 2)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in net.parameters())
