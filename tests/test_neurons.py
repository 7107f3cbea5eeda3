"""LIF neuron: golden trajectory, equation identities, eligibility closed forms."""

import math

import pytest
import torch

import esdlib as esd

X = [0.5, 0.95, 1.2, 0.0, 2.5, 0.3, 0.3, 0.3, -0.4, 1.0]
# Hand-computed with λ = 0.2, θ = 1, soft reset: v[t] = 0.2 v[t-1] + x[t]; spike if v ≥ 1; v -= 1.
V_PRE = [0.5, 1.05, 1.21, 0.042, 2.5084, 0.60168, 0.420336, 0.3840672, -0.32318656, 0.935362688]
SPIKES = [0, 1, 1, 0, 1, 0, 0, 0, 0, 0]


def _trace(params, xs):
    state, vs, ss = None, [], []
    for x in xs:
        v_prev = torch.zeros_like(x) if state is None else state.v
        vs.append(esd.charge(x, v_prev, params.decay))
        s, state = esd.lif_step(x, state, params)
        ss.append(s)
    return torch.stack(vs), torch.stack(ss)


def test_golden_trajectory_soft_reset():
    xs = torch.tensor(X, dtype=torch.float64).unsqueeze(1)
    v, s = _trace(esd.LIFParams(decay=0.2), xs)
    torch.testing.assert_close(v.squeeze(1), torch.tensor(V_PRE, dtype=torch.float64))
    assert s.squeeze(1).tolist() == SPIKES


def test_hard_reset_trajectory():
    xs = torch.tensor([1.5, 0.5, 0.9], dtype=torch.float64).unsqueeze(1)
    v, s = _trace(esd.LIFParams(decay=0.5, reset="hard"), xs)
    # t0: v=1.5 spike -> 0; t1: v=0.5; t2: v=0.25+0.9=1.15 spike
    torch.testing.assert_close(v.squeeze(1), torch.tensor([1.5, 0.5, 1.15], dtype=torch.float64))
    assert s.squeeze(1).tolist() == [1, 0, 1]


def test_charge_identity_before_reset():
    torch.manual_seed(0)
    xs = torch.randn(12, 5, dtype=torch.float64)
    p = esd.LIFParams(decay=0.3)
    v, s = _trace(p, xs)
    for t in range(1, 12):
        v_post = v[t - 1] - p.v_threshold * s[t - 1]
        torch.testing.assert_close(v[t], 0.3 * v_post + xs[t])


@pytest.mark.parametrize("reset", esd.RESET_MODES)
def test_functional_equals_module(reset):
    torch.manual_seed(1)
    T, B = 6, 3
    x = torch.randn(T * B, 4, 2, 2) * 1.5
    lif = esd.LIF(esd.LIFParams(decay=0.2, reset=reset))
    lif.set_mode("multistep", T)
    out = lif(x)
    ref = esd.lif_multistep(x.view(T, B, 4, 2, 2), esd.LIFParams(0.2, reset=reset))
    torch.testing.assert_close(out.view(T, B, 4, 2, 2), ref)
    with torch.no_grad():  # the fused inference path gives the same spikes
        torch.testing.assert_close(lif(x).view(T, B, 4, 2, 2), ref)
    # the spike pass produces the same spikes
    spikes, rate, _ = esd.lif_spike_pass(x.view(T, B, 4, 2, 2), lif.params())
    torch.testing.assert_close(spikes, ref)
    torch.testing.assert_close(rate, ref.mean(0))


def test_surrogate_is_heaviside_derivative_surrogate():
    u = torch.linspace(-2, 2, 21, dtype=torch.float64, requires_grad=True)
    esd.heaviside(u, 4.0).sum().backward()
    sig = torch.sigmoid(4 * u.detach())
    torch.testing.assert_close(u.grad, 4 * sig * (1 - sig))


def test_eligibility_soft_reset_closed_form():
    torch.manual_seed(2)
    T, lam, alpha = 5, 0.2, 4.0
    x = torch.rand(T, 7, dtype=torch.float64) * 2
    p = esd.LIFParams(decay=lam)
    _, _, e = esd.lif_spike_pass(x, p)
    v, _ = _trace(p, x)
    expected = torch.zeros(7, dtype=torch.float64)
    for t in range(T):
        kappa = sum(lam**k for k in range(t + 1))
        sig = 1 / (1 + torch.exp(-alpha * (v[t] - 1)))
        expected += alpha * sig * (1 - sig) * kappa
    torch.testing.assert_close(e, expected / T)


@pytest.mark.parametrize("reset", esd.RESET_MODES)
@pytest.mark.parametrize("T", [1, 3, 8])
def test_eligibility_equals_bptt_derivative_for_constant_input(reset, T):
    """e = d(mean_t s[t]) / dx for a constant input x, computed by autograd through time."""
    x = torch.linspace(-0.5, 2.5, 31, dtype=torch.float64)
    p = esd.LIFParams(decay=0.2, reset=reset)
    _, rate, e = esd.lif_spike_pass(x.expand(T, -1).clone(), p)
    xg = x.clone().requires_grad_(True)
    s = esd.lif_multistep(xg.expand(T, -1), p)
    s.mean(0).sum().backward()
    torch.testing.assert_close(rate, s.detach().mean(0))
    torch.testing.assert_close(e, xg.grad)


def test_lif_rate_pass_value_and_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    r, e = torch.rand(4, 3), torch.rand(4, 3)
    out = esd.lif_rate_pass(x, r, e)
    torch.testing.assert_close(out, r)
    out.sum().backward()
    torch.testing.assert_close(x.grad, e)


def test_invalid_parameters_raise():
    with pytest.raises(ValueError, match="decay"):
        esd.LIF(esd.LIFParams(decay=1.2))
    with pytest.raises(ValueError, match="reset"):
        esd.LIFParams(reset="sideways")
    with pytest.raises(RuntimeError, match="spike_pass first"):
        lif = esd.LIF()
        lif.set_mode("rate", 1)
        lif(torch.zeros(2, 3))


def test_decay_logit_roundtrip():
    lif = esd.LIF(esd.LIFParams(decay=0.2))
    assert math.isclose(float(torch.sigmoid(lif.decay_logit)), 0.2, rel_tol=1e-6)
    assert not any(True for _ in lif.parameters())
