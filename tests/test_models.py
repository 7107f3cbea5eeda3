"""Model shapes for every architecture and input size; parameter counts."""

import pytest
import torch

import esdlib as esd


@pytest.mark.parametrize("arch", list(esd.ARCHITECTURES))
@pytest.mark.parametrize("size,ch,time_varying", [(16, 1, False), (32, 3, False), (48, 2, True),
                                                  (224, 3, False)])
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
    if time_varying and arch == "preact_spiking_resnet34":
        # its stem max-pools analog values: the rate pass is exact for static input only
        with pytest.raises(ValueError, match="static input"):
            esd.spike_pass(net, x, T)
        return
    esd.spike_pass(net, x, T)
    r = esd.rate_pass(net, x)
    assert r.logits.shape == (B, 10) and len(r.aux_logits) == n_branches
    esd.reset_state(net)


def test_imagenet_224_forward():
    torch.manual_seed(0)
    net = esd.build_model("preact_spiking_resnet34", 1000, 3, width=0.125).eval()
    out = esd.infer(net, torch.randn(1, 3, 224, 224), 1)
    assert out.logits.shape == (1, 1000) and out.aux_logits == ()


def _n(module):
    return sum(p.numel() for p in module.parameters())


def test_resnet18_parameter_count_matches_standard_cifar_resnet18():
    net = esd.build_model("spiking_resnet18", 10, 3, 1.0, aux="dsconv")
    counts = net.parameter_counts()
    assert counts["backbone"] == 11_173_962  # the standard CIFAR ResNet-18, 10 classes
    plain = esd.build_model("spiking_resnet18", 10, 3, 1.0, aux=None)
    assert plain.parameter_counts() == {"backbone": 11_173_962, "branches": 0,
                                        "total": 11_173_962}
    assert counts["branches"] == sum(p.numel() for p in net.branches.parameters()) > 0


def test_branch_parameter_counts_equal_the_published_ones():
    r18 = esd.build_model("spiking_resnet18", 10, 3, 1.0, aux="dsconv")
    assert [_n(block) for block in r18.branches[0].blocks] == [22_272, 85_504, 334_848]
    assert [_n(branch) for branch in r18.branches] == [447_754, 425_482, 339_978]
    assert r18.parameter_counts()["branches"] == 1_213_214
    r19 = esd.build_model("spiking_resnet19", 10, 3, 1.0, aux="dsconv")
    assert r19.parameter_counts() == {"backbone": 12_697_994, "branches": 765_460,
                                      "total": 13_463_454}
    # the earlier, wider block survives only as a named ablation
    wide = esd.build_model("spiking_resnet18", 10, 3, 1.0, aux="dsconv_wide")
    assert wide.parameter_counts()["branches"] == 1_925_598


def test_published_branch_block_has_the_published_layer_order():
    block = esd.build_model("spiking_resnet18", 10, 3, 1.0, aux="dsconv").branches[0].blocks[0]
    c_in, c_out = 64, 128
    layers = list(block.body)
    kinds = [type(m).__name__ for m in layers]
    # DepthwiseConv2d: an nn.Conv2d that stays float32 under CPU autocast
    assert kinds == ["DepthwiseConv2d", "Conv2d", "BatchNorm2d", "ReLU",
                     "DepthwiseConv2d", "Conv2d", "BatchNorm2d", "ReLU"]
    assert all(isinstance(m, torch.nn.Conv2d) for m in layers if "Conv" in type(m).__name__)
    dw1, pw1, bn1, _, dw2, pw2, bn2, _ = layers
    assert (dw1.in_channels, dw1.out_channels, dw1.groups, dw1.kernel_size, dw1.stride) == (
        c_in, c_in, c_in, (3, 3), (2, 2))
    assert (pw1.in_channels, pw1.out_channels, pw1.kernel_size) == (c_in, c_in, (1, 1))
    assert bn1.num_features == c_in
    assert (dw2.in_channels, dw2.out_channels, dw2.groups, dw2.stride) == (c_in, c_in, c_in, (1, 1))
    assert (pw2.in_channels, pw2.out_channels, pw2.kernel_size) == (c_in, c_out, (1, 1))
    assert bn2.num_features == c_out
    assert all(m.bias is None for m in block.modules() if isinstance(m, torch.nn.Conv2d))
    sc_conv, sc_bn = block.shortcut
    assert (sc_conv.in_channels, sc_conv.out_channels, sc_conv.kernel_size, sc_conv.stride) == (
        c_in, c_out, (1, 1), (2, 2)) and sc_bn.num_features == c_out
    # output = ReLU(body + shortcut), with the body ending in its own ReLU
    torch.manual_seed(0)
    x = torch.randn(2, c_in, 8, 8)
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(block.body(x) + block.shortcut(x)))
        assert (block.body(x) >= 0).all()


