"""What tlsweep knows about each torchvision backbone, without importing torch.

The Snakefile reads this table (through workflow.study.grid) to check resolutions
when the config loads, and (through workflow.train.weights) to know the ImageNet
weights files to fetch; workflow.train.models builds the models from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    """How to build a torchvision model, where its classifier sits, what input it takes."""

    weights: str  # torchvision weights enum member, e.g. "MobileNet_V2_Weights.IMAGENET1K_V1"
    weights_file: str  # its file at https://download.pytorch.org/models/ and in torch's hub cache
    classifier: str  # the model's own classifier: kept by the `own` head, replaced by Identity otherwise
    features: int  # width of the globally average-pooled features the `gap` and `mlp` heads read
    min_resolution: int  # smallest input side the model accepts (torchvision's weights meta min_size)
    grid_pool: bool = False  # its `avgpool` pools to a grid (VGG 7x7, AlexNet 6x6): made global for gap/mlp
    pre_dropout: str | None = None  # a dropout before its classifier, removed for the gap/mlp heads
    plain_input: bool = False  # its ImageNet weights expect (x - 0.5) / 0.5 (InceptionV3's transform_input)
    aux_resolution: int | None = None  # smallest input its auxiliary classifier accepts (InceptionV3)


BACKBONES = {
    "mobilenet_v2": Backbone("MobileNet_V2_Weights.IMAGENET1K_V1", "mobilenet_v2-b0353104.pth", "classifier", 1280, 1),
    "resnet18": Backbone("ResNet18_Weights.IMAGENET1K_V1", "resnet18-f37072fd.pth", "fc", 512, 1),
    "resnet50": Backbone("ResNet50_Weights.IMAGENET1K_V2", "resnet50-11ad3fa6.pth", "fc", 2048, 1),
    "inception_v3": Backbone(
        "Inception_V3_Weights.IMAGENET1K_V1", "inception_v3_google-0cc3c7bd.pth", "fc", 2048, 75,
        pre_dropout="dropout", plain_input=True, aux_resolution=299,
    ),
    "vgg16": Backbone("VGG16_Weights.IMAGENET1K_V1", "vgg16-397923af.pth", "classifier", 512, 32, grid_pool=True),
    "densenet121": Backbone("DenseNet121_Weights.IMAGENET1K_V1", "densenet121-a639ec97.pth", "classifier", 1024, 29),
    "alexnet": Backbone("AlexNet_Weights.IMAGENET1K_V1", "alexnet-owt-7be5be79.pth", "classifier", 256, 63,
                        grid_pool=True),
}


def get_backbone(name: str) -> Backbone:
    """The Backbone entry for a model name, or an error listing the known ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def resolution_error(name: str, resolution: int) -> str | None:
    """Why `name` cannot take `resolution` x `resolution` images, or None when it can."""
    low = get_backbone(name).min_resolution
    if resolution < low:
        return f"{name} needs a resolution of at least {low}, not {resolution}"
    return None
