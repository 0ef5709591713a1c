"""workflow.study stays torch-free, and every path of a study comes from workflow.core.paths."""

import json
import subprocess
import sys

from conftest import REPO, tiny_study
from fakecells import make_study
from workflow.cli import parser
from workflow.core import paths
from workflow.study.config import check_config
from workflow.study.grid import build_study

STUDY_MODULES = ["config", "grid", "settings", "halving", "outputs"]


def test_the_study_package_imports_without_torch():
    code = ("import json, sys\n"
            + "".join(f"import workflow.study.{name}\n" for name in STUDY_MODULES)
            + "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_grid_and_upstream_cells_have_folders_of_their_own(tmp_path):
    config = {**tiny_study(), "results_dir": str(tmp_path / "results")}
    check_config(config)
    study = build_study(config)
    grid, (upstream,) = study.grid_cells[0], [c for c in study.cells.values() if c.id not in study.grid_ids]
    assert study.cell_dir(grid.id) == tmp_path / "results/tiny/cells" / grid.id
    assert study.cell_dir(upstream.id) == tmp_path / "results/tiny/upstream" / upstream.id
    inputs = study.train_inputs(grid, imagenet={})
    assert inputs == {"manifest": f"results/data/{study.data_key('digits-5to9')}/r16.json",
                      "init": str(tmp_path / "results/tiny/upstream" / upstream.id / "best.pt")}
    assert not study.is_pretrain(grid.id) and study.is_pretrain(upstream.id)


def test_patterns_with_wildcards_are_the_paths_with_values(tmp_path):
    """The rules format these patterns with wildcards; the package calls the same functions with values."""
    study = make_study(tmp_path)
    cell = study.grid_cells[0].id
    cases = [
        (paths.rung_outputs(paths.rung_folder(paths.cell_folder("{out}", paths.GRID, "{cell}"), "{rung}")),
         {key: str(study.rung_dir(cell, 2) / name) for key, name in
          {**paths.CELL_FILES, "state": paths.STATE_PT}.items()}),
        (paths.ranking_file(paths.rankings_folder("{out}"), "{rung}"), str(study.ranking_path(2))),
        (paths.manifest_file("{data}", "{data_key}", "{resolution}"), str(study.manifest_path("d1", 16))),
    ]
    values = {"out": study.out, "cell": cell, "rung": 2, "data": study.data_dir, "data_key": study.data_key("d1"),
              "resolution": 16}
    for pattern, expected in cases:
        formatted = {k: v.format(**values) for k, v in pattern.items()} if isinstance(pattern, dict) \
            else pattern.format(**values)
        assert formatted == expected
    assert paths.rung_log("{out}", "{cell}", "{rung}").format(**values) == \
        f"{study.out}/logs/train/{cell}/rung-2.log"
    assert paths.log_file("results/data", "shard", paths.shard_key("d1", 16, 0, 2)) == \
        "results/data/logs/shard/d1/r16/shard-0-of-2.log"
    assert paths.dataset_shards("results/data", "d1", 16, 2) == [
        "results/data/d1/r16/shard-0-of-2.h5", "results/data/d1/r16/shard-1-of-2.h5"]


def test_training_commands_take_the_manifest_and_their_slots_as_arguments():
    for command, extra in (("train", []), ("train-rung", ["--rung", "1", "--until-epoch", "3"])):
        args = parser().parse_args([command, "--configfile", "s.yaml", "--cell", "d/m/r16/c", "--manifest", "m.json", "--out", "o", "--gpu-slots", "2",
                                    "--slots-per-gpu", "4", "--gpu-headroom", "0.8", *extra])
        assert (args.manifest, args.gpu_slots, args.slots_per_gpu, args.gpu_headroom) == ("m.json", 2, 4, 0.8)
    plain = parser().parse_args(["train", "--configfile", "s.yaml", "--cell", "d/m/r16/c", "--manifest", "m.json", "--out", "o"])
    assert (plain.gpu_slots, plain.slots_per_gpu) == (1, 1), "whole devices by default"
