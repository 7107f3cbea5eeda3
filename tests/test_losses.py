"""Loss tables computed by hand, including unreliable samples and a batch with none reliable."""

import math

import pytest
import torch

import esdlib as esd

TAU = 3.0
# Two outputs (branch, main), three samples, K = 3.
BRANCH = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
MAIN = [[1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0]]
Y = [0, 1, 1]
# sample 0: both correct -> teacher logits mean = [1.5, 0, 0]
# sample 1: branch correct only -> teacher = [0, 1, 0]
# sample 2: none correct -> unreliable


def _softmax(v, t=1.0):
    e = [math.exp(a / t) for a in v]
    return [a / sum(e) for a in e]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def _ce(z, y):
    return -math.log(_softmax(z)[y])


def _outputs(requires_grad=False):
    return [torch.tensor(BRANCH, requires_grad=requires_grad),
            torch.tensor(MAIN, requires_grad=requires_grad)]


def test_reliable_teacher_logit_space():
    t = esd.reliable_teacher(_outputs(), torch.tensor(Y), TAU, "logits")
    assert t.reliable.tolist() == [True, True, False]
    assert t.n_correct.tolist() == [2, 1, 0]
    torch.testing.assert_close(t.probs[0], torch.tensor(_softmax([1.5, 0, 0], TAU)))
    torch.testing.assert_close(t.probs[1], torch.tensor(_softmax([0, 1, 0], TAU)))
    assert t.probs[2].abs().sum() == 0


def test_reliable_teacher_probability_space():
    t = esd.reliable_teacher(_outputs(), torch.tensor(Y), TAU, "probs")
    p = [(a + b) / 2 for a, b in zip(_softmax(BRANCH[0], TAU), _softmax(MAIN[0], TAU), strict=True)]
    torch.testing.assert_close(t.probs[0], torch.tensor(p))


def test_esd_loss_hand_computed():
    cfg = esd.LossConfig(alpha=1.0, beta=0.3, tau=TAU)
    lo = esd.esd_loss(_outputs(), torch.tensor(Y), cfg)
    hard = sum(_ce(z, y) for out in (BRANCH, MAIN) for z, y in zip(out, Y, strict=True)) / 3
    teachers = {0: _softmax([1.5, 0, 0], TAU), 1: _softmax([0, 1, 0], TAU)}
    soft = sum(TAU**2 * sum(_kl(teachers[i], _softmax(out[i], TAU)) for i in (0, 1)) / 2
               for out in (BRANCH, MAIN))
    assert lo.hard.item() == pytest.approx(hard, rel=1e-6)
    assert lo.soft.item() == pytest.approx(soft, rel=1e-5)
    assert lo.total.item() == pytest.approx(hard + 0.3 * soft, rel=1e-5)
    assert lo.diagnostics["reliable_fraction"] == pytest.approx(2 / 3)
    assert lo.diagnostics["acc_branch1"] == pytest.approx(2 / 3)
    assert lo.diagnostics["acc_main"] == pytest.approx(1 / 3)


def test_branch_weight_alpha():
    lo = esd.esd_loss(_outputs(), torch.tensor(Y), esd.LossConfig(alpha=0.7, beta=0.0))
    hard = (0.7 * sum(_ce(z, y) for z, y in zip(BRANCH, Y, strict=True))
            + sum(_ce(z, y) for z, y in zip(MAIN, Y, strict=True))) / 3
    assert lo.total.item() == pytest.approx(hard, rel=1e-6)


def test_standard_sd_uses_all_outputs_and_all_samples():
    lo = esd.sd_loss(_outputs(), torch.tensor(Y), esd.LossConfig(tau=TAU))
    soft = 0.0
    for out in (BRANCH, MAIN):
        for i in range(3):
            t = _softmax([(a + b) / 2 for a, b in zip(BRANCH[i], MAIN[i], strict=True)], TAU)
            soft += TAU**2 * _kl(t, _softmax(out[i], TAU)) / 3
    assert lo.soft.item() == pytest.approx(soft, rel=1e-5)
    assert lo.diagnostics["reliable_fraction"] == 1.0