def test_preact_resnet34_is_the_published_network():
    net = esd.build_model("preact_spiking_resnet34", 1000, 3, 1.0, aux="dsconv")
    counts = net.parameter_counts()
    assert counts["backbone"] == 21_806_184 and counts["branches"] == 19_555_512
    assert [_n(b) for b in net.branches] == [7_152_360, 6_834_664, 5_568_488]
    assert [_n(m) for m in net.branches[0].blocks] == [
        22_272, 295_424, 85_504, 1_180_672, 334_848, 4_720_640]
    assert _n(net.branches[0].fc) == 513_000
    assert sum(isinstance(m, esd.LIF) for m in net.modules()) == 32
    # stem: conv 7×7/2 with bias → BN → max pool; no neuron before the first block
    assert net.stem.conv.kernel_size == (7, 7) and net.stem.conv.bias is not None
    assert isinstance(net.stem.bn, esd.SpikeBatchNorm2d)
    assert isinstance(net.stem.pool, torch.nn.MaxPool2d)
    assert isinstance(net.pre_stage, torch.nn.Identity)
    # block: LIF → conv → BN → LIF → conv → BN, + shortcut (1×1/2 conv + BN of the analog input)
    block = net.stages[1][0]
    assert [n for n, _ in block.named_children()] == [
        "lif1", "conv1", "bn1", "lif2", "conv2", "bn2", "shortcut"]
    sc_conv, sc_bn = block.shortcut
    assert sc_conv.kernel_size == (1, 1) and sc_conv.stride == (2, 2)
    assert isinstance(sc_bn, esd.SpikeBatchNorm2d)
    # head: average of the analog stream → Linear(512, 1000)
    assert isinstance(net.head, torch.nn.Linear) and net.head.in_features == 512
    torch.manual_seed(0)
    small = esd.build_model("preact_spiking_resnet34", 10, 3, 0.125, aux=None).train()
    x = torch.randn(2, 3, 32, 32)
    seen = {}
    small.stages[0][1].register_forward_hook(lambda m, i, o: seen.update(out=o))
    esd.bptt_forward(small, x, 2)
    assert not torch.isin(seen["out"], torch.tensor([0.0, 1.0])).all()  # analog, not spikes


def test_dsconv_branches_are_cheaper_than_conv_branches():
    ds = esd.build_model("spiking_resnet18", 10, 3, 1.0, aux="dsconv").parameter_counts()
    cv = esd.build_model("spiking_resnet18", 10, 3, 1.0, aux="conv").parameter_counts()
    assert ds["backbone"] == cv["backbone"] and ds["branches"] < cv["branches"] / 4


@pytest.mark.parametrize("arch,size,window,map_size", [
    ("spiking_resnet18", 32, 4, 4), ("spiking_resnet18", 48, 4, 6),
    ("spiking_resnet19", 32, 6, 8), ("preact_spiking_resnet34", 224, 4, 7),
])
def test_published_branch_pooling_sees_the_top_left_window(arch, size, window, map_size):
    assert esd.PUBLISHED_BRANCH_POOL[arch] == window
    assert esd.final_map_size(arch, size) == map_size
    torch.manual_seed(0)
    net = esd.build_model(arch, 10, 3, 0.125, branch_pool="published").eval()
    branch = net.branches[-1]
    h = torch.randn(2, branch.fc.in_features, map_size, map_size)
    with torch.no_grad():
        pooled = h[:, :, :window, :window].mean((2, 3))
        torch.testing.assert_close(branch.fc(branch.pool(h).flatten(1)), branch.fc(pooled))
    esd.check_branch_pool(arch, size, "published")  # the paper's sizes work


@pytest.mark.parametrize("arch,size", [("spiking_resnet19", 48), ("preact_spiking_resnet34", 96),
                                       ("spiking_resnet18", 16)])
def test_published_branch_pooling_fails_clearly_where_the_published_code_fails(arch, size):
    with pytest.raises(ValueError, match=r"AvgPool2d\(\d, \d\).*working input sizes"):
        esd.check_branch_pool(arch, size, "published")
    esd.check_branch_pool(arch, size, "global")  # global pooling works at any size
    net = esd.build_model(arch, 10, 3, 0.125, branch_pool="published").train()
    with pytest.raises(ValueError, match="branch_pool='published'"):
        esd.bptt_forward(net, torch.randn(2, 3, size, size), 1)


def test_preact_resnet34_published_pooling_works_from_97_px():
    esd.check_branch_pool("preact_spiking_resnet34", 97, "published")
    with pytest.raises(ValueError, match="97-"):
        esd.check_branch_pool("preact_spiking_resnet34", 96, "published")


def test_width_multiplier_scales_channels():
    net = esd.build_model("spiking_resnet18", 10, 3, width=0.25, aux=None)
    assert net.stem.conv.out_channels == 16 and net.head.in_features == 128


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="resnet50"), "unknown architecture"),
    (dict(aux="mlp"), "aux must be one of"),
    (dict(branch_pool="max"), "branch_pool must be one of"),
    (dict(width=0), "width"),
    (dict(neuron=dict(decay=0.2)), "LIFParams"),
])
def test_build_model_rejects_bad_arguments(kwargs, match):
    args = dict(name="spiking_resnet18", num_classes=10) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        esd.build_model(**args)


def test_time_varying_input_must_match_T():
    net = esd.build_model("spiking_resnet18", 10, 2, width=0.125)
    with pytest.raises(ValueError, match="frames but T"):
        esd.bptt_forward(net, torch.randn(3, 2, 2, 16, 16), 4)


def test_mode_context_restores_previous_mode():
    net = esd.build_model("spiking_resnet18", 10, 3, width=0.125)
    with esd.mode(net, "spike", 5):
        assert {m.mode for m in net.modules() if isinstance(m, esd.ModeAware)} == {"spike"}
    assert {(m.mode, m.T) for m in net.modules() if isinstance(m, esd.ModeAware)} \
        == {("multistep", 1)}
