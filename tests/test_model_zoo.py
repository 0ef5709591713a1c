"""Every torchvision classification model: built from the catalogue, loading cached weights, one step per head
in channels-last memory format (as the training job runs every model), and a compiled ResNet through the job
(slow: torch.compile on the CPU).

CI runs a representative sample; the rest is marked slow (excluded by pyproject's addopts). The full set:

    python -m pytest -m "slow or not slow" tests/test_model_zoo.py tests/test_catalogue.py
"""

import pytest
import torch
import torchvision

from conftest import make_cell
from test_training import quiet
from workflow.core.backbones import get_backbone, torchvision_backbones
from workflow.train.cell import train_cell
from workflow.core.heads import HEADS
from workflow.train.models import build_classifier, imagenet_normalization, parameterised_layers, set_trainable
from workflow.train.models import set_train_mode

# Small members of each family: a convolutional classifier, an auxiliary one, a grid pool, a LayerNorm one.
SAMPLE = {"alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "googlenet", "inception_v3", "mnasnet0_5",
          "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "resnet18", "shufflenet_v2_x0_5",
          "squeezenet1_1"}
ALL = sorted(torchvision.models.list_models(module=torchvision.models))


def sampled(names):
    return [name if name in SAMPLE else pytest.param(name, marks=pytest.mark.slow) for name in names]


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def place_cached_weights(torch_home, name) -> dict:
    """Save a randomly initialised state dict under the weights URL's file name in torch's hub cache."""
    spec = get_backbone(name)
    kwargs = {"image_size": spec.min_resolution} if spec.image_size_param else {}
    state = torchvision.models.get_model(name, weights=None, **kwargs).state_dict()
    target = torch_home / "hub" / "checkpoints" / spec.weights_file
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
    return state


def test_sample_names_exist_and_the_catalogue_lists_every_torchvision_model():
    assert SAMPLE <= set(ALL) and sorted(torchvision_backbones()) == ALL


@pytest.mark.parametrize("name", sampled(ALL))
def test_model_loads_cached_weights_and_trains_a_step_with_each_head(torch_home, name):
    torch.manual_seed(0)  # random weights: squeezenet's own head ends in a ReLU that some draws leave dead
    cached = place_cached_weights(torch_home, name)
    spec = get_backbone(name)
    r = spec.min_resolution if spec.fixed_resolution else max(spec.min_resolution, 32)
    x, y = torch.randn(2, 3, r, r), torch.tensor([0, 2])
    weights = torchvision.models.get_model_weights(name).DEFAULT
    expected_norm = (tuple(weights.transforms().mean), tuple(weights.transforms().std))
    assert imagenet_normalization(name) == ((0.5,) * 3, (0.5,) * 3) if spec.plain_input else expected_norm
    for head in HEADS:
        model, _ = build_classifier(name, num_classes=3, weights="imagenet", head=head, resolution=r)
        backbone = model.backbone.state_dict()
        shared = [key for key in cached if key in backbone]
        assert len(shared) > len(cached) // 2, head
        for key in (shared[0], shared[-1]):
            assert torch.equal(backbone[key], cached[key]), (head, key)
        model = model.to(memory_format=torch.channels_last)  # as the training job moves every model
        kernels = [p for p in model.parameters() if p.dim() == 4]
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels), head
        set_trainable(model, "all")
        set_train_mode(model, "all")
        last = [m for m in model.head.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
        before = last.weight.detach().clone()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        out = model(x.contiguous(memory_format=torch.channels_last))
        loss = torch.nn.functional.cross_entropy(out[0] if isinstance(out, tuple) else out, y)
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss) and not torch.equal(before, last.weight), head
        model.eval()
        with torch.no_grad():
            assert model(x).shape == (2, 3), head


@pytest.mark.parametrize("name", sampled(["convnext_tiny", "swin_t", "vit_b_16"]))
def test_models_without_batch_norm_freeze_and_train_the_last_layers(name):
    spec = get_backbone(name)
    r = max(spec.min_resolution, 32)
    model, _ = build_classifier(name, 3, "none", resolution=r)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.backbone.modules())
    layers = parameterised_layers(model)
    set_trainable(model, "last:4")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{layer}.{p}" for layer, module in layers[-4:]
                         for p, _ in module.named_parameters(recurse=False)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    set_train_mode(model, "last:4")
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, r, r)), torch.tensor([0, 1])).backward()
    optimizer.step()
    after = dict(model.named_parameters())
    assert {n for n, value in before.items() if not torch.equal(value, after[n])} == trainable


def test_weights_file_check_builds_a_model_that_cannot_go_on_the_meta_device(tmp_path):
    from workflow.export.weights_check import WeightsFileError, check_weights_file
    from workflow.train.state import save_checkpoint

    model, normalization = build_classifier("regnet_x_400mf", 3, "none")
    save_checkpoint(tmp_path / "best.pt", model, make_cell(model="regnet_x_400mf", resolution=32), normalization, epoch=1)
    check_weights_file(tmp_path / "best.pt", "regnet_x_400mf")
    with pytest.raises(WeightsFileError, match="holds a 'regnet_x_400mf' model"):
        check_weights_file(tmp_path / "best.pt", "regnet_y_400mf")


@pytest.mark.slow  # torch.compile on the CPU: about 2 minutes
def test_a_compiled_resnet_trains_through_the_job_in_channels_last(shard, tmp_path):
    training = {"compile": True, "stages": [{"name": "all", "train": "all", "epochs": 1}]}
    metrics = train_cell(make_cell(model="resnet18", training=training), shard, tmp_path, threads=1, log=quiet)
    assert metrics["status"] == "ok" and metrics["run"]["compiled"] and metrics["epochs_run"] == 1
    assert metrics["test_accuracy"] is not None and (tmp_path / "best.pt").exists()
