"""The verdict rule (esdlib.analysis.paired), the claims' paired statistics, convergence flags and
the fresh-run comparison (esdlib.analysis.evidence) on the book's claims (esdbook.claims), checked
against hand computations on small tables."""

import json
import math

import pandas as pd
import pytest

from esdbook.claims import CLAIMS, PARITY_CLAIMS
from esdlib.analysis import evidence
from esdlib.analysis.evidence import (
    NO_VERDICT,
    Cell,
    Claim,
    cell_runs,
    claim_differences,
    claims_table,
    compare_cells,
    compare_verdicts,
    convergence_table,
    paired_verdict,
)

T_0975_DF4 = 2.7764451051977987  # Student-t 97.5 % quantile with 4 degrees of freedom


def test_interval_is_the_student_t_interval_by_hand():
    v = paired_verdict({0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 5.0})
    half = T_0975_DF4 * math.sqrt(2.5) / math.sqrt(5)  # sd = sqrt(2.5)
    assert v.n == 5 and v.mean == pytest.approx(3.0)
    assert v.ci_low == pytest.approx(3.0 - half) and v.ci_high == pytest.approx(3.0 + half)
    assert v.verdict == "supported"
    assert v.differences == ((0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0), (4, 5.0))


@pytest.mark.parametrize("diffs, verdict", [
    ([-1.0, -2.0, -3.0, -4.0, -5.0], "contradicted"),
    ([1.0, -1.0, 0.5, -0.5, 0.2], "not separable"),
    ([0.3, 0.4, 0.35, 0.45, 0.3], "supported"),
    ([1.0, 1.0, 1.0, 1.0], NO_VERDICT),  # four seeds: indicative only, however clear
    ([2.0], NO_VERDICT),
    ([], NO_VERDICT),
])
def test_three_valued_rule(diffs, verdict):
    assert paired_verdict(dict(enumerate(diffs))).verdict == verdict


def test_a_mean_far_from_zero_with_spread_is_not_separable():
    # mean +2 but one seed at -6: the interval covers 0, so no verdict for the paper
    v = paired_verdict({0: 4.0, 1: 4.0, 2: 4.0, 3: 4.0, 4: -6.0})
    assert v.mean == pytest.approx(2.0) and v.ci_low < 0 < v.ci_high
    assert v.verdict == "not separable"


@pytest.mark.parametrize("kwargs, needle", [
    ({"confidence": 1.0}, "confidence"), ({"confidence": 0.0}, "confidence"),
    ({"min_pairs": 1}, "min_pairs"),
])
def test_bad_rule_parameters_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        paired_verdict({0: 1.0, 1: 2.0}, **kwargs)


def test_non_finite_difference_is_refused():
    with pytest.raises(ValueError, match="seed"):
        paired_verdict({0: 1.0, 1: math.nan, 2: 1.0})


def _runs(rows):
    """A load_records-like table from (experiment, method, T, seed, acc, firing) tuples."""
    return pd.DataFrame([
        {"run_id": f"{e}-{m}-T{t}-s{s}", "experiment": e, "status": "complete",
         "config.method": m, "config.T": t, "config.seed": s, "config.beta": 0.3,
         "config.rate_grad_scale": "1/T",
         "config.arch": "spiking_resnet18",
         "metrics.final_test_acc": acc, "metrics.firing_rate_mean": fr, "path": ""}
        for e, m, t, s, acc, fr in rows])


