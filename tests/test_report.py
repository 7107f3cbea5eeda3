"""esdlib.report: the book's tables and figures on small synthetic record tables.

Every expected value is computed by hand from the synthetic records; the paper tables are small
synthetic copies of the paper's layout, except where the real ``results/paper`` layout is the
property under test.
"""

import math
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from esdlib import report
from esdlib.train.config import ConfigError
from esdlib.train.records import load_paper_table

REPO = Path(__file__).resolve().parents[1]

BASE = {"status": "complete", "experiment": "table1", "config.profile": "default",
        "config.dataset": "digits", "config.image_size": 16, "config.width": 0.25,
        "config.epochs": 12, "config.max_train_steps": None, "config.arch": "spiking_resnet18",
        "config.method": "esd", "config.T": 4, "config.seed": 0, "config.split": "official",
        "config.branch_kind": "dsconv", "config.beta": 0.3, "config.teacher_space": "logits",
        "config.eta": 0.0, "metrics.final_test_acc": 0.9, "metrics.best_test_acc": 0.95,
        "git_revision": "abc", "created": "2026-01-01T00:00:00Z", "timing.wall_s": 1.0,
        "scale_label": "digits", "branch_params": 75_000}


def records_table(rows):
    """A load_records-like table: BASE overridden by each row; run ids made unique."""
    out = []
    for i, r in enumerate(rows):
        row = {**BASE, **r}
        row.setdefault("run_id", f"run{i}")
        row.setdefault("path", f"/x/{row['run_id']}.json")
        out.append(row)
    return pd.DataFrame(out)


def accs(method, values, **kw):
    return [{"config.method": method, "config.seed": s, "metrics.final_test_acc": a, **kw}
            for s, a in enumerate(values)]


@pytest.fixture
def paper():
    return pd.DataFrame([
        ("RateBP", "one-step", "ResNet-18", 4, 95.0, 78.0, np.nan),
        ("ESD (ours in paper)", "one-step", "ResNet-18", 4, 96.0, 80.0, np.nan),
        ("ESD (ours in paper)", "one-step", "ResNet-18", 6, 96.5, 81.0, 70.0),
        ("TET", "BPTT", "ResNet-19", 4, 94.0, 74.0, np.nan),
        ("OTTT", "online", "VGG-11", 6, 93.0, 71.0, 65.0),
    ], columns=["method", "training", "architecture", "T", "cifar10", "cifar100", "imagenet"])


@pytest.fixture
def real_paper(monkeypatch):
    monkeypatch.setenv("ESD_RESULTS_DIR", str(REPO / "results"))
    return load_paper_table


# ---------------------------------------------------------------------------
# aggregation and scale
# ---------------------------------------------------------------------------


def test_summarize_mean_std_over_seeds_is_the_hand_computation():
    df = records_table(accs("esd", [0.90, 0.92, 0.97])
                       + accs("ratebp", [0.80])
                       + [{"config.method": "esd", "status": "failed",
                           "metrics.final_test_acc": 0.10}])
    s = report.summarize(df, ["config.method"]).set_index("config.method")
    assert s.loc["esd", "mean_%"] == pytest.approx(93.0)
    assert s.loc["esd", "std_%"] == pytest.approx(math.sqrt((9 + 1 + 16) / 2))  # ddof = 1
    assert s.loc["esd", "seeds"] == 3  # the failed run is left out
    assert s.loc["ratebp", "mean_%"] == pytest.approx(80.0)
    assert math.isnan(s.loc["ratebp", "std_%"])


def test_pm_formats_with_and_without_std():
    assert report.pm(93.0, 3.6056) == "93.00 ± 3.61"
    assert report.pm(80.0, float("nan")) == "80.00"


def test_scale_of_lists_data_set_size_width_epochs_seeds_and_step_cap():
    df = records_table(accs("esd", [0.9, 0.9]) + [{"config.width": 0.5, "config.seed": 2}])
    assert report.scale_of(df) == ("digits, 16×16, width ×0.25 / width ×0.5, 12 epochs, "
                                   "3 seeds (0, 1, 2)")
    smoke = records_table([{"config.epochs": 1, "config.max_train_steps": 3}])
    assert report.scale_of(smoke).endswith("1 epoch, 1 seed (0), ≤3 optimiser steps per epoch")
    assert report.scale_of(records_table([]).iloc[:0]) == "no runs"


