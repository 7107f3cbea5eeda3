"""esdlib.analysis: record tables, firing rates, gradient error and figures on synthetic records.

Every expected value is computed by hand from the synthetic records (tests/synthetic.py); the
real ``results/paper`` layout is used where it is the property under test.
"""

import math

import pandas as pd
import pytest
from synthetic import REPO, accs, fr_record, grad_record, real_paper, records_table

from esdlib import analysis
from esdlib.analysis import runs as runs_mod

# ---------------------------------------------------------------------------
# aggregation and scale
# ---------------------------------------------------------------------------


def test_summarize_mean_std_over_seeds_is_the_hand_computation():
    df = records_table(accs("esd", [0.90, 0.92, 0.97])
                       + accs("ratebp", [0.80])
                       + [{"config.method": "esd", "status": "failed",
                           "metrics.final_test_acc": 0.10}])
    s = analysis.summarize(df, ["config.method"]).set_index("config.method")
    assert s.loc["esd", "mean_%"] == pytest.approx(93.0)
    assert s.loc["esd", "std_%"] == pytest.approx(math.sqrt((9 + 1 + 16) / 2))  # ddof = 1
    assert s.loc["esd", "seeds"] == 3  # the failed run is left out
    assert s.loc["ratebp", "mean_%"] == pytest.approx(80.0)
    assert math.isnan(s.loc["ratebp", "std_%"])


def test_pm_formats_with_and_without_std():
    assert runs_mod.pm(93.0, 3.6056) == "93.00 ± 3.61"
    assert runs_mod.pm(80.0, float("nan")) == "80.00"


def test_scale_of_lists_data_set_size_width_epochs_seeds_and_step_cap():
    df = records_table(accs("esd", [0.9, 0.9]) + [{"config.width": 0.5, "config.seed": 2}])
    assert analysis.scale_of(df) == ("digits, 16×16, width ×0.25 / width ×0.5, 12 epochs, "
                                   "3 seeds (0, 1, 2)")
    smoke = records_table([{"config.epochs": 1, "config.max_train_steps": 3}])
    assert analysis.scale_of(smoke).endswith("1 epoch, 1 seed (0), ≤3 optimiser steps per epoch")
    assert analysis.scale_of(records_table([]).iloc[:0]) == "no runs"


def test_runs_of_keeps_complete_runs_of_one_profile_and_lists_what_was_left_out():
    df = records_table([{}, {"config.profile": "smoke"}, {"status": "running"}])
    assert list(analysis.runs_of(df, "default")["run_id"]) == ["run0"]
    left = runs_mod.left_out(df, "default")
    assert left.values.tolist() == [["run1", "complete", "other_profile", "smoke"],
                                    ["run2", "running", "unfinished", ""]]
    assert set(left["why"]) <= set(runs_mod.LEFT_OUT_REASONS)
    assert len(runs_mod.left_out(records_table([{}]), "default")) == 0
    # the page's words (esdbook.display): other profiles counted, after the others
    from esdbook.display import left_out_rows

    assert left_out_rows(df, "default").values.tolist() == [
        ["run2", "running", "not finished"], ["1 run", "complete", "profile smoke"]]


def test_runs_before_the_branch_fix_are_listed():
    """Branch-method records without parameter counts predate the published branch block."""
    old = {"branch_params": None}
    df = records_table([{}, old, {**old, "config.method": "bptt"}, {**old, "status": "running"}])
    assert list(runs_mod.runs_before_branch_fix(df)["run_id"]) == ["run1"]
    left = runs_mod.left_out(df, "default").set_index("record")
    assert left.loc["run1", "why"] == "old_branches"
    from esdbook.display import left_out_rows

    assert left_out_rows(df, "default").set_index("record").loc["run1", "why"].endswith(
        "(dsconv_wide)")


def test_method_order_is_the_methods_table():
    import esdlib as esd

    assert runs_mod.METHOD_ORDER == tuple(esd.METHODS)


def test_final_and_best_reports_both_and_their_gap():
    df = records_table([{"metrics.final_test_acc": 0.90, "metrics.best_test_acc": 0.93},
                        {"config.seed": 1, "metrics.final_test_acc": 0.92,
                         "metrics.best_test_acc": 0.97}])
    row = analysis.final_and_best(df).iloc[0]
    assert row["final_mean_%"] == pytest.approx(91.0)
    assert row["final_std_%"] == pytest.approx(math.sqrt(2))
    assert row["best_mean_%"] == pytest.approx(95.0)
    assert row["best−final_pts"] == pytest.approx(95.0 - 91.0)
    assert row["seeds"] == 2