def test_claim_statistic_is_paired_by_seed_and_signed_in_the_paper_direction():
    df = _runs([("table1", "esd", 4, s, 0.80 + 0.01 * s, 0.10) for s in range(5)]
               + [("table1", "ratebp", 4, s, 0.79, 0.20) for s in range(6)]
               + [("table1", "bptt", 4, s, 0.70, 0.30) for s in range(5)])
    claim = next(c for c in CLAIMS if c.key == "esd>ratebp")
    d = claim_differences(df, claim)
    assert sorted(d) == [0, 1, 2, 3, 4]  # seed 5 has no ESD run: not paired, left out
    assert d[0] == pytest.approx(1.0) and d[4] == pytest.approx(5.0)  # points
    firing = next(c for c in CLAIMS if c.key == "firing:esd<bptt")
    assert claim_differences(df, firing)[2] == pytest.approx(20.0)  # BPTT − ESD, in %
    table = claims_table(df, CLAIMS, chapter="04_table1_static").set_index("key")
    assert table.loc["esd>ratebp", "verdict"] == "supported"
    assert table.loc["esd>ratebp@T2", "n"] == 0
    assert table.loc["esd>ratebp@T2", "verdict"] == NO_VERDICT


def test_difference_of_differences_by_hand():
    gains = {2: (0.9, 0.8), 6: (0.95, 0.93)}  # (esd, ratebp) per T: gains 10 and 2 points
    df = _runs([("table1", m, t, s, acc + 0.001 * s, 0.1)
                for s in range(5) for t, (e, r) in gains.items()
                for m, acc in (("esd", e), ("ratebp", r))])
    claim = next(c for c in CLAIMS if c.key == "gain@T2>gain@T6")
    assert claim_differences(df, claim) == pytest.approx({s: 8.0 for s in range(5)})


def test_a_cell_with_two_runs_of_one_seed_is_an_error():
    df = _runs([("table1", "esd", 4, 0, 0.8, 0.1), ("table1", "esd", 4, 0, 0.7, 0.1)])
    with pytest.raises(ValueError, match="seed"):
        cell_runs(df, Cell("table1", {"method": "esd", "T": 4}))
    row = claims_table(df, CLAIMS, chapter="04_table1_static").set_index("key").loc["esd>ratebp"]
    assert row["verdict"].startswith("cannot decide:") and row["n"] == 0


def test_runs_of_another_network_are_not_mixed_into_a_cell():
    df = _runs([("table1", "esd", 4, s, 0.8, 0.1) for s in range(5)])
    other = df.assign(**{"config.arch": "spiking_resnet19", "metrics.final_test_acc": 0.1})
    claim = next(c for c in CLAIMS if c.key == "esd>ratebp")
    cell = claim.terms[0][1]
    assert cell_runs(pd.concat([df, other]), cell)["metrics.final_test_acc"].eq(0.8).all()


def test_incomplete_runs_do_not_count():
    df = _runs([("table1", "esd", 4, s, 0.9, 0.1) for s in range(5)])
    df.loc[0, "status"] = "running"
    assert sorted(cell_runs(df, Cell("table1", {"method": "esd"})).index) == [1, 2, 3, 4]


def _record_file(tmp_path, name, accs):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"history": [{"epoch": i + 1, "test_acc": a}
                                            for i, a in enumerate(accs)]}))
    return str(path)


def test_convergence_flags_a_run_still_rising_not_one_that_jitters(tmp_path):
    df = _runs([("table1", "esd", 4, s, 0.9, 0.1) for s in range(3)])
    df["path"] = [_record_file(tmp_path, "jitter", [0.5, 0.80, 0.83, 0.80, 0.83]),
                  _record_file(tmp_path, "rising", [0.5, 0.70, 0.74, 0.78, 0.82]),
                  _record_file(tmp_path, "short", [0.5, 0.80, 0.80])]
    table = convergence_table(df, window=2, threshold=2.0).set_index("seed")
    # jitter: (80 + 83) / 2 - (83 + 80) / 2 = 0; rising: (78 + 82) / 2 - (70 + 74) / 2 = 8
    assert table.loc[0, "converged"] and table.loc[0, "final_trend"] == pytest.approx(0.0)
    assert not table.loc[1, "converged"] and table.loc[1, "final_trend"] == pytest.approx(8.0)
    assert not table.loc[2, "converged"] and math.isnan(table.loc[2, "final_trend"])


