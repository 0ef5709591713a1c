"""envs/tlsweep.yaml (for --sdm conda) pins the same packages as pyproject.toml."""

import tomllib

import yaml

from conftest import REPO


def test_conda_env_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "envs/tlsweep.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert sorted(pip) == sorted(project)
    assert "python=3.11" in env["dependencies"]
