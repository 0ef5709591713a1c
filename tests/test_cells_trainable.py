"""`python -m workflow cells` shows each cell's trainable parameters per stage, before any training."""

import subprocess
import sys

from conftest import REPO, tiny_study

# torchvision's ResNet18 has 11,689,512 parameters, 513,000 of them in its 1000-class fc layer.
RESNET18_BODY = 11_689_512 - 513_000


def cells_output(tmp_path, study_file, config, *extra):
    result = subprocess.run([sys.executable, "-m", "workflow", "cells", "--configfile", str(study_file(config)), *extra],
                            capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_cells_lists_trainable_parameters_per_stage(tmp_path, study_file):
    config = tiny_study()
    config["grid"].update(optimizer=["adam"], batch_size=[32], train=["all", "from:layer4"])
    out = cells_output(tmp_path, study_file, config)
    head = 512 * 5 + 5  # the gap head's linear layer, digits 5-9
    layer4 = sum([512 * 256 * 9, 512 * 2, 512 * 512 * 9, 512 * 2, 512 * 256, 512 * 2,  # block 1 and its shortcut
                  512 * 512 * 9, 512 * 2, 512 * 512 * 9, 512 * 2])  # block 2
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip().startswith("digits-")}
    assert f"head {head:,} / finetune {RESNET18_BODY + head:,}" in lines["digits-5to9/resnet18/r16/bs32-lr1e-2-adam-all-s0-wbase"]
    assert f"head {head:,} / finetune {layer4 + head:,}" in lines[
        "digits-5to9/resnet18/r16/bs32-lr1e-2-adam-fromlayer4-s0-wbase"]
    assert f"scratch {RESNET18_BODY + head:,}" in lines["digits-0to4/resnet18/r16/bs64-lr1e-3-adam-all-s0-wnone"]
    assert "trainable parameters" in out and "assume 2 classes" not in out
    assert "trainable parameters" not in cells_output(tmp_path, study_file, config, "--no-trainable")


def test_an_image_folder_not_yet_planned_counts_two_classes_and_says_so(tmp_path, study_file):
    config = tiny_study()
    config.pop("pretrain")
    (tmp_path / "images").mkdir()  # there, not yet planned
    config["datasets"] = {"mine": {"source": "imagefolder", "path": str(tmp_path / "images")}}
    config["grid"].update(dataset=["mine"], weights=["none"], optimizer=["adam"], batch_size=[32], train=["head"])
    out = cells_output(tmp_path, study_file, config)
    assert f"head {512 * 2 + 2:,} / finetune {512 * 2 + 2:,}" in out
    assert "trainable parameters of datasets not yet planned (an image folder) assume 2 classes" in out