def test_gradient_gap_is_the_mean_of_k_rate_minus_k_esd(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"extra": {"gradient_error": [
        {"K_rate": 0.9, "K_esd": 0.7}, {"K_rate": 0.8, "K_esd": 0.8}]}}))
    df = _runs([("gradient_error", "esd", 4, 0, 0.9, 0.1)])
    df["path"] = [str(path)]
    claim = next(c for c in CLAIMS if c.key == "K_esd<=K_rate")
    assert claim_differences(df, claim) == pytest.approx({0: 0.1})


def test_every_claim_is_checked_once():
    keys = [c.key for c in CLAIMS]
    assert len(keys) == len(set(keys))
    compared = [frozenset((coef, c.label) for coef, c in claim.terms) for claim in CLAIMS]
    assert len(compared) == len(set(compared)), "a comparison is counted twice"


def test_fresh_comparison_says_which_verdicts_hold():
    rows = [("table1", m, 4, s, acc + 0.002 * s, 0.1)
            for s in range(5) for m, acc in (("esd", 0.85), ("ratebp", 0.80))]
    committed = _runs(rows)
    same = compare_verdicts(committed, committed, CLAIMS).set_index("key")
    assert same["holds"].all() and same.loc["esd>ratebp", "verdict_fresh"] == "supported"
    flipped = _runs([(e, {"esd": "ratebp", "ratebp": "esd"}[m], t, s, a, f)
                     for e, m, t, s, a, f in rows])
    diff = compare_verdicts(committed, flipped, CLAIMS).set_index("key")
    assert not diff.loc["esd>ratebp", "holds"]
    assert diff.loc["esd>ratebp", "verdict_fresh"] == "contradicted"
    cells = compare_cells(committed, flipped, CLAIMS).set_index(["cell", "metric"])
    key = ("table1: method=esd, T=4, arch=spiking_resnet18", "final test accuracy")
    assert cells.loc[key, "difference"] == \
        pytest.approx(-5.0)


def test_custom_claim_with_one_term():
    claim = Claim("x", "ch", "x", "final_test_acc", ((1.0, Cell("e", {"method": "esd"})),))
    df = _runs([("e", "esd", 4, s, 0.5, 0.1) for s in range(5)])
    assert evidence.claims_table(df, [claim]).loc[0, "mean"] == pytest.approx(50.0)


def test_grid_may_be_a_list_of_grids():
    from esdbook.reproduce import expand_grid

    points = expand_grid({"base": {"epochs": 2},
                          "grid": [{"method": ["a", "b"], "seed": [0, 1]},
                                   {"method": ["a"], "T": [1, 6], "seed": [0]}]})
    assert len(points) == 6 and all(p["epochs"] == 2 for p in points)
    assert {"epochs": 2, "method": "a", "T": 6, "seed": 0} in points
    with pytest.raises(ValueError, match="list of values"):
        expand_grid({"grid": [{"method": "a"}]})


def test_default_grid_pairs_every_claim_cell_over_five_or_ten_seeds():
    from esdbook.reproduce import grid_points

    points = grid_points("default")
    rows = pd.DataFrame([{"experiment": p.experiment, "status": "complete",
                          **{f"config.{k}": v for k, v in p.config.to_dict().items()},
                          "metrics.final_test_acc": 0.5, "metrics.firing_rate_mean": 0.1}
                         for p in points])
    for claim in CLAIMS + PARITY_CLAIMS:
        for _, cell in claim.terms:
            seeds = sorted(cell_runs(rows, cell).index)
            assert seeds in ([0, 1, 2, 3, 4], list(range(10))), (claim.key, cell)
        if claim.metric != "gradient_gap":  # (read from the record files)
            paired = claim_differences(rows, claim)  # cells with ten seeds pair with each other
            assert len(paired) in (5, 10), claim.key
    # the compared cells differ only in the fields the claim names (and the experiment)
    hashed = [c for c in rows.columns if c.startswith("config.") and c not in (
        "config.experiment", "config.seed", "config.method", "config.T", "config.branch_kind",
        "config.beta", "config.teacher_space", "config.rate_grad_scale", "config.precision")]
    for claim in CLAIMS + PARITY_CLAIMS:
        runs = pd.concat([cell_runs(rows, cell) for _, cell in claim.terms])
        assert all(runs[c].nunique(dropna=False) == 1 for c in hashed), claim.key


