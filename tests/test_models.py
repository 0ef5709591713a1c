"""Backbones, heads, starting weights and freezing."""

from pathlib import Path

import pytest
import torch
import torchvision

from conftest import make_cell
from workflow.core.backbones import torchvision_backbones
from workflow.train.errors import ResolutionError, StartingWeightsError, TrainValueError
from workflow.train.models import (
    PLAIN_MEAN, set_trainable, build_classifier, imagenet_weights,
    parameterised_layers, set_train_mode,
)
from workflow.train.state import save_checkpoint
from workflow.train.weights import cached_weights_path, hub_dir, imagenet_files

@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def place_cached_weights(torch_home, name):
    """Put a weights file where torchvision looks for the ImageNet download; return its state."""
    weights = imagenet_weights(name)
    kwargs = {"init_weights": False} if name == "inception_v3" else {}
    full = getattr(torchvision.models, name)(weights=None, **kwargs).state_dict()
    target = torch_home / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(full, target)
    return full


def forward_order(model, x):
    """Names of the parameterised layers in the order a forward pass runs them."""
    ran, hooks = [], []
    for name, module in parameterised_layers(model):
        hooks.append(module.register_forward_hook(lambda *_, name=name: ran.append(name)))
    model(x)
    for hook in hooks:
        hook.remove()
    return ran


def test_backbone_table_agrees_with_torchvision():
    for name, spec in torchvision_backbones().items():
        weights = imagenet_weights(name)
        assert spec.min_resolution == weights.meta["min_size"][0], name
        assert weights.url.rsplit("/", 1)[1].startswith(name.split("_")[0]), name
        assert weights.url == f"https://download.pytorch.org/models/{spec.weights_file}", name
        assert imagenet_files([name]) == {name: (str(cached_weights_path(name)), weights.url)}


@pytest.mark.parametrize("env", [
    {"TORCH_HOME": "/somewhere/torch"}, {"TORCH_HOME": "~/th"}, {"XDG_CACHE_HOME": "/xdg"}, {},
], ids=["torch-home", "torch-home-user", "xdg", "default"])
def test_hub_dir_is_torchs_without_importing_it(env, monkeypatch):
    for key in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert hub_dir() == Path(torch.hub.get_dir())
    for name in torchvision_backbones():
        url = imagenet_weights(name).url
        assert cached_weights_path(name) == Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]


def test_heads_keep_or_replace_the_models_own_classifier():
    gap, _ = build_classifier("alexnet", 4, "none", resolution=63)
    assert [type(m).__name__ for m in gap.head] == ["Dropout", "Linear"] and gap.head[0].p == 0.5
    assert gap.head[1].in_features == 256 and isinstance(gap.backbone.avgpool, torch.nn.AdaptiveAvgPool2d)
    mlp, _ = build_classifier("alexnet", 4, "none", head="mlp", resolution=63)
    assert [type(m).__name__ for m in mlp.head] == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert [m.out_features for m in mlp.head if isinstance(m, torch.nn.Linear)] == [256, 128, 4]
    assert mlp.head[6].p == 0.2
    own, _ = build_classifier("alexnet", 4, "none", head="own", resolution=63)
    assert [m.out_features for m in own.head if isinstance(m, torch.nn.Linear)] == [4096, 4096, 4]
    assert own.new_layers == ("head.6",)
    assert own(torch.randn(2, 3, 63, 63)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"unknown head .deep.; choose \["):
        build_classifier("resnet18", 2, "none", head="deep")
    with pytest.raises(ValueError, match="training.dropout: the 'own' head keeps"):
        build_classifier("resnet18", 2, "none", dropout=0.3, head="own")


