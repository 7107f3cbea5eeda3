"""The book's chapter modules (book/esdbook) on synthetic records: tables, numbers, verdicts.

Each chapter module returns the expected rows and columns for the synthetic records of
tests/synthetic.py; every expected value is computed by hand. The words of the chapters are in
their markdown and are not pinned here.
"""

import math

import pandas as pd
import pytest
from synthetic import (
    REPO,
    accs,
    bench_rows,
    real_paper,
    records_table,
    synthetic_paper,
    write_nb,
)

from esdbook import ablations, display, dvs, provenance, scalability, table1, verdicts
from esdbook import paper as paper_tables
from esdlib.analysis.runs import pm, scale_of
from esdlib.train.config import ConfigError


@pytest.fixture
def paper():
    return synthetic_paper()


# ---------------------------------------------------------------------------
# chapter 4: static table
# ---------------------------------------------------------------------------


def test_static_comparison_matches_the_paper_row_by_method_arch_and_T(paper):
    df = records_table(accs("esd", [0.90, 0.94]) + accs("ratebp", [0.88])
                       + accs("bptt", [0.91]) + accs("esd", [0.5], **{"config.T": 2}))
    t = table1.static_comparison(df, paper).set_index(["method", "T"])
    esd = t.loc[("ESD (rate-BP)", 4)]
    assert esd["paper_%"] == 96.0 and esd["paper column"] == "cifar10"
    assert esd["ours_%"] == pm(92.0, math.sqrt(8))
    assert esd["difference_pts"] == pytest.approx(92.0 - 96.0)
    assert t.loc[("RateBP", 4), "paper_%"] == 95.0
    assert math.isnan(t.loc[("BPTT", 4), "paper_%"])  # no BPTT ResNet-18 row in the paper
    assert math.isnan(t.loc[("ESD (rate-BP)", 2), "paper_%"])  # no T = 2 row
    assert set(t["our scale"]) == {scale_of(df[df["config.T"] == 4]),
                                   scale_of(df[df["config.T"] == 2])}
    assert t["our scale"].str.startswith("digits").all()
    c100 = table1.static_comparison(df, paper, "cifar100").set_index(["method", "T"])
    assert c100.loc[("ESD (rate-BP)", 4), "paper_%"] == 80.0


def test_a_cifar_run_is_compared_with_its_own_paper_column(paper):
    df = records_table(accs("esd", [0.79], **{"config.dataset": "cifar100"})
                       + accs("ratebp", [0.77], **{"config.dataset": "cifar100"}))
    t = table1.static_comparison(df, paper, "cifar10")
    assert set(t["paper column"]) == {"cifar100"}
    g = table1.gain_table(df, paper)
    assert list(g["paper_dataset"]) == ["cifar100"]  # not also against CIFAR-10
    assert g["paper_gain_pts"].iloc[0] == pytest.approx(80.0 - 78.0)


def test_method_gains_is_the_difference_of_seed_means_and_checks_the_sign(paper):
    df = records_table(accs("esd", [0.90, 0.94]) + accs("ratebp", [0.93, 0.95])
                       + accs("esd", [0.5], **{"config.T": 6}))
    g = table1.method_gains(df, paper)
    assert len(g) == 1  # T = 6 has no RateBP run: no pair
    row = g.iloc[0]
    assert row["ours_gain_pts"] == pytest.approx(92.0 - 94.0)
    assert row["paper_gain_pts"] == pytest.approx(1.0)
    assert row["same_sign"] is not None and not row["same_sign"]
    both = table1.gain_table(df, paper)
    assert list(both["paper_dataset"]) == ["cifar10", "cifar100"]
    assert both["paper_gain_pts"].tolist() == pytest.approx([1.0, 2.0])


def test_paper_gains_and_rows(paper):
    pg = paper_tables.paper_gains(paper)
    assert pg[["T", "paper_dataset", "paper_gain_pts"]].values.tolist() == [
        [4, "cifar10", 1.0], [4, "cifar100", 2.0]]
    rows = paper_tables.paper_static_rows(paper)
    assert set(rows["method"]) == {"RateBP", "ESD (ours in paper)", "TET"}  # not OTTT/VGG