def test_runs_of_keeps_complete_runs_of_one_profile_and_says_what_was_left_out():
    df = records_table([{}, {"config.profile": "smoke"}, {"status": "running"}])
    assert list(report.runs_of(df, "default")["run_id"]) == ["run0"]
    assert report.profile_note(df, "default") == (
        "1 complete run of the default profile (1 complete run of other profiles and "
        "1 unfinished or failed run not shown)")


def test_runs_before_the_branch_fix_are_named_in_the_note():
    """Branch-method records without parameter counts predate the published branch block."""
    old = {"branch_params": None}
    df = records_table([{}, old, {**old, "config.method": "bptt"}, {**old, "status": "running"}])
    assert list(report.runs_before_branch_fix(df)["run_id"]) == ["run1"]
    note = report.profile_note(df, "default")
    assert note.startswith("3 complete runs of the default profile")
    assert note.endswith("1 of these runs trained auxiliary branches before the published branch "
                         "block was adopted (2026-11-26): their branches are the wider "
                         "`dsconv_wide` block, so their numbers await a re-run")
    assert "auxiliary" not in report.profile_note(records_table([{}]), "default")


def test_coverage_prose_names_missing_T_and_methods():
    df = records_table(accs("esd", [0.9], **{"config.T": 2}))
    assert report.T_coverage(df, (2, 4, 6)) == "runs at T = 2; no T = 4, 6 runs in this profile"
    assert report.T_coverage(df.iloc[:0]) == "no complete runs in this profile"
    assert report.missing_methods(df, ("ratebp", "esd")) == "no runs of RateBP in this profile"


# ---------------------------------------------------------------------------
# chapter 4: static table
# ---------------------------------------------------------------------------


def test_static_comparison_matches_the_paper_row_by_method_arch_and_T(paper):
    df = records_table(accs("esd", [0.90, 0.94]) + accs("ratebp", [0.88])
                       + accs("bptt", [0.91]) + accs("esd", [0.5], **{"config.T": 2}))
    t = report.static_comparison(df, paper).set_index(["method", "T"])
    esd = t.loc[("ESD (rate-BP)", 4)]
    assert esd["paper_%"] == 96.0 and esd["paper column"] == "cifar10"
    assert esd["ours_%"] == report.pm(92.0, math.sqrt(8))
    assert esd["difference_pts"] == pytest.approx(92.0 - 96.0)
    assert t.loc[("RateBP", 4), "paper_%"] == 95.0
    assert math.isnan(t.loc[("BPTT", 4), "paper_%"])  # no BPTT ResNet-18 row in the paper
    assert math.isnan(t.loc[("ESD (rate-BP)", 2), "paper_%"])  # no T = 2 row
    assert set(t["our scale"]) == {report.scale_of(df[df["config.T"] == 4]),
                                   report.scale_of(df[df["config.T"] == 2])}
    assert t["our scale"].str.startswith("digits").all()
    c100 = report.static_comparison(df, paper, "cifar100").set_index(["method", "T"])
    assert c100.loc[("ESD (rate-BP)", 4), "paper_%"] == 80.0


def test_a_cifar_run_is_compared_with_its_own_paper_column(paper):
    df = records_table(accs("esd", [0.79], **{"config.dataset": "cifar100"})
                       + accs("ratebp", [0.77], **{"config.dataset": "cifar100"}))
    t = report.static_comparison(df, paper, "cifar10")
    assert set(t["paper column"]) == {"cifar100"}
    g = report.gain_table(df, paper)
    assert list(g["paper_dataset"]) == ["cifar100"]  # not also against CIFAR-10
    assert g["paper_gain_pts"].iloc[0] == pytest.approx(80.0 - 78.0)


