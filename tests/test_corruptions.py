"""robustlab.corruptions: the plain functions, their tables, the dispatcher and the parser."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images

from robustlab.corruptions.functions import (
    CORRUPTIONS,
    SEVERITIES,
    ImageTooSmall,
    blur,
    corrupt,
    gaussian_blur,
    jpeg,
    jpeg_roundtrip,
    noise,
    parameters,
)
from robustlab.corruptions.variant import (
    CorruptionVariant,
    parse_corruptions,
    parse_severities,
)
from robustlab.corruptions.writer import _png_names
from robustlab.enums import SetKind
from robustlab.errors import RobustlabError

NAMES = sorted(CORRUPTIONS)


def textured(size: int, n: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Photo-like crops (the demo's photographs) plus the fixtures' checkerboard textures."""
    from robustlab.demo import _random_crop, demo_photos

    rng = np.random.default_rng(seed)
    photos = demo_photos()
    crops = [_random_crop(photos[i % len(photos)], rng, size) for i in range(n)]
    return crops + list(make_images(1, size=size, seed=seed)[0])


@pytest.mark.parametrize("size", [32, 256], ids=["32px", "256px"])
@pytest.mark.parametrize("name", NAMES)
def test_every_corruption_keeps_dtype_shape_and_is_reproducible(name, size):
    img = textured(size, n=1)[0]
    before = img.copy()
    for severity in SEVERITIES:
        a = corrupt(img, name, severity, np.random.default_rng(7))
        b = corrupt(img, name, severity, np.random.default_rng(7))
        assert a.dtype == np.uint8 and a.shape == img.shape
        assert a.tobytes() == b.tobytes()  # same seed, same bytes
        assert not np.array_equal(a, img), f"{name} severity {severity} changed nothing"
    assert np.array_equal(img, before)  # input untouched


def test_non_square_and_odd_sizes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 300, 3), dtype=np.uint8)
    for name in NAMES:
        out = corrupt(img, name, 5, np.random.default_rng(0))
        assert out.shape == img.shape and out.dtype == np.uint8


@pytest.mark.parametrize("size", [32, 256], ids=["32px", "256px"])
@pytest.mark.parametrize("name", NAMES)
def test_damage_grows_with_severity(name, size):
    images = textured(size)
    err = [np.mean([np.abs(corrupt(im, name, s, np.random.default_rng(1)).astype(np.int16) - im).mean() for im in images]) for s in SEVERITIES]
    assert all(b > a for a, b in zip(err, err[1:])), err


def test_noise_depends_on_the_generator_only():
    img = textured(32, n=1)[0]
    a = noise(img, 3, np.random.default_rng(1))
    b = noise(img, 3, np.random.default_rng(2))
    assert not np.array_equal(a, b)
    # deterministic corruptions ignore the generator
    assert np.array_equal(jpeg(img, 3, np.random.default_rng(1)), jpeg(img, 3, np.random.default_rng(2)))


def test_tables_switch_from_cifar_to_imagenet_values_above_64_px():
    assert parameters("jpeg", 1, (64, 64)) == {"quality": 80}
    assert parameters("jpeg", 1, (65, 64)) == {"quality": 25}
    assert parameters("jpeg", 5, (32, 32)) == {"quality": 40}
    assert parameters("jpeg", 5, (256, 256)) == {"quality": 7}
    assert parameters("blur", 3, (32, 32)) == {"sigma": 0.7}
    assert parameters("blur", 5, (224, 224)) == {"sigma": 6.0}
    assert parameters("social", 2, (128, 128)) == {"factor": 0.5, "quality": 18}
    img64 = textured(64, n=1)[0]
    img65 = np.ascontiguousarray(np.pad(img64, ((0, 1), (0, 1), (0, 0)), mode="edge"))
    rng = np.random.default_rng(0)
    assert np.array_equal(jpeg(img64, 1, rng), jpeg_roundtrip(img64, 80))
    assert np.array_equal(jpeg(img65, 1, rng), jpeg_roundtrip(img65, 25))