def test_train_command_is_validated_and_uses_the_paper_profile_T():
    cmd = paper_tables.train_command("cifar10", "esd", experiment="table1")
    assert cmd.startswith("esd train --profile paper --set dataset=cifar10 --set method=esd")
    assert "--set T=6" in cmd and "--set experiment=table1" in cmd
    assert "--set T=10" in paper_tables.train_command("cifar10_dvs", "esd_bptt", split="balanced")
    assert paper_tables.train_command("imagenet", "esd", gpus=8).startswith(
        "torchrun --nproc_per_node 8 -m esdlib.cli train --profile paper")
    with pytest.raises(ConfigError):
        paper_tables.train_command("cifar10", "not_a_method")
    with pytest.raises(ConfigError):
        paper_tables.train_command("cifar10", "esd", split="balanced")  # only CIFAR10-DVS has it
    assert len(paper_tables.paper_commands(("cifar10", "cifar100"), ("esd",), ("spiking_resnet18",),
                                     T=2)) == 2


# ---------------------------------------------------------------------------
# chapter 5: DVS
# ---------------------------------------------------------------------------


def test_dvs_rows_are_matched_by_method_and_training():
    paper = real_paper("table_dvs")
    df = records_table(accs("esd", [0.6], **{"config.dataset": "dvs_digits", "config.T": 4})
                       + accs("esd_bptt", [0.7], **{"config.dataset": "dvs_digits",
                                                    "config.T": 4}))
    t = dvs.dvs_comparison(df, paper).set_index("method")
    one = paper[(paper.method == "ESD (ours in paper)") & (paper.training == "one-step")
                & (paper.architecture == "ResNet-18")]["cifar10_dvs"].item()
    bptt = paper[(paper.method == "ESD (ours in paper)") & (paper.training == "BPTT")
                 & (paper.architecture == "ResNet-18")]["cifar10_dvs"].item()
    assert t.loc["ESD (rate-BP)", "paper_cifar10_dvs_%"] == one
    assert t.loc["ESD (BPTT)", "paper_cifar10_dvs_%"] == bptt
    g = dvs.dvs_gains(df, paper).iloc[0]
    assert g["ours_gain_pts"] == pytest.approx(10.0)
    assert g["paper_gain_pts"] == pytest.approx(bptt - one)
    assert bool(g["same_sign"]) is (bptt > one)


# ---------------------------------------------------------------------------
# chapter 6: scalability
# ---------------------------------------------------------------------------


def test_memory_claim_holds_when_two_pass_memory_stays_flat_and_bptt_grows():
    mib = 2**20
    flat = bench_rows({("bptt", 1): mib, ("bptt", 4): 4 * mib, ("ratebp", 1): mib,
                       ("ratebp", 4): mib, ("esd", 1): 2 * mib, ("esd", 4): 2 * mib})
    growth = scalability.saved_growth(scalability.latest_run(flat)).set_index("method")
    assert growth["growth"].tolist() == pytest.approx([4.0, 1.0, 1.0])
    assert (growth.loc["bptt", "T min"], growth.loc["bptt", "T max"]) == (1, 4)
    assert scalability.memory_flat(growth.reset_index()) == "holds"
    growing = bench_rows({("bptt", 1): mib, ("bptt", 4): 4 * mib, ("ratebp", 1): mib,
                          ("ratebp", 4): 3 * mib})
    assert scalability.memory_flat(
        scalability.saved_growth(scalability.latest_run(growing))) == "does not hold"
    one_method = bench_rows({("esd", 1): mib, ("esd", 4): mib})
    assert scalability.memory_flat(
        scalability.saved_growth(scalability.latest_run(one_method))) == "cannot be checked"
    assert scalability.latest_run(pd.DataFrame()).empty
    assert scalability.ratio_table(scalability.latest_run(pd.DataFrame())).empty


