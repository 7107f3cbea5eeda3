"""One colour and one label per method in every figure of esdlib.analysis.plots; single-seed
points hollow and unconnected; legends outside the axes."""

import matplotlib.colors as mcolors
import pandas as pd
from synthetic import accs, records_table

from esdlib import analysis
from esdlib.analysis import plots


def test_every_method_has_its_own_colour_label_and_marker():
    styles = plots.METHOD_STYLES
    assert set(styles) == {"bptt", "ratebp", plots.PLAIN_CE, "sd", "esd", "esd_bptt"}
    for attr in ("label", "color"):
        values = [getattr(s, attr) for s in styles.values()]
        assert len(set(values)) == len(values), attr
    assert plots.style_key("ratebp", "none") == plots.PLAIN_CE
    assert plots.style_key("ratebp", "1/T") == "ratebp"
    assert plots.style_key("esd", "none") == "esd"  # only RateBP is split by its loss scaling
    assert plots.method_style("mystery").label == "mystery"


def test_curve_groups_take_the_method_style_and_keep_other_fields():
    style, label = plots.curve_group_style("ratebp, rate_grad_scale=none")
    assert style == plots.METHOD_STYLES[plots.PLAIN_CE] and label == style.label
    style, label = plots.curve_group_style("esd, T=4")
    assert style.color == plots.METHOD_STYLES["esd"].color and label == "ESD (rate-BP), T = 4"


def _colour(artist):
    return mcolors.to_hex(artist.get_color())


def test_accuracy_vs_T_single_seed_points_are_hollow_and_unconnected_and_legend_is_outside():
    df = records_table(accs("esd", [0.9, 0.8]) + accs("bptt", [0.7])
                       + accs("ratebp", [0.6, 0.5], **{"config.rate_grad_scale": "none"}))
    ax = analysis.accuracy_vs_T_figure(df).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()
             if not line.get_label().startswith("_")}
    bptt = lines["BPTT, 1 seed"]
    assert bptt.get_linestyle() == "None" and bptt.get_markerfacecolor() == "none"
    assert _colour(bptt) == "#000000" or bptt.get_markeredgecolor() == "#000000"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "ESD (rate-BP)" in labels and "RateBP (plain CE)" in labels
    assert ax.get_legend().get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1


def test_gradient_error_figure_draws_one_mean_line_per_method_in_the_method_colours():
    h = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "epoch": [0, 1, 0, 1],
                      "K_rate": [0.9, 0.8, 0.7, 0.6], "K_esd": [0.8, 0.5, 0.6, 0.4],
                      "cos_rate": [0.1] * 4, "cos_esd": [0.2] * 4})
    ax_k = analysis.gradient_error_figure(h).axes[0]
    lines = [line for line in ax_k.get_lines() if not line.get_label().startswith("_")]
    assert len(lines) == 2
    assert {_colour(line) for line in lines} == {plots.METHOD_STYLES["ratebp"].color.lower(),
                                                plots.METHOD_STYLES["esd"].color.lower()}
    assert lines[0].get_ydata().tolist() == [0.8, 0.7]  # mean over the two runs


def test_accuracy_vs_T_title_says_when_points_rest_on_different_seed_counts():
    df = records_table(accs("esd", [0.9, 0.8, 0.85]) + accs("bptt", [0.7, 0.75]))
    assert analysis.accuracy_vs_T_figure(df)._suptitle.get_text().endswith(
        "; 2–3 seeds per point")
