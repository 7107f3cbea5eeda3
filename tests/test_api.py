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