def test_bf16_ratios_and_table_put_bf16_next_to_fp32_of_the_same_run():
    mib = 2**20
    fp32 = bench_rows({("esd", 1): 2 * mib, ("esd", 4): 2 * mib}).assign(precision="fp32")
    bf16 = fp32.assign(precision="bf16", step_s=fp32["step_s"] * 0.6,
                       saved_bytes=fp32["saved_bytes"] * 0.75)
    both = pd.concat([fp32, bf16], ignore_index=True)
    ratios = scalability.ratio_table(scalability.latest_run(both))
    assert scalability.ratio_range(ratios, "bf16/fp32 esd step") == "0.60×"
    assert scalability.ratio_range(ratios, "bf16/fp32 esd saved") == "0.75×"
    growth = scalability.saved_growth(scalability.latest_run(both))
    assert growth["growth"].tolist() == [1.0]  # fp32 rows only, not mixed with bf16
    t = scalability.scalability_table(both)
    assert list(t["precision"]) == ["fp32", "fp32", "bf16", "bf16"]
    assert t.loc[t.precision == "bf16", "esd step /fp32"].tolist() == [0.6, 0.6]
    assert not any("ref" in c or "target" in c for c in t.columns)
    time, memory = (scalability.scalability_table(both, part) for part in ("time", "memory"))
    assert "esd step s" in time and "esd saved MiB" not in time
    assert "esd saved MiB" in memory and "esd step s" not in memory
    assert set(time.columns) | set(memory.columns) == set(t.columns)
    with pytest.raises(ValueError, match="part"):
        scalability.scalability_table(both, "speed")


def test_spike_pass_over_inference_ratio():
    mib = 2**20
    rows = bench_rows({("ratebp", 1): mib, ("esd", 1): mib, ("esd", 4): mib})
    rows["spike_pass_s"] = [0.05, 0.06, 0.24]  # esd: 0.06/0.05 = 1.2x and 0.24/0.16 = 1.5x
    rows["infer_s"] = [0.05, 0.05, 0.16]
    ratios = scalability.ratio_table(scalability.latest_run(rows))
    assert scalability.ratio_range(ratios, "esd spike pass/inference") == "1.20–1.50×"
    assert scalability.ratio_range(ratios, "inference s per timestep", " s") == "0.04–0.05 s"
    assert scalability.ratio_range(ratios, "no such ratio") == "n/a"


def test_same_host_comparison_divides_only_numbers_of_one_host(tmp_path):
    t = scalability.same_host_comparison(REPO / "results" / "bench" / scalability.SAME_HOST_FILE)
    assert list(t["T"]) == [1, 2, 4, 6, 8]
    assert list(t.columns) == ["T", "published s", "esdlib (esd train) s",
                               "esdlib (esd train)/published", "esdlib (esd bench) s",
                               "esdlib (esd bench)/published"]
    row = t[t["T"] == 6].iloc[0]  # issue 13's table: 1.423 / 1.040 / 0.897 s
    assert (row["published s"], row["esdlib (esd train) s"]) == (1.423, 1.040)
    assert row["esdlib (esd bench)/published"] == round(0.897 / 1.423, 2) == 0.63
    assert display.span(t["esdlib (esd train)/published"]) == "0.68–0.75×"
    assert display.span(t["esdlib (esd bench)/published"]) == "0.55–0.71×"
    bad = tmp_path / "x.csv"
    bad.write_text("T,implementation,step_s\n1,esdlib,0.5\n")
    with pytest.raises(ValueError, match="x.csv"):
        scalability.same_host_comparison(bad)


def test_same_host_setting_is_read_from_the_sidecar_beside_its_csv(tmp_path):
    path = REPO / "results" / "bench" / scalability.SAME_HOST_FILE
    setting = scalability.same_host_setting(path)
    assert setting["data"] == path.name and setting["esdlib"] == "92811e5"
    values = scalability.same_host_values(path)
    assert values["same_host_date"] == "November 2026"
    assert all(len(v) <= display.MAX_GLUE for v in values.values())
    assert scalability.same_host_values(tmp_path / "none.csv")["same_host_host"] == "unknown"


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
    t = ablations.ablation_table(df)
    assert t["factor"].iloc[0] == "reference" and t["seeds"].iloc[0] == 3
    beta = t[(t.factor == "β") & (t.setting == "0.5")].iloc[0]
    assert beta["vs_reference_pts"] == pytest.approx(95.0 - 92.0)
    eta = ablations.ablation_rows(t, "η")
    assert len(eta) == 2 and "our assumption" in eta["factor"].iloc[1]
    sweep = ablations.beta_sweep(df)
    assert sweep["beta"].tolist() == [0.1, 0.3, 0.5]
    assert ablations.vs_reference(t, "β", "0.5") == pytest.approx(3.0)
    assert math.isnan(ablations.vs_reference(t, "β", "1"))
    assert ablations.vs_reference(t, "branch kind") == pytest.approx(1.0)


