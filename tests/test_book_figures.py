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
