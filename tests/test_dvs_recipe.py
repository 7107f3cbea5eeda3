"""The DVS points of the book's grid (esdbook.reproduce.grid_points) follow the published
scripts' loss scaling.

The official RateBP DVS script trains with plain cross-entropy; only its CIFAR script (and every
official ESD script) divides the loss by T. With 1/T on emulated DVS the RateBP baseline stayed
at chance (train loss 2.35 -> 2.29, test 20 %) while the unscaled one reached 82 %.
"""

from esdbook.reproduce import grid_points


def _dvs_points(profile):
    points = {}
    for p in grid_points(profile, only=["dvs"]):
        assert points.setdefault(p.config.method, p.config).rate_grad_scale == \
            p.config.rate_grad_scale, "one recipe per method across seeds"
    return points


def test_default_dvs_ratebp_uses_the_published_unscaled_gradient():
    points = _dvs_points("default")
    assert points["ratebp"].rate_grad_scale == "none"
    assert points["ratebp"].dataset == "dvs_digits_hard"


def test_default_dvs_esd_keeps_the_official_one_over_T():
    points = _dvs_points("default")
    assert points["esd"].rate_grad_scale == "1/T"
    assert {"ratebp", "esd", "esd_bptt"} <= set(points)