def test_method_gains_is_the_difference_of_seed_means_and_checks_the_sign(paper):
    df = records_table(accs("esd", [0.90, 0.94]) + accs("ratebp", [0.93, 0.95])
                       + accs("esd", [0.5], **{"config.T": 6}))
    g = report.method_gains(df, paper)
    assert len(g) == 1  # T = 6 has no RateBP run: no pair
    row = g.iloc[0]
    assert row["ours_gain_pts"] == pytest.approx(92.0 - 94.0)
    assert row["paper_gain_pts"] == pytest.approx(1.0)
    assert row["same_sign"] is not None and not row["same_sign"]
    both = report.gain_table(df, paper)
    assert list(both["paper_dataset"]) == ["cifar10", "cifar100"]
    assert both["paper_gain_pts"].tolist() == pytest.approx([1.0, 2.0])


def test_paper_gains_and_rows(paper):
    pg = report.paper_gains(paper)
    assert pg[["T", "paper_dataset", "paper_gain_pts"]].values.tolist() == [
        [4, "cifar10", 1.0], [4, "cifar100", 2.0]]
    rows = report.paper_static_rows(paper)
    assert set(rows["method"]) == {"RateBP", "ESD (ours in paper)", "TET"}  # not OTTT/VGG


def test_final_and_best_reports_both_and_their_gap():
    df = records_table([{"metrics.final_test_acc": 0.90, "metrics.best_test_acc": 0.93},
                        {"config.seed": 1, "metrics.final_test_acc": 0.92,
                         "metrics.best_test_acc": 0.97}])
    row = report.final_and_best(df).iloc[0]
    assert row["final_%"] == report.pm(91.0, math.sqrt(2))
    assert row["best−final_pts"] == pytest.approx(95.0 - 91.0)
    assert row["seeds"] == 2


def test_static_facts_on_empty_runs_say_n_a(paper):
    facts = report.static_facts(records_table([]).iloc[:0], paper)
    assert facts["ours_gain"] == "n/a" and facts["ours_n_pairs"] == "0"
    assert facts["paper_n_pos"] == "2" and facts["paper_gain_max"] == "+2.00 pts"


def test_train_command_is_validated_and_uses_the_paper_profile_T():
    cmd = report.train_command("cifar10", "esd", experiment="table1")
    assert cmd.startswith("esd train --profile paper --set dataset=cifar10 --set method=esd")
    assert "--set T=6" in cmd and "--set experiment=table1" in cmd
    assert "--set T=10" in report.train_command("cifar10_dvs", "esd_bptt", split="balanced")
    assert report.train_command("imagenet", "esd", gpus=8).startswith(
        "torchrun --nproc_per_node 8 -m esdlib.cli train --profile paper")
    with pytest.raises(ConfigError):
        report.train_command("cifar10", "not_a_method")
    with pytest.raises(ConfigError):
        report.train_command("cifar10", "esd", split="balanced")  # only CIFAR10-DVS has it
    assert len(report.paper_commands(("cifar10", "cifar100"), ("esd",), ("spiking_resnet18",),
                                     T=2)) == 2


# ---------------------------------------------------------------------------
# chapter 5: DVS
# ---------------------------------------------------------------------------


def test_dvs_rows_are_matched_by_method_and_training(real_paper):
    paper = real_paper("table_dvs")
    df = records_table(accs("esd", [0.6], **{"config.dataset": "dvs_digits", "config.T": 4})
                       + accs("esd_bptt", [0.7], **{"config.dataset": "dvs_digits",
                                                    "config.T": 4}))
    t = report.dvs_comparison(df, paper).set_index("method")
    one = paper[(paper.method == "ESD (ours in paper)") & (paper.training == "one-step")
                & (paper.architecture == "ResNet-18")]["cifar10_dvs"].item()
    bptt = paper[(paper.method == "ESD (ours in paper)") & (paper.training == "BPTT")
                 & (paper.architecture == "ResNet-18")]["cifar10_dvs"].item()
    assert t.loc["ESD (rate-BP)", "paper_cifar10_dvs_%"] == one
    assert t.loc["ESD (BPTT)", "paper_cifar10_dvs_%"] == bptt
    g = report.dvs_gains(df, paper).iloc[0]
    assert g["ours_gain_pts"] == pytest.approx(10.0)
    assert g["paper_gain_pts"] == pytest.approx(bptt - one)
    assert bool(g["same_sign"]) is (bptt > one)
    assert report.dvs_facts(df, paper)["agreement"] == report.agreement(g["same_sign"])


