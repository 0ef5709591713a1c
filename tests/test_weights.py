"""fetch_weights: torchvision weights files into torch's cache, checked against their SHA-256 prefix."""

import hashlib
import os
import re
import subprocess
import sys

import pytest

from archives import file_server  # noqa: F401 (fixture)
from conftest import REPO, load_study_file, snakemake, tiny_study
from workflow.data.download import ChecksumError, DownloadError
from workflow.train.weights import fetch_weights

BODY = b"not really resnet weights, but bytes with a known digest" * 1000
NAME = f"resnet18-{hashlib.sha256(BODY).hexdigest()[:8]}.pth"


def test_fetch_weights_downloads_verifies_and_keeps_the_file(file_server, tmp_path):  # noqa: F811
    file_server.files[f"/models/{NAME}"] = BODY
    dest = tmp_path / "hub" / "checkpoints" / NAME
    assert fetch_weights(file_server.url(f"/models/{NAME}"), dest) == dest
    assert dest.read_bytes() == BODY and sorted(p.name for p in dest.parent.iterdir()) == [NAME]
    fetch_weights(file_server.url(f"/models/{NAME}"), dest)
    assert len(file_server.requests) == 1  # a verified cached file is not fetched again


def test_interrupted_fetch_resumes(file_server, tmp_path):  # noqa: F811
    file_server.files[f"/{NAME}"] = BODY
    file_server.cut_after = 10_000
    dest = tmp_path / NAME
    with pytest.raises(DownloadError, match="run again to resume"):
        fetch_weights(file_server.url(f"/{NAME}"), dest)
    assert not dest.exists()
    fetch_weights(file_server.url(f"/{NAME}"), dest)
    assert dest.read_bytes() == BODY and file_server.requests[-1]["range"] == "bytes=10000-"


def test_file_that_does_not_match_its_name_is_kept_aside(file_server, tmp_path):  # noqa: F811
    wrong = "resnet18-00000000.pth"
    file_server.files[f"/{wrong}"] = BODY
    with pytest.raises(ChecksumError, match=r"resnet18-00000000\.pth: sha256 is .*, expected 00000000\.\.\."):
        fetch_weights(file_server.url(f"/{wrong}"), tmp_path / wrong)
    assert not (tmp_path / wrong).exists() and (tmp_path / f"{wrong}.bad").read_bytes() == BODY
    file_server.files["/weights.pth"] = BODY
    with pytest.raises(ValueError, match="carries no SHA-256 prefix"):
        fetch_weights(file_server.url("/weights.pth"), tmp_path / "weights.pth")


@pytest.mark.pipeline
def test_training_jobs_wait_for_the_cached_weights(tmp_path, study_file, monkeypatch):
    torch_home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    config = tiny_study()
    config["grid"].update(model=["resnet18", "mobilenet_v2"], weights=["imagenet"], batch_size=[32])
    configfile = study_file(config)
    result = snakemake(tmp_path, "-n", "--configfile", str(configfile))
    cached = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    manifest = load_study_file(configfile).manifest_path("digits-5to9", 16)
    assert f"output: {cached}" in result.stdout and f"input: {manifest}, {cached}" in result.stdout
    assert re.search(r"^fetch_weights\s+2$", result.stdout, re.M) and re.search(r"^train\s+4$", result.stdout, re.M)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cached")
    result = snakemake(tmp_path, "-n", "--configfile", str(study_file(config)))
    assert re.search(r"^fetch_weights\s+1$", result.stdout, re.M) and f"output: {cached}" not in result.stdout


@pytest.mark.pipeline
def test_timm_weights_are_fetched_into_the_hub_cache_before_training(tmp_path, study_file, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    config = tiny_study()
    config["grid"].update(model=["timm:resnet10t", "resnet18"], weights=["imagenet"], batch_size=[32])
    configfile = study_file(config)
    result = snakemake(tmp_path, "-n", "--configfile", str(configfile))
    ref = tmp_path / "hf" / "hub" / "models--timm--resnet10t.c3_in1k" / "refs" / "main"
    manifest = load_study_file(configfile).manifest_path("digits-5to9", 16)
    assert f"output: {ref}" in result.stdout and f"input: {manifest}, {ref}" in result.stdout
    assert "digits-5to9/timm-resnet10t/r16/" in result.stdout
    assert re.search(r"^fetch_timm_weights\s+1$", result.stdout, re.M)
    assert re.search(r"^fetch_weights\s+1$", result.stdout, re.M)


def test_the_weights_files_and_model_names_are_known_without_importing_torch_or_timm():
    code = ("import sys, workflow.study.grid, workflow.train.weights as w; "
            "from workflow.core.backbones import check_model, model_error, torchvision_backbones as tv; "
            "files = w.imagenet_files([*tv(), 'timm:resnet50']); assert len(files) == len(tv()) + 1, files; "
            "check_model('timm:resnet50'); assert 'closest' in model_error('resnet19', 32); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'timm')))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
