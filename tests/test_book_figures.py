"""esdbook.figures: the data figures, the SOP/energy table and the tensor counts of chapter 8."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from esdbook import figures


def test_energy_table_means_per_method_and_T_with_rate_bp_split_by_loss_scaling():
    runs = pd.DataFrame({
        "config.method": ["esd", "esd", "ratebp", "ratebp"], "config.T": [4, 4, 4, 4],
        "config.rate_grad_scale": ["1/T", "1/T", "1/T", "none"],
        figures.SOPS: [1e6, 3e6, 2e6, 4e6], figures.MACS: [1e4, 1e4, 1e4, 1e4],
        figures.ENERGY: [1.0, 2.0, 1.5, 3.0]})
    t = figures.energy_table(runs).set_index("method")
    assert list(t.index) == ["RateBP (1/T)", "RateBP (plain CE)", "ESD (rate-BP)"]
    assert t.loc["ESD (rate-BP)", "SOPs (M)"] == 2.0 and t.loc["ESD (rate-BP)", "seeds"] == 2
    assert t.loc["ESD (rate-BP)", "energy (µJ)"] == 1.5
    assert figures.energy_table(pd.DataFrame()).empty
    assert isinstance(figures.energy_figure(runs), Figure)
    assert isinstance(figures.energy_figure(pd.DataFrame()), Figure)


def test_tensor_counts_leave_out_exact_tensors_and_count_close_ones():
    per_layer = pd.DataFrame({"K_rate": [0.5, 0.5, 0.5, 0.0], "K_esd": [0.3, 0.495, 0.6, 0.0]})
    assert figures.tensor_counts(per_layer) == {"tensors": 4, "exact": 1, "compared": 3,
                                                "hold": 2, "close": 1, "clear": 1}


def test_data_figures_draw_a_grid_per_class_and_one_column_per_timestep():
    images, labels = np.random.rand(30, 1, 8, 8), [i % 3 for i in range(30)]
    grid = figures.digit_grid_figure(images, labels, per_class=4)
    assert len(grid.axes) == 4 * 3 and [grid.axes[i].get_title() for i in range(3)] == \
        ["0", "1", "2"]
    frames = np.zeros((5, 2, 8, 8))
    frames[2, 1, 0, :3] = 1
    assert len(figures.event_frames_figure(frames, 7).axes) == 3 * 5
    counts = figures.event_counts(frames)
    assert counts["ON"].tolist() == [0, 0, 3, 0, 0] and counts["OFF"].sum() == 0


def test_mnist_grid_fetches_nothing_when_mnist_is_not_on_disk(tmp_path, monkeypatch):
    import esdlib.data.mnist as mnist

    monkeypatch.setattr(mnist, "fetch_wheel", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("fetched")))
    fig, found = figures.mnist_grid(tmp_path / "mnist")
    assert found is None and isinstance(fig, Figure)
    assert not (tmp_path / "mnist").exists()


def test_ratebp_recipe_means_and_energy_values():
    plain = pd.DataFrame({"config.method": ["ratebp", "ratebp", "esd"],
                          "config.rate_grad_scale": ["none", "none", "1/T"],
                          "metrics.final_test_acc": [0.7, 0.8, 0.9]})
    scaled = pd.DataFrame({"config.method": ["ratebp"], "config.rate_grad_scale": ["1/T"],
                           "metrics.final_test_acc": [0.6]})
    v = figures.ratebp_recipe_means(plain, scaled)
    assert v == {"ratebp_none_acc": "75.00 %", "ratebp_none_n": 2, "ratebp_1_T_acc": "60.00 %",
                 "ratebp_1_T_n": 1}
    assert figures.ratebp_recipe_means(pd.DataFrame(), pd.DataFrame())["ratebp_1_T_acc"] == "n/a"
    rec = {"run_id": "r", "config": {"method": "esd", "T": 4, "seed": 3},
           "metrics": {"sops_per_sample": 2e6, "macs_per_sample": 1e4, "e_ac_pj": 0.9,
                       "e_mac_pj": 4.6, "energy_uj_per_sample": 1.846, "firing_rate_mean": 0.2}}
    runs = pd.DataFrame({"config.method": ["esd"], "config.T": [4], figures.SOPS: [2e6],
                         figures.MACS: [1e4], figures.ENERGY: [1.846]})
    e = figures.energy_values(figures.energy_table(runs), [rec], T=4)
    assert e["sops_esd"] == "2.00" and e["sops_bptt"] == "n/a" and e["ex_seed"] == 3
    assert e["ex_energy"] == "1.8460 µJ" and e["e_ac"] == "0.9 pJ"
