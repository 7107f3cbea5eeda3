"""Packaging: environment.yml stays in sync with pyproject; CI calls the README's test command."""

import pathlib

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = {d for d in project["dependencies"] if "==" in d}
    assert pinned <= set(pip), f"pins missing from environment.yml: {pinned - set(pip)}"
    extras = set(project["optional-dependencies"])
    assert any(p.startswith("-e .[") and set(p[5:-1].split(",")) == extras for p in pip)
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert tuple(map(int, py.split("=")[1].split("."))) >= (3, 10)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