def test_data_splits_lists_the_split_used():
    rec = {"config": {"dataset": "cifar10_dvs", "split": "official"},
           "extra": {"dataset_split": "random_split seed 42"}}
    t = report.data_splits([rec, rec])
    assert t.values.tolist() == [["cifar10_dvs", "official", "random_split seed 42"]]


# ---------------------------------------------------------------------------
# chapter 7: firing rates
# ---------------------------------------------------------------------------


def fr_record(run_id, method, per_t, arch="spiking_resnet18", per_layer=None):
    return {"run_id": run_id, "experiment": "table1", "status": "complete",
            "config": {"method": method, "T": len(per_t), "arch": arch, "seed": 0},
            "firing_rates": {"per_timestep": per_t, "definition": "network rate per step",
                             "per_layer": per_layer or {"a": 0.2, "b": 0.1}}}


def test_firing_rate_table_has_the_paper_layout_and_averages_seeds(real_paper):
    paper = real_paper("firing_rates")
    recs = [fr_record("r0", "esd", [0.1, 0.2, 0.3, 0.4]),
            fr_record("r1", "esd", [0.3, 0.2, 0.1, 0.0]),
            fr_record("r2", "bptt", [0.4, 0.4, 0.4, 0.4]),
            fr_record("r3", "ratebp", [0.9] * 4),
            fr_record("r4", "esd", [0.9] * 4, arch="spiking_resnet19")]
    df = records_table([{"run_id": r["run_id"]} for r in recs])
    t = report.firing_rate_table(df, recs, methods=("bptt", "esd"), arch="spiking_resnet18",
                                 layout=paper)
    assert list(t.columns) == list(paper.columns)
    assert set(t["method"]) <= set(paper["method"])
    esd = t[t.method == "ESD"].iloc[0]
    assert [esd[f"t{i}"] for i in range(1, 5)] == pytest.approx([0.2, 0.2, 0.2, 0.2])
    assert esd["avg"] == pytest.approx(0.2)
    assert esd[["t5", "t6"]].isna().all()  # past the trained T
    claim = report.firing_rate_claim(t).iloc[0]
    assert claim["ESD/BPTT"] == pytest.approx(0.5) and bool(claim["ESD fires less"])
    # a longer T than the paper's adds columns before avg
    long = [fr_record("r5", "esd", [0.1] * 8)]
    t8 = report.firing_rate_table(records_table([{"run_id": "r5"}]), long, layout=paper)
    assert list(t8.columns) == list(paper.columns[:-1]) + ["t7", "t8", "avg"]


def test_firing_rate_claim_on_the_paper_table(real_paper):
    paper = real_paper("firing_rates")
    claim = report.firing_rate_claim(paper)
    assert claim["trained_T"].tolist() == sorted(paper["trained_T"].unique())
    by_hand = paper.pivot_table(index="trained_T", columns="method", values="avg")
    assert claim["ESD fires less"].tolist() == (by_hand["ESD"] < by_hand["BPTT"]).tolist()


def test_layer_rates_and_definition():
    recs = [fr_record("r0", "esd", [0.1, 0.1], per_layer={"a": 0.1, "b": 0.0}),
            fr_record("r1", "bptt", [0.2, 0.2], per_layer={"a": 0.3, "b": 0.0})]
    assert report.esd_lower_layers(recs, "spiking_resnet18") == (1, 2)
    assert report.firing_rate_definition(recs) == "network rate per step"
    assert report.firing_rate_definition([]) == "no record has firing rates"


# ---------------------------------------------------------------------------
# chapter 8: gradient error
# ---------------------------------------------------------------------------


def grad_record(run_id, ks):
    hist = [{"epoch": e, "K_rate": kr, "K_esd": ke, "cos_rate": 0.5, "cos_esd": 0.6,
             "per_layer_rate": {"w1": kr, "w2": 0.1}, "per_layer_esd": {"w1": ke, "w2": 0.2}}
            for e, (kr, ke) in enumerate(ks)]
    return {"run_id": run_id, "config": {"T": 4, "seed": 0}, "extra": {"gradient_error": hist}}