def test_inception_input_transform_is_done_by_our_normalisation(torch_home):
    """Our (x - 0.5) / 0.5 input equals torchvision's transform_input applied to ImageNet-normalised input."""
    place_cached_weights(torch_home, "inception_v3")
    reference = torchvision.models.inception_v3(weights=imagenet_weights("inception_v3")).eval()
    assert reference.transform_input
    reference.fc = torch.nn.Identity()
    model, (mean, std) = build_classifier("inception_v3", 3, "imagenet", head="own", resolution=80)
    model.eval()
    pixels = torch.rand(2, 3, 80, 80)
    normalise = lambda m, s: (pixels - torch.tensor(m).view(1, 3, 1, 1)) / torch.tensor(s).view(1, 3, 1, 1)  # noqa: E731
    with torch.no_grad():
        ours = model.backbone(normalise(mean, std))
        imagenet = imagenet_weights("inception_v3").transforms()
        theirs = reference(normalise(imagenet.mean, imagenet.std))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_inception_auxiliary_classifier_trains_at_299_and_is_dropped_below():
    model, _ = build_classifier("inception_v3", 3, "none", resolution=299)
    assert model.backbone.AuxLogits.fc.out_features == 3 and "backbone.AuxLogits.fc" in model.new_layers
    model.train()
    logits, aux = model(torch.randn(2, 3, 299, 299))
    assert logits.shape == aux.shape == (2, 3)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 299, 299)).shape == (1, 3)
    small, _ = build_classifier("inception_v3", 3, "none", resolution=75)
    assert small.backbone.AuxLogits is None
    small.train()
    assert small(torch.randn(2, 3, 75, 75)).shape == (2, 3)


def test_resolution_below_the_models_minimum_is_a_clear_error():
    with pytest.raises(ResolutionError, match="inception_v3 needs a resolution of at least 75, not 32"):
        build_classifier("inception_v3", 3, "none", resolution=32)


def test_missing_cached_weights_name_the_file_and_the_rule(torch_home):
    with pytest.raises(FileNotFoundError, match=r"resnet18-f37072fd\.pth is missing; the fetch_weights rule"):
        build_classifier("resnet18", 3, "imagenet")


def trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def running_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def one_step(model, policy, classes=4):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    set_train_mode(model, policy)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.arange(8) % classes)
    loss.backward()
    optimizer.step()


def test_train_head_trains_only_the_head_and_keeps_batchnorm_statistics():
    model, _ = build_classifier("resnet18", num_classes=4, weights="none", dropout=0.0)
    set_trainable(model, "head")
    assert trainable(model) == {"head.1.weight", "head.1.bias"}
    stats = running_stats(model)
    frozen_weight = model.backbone.conv1.weight.detach().clone()
    one_step(model, "head")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    assert torch.equal(frozen_weight, model.backbone.conv1.weight)

    set_trainable(model, "all")
    assert all(p.requires_grad for p in model.parameters())
    set_train_mode(model, "all")
    model(torch.randn(8, 3, 32, 32))
    assert not torch.equal(stats["backbone.bn1.running_mean"], model.state_dict()["backbone.bn1.running_mean"])


def test_last_n_trains_exactly_the_last_n_parameterised_layers():
    model, _ = build_classifier("resnet18", num_classes=4, weights="none")
    layers = parameterised_layers(model)
    assert len(layers) == 20 + 20 + 1  # 20 convolutions (3 downsampling), 20 batch norms, the head's linear
    assert [n for n, _ in layers[-3:]] == ["backbone.layer4.1.conv2", "backbone.layer4.1.bn2", "head.1"]
    set_trainable(model, "last:3")
    assert trainable(model) == {
        "head.1.weight", "head.1.bias", "backbone.layer4.1.bn2.weight", "backbone.layer4.1.bn2.bias",
        "backbone.layer4.1.conv2.weight",
    }
    stats = running_stats(model)
    one_step(model, "last:3")
    after = model.state_dict()
    changed = {k.rsplit(".", 1)[0] for k, v in stats.items() if not torch.equal(v, after[k])}
    assert changed == {"backbone.layer4.1.bn2"}  # only the trainable batch norm updates its statistics
    set_trainable(model, "last:1")
    assert trainable(model) == {"head.1.weight", "head.1.bias"}
    with pytest.raises(TrainValueError, match="train 'last:42': this model with the 'gap' head has only 41"):
        set_trainable(model, "last:42")
    with pytest.raises(TrainValueError, match="unknown value 'last:0' for what trains"):
        set_trainable(model, "last:0")


