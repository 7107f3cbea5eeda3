"""The public API: flat namespace, every exported name documented."""

import inspect

import esdlib as esd


def test_all_names_exist_and_have_docstrings():
    missing = [n for n in esd.__all__ if not hasattr(esd, n)]
    assert not missing
    undocumented = []
    for name in esd.__all__:
        obj = getattr(esd, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            if not (inspect.getdoc(obj) or "").strip():
                undocumented.append(name)
    assert not undocumented, undocumented


def test_no_duplicates_in_all():
    assert len(esd.__all__) == len(set(esd.__all__))


def test_method_api_is_one_table():
    """Every method is a ``Method`` entry; the derived tuples and ``get_method`` read it."""
    assert list(esd.METHODS) == ["bptt", "ratebp", "sd", "esd", "esd_bptt"]
    for name, method in esd.METHODS.items():
        assert isinstance(method, esd.Method) and method.name == name
        assert esd.get_method(name) is method
        assert method.passes in ("bptt", "two_pass") and method.description
    assert esd.BRANCH_METHODS == tuple(n for n, m in esd.METHODS.items() if m.branches)
    assert esd.RATE_BP_METHODS == tuple(n for n, m in esd.METHODS.items()
                                        if m.passes == "two_pass")
    assert esd.METHODS["esd"].loss is esd.esd_loss


def test_one_naming_rule_for_the_lif_functions():
    """``lif_step``, ``lif_multistep``, ``lif_spike_pass``, ``lif_rate_pass``, ``voltage_reset``;
    the old spellings are gone."""
    for name in ("lif_step", "lif_multistep", "lif_spike_pass", "lif_rate_pass",
                 "voltage_reset", "time_average", "ModeAware"):
        assert name in esd.__all__
    for old in ("spike_pass_lif", "rate_lif", "reset", "NeuronFactory"):
        assert not hasattr(esd, old)