def test_gradient_error_inequality_is_counted_per_measurement():
    recs = [grad_record("a", [(0.9, 0.7), (0.8, 0.85)]), grad_record("b", [(0.5, 0.5)])]
    h = report.gradient_error_history(recs)
    assert h["K_esd ≤ K_rate"].tolist() == [True, False, True]  # equality counts as holding
    pl = report.final_per_layer_gradient_error(recs)
    assert pl.loc["w1", "K_rate"] == pytest.approx((0.8 + 0.5) / 2)
    assert pl.loc["w1", "K_esd"] == pytest.approx((0.85 + 0.5) / 2)
    assert pl["runs"].tolist() == [2, 2]
    assert pl["K_esd ≤ K_rate"].tolist() == [False, False]
    facts = report.gradient_facts(h, pl)
    assert (facts["n_hold"], facts["n_meas"], facts["n_runs"]) == ("2", "3", "2")
    assert facts["verdict"] == "holds in some measurements and fails in others"
    assert facts["K_rate_first"] == "0.700"  # mean over runs at epoch 0
    single = report.per_layer_gradient_error(recs[0]["extra"]["gradient_error"])
    assert single.loc["w2"].tolist() == [0.1, 0.2, False]


def test_gradient_functions_without_data():
    h = report.gradient_error_history([])
    assert len(h) == 0 and "K_esd ≤ K_rate" in h
    assert len(report.per_layer_gradient_error([])) == 0
    assert report.gradient_facts(h, report.final_per_layer_gradient_error([]))["verdict"] \
        .startswith("cannot be checked")


# ---------------------------------------------------------------------------
# chapter 9: ablations
# ---------------------------------------------------------------------------


def test_ablation_table_labels_factors_and_differences_to_the_reference():
    df = records_table(
        accs("esd", [0.90, 0.92, 0.94], experiment="ablation")
        + [{"experiment": "ablation", "config.beta": 0.5, "metrics.final_test_acc": 0.95},
           {"experiment": "ablation", "config.beta": 0.1, "metrics.final_test_acc": 0.80},
           {"experiment": "ablation", "config.eta": 0.1, "metrics.final_test_acc": 0.91},
           {"experiment": "ablation", "config.branch_kind": "conv",
            "metrics.final_test_acc": 0.93},
           {"experiment": "ablation", "config.method": "sd", "metrics.final_test_acc": 0.89}])
    t = report.ablation_table(df)
    assert t["factor"].iloc[0] == "reference" and t["seeds"].iloc[0] == 3
    beta = t[(t.factor == "β") & (t.setting == "0.5")].iloc[0]
    assert beta["vs_reference_pts"] == pytest.approx(95.0 - 92.0)
    eta = report.ablation_rows(t, "η")
    assert len(eta) == 2 and "OUR ASSUMPTION" in eta["factor"].iloc[1]
    sweep = report.beta_sweep(df)
    assert sweep["beta"].tolist() == [0.1, 0.3, 0.5]
    facts = report.ablation_facts(df.iloc[:0], df)
    assert facts["beta_05"] == "+3.00 pts" and facts["beta_10"] == "n/a"
    assert facts["conv"] == "+1.00 pts"


def test_distillation_ablation_compares_with_ratebp_at_the_same_arch_and_T():
    df = records_table(accs("ratebp", [0.90]) + accs("sd", [0.91]) + accs("esd", [0.93])
                       + accs("esd", [0.5], **{"config.T": 2}))
    t = report.distillation_ablation(df).set_index(["T", "method"])
    assert t.loc[(4, "ESD (rate-BP)"), "vs_RateBP_pts"] == pytest.approx(3.0)
    assert t.loc[(4, "Standard SD (rate-BP)"), "vs_RateBP_pts"] == pytest.approx(1.0)
    assert math.isnan(t.loc[(2, "ESD (rate-BP)"), "vs_RateBP_pts"])
    assert report.ablation_facts(df, df.iloc[:0])["esd_vs_sd"] == "+2.00 pts"


def test_branch_parameter_counts_equal_the_models_counts():
    import esdlib as esd

    df = records_table([{"config.width": 0.125}])
    t = report.branch_parameter_counts(df).set_index("branch kind")
    for kind in ("dsconv", "conv"):
        c = esd.build_model("spiking_resnet18", num_classes=10, in_channels=1, width=0.125,
                            aux=kind).parameter_counts()
        assert t.loc[kind, "branch params"] == c["branches"]
        assert t.loc[kind, "backbone params"] == c["backbone"]
    assert t.loc["dsconv", "branch params"] < t.loc["conv", "branch params"]


