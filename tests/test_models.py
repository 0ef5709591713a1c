"""Backbones, heads, starting weights and freezing."""

import pytest
import torch
import torchvision

from workflow.models import (
    BACKBONES, IMAGENET_MEAN, apply_freeze, build_classifier, imagenet_weights, set_train_mode,
)
from workflow.training import save_checkpoint


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def place_cached_weights(torch_home, name):
    """Put a weights file where torchvision looks for the ImageNet download; return its state."""
    weights = imagenet_weights(name)
    full = getattr(torchvision.models, BACKBONES[name].builder)(weights=None).state_dict()
    target = torch_home / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(full, target)
    return full


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_imagenet_weights_load_from_cache_and_train_one_step(torch_home, name):
    cached = place_cached_weights(torch_home, name)
    model, (mean, std) = build_classifier(name, num_classes=3, weights="imagenet", dropout=0.5)
    assert mean == IMAGENET_MEAN
    some_key = next(k for k in cached if k.endswith("weight") and cached[k].ndim == 4)
    assert torch.equal(model.backbone.state_dict()[some_key], cached[some_key])
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.head[1].weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert model(x).shape == (2, 3) and torch.isfinite(loss)
    assert not torch.equal(before, model.head[1].weight)


def test_head_freezing_trains_only_the_head_and_keeps_batchnorm_statistics():
    model, _ = build_classifier("resnet18", num_classes=4, weights="none", dropout=0.0)
    apply_freeze(model, "head")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.1.weight", "head.1.bias"}
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    frozen_weight = model.backbone.conv1.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    set_train_mode(model, "head")
    loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.arange(8) % 4)
    loss.backward()
    optimizer.step()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    assert torch.equal(frozen_weight, model.backbone.conv1.weight)

    apply_freeze(model, "all")
    assert all(p.requires_grad for p in model.parameters())
    set_train_mode(model, "all")
    model(torch.randn(8, 3, 32, 32))
    assert not torch.equal(stats["backbone.bn1.running_mean"], model.state_dict()["backbone.bn1.running_mean"])


def test_checkpoint_backbone_seeds_a_new_head(tmp_path):
    upstream, normalization = build_classifier("resnet18", num_classes=5, weights="none", dropout=0.5)
    path = tmp_path / "best.pt"
    save_checkpoint(path, upstream, {"model": "resnet18"}, normalization, epoch=3)
    model, loaded_norm = build_classifier("resnet18", num_classes=7, weights="pretrain:x", dropout=0.5, init=path)
    assert loaded_norm == normalization
    assert model.head[1].out_features == 7
    for key, value in upstream.backbone.state_dict().items():
        assert torch.equal(value, model.backbone.state_dict()[key])


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    upstream, normalization = build_classifier("resnet18", num_classes=5, weights="none", dropout=0.5)
    path = tmp_path / "best.pt"
    save_checkpoint(path, upstream, {"model": "resnet18"}, normalization, epoch=1)
    with pytest.raises(ValueError, match=r"best\.pt \(model 'resnet18'\) does not fit model 'mobilenet_v2'"):
        build_classifier("mobilenet_v2", num_classes=5, weights="pretrain:x", dropout=0.5, init=path)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'lenet'; choose one of"):
        build_classifier("lenet", 2, "none", 0.5)