def test_distillation_ablation_compares_with_ratebp_at_the_same_arch_and_T():
    df = records_table(accs("ratebp", [0.90]) + accs("sd", [0.91]) + accs("esd", [0.93])
                       + accs("esd", [0.5], **{"config.T": 2}))
    t = ablations.distillation_ablation(df).set_index(["T", "method"])
    assert t.loc[(4, "ESD (rate-BP)"), "vs_RateBP_pts"] == pytest.approx(3.0)
    assert t.loc[(4, "Standard SD (rate-BP)"), "vs_RateBP_pts"] == pytest.approx(1.0)
    assert math.isnan(t.loc[(2, "ESD (rate-BP)"), "vs_RateBP_pts"])


def test_branch_parameter_counts_are_the_recorded_counts():
    def rec(kind, branches):
        return {"config": {"dataset": "digits_hard", "arch": "spiking_resnet18", "width": 0.125,
                           "branch_kind": kind},
                "extra": {"parameter_counts": {"backbone": 1000, "branches": branches}}}

    t = ablations.branch_parameter_counts([rec("dsconv", 50), rec("conv", 250),
                                           rec("dsconv", 50)])
    assert t[["branch kind", "backbone params", "branch params"]].values.tolist() == [
        ["conv", 1000, 250], ["dsconv", 1000, 50]]
    assert t["branches / backbone"].tolist() == [0.25, 0.05]
    assert ablations.branch_ratio(t) == pytest.approx(5.0)
    assert math.isnan(ablations.branch_ratio(t.iloc[:1]))


# ---------------------------------------------------------------------------
# chapter 10: provenance
# ---------------------------------------------------------------------------


def test_notebook_status_reads_papermill_metadata(tmp_path):
    import esdbook

    (tmp_path / "results" / "paper").mkdir(parents=True)
    runs = esdbook.open_chapter("smoke", tmp_path / "results").papermill_runs
    assert runs == tmp_path.resolve() / "papermill_runs"
    write_nb(runs / "table1" / "a.ipynb", {"start_time": "t0", "duration": 12.34,
                                            "exception": None})
    write_nb(runs / "table1" / "b.ipynb", {"start_time": "t1", "duration": 3.0,
                                            "exception": True}, ("ValueError", "bad"))
    write_nb(runs / "dvs" / "c.ipynb", {"start_time": "t2", "duration": None,
                                         "exception": None})
    t = provenance.notebook_status(runs).set_index("notebook")
    assert list(t.index) == ["papermill_runs/dvs/c.ipynb", "papermill_runs/table1/a.ipynb",
                             "papermill_runs/table1/b.ipynb"]
    assert t["status"].tolist() == ["not finished", "ok", "failed"]
    assert t.loc["papermill_runs/table1/a.ipynb", "duration_s"] == 12.3
    assert t.loc["papermill_runs/table1/b.ipynb", "error"] == "ValueError: bad"
    assert len(provenance.notebook_status(tmp_path / "missing")) == 0


def test_records_revisions_and_chapter_sources():
    df = records_table([{"git_revision": "abc"}, {"git_revision": "abc+dirty"},
                        {"git_revision": "def", "experiment": "dvs", "status": "failed"}])
    rs = provenance.record_status(df)
    assert list(rs.columns) == ["run_id", "experiment", "status", "created", "git_revision",
                                "wall_s", "scale_label"]
    rev = provenance.revision_summary(df, "abc+dirty").set_index("git_revision")
    assert rev["same commit as book"].to_dict() == {"abc": True, "abc+dirty": True,
                                                    "def": False}
    src = provenance.chapter_sources(df).set_index(["chapter", "experiment"])
    assert src.loc[("05_dvs", "dvs"), "records"] == 1
    assert src.loc[("05_dvs", "dvs"), "complete"] == 0
    assert src.loc[("04_table1_static", "table1"), "complete"] == 2
    assert len(provenance.notebook_status("/nonexistent")) == 0
    assert sum(provenance.same_commit(r, "abc") for r in df["git_revision"]) == 2


def test_damaged_records_are_named_in_the_record_status():
    df = records_table([{}, {"status": "damaged", "path": "/x/bad.json", "error": "not JSON"}])
    status = provenance.record_status(df)
    assert status["scale_label"].iloc[1] == "damaged record: /x/bad.json (not JSON)"


def test_strict_build_check_finds_pages_showing_damaged_records(tmp_path):
    from esdbook.check import damaged_record_pages

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


