"""Model shapes for every architecture and input size; parameter counts."""

import pytest
import torch

import esdlib as esd


@pytest.mark.parametrize("arch", list(esd.ARCHITECTURES))
@pytest.mark.parametrize("size,ch,time_varying", [(16, 1, False), (32, 3, False), (48, 2, True)])
def test_shapes_all_architectures(arch, size, ch, time_varying):
    torch.manual_seed(0)
    net = esd.build_model(arch, num_classes=10, in_channels=ch, width=0.125).train()
    T, B = 2, 2
    x = torch.randn(T, B, ch, size, size) if time_varying else torch.randn(B, ch, size, size)
    out = esd.bptt_forward(net, x, T)
    n_branches = 2 if arch == "spiking_resnet19" else 3
    assert out.logits.shape == (B, 10)
    assert len(out.aux_logits) == n_branches
    assert all(z.shape == (B, 10) for z in out.aux_logits)
    esd.spike_pass(net, x, T)
    r = esd.rate_pass(net, x)
    assert r.logits.shape == (B, 10) and len(r.aux_logits) == n_branches
    esd.reset_state(net)


def test_imagenet_224_forward():
    torch.manual_seed(0)
    net = esd.build_model("preact_spiking_resnet34", 1000, 3, width=0.125).eval()
    out = esd.infer(net, torch.randn(1, 3, 224, 224), 1)
    assert out.logits.shape == (1, 1000) and out.aux_logits == ()


def test_resnet18_parameter_count_matches_standard_cifar_resnet18():
    net = esd.build_model("spiking_resnet18", 10, 3, 1.0, aux="dsconv")
    counts = net.parameter_counts()
    assert counts["backbone"] == 11_173_962  # the standard CIFAR ResNet-18, 10 classes
    plain = esd.build_model("spiking_resnet18", 10, 3, 1.0, aux=None)
    assert plain.parameter_counts() == {"backbone": 11_173_962, "branches": 0,
                                        "total": 11_173_962}
    assert counts["branches"] == sum(p.numel() for p in net.branches.parameters()) > 0


def test_dsconv_branches_are_cheaper_than_conv_branches():
    ds = esd.build_model("spiking_resnet18", 10, 3, 1.0, aux="dsconv").parameter_counts()
    cv = esd.build_model("spiking_resnet18", 10, 3, 1.0, aux="conv").parameter_counts()
    assert ds["backbone"] == cv["backbone"] and ds["branches"] < cv["branches"] / 4


def test_width_multiplier_scales_channels():
    net = esd.build_model("spiking_resnet18", 10, 3, width=0.25, aux=None)
    assert net.stem.conv.out_channels == 16 and net.head.in_features == 128


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="resnet50"), "unknown architecture"),
    (dict(aux="mlp"), "aux must be one of"),
    (dict(width=0), "width"),
    (dict(decay=0.0), "decay"),
])
def test_build_model_rejects_bad_arguments(kwargs, match):
    args = dict(name="spiking_resnet18", num_classes=10) | kwargs
    with pytest.raises(ValueError, match=match):
        esd.build_model(**args)


def test_time_varying_input_must_match_T():
    net = esd.build_model("spiking_resnet18", 10, 2, width=0.125)
    with pytest.raises(ValueError, match="frames but T"):
        esd.bptt_forward(net, torch.randn(3, 2, 2, 16, 16), 4)


def test_mode_context_restores_previous_mode():
    net = esd.build_model("spiking_resnet18", 10, 3, width=0.125)
    with esd.mode(net, "spike", 5):
        assert {m.mode for m in net.modules() if hasattr(m, "set_mode")} == {"spike"}
    assert {(m.mode, m.T) for m in net.modules() if hasattr(m, "set_mode")} == {("multistep", 1)}