# ---------------------------------------------------------------------------
# chapter 10: provenance
# ---------------------------------------------------------------------------


def write_nb(path, meta, error=None):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1")
    if error:
        cell.outputs = [nbformat.v4.new_output("error", ename=error[0], evalue=error[1],
                                               traceback=[])]
    nb.cells = [cell]
    nb.metadata["papermill"] = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_notebook_status_reads_papermill_metadata(tmp_path):
    runs = report.papermill_runs_dir(tmp_path / "results")
    assert runs == tmp_path.resolve() / "papermill_runs"
    write_nb(runs / "table1" / "a.ipynb", {"start_time": "t0", "duration": 12.34,
                                            "exception": None})
    write_nb(runs / "table1" / "b.ipynb", {"start_time": "t1", "duration": 3.0,
                                            "exception": True}, ("ValueError", "bad"))
    write_nb(runs / "dvs" / "c.ipynb", {"start_time": "t2", "duration": None,
                                         "exception": None})
    t = report.notebook_status(runs).set_index("notebook")
    assert list(t.index) == ["papermill_runs/dvs/c.ipynb", "papermill_runs/table1/a.ipynb",
                             "papermill_runs/table1/b.ipynb"]
    assert t["status"].tolist() == ["not finished", "ok", "failed"]
    assert t.loc["papermill_runs/table1/a.ipynb", "duration_s"] == 12.3
    assert t.loc["papermill_runs/table1/b.ipynb", "error"] == "ValueError: bad"
    assert len(report.notebook_status(tmp_path / "missing")) == 0


def test_records_revisions_and_chapter_sources():
    df = records_table([{"git_revision": "abc"}, {"git_revision": "abc+dirty"},
                        {"git_revision": "def", "experiment": "dvs", "status": "failed"}])
    rs = report.record_status(df)
    assert list(rs.columns) == ["run_id", "experiment", "status", "created", "git_revision",
                                "wall_s", "scale_label"]
    rev = report.revision_summary(df, "abc+dirty").set_index("git_revision")
    assert rev["same commit as book"].to_dict() == {"abc": True, "abc+dirty": True,
                                                    "def": False}
    src = report.chapter_sources(df).set_index(["chapter", "experiment"])
    assert src.loc[("05_dvs", "dvs"), "records"] == 1
    assert src.loc[("05_dvs", "dvs"), "complete"] == 0
    assert src.loc[("04_table1_static", "table1"), "complete"] == 2
    facts = report.provenance_facts(report.notebook_status("/nonexistent"), df, "abc")
    assert facts["n_same_rev"] == "2" and facts["n_complete"] == "2"


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
    figs = [report.accuracy_vs_T_figure(df), report.accuracy_vs_T_figure(empty),
            report.layer_rate_figure([fr_record("r", "esd", [0.1, 0.2])]),
            report.layer_rate_figure([]),
            report.gradient_error_figure(grad_record("a", [(0.9, 0.7)])["extra"]
                                         ["gradient_error"]),
            report.gradient_error_figure(report.gradient_error_history([])),
            report.scalability_figure(pd.DataFrame())]
    assert all(isinstance(f, Figure) for f in figs)
    assert len(figs[0].axes) == 2  # one panel per architecture
    assert plt.get_fignums() == before  # nothing left open for the backend to show again


def test_tables_survive_empty_input(paper):
    empty = records_table([]).iloc[:0]
    for t in (report.static_comparison(empty, paper), report.method_gains(empty, paper),
              report.final_and_best(empty), report.distillation_ablation(empty),
              report.ablation_table(empty), report.beta_sweep(empty),
              report.accuracy_vs_T_table(empty), report.scalability_table(pd.DataFrame()),
              report.same_host_comparison("missing.csv"), report.record_status(empty)):
        assert isinstance(t, pd.DataFrame) and len(t) == 0
    assert report.bench_facts(pd.DataFrame())["n_runs"] == "0"