# ---------------------------------------------------------------------------
# verdicts and display
# ---------------------------------------------------------------------------


def test_claim_values_are_short_labels_named_after_the_claim():
    assert verdicts.claim_slug("esd>ratebp@T2") == "esd_ratebp_T2"
    assert verdicts.claim_slug("dvs:ratebp_none>ratebp_1/T") == "dvs_ratebp_none_ratebp_1_T"
    esd_runs = accs("esd", [0.90, 0.92, 0.94, 0.96, 0.98])
    ratebp_runs = accs("ratebp", [0.89, 0.90, 0.93, 0.94, 0.96])
    df = records_table(esd_runs + ratebp_runs)
    v = verdicts.claim_values(df, "04_table1_static")
    assert v["esd_ratebp_verdict"] == "supported"  # differences 1, 2, 1, 2, 2 points
    assert v["esd_ratebp_diff"] == "+1.60 pts" and v["esd_ratebp_n"] == "5"
    assert v["esd_ratebp_T2_verdict"] == "no verdict"  # no T = 2 runs
    assert all(len(x) <= display.MAX_GLUE for x in v.values())


def test_glue_refuses_sentences():
    with pytest.raises(ValueError, match="write the words in the markdown"):
        display.glue_all({"sentence": "x" * (display.MAX_GLUE + 1)})


def test_mean_and_std_columns_are_formatted_at_display_time():
    df = pd.DataFrame({"method": ["a", "b"], "final_mean_%": [91.0, 80.0],
                       "final_std_%": [math.sqrt(2), float("nan")], "seeds": [2, 1]})
    shown = display.pm_columns(df, "final")
    assert list(shown.columns) == ["method", "final_%", "seeds"]
    assert shown["final_%"].tolist() == ["91.00 ± 1.41", "80.00"]


def test_formatting_helpers():
    assert display.signed(1.234) == "+1.23 pts" and display.signed(float("nan")) == "n/a"
    assert display.num(None) == "n/a" and display.num(2.5, 1, "×") == "2.5×"
    assert display.span([0.9, 1.05]) == "0.90–1.05×" and display.span([]) == "n/a"


def test_tables_survive_empty_input(paper):
    empty = records_table([]).iloc[:0]
    for t in (table1.static_comparison(empty, paper), table1.method_gains(empty, paper),
              ablations.distillation_ablation(empty), ablations.ablation_table(empty),
              ablations.beta_sweep(empty), ablations.branch_parameter_counts([]),
              scalability.scalability_table(pd.DataFrame()),
              scalability.saved_growth(pd.DataFrame()),
              scalability.same_host_comparison("missing.csv"), provenance.record_status(empty)):
        assert isinstance(t, pd.DataFrame) and len(t) == 0


def test_scalability_figure_says_when_there_are_no_records():
    from matplotlib.figure import Figure

    assert isinstance(scalability.scalability_figure(pd.DataFrame()), Figure)


def test_verdict_table_states_each_claims_test_and_counts_what_was_shown():
    assert verdicts.test_label("superiority", 0.0) == "superiority"
    assert verdicts.test_label("non-inferiority", 1.0) == "non-inferiority, δ = 1 pt"
    assert verdicts.test_label("equivalence", 0.5) == "equivalence, ±0.5 pts"
    esd = accs("esd", [0.90, 0.92, 0.94, 0.96, 0.98])
    bptt = accs("bptt", [0.90, 0.925, 0.935, 0.955, 0.985])  # ESD − BPTT: 0, −.5, .5, .5, −.5
    df = records_table(esd + bptt)
    html = verdicts.verdict_table(df, "04_table1_static").data
    assert "non-inferiority, δ = 1 pt" in html and "non-inferior (margin 1 pt)" in html
    assert "+0.00 pts [-0.62, +0.62]<" in html and ">±0.62<" in html  # t(.975, 4)·sd/√5
    details = verdicts.verdict_details(df, "04_table1_static").data
    assert "0: +0.00, 1: -0.50, 2: +0.50, 3: +0.50, 4: -0.50" in details
    assert "TET, ResNet-19, T = 4: 94.44" in details and "one seed set" in details
    from esdbook.claims import CLAIMS
    from esdlib.analysis.evidence import claims_table

    counts = verdicts.verdict_counts(claims_table(df, CLAIMS), prefix="x_")
    assert counts["x_n_for"] == 1 and counts["x_n_claims"] == counts["x_n_paper"] + \
        counts["x_n_diagnosis"]
    assert counts["x_n_none"] == counts["x_n_claims"] - 1