def test_fresh_run_refuses_the_committed_folders(tmp_path):
    from esdbook.reproduce import book_root, reproduce_fresh

    root = book_root()
    for bad in (root, root / "results", root / "results" / "fresh", root / "checkpoints"):
        with pytest.raises(ValueError, match="separate folder"):
            reproduce_fresh("smoke", bad, progress=False)


T_095_DF4 = 2.131846786326649  # Student-t 95 % quantile with 4 degrees of freedom (TOST)


def test_non_inferiority_by_hand():
    d = {0: -0.5, 1: 0.2, 2: -0.1, 3: 0.3, 4: 0.0}  # mean -0.02, sd sqrt(0.097)
    v = evidence.non_inferiority_verdict(d, 1.0)
    low = -0.02 - T_0975_DF4 * math.sqrt(0.097) / math.sqrt(5)
    assert v.ci_low == pytest.approx(low) and low > -1.0
    assert v.verdict == "non-inferior (margin 1 pt)" and v.shown == "for"
    assert v.kind == "non-inferiority" and v.margin == 1.0
    worse = evidence.non_inferiority_verdict({s: -3.0 + 0.1 * s for s in range(5)}, 1.0)
    assert worse.verdict == "inferior by more than 1 pt" and worse.shown == "against"
    # the -1.6-pt branch gap of the issue: an interval [-3.03, -0.22] straddles -1
    straddle = evidence.non_inferiority_verdict({0: -3.2, 1: -0.4, 2: -1.0, 3: -2.4, 4: -1.1}, 1)
    assert straddle.verdict == "inconclusive" and straddle.ci_low < -1 < straddle.ci_high


def test_equivalence_is_two_one_sided_tests():
    from scipy import stats

    d = {0: 0.4, 1: 0.6, 2: 0.5, 3: 0.3, 4: 0.7}  # mean 0.5, sd sqrt(0.025)
    v = evidence.equivalence_verdict(d, 1.0)
    half = T_095_DF4 * math.sqrt(0.025) / math.sqrt(5)
    assert (v.ci_low, v.ci_high) == pytest.approx((0.5 - half, 0.5 + half))
    assert v.confidence == pytest.approx(0.90) and v.verdict == "equivalent within ±1 pt"
    assert evidence.equivalence_verdict({s: 3.0 + 0.1 * s for s in range(5)}, 1.0).verdict == \
        "not equivalent (differs by more than 1 pt)"
    # "not separable" under superiority is not parity: a wide interval is inconclusive
    wide = {0: -2.0, 1: 5.3, 2: 0.3, 3: 2.0, 4: -1.6}
    assert evidence.superiority_verdict(wide).verdict == "not separable"
    assert evidence.equivalence_verdict(wide, 1.0).verdict == "inconclusive"
    # the same decision as the two one-sided p-values at 5 %, on many random cases
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(200):
        x = rng.normal(rng.uniform(-1.5, 1.5), rng.uniform(0.05, 1.5), 5)
        m, se = x.mean(), x.std(ddof=1) / math.sqrt(5)
        p = max(stats.t.sf((m + 1.0) / se, 4), stats.t.cdf((m - 1.0) / se, 4))
        got = evidence.equivalence_verdict(dict(enumerate(x)), 1.0)
        assert (got.shown == "for") == (p < 0.05)


