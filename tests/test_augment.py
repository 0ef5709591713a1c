"""Batched augmentation: shapes, seeded determinism, and flips, crops and rotations on known images."""

import math

import pytest
import torch
import torch.nn.functional as F

from workflow.data.augment import Augment, Params, random_crop
from workflow.data.normalize import Normalizer

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def known_images(n=4, size=12):
    """uint8 (n, 3, size, size) in channels-last memory, every pixel different."""
    values = torch.arange(n * size * size * 3).reshape(n, size, size, 3) % 251
    return values.to(torch.uint8).permute(0, 3, 1, 2)


def test_normalize_matches_the_usual_formula_in_channels_last():
    images = known_images()
    x = Normalizer(MEAN, STD, "cpu")(images)
    expected = (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x, expected)


def test_hflip_mirrors_as_many_images_as_coins_came_up():
    images = known_images(8)
    normalize = Normalizer(MEAN, STD, "cpu", {"hflip": True})
    x = normalize(images, torch.Generator().manual_seed(5))
    flips = Augment(hflip=True).draw(8, torch.Generator().manual_seed(5)).flips
    assert flips == int((torch.rand(8, generator=torch.Generator().manual_seed(5)) < 0.5).sum()) and 0 < flips < 8
    plain = normalize(images)
    for i in range(8):
        torch.testing.assert_close(x[i], plain[i].flip(2) if i < flips else plain[i], rtol=0, atol=0)
    counts = [Augment(hflip=True).draw(64, torch.Generator().manual_seed(s)).flips for s in range(200)]
    assert abs(sum(counts) / len(counts) - 32) < 1 and min(counts) < 28 < 36 < max(counts)  # Binomial(64, 1/2)


@pytest.mark.parametrize("fill, mode", [("reflect", "reflect"), ("edge", "replicate"), ("zeros", "constant")])
def test_crop_equals_a_window_of_the_padded_image(fill, mode):
    x = torch.randn(5, 3, 10, 10)
    offsets = torch.tensor([[0, 0], [6, 6], [3, 0], [1, 5], [6, 2]])
    out = random_crop(x, offsets, 3, fill)
    padded = F.pad(x, (3, 3, 3, 3), mode=mode)
    for i, (top, left) in enumerate(offsets.tolist()):
        torch.testing.assert_close(out[i], padded[i, :, top:top + 10, left:left + 10], rtol=0, atol=0)
    with pytest.raises(ValueError, match="training.augment.crop: padding 10 must be smaller than the image size"):
        random_crop(x, offsets, 10, fill)


def test_affine_identity_and_quarter_turn():
    x = torch.randn(2, 3, 8, 8)
    identity = torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(2, 2, 3)
    torch.testing.assert_close(Augment(rotation=1).geometric(x, Params(theta=identity)), x)
    a = math.pi / 2
    quarter = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0]]).expand(2, 2, 3)
    turned = Augment(rotation=90).geometric(x, Params(theta=quarter))
    torch.testing.assert_close(turned, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_shift_by_whole_pixels_moves_the_image():
    x = torch.randn(1, 3, 8, 8)
    shift = torch.tensor([[[1.0, 0, 2 * 2 / 8], [0, 1, 0]]])  # sample 2 pixels to the right
    out = Augment(shift=0.25, fill="edge").geometric(x, Params(theta=shift))
    torch.testing.assert_close(out[..., :6], x[..., 2:], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., 6:], x[..., 7:].expand(-1, -1, -1, 2), atol=1e-5, rtol=0)


def test_all_augmentations_keep_shape_and_are_seeded():
    images = known_images(6, 16)
    normalize = Normalizer(MEAN, STD, "cpu", {"hflip": True, "crop": 2, "shift": 0.1, "zoom": 0.2, "rotation": 15})
    a = normalize(images, torch.Generator().manual_seed(0))
    b = normalize(images, torch.Generator().manual_seed(0))
    c = normalize(images, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 16, 16) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert not torch.equal(a, normalize(images))  # evaluation batches are not augmented


def test_zoom_draws_stay_in_range_and_config_is_checked():
    theta = Augment(zoom=0.2, rotation=30).draw(1000, torch.Generator().manual_seed(0)).theta
    scale = 1 / theta[:, 0, :2].norm(dim=1)
    assert 0.8 - 1e-6 <= scale.min() and scale.max() <= 1.2 + 1e-6 and scale.std() > 0.05
    angle = torch.atan2(theta[:, 1, 0], theta[:, 0, 0]).rad2deg()
    assert angle.abs().max() <= 30 + 1e-4 and angle.abs().max() > 25
    with pytest.raises(ValueError, match=r"training.augment: unknown keys \['flip'\]"):
        Augment.from_config({"flip": True})
    assert not Augment.from_config({}).active