def test_the_two_ratebp_recipes_are_never_averaged_together():
    one_t = accs("ratebp", [0.70, 0.72, 0.74, 0.76, 0.78])
    plain = accs("ratebp", [0.80, 0.82, 0.84, 0.86, 0.88], **{"config.rate_grad_scale": "none"})
    esd = accs("esd", [0.90, 0.92, 0.94, 0.96, 0.98])
    df = records_table(one_t + plain + esd)
    rows = table1.static_comparison(df, synthetic_paper()).set_index("method")
    assert rows.loc["RateBP", "ours_%"].startswith("74.00") and rows.loc["RateBP", "seeds"] == 5
    assert rows.loc["RateBP (plain CE)", "ours_%"].startswith("84.00")
    assert math.isnan(rows.loc["RateBP (plain CE)", "paper_%"])  # the paper ran the 1/T recipe
    gains = table1.method_gains(df, synthetic_paper())
    assert gains["ours_gain_pts"].tolist() == pytest.approx([20.0])  # ESD − RateBP (1/T)


def test_a_verdict_that_depends_on_the_seed_set_says_so():
    esd = accs("esd", [0.90] * 10)
    # seeds 0-4: ESD − RateBP = +5 pts each (supported); seeds 5-9: −1, +1, −1, +1, −1 (not)
    ratebp = accs("ratebp", [0.85] * 5 + [0.91, 0.89, 0.91, 0.89, 0.91])
    df = records_table(esd + ratebp)
    v = verdicts.claim_values(df, "04_table1_static")
    assert v["esd_ratebp_verdict"] == "supported (depends on seeds)"
    # pooled over ten seeds: [+0.37, +4.43], its lower end within 1 pt of 0: close as well
    assert "supported (close; depends on seeds)" in verdicts.verdict_table(
        df, "04_table1_static").data


def test_an_equivalence_row_shows_its_90_percent_interval():
    from esdbook.claims import PARITY_CLAIMS

    fp32 = accs("esd", [0.900, 0.902, 0.904, 0.906, 0.908], **{"config.precision": "fp32"})
    bf16 = accs("esd", [0.901, 0.901, 0.905, 0.905, 0.909], experiment="precision",
                **{"config.precision": "bf16"})
    html = verdicts.verdict_table(records_table(fp32 + bf16), claims=PARITY_CLAIMS).data
    assert "(90 %)" in html and "equivalent within ±1 pt" in html and "equivalence, ±1 pt" in html


def test_results_box_colours_each_verdict_and_says_what_it_means():
    esd = accs("esd", [0.90, 0.91, 0.92, 0.93, 0.94], **{"config.T": 4})
    sd = accs("sd", [0.85, 0.86, 0.87, 0.88, 0.89], **{"config.T": 4})  # ESD − SD = +5 each
    bptt = accs("bptt", [0.90, 0.915, 0.915, 0.925, 0.945], **{"config.T": 4})
    html = verdicts.results_box(records_table(esd + sd + bptt)).data
    row = html.split("beats standard self-distillation")[1].split("</tr>")[0]
    assert "supported" in row and "our runs show the claimed direction" in row
    assert f"background-color: {verdicts.VERDICT_COLOURS['for']}" in html
    # ESD − BPTT: mean −0.2 pts, interval well above −1: non-inferior, with its own meaning
    assert "no worse than 1 pt below, possibly better" in html
    assert "no verdict" in html  # claims of cells without runs stay listed, in yellow
    assert f"background-color: {verdicts.VERDICT_COLOURS['none']}" in html


@pytest.mark.parametrize("kind, shown, words", [
    ("superiority", "neither", "cannot tell"), ("superiority", "against", "opposite"),
    ("non-inferiority", "neither", "below −1 pt"), ("equivalence", "for", "within ±1 pt"),
    ("equivalence", "against", "more than 1 pt"), ("equivalence", "none", "too few")])
def test_meaning_of_each_verdict(kind, shown, words):
    assert words in verdicts.meaning(kind, shown, 1.0)