def test_no_reliable_sample_gives_finite_loss_and_zero_soft_term():
    outs = [torch.tensor([[0.0, 3.0]], requires_grad=True),
            torch.tensor([[0.0, 1.0]], requires_grad=True)]
    lo = esd.esd_loss(outs, torch.tensor([0]), esd.LossConfig())
    assert lo.soft.item() == 0.0 and torch.isfinite(lo.total)
    assert lo.diagnostics["reliable_fraction"] == 0.0
    lo.total.backward()
    assert all(torch.isfinite(o.grad).all() for o in outs)
    assert lo.total.item() == pytest.approx(_ce([0, 3], 0) + _ce([0, 1], 0), rel=1e-6)


def test_eta_term_applies_to_unreliable_samples_only():
    cfg = esd.LossConfig(beta=0.0, eta=0.5, tau=TAU)
    lo = esd.esd_loss(_outputs(), torch.tensor(Y), cfg)
    # R(z) = log K - H(softmax(z / tau)) on sample 2 only, summed over outputs
    r = 0.0
    for out in (BRANCH, MAIN):
        p = _softmax(out[2], TAU)
        r += math.log(3) + sum(a * math.log(a) for a in p)
    assert lo.unreliable.item() == pytest.approx(r, rel=1e-5)
    lo0 = esd.esd_loss(_outputs(), torch.tensor(Y), esd.LossConfig(beta=0.0))
    assert lo.total.item() == pytest.approx(lo0.total.item() + 0.5 * r, rel=1e-6)


def test_teacher_is_detached():
    outs = _outputs(requires_grad=True)
    cfg = esd.LossConfig(alpha=0.0, beta=1.0, tau=TAU)
    lo = esd.esd_loss(outs, torch.tensor(Y), cfg)
    lo.soft.backward()
    # d/dz of tau^2 KL(p_t || softmax(z/tau)) = tau (q - p_t) for reliable rows (mean over 2)
    q = torch.softmax(torch.tensor(MAIN) / TAU, 1)
    t = esd.reliable_teacher(_outputs(), torch.tensor(Y), TAU).probs
    expected = TAU * (q - t) / 2
    expected[2] = 0
    torch.testing.assert_close(outs[1].grad, expected)


def test_loss_config_validation():
    with pytest.raises(ValueError, match="teacher_space"):
        esd.LossConfig(teacher_space="votes")
    with pytest.raises(ValueError, match="beta"):
        esd.LossConfig(beta=-1)
    with pytest.raises(ValueError, match="tau"):
        esd.LossConfig(tau=0)


def test_float64_esd_loss_and_gradients_equal_a_float64_hand_computation():
    """The teacher is built in the outputs' precision (at least float32): exact in float64."""
    g = torch.Generator().manual_seed(0)
    L, B, K, tau, alpha, beta = 3, 16, 5, TAU, 0.7, 0.3
    outputs = [(torch.randn(B, K, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
               for _ in range(L)]
    y = torch.randint(0, K, (B,), generator=g)
    lib = esd.esd_loss(outputs, y, esd.LossConfig(alpha=alpha, beta=beta, tau=tau))
    lib.total.backward()
    # reference: the formulas written per sample, all in float64
    ref_outs = [o.detach().clone().requires_grad_(True) for o in outputs]
    log_q = [torch.log_softmax(z / tau, 1) for z in ref_outs]
    soft, n_reliable = 0.0, 0
    for i in range(B):
        correct = [z[i].detach() for z in ref_outs if int(z[i].argmax()) == int(y[i])]
        if not correct:
            continue
        n_reliable += 1
        p = torch.softmax(torch.stack(correct).mean(0) / tau, 0)
        soft = soft + sum(tau**2 * (p * (p.log() - lq[i])).sum() for lq in log_q)
    assert 0 < n_reliable < B  # the batch mixes reliable and unreliable samples
    soft = soft / n_reliable
    hard = torch.nn.functional.cross_entropy(ref_outs[-1], y) + alpha * sum(
        torch.nn.functional.cross_entropy(z, y) for z in ref_outs[:-1])
    total = hard + beta * soft
    total.backward()
    assert lib.total.dtype == torch.float64
    torch.testing.assert_close(lib.soft, soft, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lib.total, total, rtol=1e-12, atol=1e-12)
    for o, r in zip(outputs, ref_outs, strict=True):
        torch.testing.assert_close(o.grad, r.grad, rtol=1e-12, atol=1e-12)


def test_teacher_of_half_precision_outputs_is_computed_in_float32():
    z = [torch.randn(4, 3).half(), torch.randn(4, 3).half()]
    t = esd.reliable_teacher(z, torch.tensor([0, 1, 2, 0]))
    assert t.probs.dtype == torch.float32