def test_vflip_and_rot90_turn_exactly_the_drawn_images():
    images = known_images(16, 12)
    config = {"vflip": True, "rot90": True}
    normalize = Normalizer(MEAN, STD, "cpu", config)
    x = normalize(images, torch.Generator().manual_seed(3))
    params = Augment(**config).draw(16, torch.Generator().manual_seed(3))
    plain = normalize(images)
    assert 0 < int(params.vflips.sum()) < 16 and set(params.turns.tolist()) == {0, 1, 2, 3}
    for i in range(16):
        expected = plain[i].flip(1) if params.vflips[i] else plain[i]
        torch.testing.assert_close(x[i], expected.rot90(int(params.turns[i]), dims=(1, 2)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="training.augment.rot90: needs square images, not 12x10"):
        Augment(rot90=True).geometric(torch.zeros(2, 3, 12, 10), params.__class__(turns=torch.tensor([1, 0])))


def test_off_settings_leave_the_other_draws_as_they_were():
    old = Augment(hflip=True, crop=2, rotation=10).draw(8, torch.Generator().manual_seed(0))
    new = Augment(hflip=True, crop=2, rotation=10, vflip=True, rot90=True).draw(8, torch.Generator().manual_seed(0))
    assert old.flips == new.flips and torch.equal(old.crop, new.crop) and torch.equal(old.theta, new.theta)


def test_shear_matches_scipys_affine_transform():
    from scipy import ndimage

    degrees = 20.0
    theta = Augment(shear=degrees).draw(500, torch.Generator().manual_seed(0)).theta
    drawn = torch.rad2deg(torch.asin(-theta[:, 0, 1]))
    assert drawn.abs().max() <= degrees + 1e-4 and drawn.abs().max() > 18 and drawn.std() > 5
    torch.testing.assert_close(theta[:, 0, 0], torch.ones(500))  # a shear alone: no rotation or zoom
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    angle = math.radians(degrees)
    sheared = Augment(shear=degrees, fill="edge").geometric(
        x.float(), Params(theta=torch.tensor([[[1.0, -math.sin(angle), 0], [0, math.cos(angle), 0]]])))
    rows_cols = [[math.cos(angle), 0.0], [-math.sin(angle), 1.0]]  # the same map in (row, column) order
    centre = torch.full((2,), 7.5, dtype=torch.float64).numpy()
    offset = centre - torch.tensor(rows_cols, dtype=torch.float64).numpy() @ centre
    expected = ndimage.affine_transform(x[0, 0].numpy(), rows_cols, offset=offset, order=1, mode="nearest")
    torch.testing.assert_close(sheared[0, 0], torch.from_numpy(expected).float(), atol=1e-4, rtol=0)


def box_extent(image: torch.Tensor) -> tuple[float, float]:
    """Width and height (pixels) of the bright box in a (1, H, W) image: its mass along each axis."""
    mask = image[0]
    return float(mask.sum(1).max()), float(mask.sum(0).max())  # along a row, along a column


def test_zoom_axes_independent_draws_x_and_y_apart_as_keras_zoom_range():
    same = Augment(zoom=0.2).draw(2000, torch.Generator().manual_seed(0)).theta.double()
    independent = Augment(zoom=0.2, zoom_axes="independent").draw(2000, torch.Generator().manual_seed(0)).theta.double()
    assert torch.equal(same[:, 0, 0], same[:, 1, 1])  # one factor for both axes
    zx, zy = independent[:, 0, 0], independent[:, 1, 1]
    assert (independent[:, 0, 1] == 0).all() and (independent[:, 1, 0] == 0).all()  # no rotation, no shear
    for factor in (zx, zy):  # Keras: each uniform in [1 - zoom, 1 + zoom]
        assert 0.8 - 1e-6 <= factor.min() and factor.max() <= 1.2 + 1e-6
        assert abs(factor.mean().item() - 1.0) < 0.01 and abs(factor.std().item() - 0.4 / math.sqrt(12)) < 0.01
    assert abs(torch.corrcoef(torch.stack([zx, zy]))[0, 1].item()) < 0.1
    assert (zx - zy).abs().max() > 0.3

    # on an image: a 32x32 box in a 64x64 frame is drawn 32 / zx wide and 32 / zy high
    image = torch.zeros(1, 1, 64, 64)
    image[..., 16:48, 16:48] = 1.0
    augment = Augment(zoom=0.2, zoom_axes="independent", fill="zeros")
    params = augment.draw(6, torch.Generator().manual_seed(1))
    warped = augment.geometric(image.expand(6, 1, 64, 64).contiguous(), params)
    for i in range(6):
        width, height = box_extent(warped[i])
        zx, zy = params.theta[i, 0, 0].item(), params.theta[i, 1, 1].item()
        assert width == pytest.approx(32 / zx, abs=1.0) and height == pytest.approx(32 / zy, abs=1.0)
    same = Augment(zoom=0.2, fill="zeros")
    warped = same.geometric(image.expand(6, 1, 64, 64).contiguous(), same.draw(6, torch.Generator().manual_seed(1)))
    for i in range(6):
        width, height = box_extent(warped[i])
        assert width == pytest.approx(height, abs=1e-4)


def test_zoom_axes_same_is_the_default_and_other_values_are_refused():
    assert Augment.from_config({"zoom": 0.2}) == Augment.from_config({"zoom": 0.2, "zoom_axes": "same"})
    with pytest.raises(ValueError, match=r"training.augment.zoom_axes: 'xy' is not one of \['same', 'independent'\]"):
        Augment.from_config({"zoom": 0.2, "zoom_axes": "xy"})