@pytest.mark.parametrize("name, module, first", [
    ("resnet18", "layer4", "backbone.layer4.0.conv1"),
    ("densenet121", "features.denseblock4", "backbone.features.denseblock4.denselayer1.norm1"),
    ("mobilenet_v2", "features.17", "backbone.features.17.conv.0.0"),
])
def test_train_from_a_module_trains_it_everything_after_it_and_the_head(name, module, first):
    model, _ = build_classifier(name, num_classes=4, weights="none", resolution=32)
    set_trainable(model, f"from:{module}")
    names = [n for n, _ in parameterised_layers(model)]
    expected = {f"{layer}.{p}" for layer in names[names.index(first):]
                for p, _ in dict(model.named_modules())[layer].named_parameters(recurse=False)}
    assert trainable(model) == expected
    assert {"head.1.weight", "head.1.bias"} <= trainable(model)
    with pytest.raises(TrainValueError, match="train 'from:layer9': the backbone has no module 'layer9'"):
        set_trainable(model, "from:layer9")


def test_last_n_counts_the_mlp_heads_five_layers():
    model, _ = build_classifier("mobilenet_v2", num_classes=4, weights="none", head="mlp")
    set_trainable(model, "last:5")
    assert trainable(model) == {name for name, _ in model.head.named_parameters(prefix="head")}
    set_trainable(model, "last:6")
    assert trainable(model) - {name for name, _ in model.head.named_parameters(prefix="head")} == {
        "backbone.features.18.1.weight", "backbone.features.18.1.bias"}


def test_checkpoint_backbone_seeds_a_new_head(tmp_path):
    upstream, normalization = build_classifier("resnet18", num_classes=5, weights="none", dropout=0.5)
    path = tmp_path / "best.pt"
    save_checkpoint(path, upstream, make_cell(model="resnet18"), normalization, epoch=3)
    model, loaded_norm = build_classifier("resnet18", num_classes=7, weights="pretrain:x", dropout=0.5, init=path)
    assert loaded_norm == normalization
    assert model.head[1].out_features == 7
    for key, value in upstream.backbone.state_dict().items():
        assert torch.equal(value, model.backbone.state_dict()[key])


def test_own_head_carries_its_layers_over_but_the_last(tmp_path):
    upstream, normalization = build_classifier("alexnet", num_classes=5, weights="none", head="own", resolution=63)
    path = tmp_path / "best.pt"
    save_checkpoint(path, upstream, make_cell(model="alexnet", resolution=63), normalization, epoch=3)
    model, _ = build_classifier("alexnet", 7, "pretrain:x", init=path, head="own", resolution=63)
    assert torch.equal(model.head[1].weight, upstream.head[1].weight)
    assert model.head[6].out_features == 7
    fresh, _ = build_classifier("alexnet", 7, "pretrain:x", init=path, head="gap", resolution=63)
    assert torch.equal(fresh.backbone.features[0].weight, upstream.backbone.features[0].weight)


def test_torchvision_state_dict_file_loads_with_imagenet_normalisation(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-elsewhere.pth"
    torch.save(source.state_dict(), path)
    model, (mean, _) = build_classifier("resnet18", 3, str(path), init=path)
    assert list(mean) == imagenet_weights("resnet18").transforms().mean
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)
    torch.save({"something": "else"}, path)
    with pytest.raises(StartingWeightsError, match="is neither a tlsweep checkpoint nor a torchvision state dict"):
        build_classifier("resnet18", 3, str(path), init=path)


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    upstream, normalization = build_classifier("resnet18", num_classes=5, weights="none", dropout=0.5)
    path = tmp_path / "best.pt"
    save_checkpoint(path, upstream, make_cell(model="resnet18"), normalization, epoch=1)
    with pytest.raises(StartingWeightsError, match=r"best\.pt \(model 'resnet18'\) does not fit model 'mobilenet_v2'"):
        build_classifier("mobilenet_v2", num_classes=5, weights="pretrain:x", dropout=0.5, init=path)


def test_unknown_model_names_the_closest_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet19'; closest torchvision models: resnet18, "):
        build_classifier("resnet19", 2, "none", 0.5)


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "mobilenet_v2", "convnext_tiny"])
def test_layers_are_counted_in_forward_order(name):
    model, _ = build_classifier(name, num_classes=3, weights="none", resolution=32)
    leaves = [n for n, m in parameterised_layers(model) if next(m.children(), None) is None]
    assert [n for n in forward_order(model, torch.randn(2, 3, 32, 32)) if n in leaves] == leaves