@pytest.mark.parametrize("shape", [(32, 32), (128, 128), (37, 300), (300, 520)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("sigma", [0.4, 1.0, 3.0, 6.0])
def test_blur_is_the_benchmark_gaussian_rounded(shape, sigma):
    from skimage.filters import gaussian

    img = np.random.default_rng(3).integers(0, 256, shape + (3,), dtype=np.uint8)
    ref = np.clip(gaussian(img / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255  # ImageNet-C's filter
    out = gaussian_blur(img, sigma)
    assert np.abs(out - ref).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_gives_the_same_pixels_as_imagecorruptions(severity):
    from imagecorruptions import corrupt as ic_corrupt

    for img in textured(128, n=2):  # > 64 px: ImageNet-C qualities, the package's table
        theirs = ic_corrupt(img, severity=severity, corruption_name="jpeg_compression")
        assert np.array_equal(corrupt(img, "jpeg", severity, np.random.default_rng(0)), theirs)


def test_dispatcher_validates_once():
    img = np.zeros((16, 16, 3), np.uint8)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="jpeg, blur, resize, noise, social"):
        corrupt(img, "fog", 1, rng)
    for bad in (0, 6, -1, True, 2.0, "3"):
        with pytest.raises(ValueError, match="outside 1..5"):
            corrupt(img, "jpeg", bad, rng)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(img.astype(np.float32), "blur", 1, rng)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(img[..., 0], "blur", 1, rng)
    with pytest.raises(TypeError):
        corrupt(img, "noise", 1, np.random.RandomState(0))
    with pytest.raises(ImageTooSmall):
        corrupt(np.zeros((7, 40, 3), np.uint8), "resize", 1, rng)
    assert corrupt(np.zeros((8, 8, 3), np.uint8), "resize", 5, rng).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="outside 1..5"):
        jpeg(img, 0, rng)  # the plain functions refuse a bad severity too (no silent table[-1])


def test_parse_corruptions_forms_and_order():
    vs = parse_corruptions(["jpeg:1-3", "blur:3", "resize:1,3,5", "JPEG:2-4", "noise"])
    assert [(v.name, v.severity) for v in vs] == [
        ("jpeg", 1), ("jpeg", 2), ("jpeg", 3), ("jpeg", 4), ("blur", 3), ("resize", 1), ("resize", 3), ("resize", 5),
        ("noise", 1), ("noise", 2), ("noise", 3), ("noise", 4), ("noise", 5),
    ]  # fmt: skip
    assert [v.severity for v in parse_corruptions(["social"], default_severities="2")] == [2]
    assert parse_severities("1-2,5") == [1, 2, 5]


@pytest.mark.parametrize(
    "text, needle",
    [("fog:1", "use one of: jpeg, blur, resize, noise, social"), ("jpeg:6", "outside 1..5"), ("jpeg:0-2", "outside 1..5"), ("blur:5-1", "backwards"), ("blur:x", "not a number")],
)
def test_parse_corruptions_rejects_bad_input_in_one_line(text, needle):
    with pytest.raises(RobustlabError) as err:
        parse_corruptions([text])
    line = err.value.one_line()
    assert needle in line and "\n" not in line and err.value.exit_code == 2


def test_corruption_variant_is_an_evaluate_variant():
    v = parse_corruptions(["blur:3"])[0]
    assert v.kind is SetKind.CORRUPTED and v.variant == "blur" and v.param == "severity=3"
    x, y = make_images(3, size=32, seed=2)
    from robustlab.results import Variant

    assert isinstance(v, Variant)
    out = v.apply(None, x, y, np.random.default_rng(0)).images
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert np.array_equal(out[1], blur(x[1], 3, np.random.default_rng(0)))
    with pytest.raises(RobustlabError, match="at least 8"):
        v.check_input_size((4, 4), thing="det.yaml")
    with pytest.raises(ValueError):
        CorruptionVariant("jpeg", 9)


def test_png_names_keep_paths_and_avoid_collisions():
    names = _png_names(["real/a.jpg", "real/a.png", "fake/b.JPEG", "fake/c.png"])
    assert names == ["real/a.jpg.png", "real/a.png", "fake/b.png", "fake/c.png"]
    escaped = _png_names(["../x/a.jpg", "/abs/b.png", "in/c.bmp"], escape_prefix="files")
    assert escaped == ["files/000000_a.png", "files/000001_b.png", "in/c.png"]
