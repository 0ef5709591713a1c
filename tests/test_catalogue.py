"""The model catalogue: in step with the installed torchvision and timm, and its errors for unknown names."""

import pytest
import torchvision

from conftest import REPO, tiny_study
from test_model_zoo import ALL, sampled
from workflow.study.config import ConfigError
from workflow.study.grid import build_study
from workflow.core.backbones import check_model, get_backbone
from workflow.core.catalogue import load_catalogue
from workflow.train.catalogue_build import structure_facts, timm_catalogue, versions, weights_facts

def validated(config):
    """The schema's defaults filled in, as the Snakefile does."""
    from snakemake.utils import validate

    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


REGENERATE = "the catalogue is out of step with the installed libraries: python -m workflow.train.catalogue_build"


def test_catalogue_matches_the_installed_versions_and_timms_names():
    catalogue = load_catalogue()
    assert catalogue["versions"] == versions(), REGENERATE
    assert catalogue["timm"] == timm_catalogue(), REGENERATE
    assert {"resnet50", "efficientnet_b0", "convnext_small"} <= set(catalogue["timm"]["models"])


def test_weights_facts_match_torchvisions_for_every_model():
    catalogue = load_catalogue()["torchvision"]
    assert sorted(catalogue) == ALL, REGENERATE
    for name in ALL:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        assert catalogue[name]["url"] == weights.url and catalogue[name]["min_resolution"] == weights.meta["min_size"][0]
        assert {k: catalogue[name][k] for k in weights_facts(name)} == weights_facts(name), REGENERATE


@pytest.mark.parametrize("name", sampled(ALL))
def test_structure_facts_match_the_model(name):
    facts = load_catalogue()["torchvision"][name]
    assert {k: facts[k] for k in structure_facts(name, weights_facts(name))} == structure_facts(
        name, weights_facts(name)), REGENERATE


@pytest.mark.parametrize("name, message", [
    ("efficientnet_b9", "unknown model 'efficientnet_b9'; closest torchvision models: efficientnet_b7, "),
    ("convnext_tiney", "unknown model 'convnext_tiney'; closest torchvision models: convnext_tiny, "),
    ("timm:resnet5O", "unknown timm model 'resnet5O'; closest: timm:resnet50"),
    ("timm:convnext_tiny.fb_in99k", "unknown timm model 'convnext_tiny.fb_in99k'; closest: timm:convnext_tiny.fb_in1k"),
])
def test_unknown_names_get_the_closest_ones(name, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        check_model(name)


@pytest.mark.parametrize("name", ["resnet34", "efficientnet_b0", "convnext_tiny", "timm:resnet50",
                                  "timm:resnet50.a1_in1k", "timm:vit_tiny_patch16_224.augreg_in21k"])
def test_known_names_pass(name):
    check_model(name)


def test_a_study_with_an_unknown_model_is_refused_at_load_naming_the_cell():
    config = tiny_study()
    config["grid"]["model"] = ["resnet18", "resnet19"]
    with pytest.raises(ConfigError, match=r"grid: unknown model 'resnet19'; closest torchvision models: resnet18.*"
                                          r"\(cell digits-5to9/resnet19/r16/"):
        build_study(validated(config))


def test_vit_takes_only_its_own_resolution():
    assert get_backbone("vit_b_16").fixed_resolution and not get_backbone("convnext_tiny").fixed_resolution
    config = tiny_study()
    config["grid"].update(model=["vit_b_16"], resolution=[160])
    with pytest.raises(ConfigError, match="vit_b_16 takes only a resolution of 224, not 160"):
        build_study(validated(config))


def test_a_timm_model_without_pretrained_weights_cannot_start_from_imagenet():
    config = tiny_study()
    config["grid"].update(model=["timm:botnet50ts_256"], resolution=[32], weights=["imagenet"])
    with pytest.raises(ConfigError, match="timm:botnet50ts_256: timm has no pretrained weights on the Hugging Face hub"):
        build_study(validated(config))
    config["grid"].update(weights=["none"])
    assert len(build_study(validated(config)).grid_cells) == 4


def test_timm_cells_have_a_path_safe_id():
    config = tiny_study()
    config["grid"].update(model=["timm:resnet18.a1_in1k"], weights=["imagenet"])
    study = build_study(validated(config))
    assert {cell.id.split("/")[1] for cell in study.grid_cells} == {"timm-resnet18.a1_in1k"}