def bench_rows(saved):
    """A load_bench-like table: one run, T = 1 and 4, saved bytes per method and T."""
    rows = []
    for (method, T), nbytes in saved.items():
        rows.append({"bench_id": "b1", "created": "2026-01-01T00:00:00Z", "device_type": "cpu",
                     "device_name": "cpu0", "threads": 2, "arch": "spiking_resnet18",
                     "width": 0.5, "image_size": 16, "in_channels": 3, "num_classes": 10,
                     "batch": 4, "method": method, "T": T, "step_s": 0.1 * T,
                     "step_s_min": 0.1 * T, "step_s_max": 0.1 * T, "saved_bytes": nbytes,
                     "peak_growth_bytes": nbytes, "infer_s": 0.01})
    return pd.DataFrame(rows)


def test_bench_facts_checks_that_two_pass_memory_stays_flat():
    mib = 2**20
    flat = bench_rows({("bptt", 1): mib, ("bptt", 4): 4 * mib, ("ratebp", 1): mib,
                       ("ratebp", 4): mib, ("esd", 1): 2 * mib, ("esd", 4): 2 * mib})
    f = report.bench_facts(flat)
    assert (f["bptt_saved_growth"], f["ratebp_saved_growth"], f["esd_saved_growth"]) == \
        ("4.00×", "1.00×", "1.00×")
    assert f["memory_verdict"].startswith("it holds here")
    assert f["T_range"] == "1–4" and f["bench_intro"].startswith("The benchmark run b1")
    growing = bench_rows({("bptt", 1): mib, ("bptt", 4): 4 * mib, ("ratebp", 1): mib,
                          ("ratebp", 4): 3 * mib})
    assert report.bench_facts(growing)["memory_verdict"].startswith("it does not hold")
    assert "fp32 only" in f["precision_summary"] and f["esd_bf16_step"] == "n/a"


def test_bench_facts_and_table_put_bf16_next_to_fp32_of_the_same_run():
    mib = 2**20
    fp32 = bench_rows({("esd", 1): 2 * mib, ("esd", 4): 2 * mib}).assign(precision="fp32")
    bf16 = fp32.assign(precision="bf16", step_s=fp32["step_s"] * 0.6,
                       saved_bytes=fp32["saved_bytes"] * 0.75)
    both = pd.concat([fp32, bf16], ignore_index=True)
    f = report.bench_facts(both)
    assert (f["esd_bf16_step"], f["esd_bf16_saved"]) == ("0.60×", "0.75×")
    assert "0.60× its fp32 time" in f["precision_summary"]
    assert f["esd_saved_growth"] == "1.00×"  # fp32 rows only, not mixed with bf16
    t = report.scalability_table(both)
    assert list(t["precision"]) == ["fp32", "fp32", "bf16", "bf16"]
    assert t.loc[t.precision == "bf16", "esd step /fp32"].tolist() == [0.6, 0.6]
    assert not any("ref" in c or "target" in c for c in t.columns)


def test_same_host_comparison_divides_only_numbers_of_one_host(tmp_path):
    from esdlib.train.paths import results_dir

    t = report.same_host_comparison(results_dir() / "bench" / report.SAME_HOST_FILE)
    assert list(t["T"]) == [1, 2, 4, 6, 8]
    assert list(t.columns) == ["T", "published s", "esdlib (esd train) s",
                               "esdlib (esd train)/published", "esdlib (esd bench) s",
                               "esdlib (esd bench)/published"]
    row = t[t["T"] == 6].iloc[0]  # issue 13's table: 1.423 / 1.040 / 0.897 s
    assert (row["published s"], row["esdlib (esd train) s"]) == (1.423, 1.040)
    assert row["esdlib (esd bench)/published"] == round(0.897 / 1.423, 2) == 0.63
    f = report.same_host_facts(t)
    assert f["train_ratio"] == "0.68–0.75×" and f["bench_ratio"] == "0.55–0.71×"
    assert "Intel Xeon" in f["same_host"]
    bad = tmp_path / "x.csv"
    bad.write_text("T,implementation,step_s\n1,esdlib,0.5\n")
    with pytest.raises(ValueError, match="x.csv"):
        report.same_host_comparison(bad)


