"""The report's landing page (report/workflow.rst) rendered as `snakemake --report` renders it (Jinja,
then docutils): the study and its recommendation come first, and the page is short enough to show
whole in a 1400 x 1000 window; every caption renders."""

import html
import math
import re
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
from docutils.core import publish_parts

from conftest import REPO
from fakecells import make_study, study_config
from fakepredictions import mask, write_run
from workflow.results.publish import aggregate_study

PANEL_WIDTH_CHARACTERS = 72  # Snakemake's description panel: max-w-lg (32rem) at prose-sm (14 px) type
LINE_PX, BLOCK_PX, HEADROOM_PX = 24, 16, 900  # prose-sm line height and paragraph gap; the window less its margins


def render(template: Path, config: dict, files: list) -> str:
    """What Snakemake's report makes of an rst template: Jinja (as snakemake.report does), then docutils."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(template.read_text()).render(snakemake=SimpleNamespace(config=config), categories={},
                                                        files=files)
    return publish_parts(text, writer="html")["html_body"]  # Snakemake: writer_name="html", the same writer


def plain(body: str) -> str:
    """The page's text, as a reader sees it."""
    body = re.sub(r"<style>.*?</style>", "", body, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def estimated_height(body: str) -> int:
    """The landing text's height in pixels: its paragraphs and list items wrapped at the panel's width."""
    blocks = re.findall(r"<(p|li)\b[^>]*>(.*?)</\1>", re.sub(r"<style>.*?</style>", "", body, flags=re.S), re.S)
    lines = 0
    for _, block in blocks:
        text = html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<(ul|ol)\b.*", "", block, flags=re.S)))
        lines += max(1, math.ceil(len(" ".join(text.split())) / PANEL_WIDTH_CHARACTERS))
    return lines * LINE_PX + len(blocks) * BLOCK_PX


@pytest.fixture
def demo_like(tmp_path):
    """The digits demo's shape: 2 models x 2 batch sizes x 3 optimizers, one seed, 5 classes, 135 images."""
    grid = {"model": ["mobilenet_v2", "resnet18"], "batch_size": [16, 64], "optimizer": ["sgd", "adam", "rmsprop"]}
    study = make_study(tmp_path, **grid)
    for i, cell in enumerate(study.grid_cells):
        write_run(study, cell, mask(135, 120 + i, start=i), mask(135, 118 + (7 * i) % 12), classes=5)
    aggregate_study(study, log=lambda message: None)
    return study, study_config(tmp_path, **grid)


def test_landing_page_opens_with_the_study_and_its_recommendation(demo_like):
    study, config = demo_like
    best = study.out / "tables" / "best.html"
    body = render(REPO / "report/workflow.rst", config, [SimpleNamespace(path=best)])
    text = plain(body)
    assert text.startswith("Study hand : a tlsweep transfer-learning sweep")
    for axis in ("model mobilenet_v2, resnet18;", "batch_size 16, 64;", "optimizer sgd, adam, rmsprop;"):
        assert axis in text.split("Recommendation")[0]
    recommendation = text.index("Recommendation (chosen on validation accuracy")
    assert recommendation < text.index("Reading the results") < text.index("The rules")
    # cell 5 (mobilenet_v2, batch size 64, rmsprop) is best on validation: 118 + 35 % 12 = 129 of 135
    assert f"d1 : mobilenet_v2, optimizer=rmsprop batch_size=64; test accuracy {(120 + 5) / 135:.4f}" in text
    assert "Wilson 95 %" in text and "on 135 test images" in text and "indistinguishable on test" in text
    assert ("4 warnings : one seed only (study); winner within noise of the runner-up (d1 (overall), "
            "d1 / mobilenet_v2, d1 / resnet18)") in text
    assert "align-items:flex-start" in body  # Snakemake centres the panel vertically: a tall one loses its top
    assert estimated_height(body) < HEADROOM_PX, estimated_height(body)
    best_md = (study.out / "tables" / "best.md").read_text()  # the per-model bests under the overall one
    assert "\n  - best mobilenet_v2: optimizer=rmsprop batch_size=64: validation accuracy 0.9556;" in best_md
    assert "\n  - best resnet18: optimizer=" in best_md


def test_landing_page_without_results_yet(tmp_path):
    body = render(REPO / "report/workflow.rst", study_config(tmp_path, batch_size=[16, 64]), [])
    assert "batch_size 16, 64" in plain(body) and "Recommendation" not in body
    assert estimated_height(body) < HEADROOM_PX


@pytest.mark.parametrize("caption", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "report").glob("*/*.rst")))
def test_every_caption_renders(caption, tmp_path):
    job = SimpleNamespace(config=study_config(tmp_path))
    body = render(REPO / caption, job.config, [])
    assert "<p>" in body and "System Message" not in body


def test_landing_page_leads_with_the_cells_that_did_not_end_ok_and_shows_no_backticks(tmp_path):
    from fakecells import mixed_study

    study = mixed_study(tmp_path)
    aggregate_study(study, log=lambda message: None)
    body = render(REPO / "report/workflow.rst", study_config(tmp_path), [SimpleNamespace(path=study.out / "tables/best.html")])
    text = plain(body)
    assert text.index("Warning: 4 of 12 cells did not end ok (2 failed, 1 diverged, 1 oom)") < text.index("Recommendation")
    assert "`" not in text and "<code>" in body