def test_data_splits_lists_the_split_used():
    rec = {"config": {"dataset": "cifar10_dvs", "split": "official"},
           "extra": {"dataset_split": "random_split seed 42"}}
    t = analysis.data_splits([rec, rec])
    assert t.values.tolist() == [["cifar10_dvs", "official", "random_split seed 42"]]


# ---------------------------------------------------------------------------
# firing rates
# ---------------------------------------------------------------------------


def test_firing_rate_table_has_the_paper_layout_and_averages_seeds():
    paper = real_paper("firing_rates")
    recs = [fr_record("r0", "esd", [0.1, 0.2, 0.3, 0.4]),
            fr_record("r1", "esd", [0.3, 0.2, 0.1, 0.0]),
            fr_record("r2", "bptt", [0.4, 0.4, 0.4, 0.4]),
            fr_record("r3", "ratebp", [0.9] * 4),
            fr_record("r4", "esd", [0.9] * 4, arch="spiking_resnet19")]
    df = records_table([{"run_id": r["run_id"]} for r in recs])
    t = analysis.firing_rate_table(df, recs, methods=("bptt", "esd"), arch="spiking_resnet18",
                                 layout=paper)
    assert list(t.columns) == list(paper.columns)
    assert set(t["method"]) <= set(paper["method"])
    esd = t[t.method == "ESD"].iloc[0]
    assert [esd[f"t{i}"] for i in range(1, 5)] == pytest.approx([0.2, 0.2, 0.2, 0.2])
    assert esd["avg"] == pytest.approx(0.2)
    assert esd[["t5", "t6"]].isna().all()  # past the trained T
    claim = analysis.firing_rate_claim(t).iloc[0]
    assert claim["ESD/BPTT"] == pytest.approx(0.5) and bool(claim["ESD fires less"])
    # a longer T than the paper's adds columns before avg
    long = [fr_record("r5", "esd", [0.1] * 8)]
    t8 = analysis.firing_rate_table(records_table([{"run_id": "r5"}]), long, layout=paper)
    assert list(t8.columns) == list(paper.columns[:-1]) + ["t7", "t8", "avg"]


def test_firing_rate_claim_on_the_paper_table():
    paper = real_paper("firing_rates")
    claim = analysis.firing_rate_claim(paper)
    assert claim["trained_T"].tolist() == sorted(paper["trained_T"].unique())
    by_hand = paper.pivot_table(index="trained_T", columns="method", values="avg")
    assert claim["ESD fires less"].tolist() == (by_hand["ESD"] < by_hand["BPTT"]).tolist()


def test_layer_rates_and_definition():
    recs = [fr_record("r0", "esd", [0.1, 0.1], per_layer={"a": 0.1, "b": 0.0}),
            fr_record("r1", "bptt", [0.2, 0.2], per_layer={"a": 0.3, "b": 0.0})]
    assert analysis.esd_lower_layers(recs, "spiking_resnet18") == (1, 2)
    assert analysis.firing_rate_definition(recs) == "network rate per step"
    assert analysis.firing_rate_definition([]) == "no record has firing rates"


# ---------------------------------------------------------------------------
# gradient error
# ---------------------------------------------------------------------------


def test_gradient_error_inequality_is_counted_per_measurement():
    recs = [grad_record("a", [(0.9, 0.7), (0.8, 0.85)]), grad_record("b", [(0.5, 0.5)])]
    h = analysis.gradient_error_history(recs)
    assert h["K_esd ≤ K_rate"].tolist() == [True, False, True]  # equality counts as holding
    pl = analysis.final_per_layer_gradient_error(recs)
    assert pl.loc["w1", "K_rate"] == pytest.approx((0.8 + 0.5) / 2)
    assert pl.loc["w1", "K_esd"] == pytest.approx((0.85 + 0.5) / 2)
    assert pl["runs"].tolist() == [2, 2]
    assert pl["K_esd ≤ K_rate"].tolist() == [False, False]
    single = analysis.per_layer_gradient_error(recs[0]["extra"]["gradient_error"])
    assert single.loc["w2"].tolist() == [0.1, 0.2, False]


def test_gradient_functions_without_data():
    h = analysis.gradient_error_history([])
    assert len(h) == 0 and "K_esd ≤ K_rate" in h
    assert len(analysis.per_layer_gradient_error([])) == 0
    assert len(analysis.final_per_layer_gradient_error([])) == 0


