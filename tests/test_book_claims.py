"""The book's claims (esdbook.claims): the paper numbers they quote come from results/paper/*.csv,
and the library's evidence module takes the claims explicitly (it names no chapter)."""

import inspect
import re

import pytest

from esdbook import claims
from esdlib.analysis import evidence, paired


def test_quoted_paper_numbers_are_read_from_the_paper_tables():
    table1 = claims.paper_table("table1_static")
    r18 = table1[table1["architecture"] == "ResNet-18"]
    esd, rate = r18[r18["method"] == "ESD (ours in paper)"], r18[r18["method"] == "RateBP"]
    for T in (2, 4, 6):
        a = esd.loc[esd["T"] == T, "cifar10"].iloc[0]
        b = rate.loc[rate["T"] == T, "cifar10"].iloc[0]
        assert claims.by_key("esd>ratebp" if T == 4 else f"esd>ratebp@T{T}").paper == (
            f"CIFAR-10, ResNet-18, T = {T}: {a:.2f} vs {b:.2f} ({a - b:+.2f})")
    assert claims.static_gap(3) == "not reported (T = 3)"
    assert claims.by_key("dvs:esd>ratebp").paper == \
        "CIFAR10-DVS, ResNet-18, T = 10: 81.40 vs 80.40 (+1.00)"
    assert claims.by_key("firing:esd<bptt").paper == \
        "CIFAR-10, ResNet-18, T = 4: 0.1680 vs 0.2018 (−0.034)"


def test_every_number_a_claim_quotes_is_in_a_paper_table():
    values = set()
    for name in ("table1_static", "table_dvs", "firing_rates"):
        t = claims.paper_table(name)
        values |= {f"{v:.2f}" for v in t.select_dtypes("number").stack()}
        values |= {f"{v:.4f}" for v in t.select_dtypes("number").stack()}
    for claim in claims.CLAIMS + claims.MNIST_CLAIMS + claims.PARITY_CLAIMS:
        quoted = re.findall(r"(?<![+−\d.=] )(?<![+−\d.])\d+\.\d+", claim.paper)
        assert all(q in values for q in quoted), (claim.key, quoted)


def test_the_library_takes_the_claims_explicitly_and_names_no_chapter():
    for fn in (evidence.claims_table, evidence.cell_table, evidence.compare_cells,
               evidence.compare_verdicts):
        param = inspect.signature(fn).parameters["claims"]
        assert param.default is inspect.Parameter.empty, fn.__name__
    for module in (evidence, paired):
        source = inspect.getsource(module)
        assert not re.search(r"\d\d_[a-z]+|esdbook|CLAIMS", source), module.__name__


def test_by_key_names_the_keys_when_there_is_none():
    assert claims.by_key("esd>sd").chapter == "09_ablations"
    with pytest.raises(KeyError, match="esd>sd"):
        claims.by_key("nope")
