"""The run state (``esdlib.train.state``): the schema of a checkpoint's ``state`` and
``running`` entries, which older checkpoints (plain dicts with these keys) must keep loading."""

import pytest

from esdlib.train.state import EpochSums, RunState, record_diagnostics

FORMAT_2_STATE_KEYS = ["epoch", "step_in_epoch", "global_step", "history", "best_acc",
                       "best_epoch", "train_s", "last_eval", "first_loss"]
"""The keys of ``state`` in every format-2 checkpoint written so far (before ``RunState``)."""


def test_state_round_trips_through_the_checkpoint_dict():
    state = RunState(epoch=2, step_in_epoch=3, global_step=17, history=[{"epoch": 1}],
                     best_acc=0.5, best_epoch=1, train_s=4.5, first_loss=2.3)
    saved = state.to_dict()
    assert list(saved) == FORMAT_2_STATE_KEYS  # divergence only when set
    assert RunState.from_dict(saved) == state
    diverged = RunState(divergence={"epoch": 1, "reason": "x"}).to_dict()
    assert list(diverged) == [*FORMAT_2_STATE_KEYS, "divergence"]


def test_state_of_an_older_checkpoint_loads():
    """A dict written before ``first_loss`` existed (and with an int where a float is kept)."""
    old = {k: v for k, v in RunState().to_dict().items() if k != "first_loss"} | {"best_acc": 0}
    state = RunState.from_dict(old)
    assert state.first_loss is None and state.best_acc == 0


@pytest.mark.parametrize("saved, error, match", [
    ([], TypeError, "state is a list"),
    ({"epoch": 0}, KeyError, "step_in_epoch"),
    (RunState().to_dict() | {"epoch": "3"}, TypeError, r"state\['epoch'\] is a str"),
    (RunState().to_dict() | {"global_step": True}, TypeError, "global_step"),
    (RunState().to_dict() | {"history": {}}, TypeError, "history"),
])
def test_a_state_that_does_not_fit_is_named(saved, error, match):
    with pytest.raises(error, match=match):
        RunState.from_dict(saved)


def test_epoch_sums_are_sample_weighted_means():
    sums = EpochSums()
    sums.add(1.0, 3, 4, {"acc_out0": 0.5})
    sums.add(4.0, 1, 2, {"acc_out0": 1.0})
    assert sums.means() == pytest.approx({"train_loss": 2.0, "train_acc": 4 / 6,
                                          "train_acc_out0": 2 / 3})
    assert EpochSums(**{"loss": 1.0, "correct": 0.0, "samples": 0, "steps": 0, "diag": {}})


def test_record_diagnostics_number_branches_first_main_last():
    out = record_diagnostics({"acc_branch1": 0.1, "acc_branch2": 0.2, "acc_main": 0.9, "kl": 1})
    assert out == {"acc_out0": 0.1, "acc_out1": 0.2, "acc_out2": 0.9, "kl": 1}


def test_a_diverged_run_has_no_result_metrics_but_keeps_its_history():
    ev = {"firing_rates": {"mean": 0.2, "per_timestep": [0.2], "per_layer": {}, "definition": "d"},
          "energy": {"sops_per_sample": 5.0}}
    state = RunState(epoch=1, history=[{"epoch": 1, "test_acc": 0.8, "test_loss": 0.5,
                                        "train_loss": 0.4, "train_acc": 0.9}],
                     best_acc=0.8, best_epoch=1, last_eval=ev)
    done = state.metrics("complete")
    assert done["final_test_acc"] == 0.8 and done["best_epoch"] == 1
    assert done["train_loss"] == 0.4 and done["sops_per_sample"] == 5.0
    assert done["firing_rate_mean"] == 0.2
    assert state.firing_rates("complete") == {"per_timestep": [0.2], "per_layer": {},
                                              "definition": "d"}
    diverged = state.metrics("diverged")
    assert diverged == {"final_test_acc": None, "best_test_acc": None, "best_epoch": None,
                        "epochs_completed": 1}
    assert state.firing_rates("diverged") is None and RunState().firing_rates("complete") is None