def test_forest_figure_draws_each_claim_with_its_margin():
    from esdbook import figures
    from esdbook.claims import CLAIMS
    from esdlib.analysis.evidence import claims_table

    esd = accs("esd", [0.90, 0.91, 0.92, 0.93, 0.94], **{"config.T": 4})
    bptt = accs("bptt", [0.90, 0.915, 0.915, 0.925, 0.945], **{"config.T": 4})
    t = claims_table(records_table(esd + bptt), CLAIMS)
    fig = figures.forest_figure(t)
    ax = fig.axes[0]
    labels = [tick.get_text() for tick in ax.get_yticklabels()]
    assert "esd>=bptt" in labels and "esd>sd" in labels
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert [tuple(ln.get_xdata()) for ln in dashed] == [(-1.0, -1.0)]  # δ of esd>=bptt only
    assert figures.forest_figure(t.iloc[:0]).axes[0].texts  # nothing to draw: a message


def test_status_counts_per_experiment_with_a_total_row():
    t = pd.DataFrame({"experiment": ["a", "a", "b", "b", "b"],
                      "status": ["ok", "failed", "ok", "ok", "ok"]})
    c = provenance.status_counts(t).set_index("experiment")
    assert c.loc["a"].to_dict() == {"total": 2, "failed": 1, "ok": 1}
    assert c.loc["b"].to_dict() == {"total": 3, "failed": 0, "ok": 3}
    assert c.loc["all"].to_dict() == {"total": 5, "failed": 1, "ok": 4}
    assert list(provenance.status_counts(t.iloc[:0]).columns) == ["experiment", "total"]


def test_wall_span_of_runs_from_their_records():
    runs = pd.DataFrame({"created": ["2026-12-06T10:01:00Z", "2026-12-06T10:01:30Z",
                                     "2026-12-06T10:03:00Z"],
                         "timing.wall_s": [60.0, 90.0, 90.0],
                         "environment.device_name": ["AMD EPYC"] * 3})
    span = provenance.wall_span(runs)
    assert span["minutes"] == 3.0  # 10:00:00 (first start) to 10:03:00 (last end)
    assert span["runs"] == 3 and span["hosts"] == ["AMD EPYC"]
    assert span["busy"] == pytest.approx(240 / 180)  # about 1.3 runs at a time
    assert math.isnan(provenance.wall_span(runs.iloc[:0])["minutes"])


def test_hand_verdict_values_match_a_hand_computation():
    # ESD − SD per seed (points): +0.8, −0.3, +1.5, +0.2, +0.9 (mean 0.62, sd 0.69)
    esd = accs("esd", [0.908, 0.897, 0.915, 0.902, 0.909], **{"config.T": 4})
    sd = accs("sd", [0.900] * 5, **{"config.T": 4})
    v = verdicts.hand_verdict_values(records_table(esd + sd), "esd>sd", n=5)
    assert v["ex_diffs"] == "+0.80, -0.30, +1.50, +0.20, +0.90" and v["ex_seeds"] == "0-4"
    assert (v["ex_mean"], v["ex_sd"], v["ex_t"], v["ex_half"]) == ("+0.62", "0.69", "2.776",
                                                                   "0.86")
    assert v["ex_ci"].startswith("[−0.24") or v["ex_ci"].startswith("[-0.24")
    assert v["ex_verdict"] == "not separable"
    assert v["ex_ni_verdict"].startswith("non-inferior")


def test_figure_html_is_a_self_contained_figure_with_alt_text():
    from esdlib.analysis.plots import new_figure

    fig = new_figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [0, 1])
    html = display.figure_html(fig, 'a line "rising"', "caption <b>x</b>").data
    assert '<img src="data:image/png;base64,' in html
    assert 'alt="a line &quot;rising&quot;"' in html  # an attribute: quotes escaped
    assert "<figcaption>caption &lt;b&gt;x&lt;/b&gt;</figcaption>" in html


def test_hand_verdict_values_of_cells_that_mix_data_sets_are_not_available():
    rows = []
    for ds in ("cifar10", "cifar100"):  # the paper profile pools data sets in one experiment
        rows += accs("esd", [0.9, 0.91], **{"config.T": 4, "config.dataset": ds})
        rows += accs("sd", [0.89, 0.9], **{"config.T": 4, "config.dataset": ds})
    v = verdicts.hand_verdict_values(records_table(rows), "esd>sd")
    assert v["ex_n"] == 0 and v["ex_diffs"] == "n/a" and v["ex_verdict"] == "no verdict"