def test_prose_sentences_say_when_a_claim_cannot_be_checked(paper, real_paper):
    empty = records_table([]).iloc[:0]
    assert "cannot be checked" in report.static_facts(empty, paper)["gain_sentence"]
    assert "cannot be checked" in report.dvs_facts(empty, real_paper("table_dvs"))[
        "gain_sentence"]
    fr = real_paper("firing_rates")
    assert "cannot be checked" in report.firing_facts(
        report.firing_rate_table(empty, [], layout=fr), fr)["ours_sentence"]
    assert "cannot be made" in report.ablation_facts(empty, empty)["distill_sentence"]
    df = records_table(accs("esd", [0.95]) + accs("ratebp", [0.90]))
    sentence = report.static_facts(df, paper)["gain_sentence"]
    assert "+5.00 pts against the paper's +1.00 pts" in sentence and "agrees with" in sentence


def test_bench_facts_relate_the_spike_pass_to_inference():
    mib = 2**20
    rows = bench_rows({("ratebp", 1): mib, ("esd", 1): mib, ("esd", 4): mib})
    rows["spike_pass_s"] = [0.05, 0.06, 0.24]  # esd: 0.06/0.05 = 1.2x and 0.24/0.16 = 1.5x
    rows["infer_s"] = [0.05, 0.05, 0.16]
    f = report.bench_facts(rows)
    assert f["esd_spike_infer"] == "1.20–1.50×"
    assert f["infer_per_T"] == "0.04–0.05 s"  # 0.05 s / 1 and 0.16 s / 4


# --------------------------------------------------------------------------- damaged records


def _records_with_one_damaged(tmp_path):
    import shutil

    repo_results = Path(__file__).resolve().parents[1] / "results" / "table1"
    folder = tmp_path / "results" / "table1"
    folder.mkdir(parents=True)
    files = sorted(repo_results.glob("*.json"))[:3]
    for f in files:
        shutil.copy(f, folder / f.name)
    victim = folder / files[0].name
    victim.write_text(victim.read_text()[:500])  # truncated mid-file
    return tmp_path / "results", victim


def test_damaged_record_is_a_row_and_named_on_the_page(tmp_path):
    from esdlib.train.records import RecordError, load_records

    root, victim = _records_with_one_damaged(tmp_path)
    with pytest.warns(UserWarning, match="damaged record"):
        df = load_records(root, "table1", strict=False)
    assert len(df) == 3
    row = df[df["status"] == "damaged"]
    assert list(row["path"]) == [str(victim)] and "not valid JSON" in row["error"].iloc[0]
    assert len(report.complete(df)) == 2  # never counted as a run
    note = report.profile_note(df, "default")
    assert f"damaged record: {victim}" in note and note.startswith("2 complete runs")
    status = report.record_status(df)
    assert status.loc[status["status"] == "damaged", "scale_label"].iloc[0].startswith(
        f"damaged record: {victim}")
    with pytest.raises(RecordError, match=victim.name):
        load_records(root, "table1")
    assert report.damaged_note(df[df["status"] != "damaged"]) == ""


def test_strict_build_check_finds_pages_showing_damaged_records(tmp_path):
    from esdlib.bookbuild import damaged_record_pages

    html = tmp_path / "html"
    (html / "chapters").mkdir(parents=True)
    (html / "index.html").write_text("<html><body>fine</body></html>")
    (html / "chapters" / "04.html").write_text(
        "<p>2 complete runs. Not shown, unreadable: <span>damaged record:</span> "
        "results/table1/x.json (not valid JSON)</p>")
    assert damaged_record_pages(html) == [
        "chapters/04.html: shows damaged record: results/table1/x.json"]
    (html / "chapters" / "04.html").write_text("<p>all good</p>")
    assert damaged_record_pages(html) == []


def test_truncated_bench_record_error_names_the_file(tmp_path):
    import shutil

    from esdlib.bench import load_bench

    src = sorted((Path(__file__).resolve().parents[1] / "results" / "bench").glob("*.json"))[0]
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    assert len(load_bench(tmp_path))
    dst.write_text(dst.read_text()[:1000])
    with pytest.raises(ValueError, match=src.name):
        load_bench(tmp_path)
