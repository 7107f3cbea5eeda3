"""Back-links from the library to the book (d2l's "Defined in"): the core functions a chapter
builds up say, in one docstring line, "Explained in chapter N (`NN_name`)."; every such line
names a chapter file that exists, with its number."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = REPO / "book" / "chapters"
LINK = re.compile(r"Explained in chapter (\d+) \(`(\w+)`\)\.")

EXPLAINED = {
    "esdlib.neurons": ("surrogate_derivative", "charge", "fire", "voltage_reset", "lif_step",
                       "lif_multistep", "soft_reset_kappa", "lif_spike_pass"),
    "esdlib.passes": ("spike_pass", "rate_pass", "bptt_forward"),
    "esdlib.losses": ("hard_loss", "reliable_teacher", "esd_loss"),
    "esdlib.train.gradients": ("gradient_errors",),
    "esdlib.analysis.gradient_error": ("gradient_error_history",
                                       "final_per_layer_gradient_error"),
}


def _links():
    for path in sorted((REPO / "esdlib").rglob("*.py")):
        for m in LINK.finditer(path.read_text(encoding="utf-8")):
            yield path.relative_to(REPO), int(m.group(1)), m.group(2)


def test_every_back_link_names_an_existing_chapter_with_its_number():
    links = list(_links())
    assert links
    for path, number, name in links:
        assert (CHAPTERS / f"{name}.ipynb").is_file(), f"{path}: no chapter {name}"
        assert int(name.split("_")[0]) == number, f"{path}: chapter {number} is not {name}"


@pytest.mark.parametrize("module, names", EXPLAINED.items())
def test_the_functions_the_chapters_build_up_link_back(module, names):
    import importlib

    mod = importlib.import_module(module)
    for name in names:
        doc = getattr(mod, name).__doc__ or ""
        assert len(LINK.findall(doc)) == 1, f"{module}.{name} has no back-link to its chapter"