# ---------------------------------------------------------------------------
# figures and empty inputs
# ---------------------------------------------------------------------------


def test_figures_are_closed_figures_and_survive_empty_input():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    df = records_table(accs("esd", [0.9]) + accs("ratebp", [0.8], **{"config.T": 2})
                       + [{"config.arch": "spiking_resnet19"}])
    empty = df.iloc[:0]
    before = plt.get_fignums()
    figs = [analysis.accuracy_vs_T_figure(df), analysis.accuracy_vs_T_figure(empty),
            analysis.layer_rate_figure([fr_record("r", "esd", [0.1, 0.2])]),
            analysis.layer_rate_figure([]),
            analysis.gradient_error_figure(grad_record("a", [(0.9, 0.7)])["extra"]
                                           ["gradient_error"]),
            analysis.gradient_error_figure(analysis.gradient_error_history([])),
            analysis.learning_curve_figure(analysis.learning_curves([]))]
    assert all(isinstance(f, Figure) for f in figs)
    assert len(figs[0].axes) == 2  # one panel per architecture
    assert plt.get_fignums() == before  # nothing left open for the backend to show again


def test_tables_survive_empty_input():
    empty = records_table([]).iloc[:0]
    for t in (analysis.final_and_best(empty), analysis.accuracy_vs_T_table(empty),
              runs_mod.left_out(empty, "default")):
        assert isinstance(t, pd.DataFrame) and len(t) == 0


# --------------------------------------------------------------------------- damaged records


def _records_with_one_damaged(tmp_path):
    import shutil

    repo_results = REPO / "results" / "table1"
    folder = tmp_path / "results" / "table1"
    folder.mkdir(parents=True)
    files = sorted(repo_results.glob("*.json"))[:3]
    for f in files:
        shutil.copy(f, folder / f.name)
    victim = folder / files[0].name
    victim.write_text(victim.read_text()[:500])  # truncated mid-file
    return tmp_path / "results", victim


def test_damaged_record_is_a_row_and_listed_as_left_out(tmp_path):
    from esdlib.train.records import RecordError, load_records

    root, victim = _records_with_one_damaged(tmp_path)
    with pytest.warns(UserWarning, match="damaged record"):
        df = load_records(root, "table1", strict=False)
    assert len(df) == 3
    row = df[df["status"] == "damaged"]
    assert list(row["path"]) == [str(victim)] and "not valid JSON" in row["error"].iloc[0]
    assert len(analysis.complete(df)) == 2  # never counted as a run
    left = runs_mod.left_out(df, "default")
    assert left[["record", "why", "detail"]].values.tolist() == [
        [str(victim), "damaged", row["error"].iloc[0]]]
    from esdbook.display import left_out_rows

    assert left_out_rows(df, "default")["record"].tolist() == [
        f"damaged record: {victim} ({row['error'].iloc[0]})"]
    with pytest.raises(RecordError, match=victim.name):
        load_records(root, "table1")
    assert len(runs_mod.left_out(df[df["status"] != "damaged"], "default")) == 0


def test_truncated_bench_record_error_names_the_file(tmp_path):
    import shutil

    from esdlib.bench import load_bench

    src = sorted((REPO / "results" / "bench").glob("*.json"))[0]
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    assert len(load_bench(tmp_path))
    dst.write_text(dst.read_text()[:1000])
    with pytest.raises(ValueError, match=src.name):
        load_bench(tmp_path)


def test_layer_rate_figure_draws_categorical_layers_as_points_with_error_bars():
    recs = [fr_record("r0", "esd", [0.1, 0.2], per_layer={"a": 0.2, "b": 0.1}),
            fr_record("r1", "esd", [0.1, 0.2], per_layer={"a": 0.4, "b": 0.1}),
            fr_record("r2", "bptt", [0.1, 0.2], per_layer={"a": 0.3, "b": 0.2})]
    ax = analysis.layer_rate_figure(recs).axes[0]
    assert len(ax.containers) == 2  # one errorbar container per (method, T)
    assert all(not line.get_linestyle() or line.get_linestyle() == "None"
               for c in ax.containers for line in [c.lines[0]])  # points, no connecting line
    esd = next(c for c in ax.containers if "ESD" in c.get_label())
    assert esd.lines[0].get_ydata().tolist() == pytest.approx([0.3, 0.1])
    segments = esd.lines[2][0].get_segments()  # the vertical error bars: std over the 2 seeds
    assert segments[0][1][1] - segments[0][0][1] == pytest.approx(2 * 0.1414, abs=1e-3)