def test_power_closeness_and_seed_sets():
    v = paired_verdict({0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 5.0})
    t80 = 0.9409646134313117  # Student-t 80 % quantile, 4 degrees of freedom
    assert v.detectable == pytest.approx((T_0975_DF4 + t80) * math.sqrt(2.5) / math.sqrt(5))
    assert v.half_width == pytest.approx(v.ci_high - v.mean)
    assert not evidence.is_close(v)  # lower end 1.04: more than 1 pt from 0
    assert evidence.is_close(paired_verdict({s: 0.5 + 0.2 * s for s in range(5)}))  # 0.51
    assert not evidence.is_close(paired_verdict({s: 10.0 + s for s in range(5)}))
    ni = evidence.non_inferiority_verdict({s: -0.2 * s for s in range(5)}, 1.0)
    assert evidence.is_close(ni)  # its lower end sits near -1
    claim = Claim("c", "ch", "c", "final_test_acc", ((1.0, Cell("e", {})),))
    steady = {s: 1.0 + 0.1 * (s % 5) for s in range(10)}
    assert evidence.seed_set_check(claim, steady) == "holds on each seed set"
    shaky = {**{s: 1.0 + 0.1 * s for s in range(5)}, **{s: (-1) ** s * 2.0 for s in range(5, 10)}}
    assert evidence.seed_set_check(claim, shaky) == "depends on the seed set"
    assert evidence.seed_set_check(claim, {s: 1.0 for s in range(7)}) == "one seed set"


def test_claims_declare_kind_and_margin():
    with pytest.raises(ValueError, match="margin"):
        Claim("x", "ch", "x", "final_test_acc", (), kind="superiority", margin=1.0)
    with pytest.raises(ValueError, match="margin"):
        Claim("x", "ch", "x", "final_test_acc", (), kind="equivalence")
    with pytest.raises(ValueError, match="kind"):
        Claim("x", "ch", "x", "final_test_acc", (), kind="parity", margin=1.0)
    kinds = {c.key: (c.kind, c.margin) for c in CLAIMS + PARITY_CLAIMS}
    assert kinds["ablation:dsconv>=conv"] == ("non-inferiority", 1.0)
    assert kinds["bf16=fp32:esd"] == ("equivalence", 1.0)
    assert kinds["esd>ratebp"] == ("superiority", 0.0)
    assert {c.source for c in CLAIMS if "diagnosis" in c.text.lower()} == {"diagnosis"}


def test_the_control_pairs_esd_with_both_recipes():
    rows = [("table1", m, 4, s, acc, 0.1) for s in range(5)
            for m, acc in (("esd", 0.85), ("ratebp", 0.70))]
    df = _runs(rows)
    plain = df[df["config.method"] == "ratebp"].assign(
        **{"config.rate_grad_scale": "none", "metrics.final_test_acc": 0.83})
    table = claims_table(pd.concat([df, plain], ignore_index=True), CLAIMS).set_index("key")
    assert table.loc["esd>ratebp", "mean"] == pytest.approx(15.0)
    assert table.loc["esd>ratebp_plain@T4", "mean"] == pytest.approx(2.0)
    assert table.loc["ratebp_plain>ratebp_1/T@T4", "mean"] == pytest.approx(13.0)
    assert table.loc["ratebp_plain>ratebp_1/T@T4", "source"] == "diagnosis"


def test_fresh_only_compares_what_was_re_run():
    rows = [(e, m, 4, s, acc + 0.002 * s, 0.1) for s in range(5)
            for e, m, acc in (("table1", "esd", 0.85), ("table1", "ratebp", 0.80),
                              ("dvs", "esd", 0.8), ("dvs", "ratebp", 0.7))]
    committed = _runs(rows)
    fresh = committed[committed["experiment"] == "dvs"].assign(
        **{"config.seed": lambda d: d["config.seed"] + 5})
    out = compare_verdicts(committed, fresh, CLAIMS, rerun={"dvs"}).set_index("key")
    assert out.loc["dvs:esd>ratebp", "status"] == "holds"
    assert out.loc["dvs:esd>ratebp", "seeds_fresh"] == "5-9"
    assert out.loc["dvs:esd>ratebp", "seeds_committed"] == "0-4"
    assert out.loc["esd>ratebp", "status"] == "not re-run"
    assert out.loc["esd>ratebp", "holds"] is None
    assert evidence.format_seeds([0, 1, 2, 3, 4, 7, 9, 10]) == "0-4, 7, 9-10"


