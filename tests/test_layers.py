"""The layers (esdlib.layers), SpikeConv2d: the rate pass reuses the spike pass's output; value
and gradients are those of the convolution."""

import pytest
import torch

import esdlib as esd


def _spikes(T, B, C, H, seed=0, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(T * B, C, H, H, generator=g) < 0.3).float()
    return s.contiguous(memory_format=torch.channels_last) if channels_last else s


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kernel,stride", [(3, 1), (3, 2), (1, 2)])
def test_rate_mode_value_and_gradients_equal_the_convolution_of_the_rate(kernel, stride,
                                                                          channels_last, bias):
    T, B = 4, 3
    torch.manual_seed(0)
    conv = esd.SpikeConv2d(5, 6, kernel, stride, kernel // 2, bias=bias)
    ref = torch.nn.Conv2d(5, 6, kernel, stride, kernel // 2, bias=bias)
    ref.load_state_dict(conv.state_dict())
    s = _spikes(T, B, 5, 8, channels_last=channels_last)
    with esd.mode(conv, "spike", T), torch.no_grad():
        y = conv(s)
    torch.testing.assert_close(y, ref(s))  # spike mode is a plain convolution
    rate = s.view(T, B, *s.shape[1:]).mean(0).requires_grad_(True)
    rate_ref = rate.detach().clone().requires_grad_(True)
    with esd.mode(conv, "rate", 1):
        out = conv(rate)
    out_ref = ref(rate_ref)
    torch.testing.assert_close(out, out_ref, atol=1e-6, rtol=1e-5)
    g = torch.randn_like(out_ref)
    out.backward(g)
    out_ref.backward(g)
    torch.testing.assert_close(rate.grad, rate_ref.grad)
    torch.testing.assert_close(conv.weight.grad, ref.weight.grad)
    if bias:  # the recorded output holds the bias; its gradient is Σ of the output gradient
        torch.testing.assert_close(conv.bias.grad, ref.bias.grad)
        torch.testing.assert_close(conv.bias.grad, g.sum((0, 2, 3)))
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_rate_mode_needs_a_spike_pass_on_the_same_batch():
    conv = esd.SpikeConv2d(2, 2, 3, 1, 1)
    with esd.mode(conv, "rate", 1), pytest.raises(RuntimeError, match="run spike_pass first"):
        conv(torch.zeros(1, 2, 4, 4))
    with esd.mode(conv, "spike", 2), torch.no_grad():
        conv(torch.zeros(4, 2, 4, 4))
    with esd.mode(conv, "rate", 1), pytest.raises(RuntimeError, match="same batch"):
        conv(torch.zeros(3, 2, 4, 4))
    esd.reset_state(conv)
    assert conv.rate_out is None


def test_rate_pass_runs_no_forward_convolution_in_the_backbone():
    torch.manual_seed(0)
    net = esd.build_model("spiking_resnet18", num_classes=10, in_channels=3, width=0.125)
    calls = []
    orig = torch.nn.Conv2d._conv_forward

    def counting(self, x, w, b):
        calls.append(type(self).__name__)
        return orig(self, x, w, b)

    x = torch.randn(2, 3, 16, 16)
    net.train()
    esd.spike_pass(net, x, 3)
    torch.nn.Conv2d._conv_forward = counting
    try:
        esd.rate_pass(net, x, aux=False)
    finally:
        torch.nn.Conv2d._conv_forward = orig
        esd.reset_state(net)
    assert calls == ["Conv2d"]  # the stem only; every SpikeConv2d reuses its record


@pytest.mark.parametrize("channels_last", [False, True])
def test_time_average_equals_the_mean_over_steps_and_keeps_the_layout(channels_last):
    x = _spikes(3, 4, 5, 6, channels_last=channels_last) + torch.randn(12, 5, 6, 6)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    avg = esd.time_average(x, 3)
    torch.testing.assert_close(avg, x.view(3, 4, 5, 6, 6).mean(0))
    assert avg.is_contiguous(memory_format=torch.channels_last) == channels_last
    with pytest.raises(RuntimeError, match="multiple of T"):
        esd.time_average(x, 5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("c_in,c_out,kernel,stride,padding,size", [
    (8, 6, 3, 1, 1, 4), (8, 6, 3, 2, 1, 5), (4, 8, 1, 2, 0, 6), (3, 5, 3, 1, 0, 7),
])
def test_gemm_weight_gradient_equals_the_convolution_backward(c_in, c_out, kernel, stride,
                                                              padding, size, channels_last):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, c_in, size, size, generator=g, dtype=torch.float64)
    w = torch.randn(c_out, c_in, kernel, kernel, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = torch.nn.functional.conv2d(x, w, stride=stride, padding=padding)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (ref,) = torch.autograd.grad(torch.nn.functional.conv2d(x, w.requires_grad_(True),
                                                            stride=stride, padding=padding),
                                 w, grad)
    got = esd.layers.conv_weight_grad_gemm(grad, x, (kernel, kernel), (stride, stride),
                                           (padding, padding))
    torch.testing.assert_close(got, ref)


def test_every_mode_aware_module_rejects_an_unknown_mode():
    net = esd.build_model("spiking_resnet18", num_classes=10, in_channels=3, width=0.125)
    kinds = {type(m) for m in net.modules() if isinstance(m, esd.ModeAware)}
    assert {esd.SpikeConv2d, esd.SpikeBatchNorm2d, esd.LIF, esd.SpikingNet} <= kinds
    for kind in kinds:
        module = next(m for m in net.modules() if type(m) is kind)
        with pytest.raises(ValueError, match="mode must be one of"):
            module.set_mode("nope", 1)
        module.set_mode("spike", 3)
        assert (module.mode, module.T) == ("spike", 3)
