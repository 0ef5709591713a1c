"""Folders whose names hold a space and non-ASCII letters work end to end: every path in every rule's shell
command is quoted, so the tiny study finishes with its tables and writes nothing outside its folders."""

import pytest

from conftest import snakemake, tiny_study, write_config

pytestmark = pytest.mark.pipeline


def test_the_tiny_study_runs_in_folders_with_spaces_and_non_ascii_names(tmp_path):
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    config = tiny_study()
    config["grid"].update(batch_size=[32], optimizer=["adam"])
    config.update(results_dir="résultats dir", data_dir="données prêtes/d", raw_dir="brut ø")
    configfile = write_config(workdir / "tiny study.yaml", config)
    snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    out = workdir / "résultats dir" / "tiny"
    assert (out / "tables" / "summary.csv").read_text().count("\n") == 2  # a header and the grid's one cell
    assert sorted(path.name for path in workdir.iterdir()) == [
        ".snakemake", "données prêtes", "résultats dir", "tiny study.yaml"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["work dir"]
