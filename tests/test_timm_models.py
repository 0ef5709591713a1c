"""timm models: built from timm, pretrained weights read offline from a Hugging Face cache laid out as the hub does;
one training step per head in channels-last memory format, as the training job runs every model."""

import sys

import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import digits_shard, make_cell
from test_training import quiet
from workflow.core.catalogue import timm_hub_repo
from workflow.train.cell import train_cell
from workflow.core.heads import HEADS
from workflow.train.models import build_classifier, set_train_mode, set_trainable
from workflow.train.timm_models import import_timm
from workflow.train.weights import cached_timm_weights, cached_weights_path, imagenet_files, weight_downloads

# A ResNet, an EfficientNet, a ConvNeXt, a RegNet, a MobileNetV3 and a ViT, the smallest of each.
REPRESENTATIVE = ["timm:resnet10t", "timm:efficientnet_b0", "timm:convnext_atto", "timm:regnetx_002",
                  "timm:mobilenetv3_small_050", "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"]
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf"


def place_hub_weights(hf_home, model: str) -> dict:
    """Save a randomly initialised state dict as the hub caches a repository's model.safetensors."""
    state = timm.create_model(model.removeprefix("timm:"), pretrained=False).state_dict()
    repo = hf_home / "hub" / f"models--{timm_hub_repo(model).replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    return state


@pytest.mark.parametrize("model", REPRESENTATIVE)
def test_timm_model_loads_cached_weights_offline_and_trains_a_step_with_each_head(hf_home, model):
    cached = place_hub_weights(hf_home, model)
    assert cached_weights_path(model) == hf_home / "hub" / f"models--{timm_hub_repo(model).replace('/', '--')}" / \
        "refs" / "main"
    cfg = timm.create_model(model.removeprefix("timm:"), pretrained=False).pretrained_cfg
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    for head in HEADS:
        classifier, normalization = build_classifier(model, 3, "imagenet", head=head, resolution=32)
        assert normalization == (tuple(cfg["mean"]), tuple(cfg["std"]))
        backbone = classifier.backbone.state_dict()
        same = [k for k in cached if k in backbone and backbone[k].shape == cached[k].shape]
        assert len(same) > len(cached) // 2 and all(torch.equal(backbone[k], cached[k]) for k in same), head
        classifier = classifier.to(memory_format=torch.channels_last)  # as the training job moves every model
        set_trainable(classifier, "all")
        set_train_mode(classifier, "all")
        last = [m for m in classifier.head.modules() if isinstance(m, torch.nn.Linear)][-1]
        before = last.weight.detach().clone()
        optimizer = torch.optim.SGD(classifier.parameters(), lr=0.1)
        loss = torch.nn.functional.cross_entropy(classifier(x.contiguous(memory_format=torch.channels_last)), y)
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss) and last.out_features == 3 and not torch.equal(before, last.weight), head


@pytest.fixture(scope="module")
def digits_32(tmp_path_factory):
    """Digits 0-2 at 32x32 (ViT's patches need more than 16 pixels)."""
    return digits_shard(tmp_path_factory.mktemp("data32"), 32)


@pytest.mark.slow  # torch.compile on the CPU: a few minutes per model
@pytest.mark.parametrize("model", ["timm:convnext_atto", "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"])
def test_a_compiled_timm_model_trains_through_the_job_in_channels_last(digits_32, tmp_path, model):
    cell = make_cell(model=model, resolution=32,
                     training={"compile": True, "stages": [{"name": "all", "train": "all", "epochs": 1}]})
    metrics = train_cell(cell, digits_32, tmp_path, threads=1, log=quiet)
    assert metrics["status"] == "ok" and metrics["run"]["compiled"] and metrics["epochs_run"] == 1
    assert metrics["test_accuracy"] is not None and (tmp_path / "best.pt").exists()


def test_timm_head_freezing_keeps_the_backbone():
    classifier, _ = build_classifier("timm:convnext_atto", 3, "none", head="mlp", resolution=32)
    set_trainable(classifier, "head")
    assert {n for n, p in classifier.named_parameters() if p.requires_grad} == {
        n for n, _ in classifier.head.named_parameters(prefix="head")}


def test_missing_timm_weights_name_the_file_and_the_command(hf_home):
    with pytest.raises(FileNotFoundError, match=r"models--timm--resnet10t\.c3_in1k/snapshots/<revision>/"
                                                r"model\.safetensors is missing.*fetch-weights --timm timm:resnet10t$"):
        build_classifier("timm:resnet10t", 3, "imagenet", resolution=32)
    place_hub_weights(hf_home, "timm:resnet10t")
    assert cached_timm_weights("timm:resnet10t").name == "model.safetensors"


def test_weight_downloads_split_torchvision_files_and_timm_repositories(hf_home, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    downloads = weight_downloads(imagenet_files(["resnet18", "timm:resnet10t"]))
    assert downloads["torchvision"] == {"resnet18-f37072fd.pth": "https://download.pytorch.org/models/resnet18-f37072fd.pth"}
    assert downloads["timm"] == {"timm--resnet10t.c3_in1k": "timm:resnet10t"}
    assert downloads["hub_cache"] == str(hf_home / "hub") and downloads["torchvision_dir"] == str(tmp_path / "torch/hub/checkpoints")


def test_a_machine_without_timm_is_told_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what Python does for a package that is not installed
    with pytest.raises(ValueError, match="timm: models need the timm package"):
        import_timm()