def test_interval_text():
    assert evidence.format_interval(-0.5, 1.25) == "[-0.50, +1.25]"
    assert evidence.format_interval(math.nan, math.nan) == "—"


def test_seeds_option_reruns_the_grid_on_other_seeds():
    from esdbook.reproduce import grid_points, parse_seeds, with_seeds

    assert parse_seeds("5-9") == [5, 6, 7, 8, 9] and parse_seeds("0,2, 4-5") == [0, 2, 4, 5]
    for bad in ("x", "9-5", "1-", "-1", "0-5000"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    assert with_seeds([{"method": "a", "seed": 0}, {"method": "a", "seed": 1}, {"method": "b"}],
                      [7, 8]) == [{"method": "a", "seed": 7}, {"method": "a", "seed": 8},
                                  {"method": "b", "seed": 7}, {"method": "b", "seed": 8}]
    base = grid_points("default", only=["dvs"])
    other = grid_points("default", only=["dvs"], seeds=range(5, 10))
    assert len(other) == len(base) and {p.config.seed for p in other} == {5, 6, 7, 8, 9}
    assert not {p.run_id for p in other} & {p.run_id for p in base}


def test_fresh_cli_reports_changed_and_not_re_run_claims(monkeypatch, capsys, tmp_path):
    import esdbook.reproduce as rep
    from esdbook.__main__ import main

    rows = [(e, m, 4, s, acc + 0.002 * s, 0.1) for s in range(5)
            for e, m, acc in (("dvs", "esd", 0.8), ("dvs", "ratebp", 0.7))]
    committed = _runs(rows)
    fresh = _runs([(e, {"esd": "ratebp", "ratebp": "esd"}[m], t, s, a, f)
                   for e, m, t, s, a, f in rows])
    verdicts = compare_verdicts(committed, fresh, CLAIMS, rerun={"dvs"})
    found = rep.FreshComparison(None, verdicts, tmp_path / "comparison.md",
                                {"runs_executed": 10, "runs_total": 10, "wall_s": 60.0,
                                 "device_name": "cpu"})
    seen = {}

    def fake(profile, fresh_dir, **kw):
        seen.update(kw)
        return found

    monkeypatch.setattr(rep, "reproduce_fresh", fake)
    assert main(["reproduce", "--fresh", str(tmp_path), "--only", "dvs", "--seeds", "5-9"]) == 1
    out = capsys.readouterr().out
    assert seen["seeds"] == [5, 6, 7, 8, 9] and seen["only"] == ["dvs"]
    assert "changed: dvs:esd>ratebp: supported -> contradicted" in out
    assert "not re-run" in out and "DIFFERS" not in out
    assert main(["reproduce", "--seeds", "a-b", "--no-book"]) == 2


def test_a_cell_spanning_data_sets_is_ambiguous():
    df = _runs([("table1", "esd", 4, s, 0.8, 0.1) for s in range(5)])
    two = pd.concat([df.assign(**{"config.dataset": "cifar10"}),
                     df.assign(**{"config.dataset": "cifar100"})], ignore_index=True)
    with pytest.raises(ValueError, match="several data sets"):
        cell_runs(two, Cell("table1", {"method": "esd"}))
    assert claims_table(two, CLAIMS).set_index("key").loc["esd>ratebp", "verdict"].startswith(
        "cannot decide")
    assert evidence.cell_table(two, CLAIMS)["n"].eq(0).all()
